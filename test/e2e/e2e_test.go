// Package e2e runs Mamori as operators do: the real `mamori` server and the
// real `mamori-agent` binaries as separate processes, the agent's eBPF sensor
// on this kernel, and the CLI to read the result back.
//
// The trap: everything here is asynchronous (ring buffer, spool, batching),
// so tests wait for conditions with deadlines instead of sleeping.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/apiclient"
	"github.com/mamori-edr/mamori/internal/schema"
)

var mamoriBin, agentBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped: needs root (the agent loads eBPF programs)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "mamori-e2e-bin-")
	if err != nil {
		panic(err)
	}
	mamoriBin, agentBin = filepath.Join(dir, "mamori"), filepath.Join(dir, "mamori-agent")
	for bin, pkg := range map[string]string{mamoriBin: "../../cmd/mamori", agentBin: "../../cmd/mamori-agent"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Printf("e2e: build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a Mamori process started by a test.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func start(t *testing.T, logPath string, bin string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &proc{t: t, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

// stop sends SIGTERM and requires a clean exit within the drain time.
func (p *proc) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			p.t.Errorf("%s exited uncleanly after SIGTERM: %v\n%s", p.cmd.Path, p.err, tail(p.log))
		}
	case <-time.After(30 * time.Second):
		p.t.Errorf("%s did not exit 30s after SIGTERM", p.cmd.Path)
		p.kill()
	}
}

func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// env is one server data directory and one agent data directory.
type env struct {
	t         *testing.T
	dir       string
	listen    string
	srvDir    string
	agentDir  string
	server    *proc
	agent     *proc
	serverURL string
}

func newEnv(t *testing.T) *env {
	dir := t.TempDir()
	e := &env{t: t, dir: dir, listen: freePort(t), srvDir: filepath.Join(dir, "server"), agentDir: filepath.Join(dir, "agent")}
	return e
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (e *env) startServer() {
	e.t.Helper()
	e.server = start(e.t, filepath.Join(e.dir, "server.log"), mamoriBin, "server", "--data", e.srvDir, "--listen", e.listen)
	waitFor(e.t, 60*time.Second, "server ready", func() bool {
		if !e.server.alive() {
			e.t.Fatalf("server exited:\n%s", tail(e.server.log))
		}
		_, err := e.cli("hosts")
		return err == nil
	})
	e.serverURL = "https://" + e.listen
}

func (e *env) startAgent(enroll bool) {
	e.t.Helper()
	args := []string{"--data", e.agentDir}
	if enroll {
		tok, err := e.cli("token", "create", "--ttl", "5m")
		if err != nil {
			e.t.Fatal(err)
		}
		args = append(args, "--server", e.serverURL, "--enroll-token", strings.TrimSpace(tok))
	}
	e.agent = start(e.t, filepath.Join(e.dir, "agent.log"), agentBin, args...)
	waitFor(e.t, 60*time.Second, "agent sensor running", func() bool {
		if !e.agent.alive() {
			e.t.Fatalf("agent exited:\n%s", tail(e.agent.log))
		}
		st, err := e.agentStatus()
		return err == nil && st.SensorMode != "" && st.SensorMode != "none"
	})
}

// waitSpooled waits until the agent has spooled an event newer than t (it
// runs one more process, so there is such an event even on a quiet host).
func (e *env) waitSpooled(t0 time.Time) {
	e.t.Helper()
	waitFor(e.t, 60*time.Second, "the agent to spool everything before "+t0.Format(time.RFC3339Nano), func() bool {
		_ = exec.Command("/bin/true").Run()
		st, err := e.agentStatus()
		if err != nil || st.SpooledThrough == "" {
			return false
		}
		through, err := time.Parse(time.RFC3339Nano, st.SpooledThrough)
		return err == nil && through.After(t0)
	})
}

type agentStatus struct {
	SpooledThrough string   `json:"spooled_through"`
	SensorMode     string   `json:"sensor_mode"`
	Hooks          []string `json:"hooks"`
	HostID         string   `json:"host_id"`
	Spool          struct {
		Pending uint64 `json:"pending"`
		LastSeq uint64 `json:"last_seq"`
	} `json:"spool"`
	Connection struct {
		State string `json:"state"`
	} `json:"connection"`
}

func (e *env) agentStatus() (agentStatus, error) {
	var st agentStatus
	out, err := exec.Command(agentBin, "status", "--data", e.agentDir, "--json").Output()
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

// cli runs a mamori client verb against the test server.
func (e *env) cli(args ...string) (string, error) {
	args = append(args, "--data", e.srvDir)
	var out, errb bytes.Buffer
	cmd := exec.Command(mamoriBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("mamori %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// events runs `mamori events --json` and decodes every line.
func (e *env) events(args ...string) []schema.Event {
	e.t.Helper()
	out, err := e.cli(append([]string{"events", "--json", "--limit", "100000"}, args...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	var evs []schema.Event
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var ev schema.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			e.t.Fatalf("events --json line %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// copyExe copies /bin/true to a unique path, so its executions are ours alone.
func copyExe(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func runLoop(t *testing.T, exe string, n int) {
	t.Helper()
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do "$0" loop-arg; i=$((i+1)); done`, n)
	if out, err := exec.Command("/bin/sh", "-c", script, exe).CombinedOutput(); err != nil {
		t.Fatalf("workload: %v: %s", err, out)
	}
}

// countExactlyOnce waits until n exec events of exe are stored, then checks
// that no process was stored twice.
func (e *env) countExactlyOnce(exe string, n int, d time.Duration) {
	e.t.Helper()
	var evs []schema.Event
	deadline := time.Now().Add(d)
	for {
		evs = e.events("--type", "process_exec", "--where", "process.exe="+exe)
		if len(evs) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(evs) != n {
		e.t.Fatalf("stored %d exec events of %s, want exactly %d", len(evs), exe, n)
	}
	seen := map[string]bool{}
	for _, ev := range evs {
		if seen[ev.Process.EntityID] {
			e.t.Fatalf("process %s stored twice", ev.Process.EntityID)
		}
		seen[ev.Process.EntityID] = true
	}
}

func TestCommandQueryableWithLineage(t *testing.T) {
	e := newEnv(t)
	e.startServer()
	e.startAgent(true)

	exe := copyExe(t, e.dir, "e2e-marker")
	cmd := exec.Command("/bin/sh", "-c", `"$0" hello-from-e2e --flag`, exe)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var ev schema.Event
	ran := time.Now()
	waitFor(t, 15*time.Second, "the exec to be queryable", func() bool {
		evs := e.events("--type", "process_exec", "--where", "process.exe="+exe)
		if len(evs) == 1 {
			ev = evs[0]
			return true
		}
		return false
	})
	t.Logf("queryable through the CLI %v after it ran", time.Since(ran).Round(10*time.Millisecond))
	p := ev.Process
	if got := strings.Join(p.Args, " "); got != exe+" hello-from-e2e --flag" {
		t.Errorf("args = %q", got)
	}
	if p.Hash == nil || p.Hash.SHA256 == "" || p.Hash.MD5 == "" {
		t.Errorf("exec event has no hashes: %+v", p.Hash)
	}
	if ev.Parent == nil || !strings.HasSuffix(ev.Parent.Exe, "sh") {
		t.Errorf("parent = %+v, want the shell", ev.Parent)
	}

	out, err := e.cli("tree", p.EntityID, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var tree struct {
		Process   schema.Process   `json:"process"`
		Ancestors []schema.Process `json:"ancestors"`
	}
	if err := json.Unmarshal([]byte(out), &tree); err != nil {
		t.Fatalf("tree --json: %v\n%s", err, out)
	}
	if len(tree.Ancestors) < 2 || tree.Ancestors[0].PID != 1 {
		t.Fatalf("lineage does not reach pid 1: %+v", tree.Ancestors)
	}
	if last := tree.Ancestors[len(tree.Ancestors)-1]; last.EntityID != p.ParentEntityID {
		t.Errorf("nearest ancestor %s, want the parent %s", last.EntityID, p.ParentEntityID)
	}
	hosts, err := e.cli("hosts", "--json")
	if err != nil || !strings.Contains(hosts, ev.HostID) {
		t.Errorf("hosts does not list %s: %v %s", ev.HostID, err, hosts)
	}
	e.agent.stop()
	e.server.stop()
}

func TestNoLossWhileServerDown(t *testing.T) {
	e := newEnv(t)
	e.startServer()
	e.startAgent(true)
	e.server.stop()

	exe := copyExe(t, e.dir, "e2e-offline")
	runLoop(t, exe, 500)
	e.startServer()
	e.countExactlyOnce(exe, 500, 60*time.Second)
	e.agent.stop()
	e.server.stop()
}

func TestNoLossAfterAgentKill9(t *testing.T) {
	e := newEnv(t)
	e.startServer()
	e.startAgent(true)

	// Pending data in the spool: the server is away while the workload runs.
	e.server.stop()
	exe := copyExe(t, e.dir, "e2e-kill9")
	runLoop(t, exe, 300)
	// Wait until the whole workload is on disk (the agent's spool holds an
	// event newer than the workload), so kill -9 can only lose what is not.
	e.waitSpooled(time.Now())
	e.agent.cmd.Process.Kill()
	<-e.agent.done
	e.startServer()
	e.startAgent(false)
	e.countExactlyOnce(exe, 300, 60*time.Second)

	// Mid-batch: kill while a stream of execs is being shipped, restart, and
	// require that the server holds every seq the agent spooled (no gaps) and
	// no process twice.
	exe2 := copyExe(t, e.dir, "e2e-kill9-stream")
	done := make(chan struct{})
	go func() { defer close(done); runLoop(t, exe2, 2000) }()
	time.Sleep(700 * time.Millisecond)
	e.agent.cmd.Process.Kill()
	<-e.agent.done
	<-done
	e.startAgent(false)
	var st agentStatus
	waitFor(t, 60*time.Second, "the agent's spool to drain", func() bool {
		var err error
		st, err = e.agentStatus()
		return err == nil && st.Spool.Pending == 0 && st.Connection.State == "connected"
	})
	evs := e.events("--type", "process_exec", "--where", "process.exe="+exe2)
	seen := map[string]bool{}
	for _, ev := range evs {
		if seen[ev.Process.EntityID] {
			t.Fatalf("process %s stored twice", ev.Process.EntityID)
		}
		seen[ev.Process.EntityID] = true
	}
	if len(evs) == 0 {
		t.Fatal("no event of the stream was stored")
	}
	client, err := apiclient.FromDataDir(e.srvDir)
	if err != nil {
		t.Fatal(err)
	}
	h, err := client.Host(context.Background(), st.HostID, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Gaps) != 0 {
		t.Errorf("gaps recorded after kill -9: %+v", h.Gaps)
	}
	t.Logf("stream: %d of 2000 execs stored (the rest ran while the agent was dead)", len(evs))
	e.agent.stop()
	e.server.stop()
}

// A full disk on the server: ingest answers 503 with the reason, the server
// keeps serving queries, nothing stored is lost, and once space is back the
// agent's spool delivers everything exactly once.
func TestServerDiskFull(t *testing.T) {
	e := newEnv(t)
	if err := os.MkdirAll(e.srvDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", e.srvDir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", e.srvDir).Run() })
	e.startServer()
	e.startAgent(true)

	before := copyExe(t, e.dir, "e2e-before-full")
	runLoop(t, before, 50)
	e.countExactlyOnce(before, 50, 60*time.Second)

	// Fill the disk.
	filler := filepath.Join(e.srvDir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()

	// SQLite reuses its write-ahead log's space for a while: keep the host
	// busy until the server's store runs out.
	during := copyExe(t, e.dir, "e2e-during-full")
	execs := 0
	waitFor(t, 60*time.Second, "the server to refuse ingest for lack of space", func() bool {
		runLoop(t, during, 200)
		execs += 200
		b, _ := os.ReadFile(e.server.log)
		return strings.Contains(string(b), "batch not stored")
	})
	b, _ := os.ReadFile(e.server.log)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "batch not stored") {
			if !strings.Contains(line, "full") && !strings.Contains(line, "no space") {
				t.Errorf("the server's log does not say the disk is full: %s", line)
			}
			t.Logf("server: %s", line)
			break
		}
	}
	e.waitSpooled(time.Now())
	if !e.server.alive() {
		t.Fatalf("server died on a full disk:\n%s", tail(e.server.log))
	}
	// Queries still work and what was stored is intact.
	e.countExactlyOnce(before, 50, 5*time.Second)
	st, err := e.agentStatus()
	if err != nil || st.Spool.Pending == 0 {
		t.Errorf("agent spool while the server is full: %+v %v", st, err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	e.countExactlyOnce(during, execs, 90*time.Second)
	e.countExactlyOnce(before, 50, 5*time.Second)
	e.agent.stop()
	e.server.stop()
}

// TestConnectQueryableWithProcess makes a TCP connect from a command on the
// host and finds it through the CLI with the command, its parent and lineage,
// and the accept on the other side attributed to this test.
func TestConnectQueryableWithProcess(t *testing.T) {
	e := newEnv(t)
	e.startServer()
	e.startAgent(true)

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	b, err := os.ReadFile("/bin/bash")
	if err != nil {
		t.Skipf("no bash for /dev/tcp: %v", err)
	}
	exe := filepath.Join(e.dir, "e2e-connector")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`exec 3<>/dev/tcp/127.0.0.1/%d`, port)
	if out, err := exec.Command("/bin/sh", "-c", `"$0" -c "$1"`, exe, script).CombinedOutput(); err != nil {
		t.Fatalf("connect: %v: %s", err, out)
	}
	where := fmt.Sprintf("network.dst_port=%d", port)
	var ev schema.Event
	waitFor(t, 15*time.Second, "the connect to be queryable", func() bool {
		evs := e.events("--type", "network_connect", "--where", where)
		if len(evs) == 1 {
			ev = evs[0]
			return true
		}
		return false
	})
	n := ev.Network
	if n == nil || n.Family != "ipv4" || n.Protocol != "tcp" || n.Direction != "outbound" || n.Result != "established" ||
		n.DstIP != "127.0.0.1" || n.SrcIP != "127.0.0.1" || n.SrcPort == 0 || n.Count != 1 {
		t.Errorf("network = %+v", n)
	}
	p := ev.Process
	if p == nil || p.Exe != exe || !slices.Contains(p.Args, script) {
		t.Fatalf("process = %+v, want %s running %q", p, exe, script)
	}
	if ev.Parent == nil || !strings.HasSuffix(ev.Parent.Exe, "sh") {
		t.Errorf("parent = %+v, want the shell", ev.Parent)
	}
	out, err := e.cli("tree", p.EntityID, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var tree struct {
		Ancestors []schema.Process `json:"ancestors"`
	}
	if err := json.Unmarshal([]byte(out), &tree); err != nil {
		t.Fatalf("tree --json: %v\n%s", err, out)
	}
	if len(tree.Ancestors) < 2 || tree.Ancestors[0].PID != 1 {
		t.Errorf("lineage does not reach pid 1: %+v", tree.Ancestors)
	}
	waitFor(t, 15*time.Second, "the accept to be queryable", func() bool {
		for _, a := range e.events("--type", "network_accept", "--where", where) {
			if a.Process != nil && a.Process.PID == uint32(os.Getpid()) && a.Network.SrcPort == n.SrcPort {
				return true
			}
		}
		return false
	})
	e.agent.stop()
	e.server.stop()
}
