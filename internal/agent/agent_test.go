package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/agent/transport"
	"github.com/mamori-edr/mamori/internal/apiclient"
	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/server"
	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/wire"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testServer is the real Mamori server, in process, on 127.0.0.1.
type testServer struct {
	t      *testing.T
	dir    string
	listen string
	url    string
	admin  *apiclient.Client
	stop   func()
}

func startServer(t *testing.T, dir, listen string) *testServer {
	t.Helper()
	srv, err := server.New(server.Options{DataDir: dir, Listen: listen, Logger: quiet})
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	admin, err := apiclient.FromDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, dir: dir, listen: srv.Addr().String(), url: srv.Info().URL, admin: admin}
	stopped := false
	ts.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server run: %v", err)
		}
	}
	t.Cleanup(ts.stop)
	waitFor(t, 60*time.Second, "server API", func() bool {
		_, err := admin.Hosts(context.Background(), "")
		return err == nil
	})
	return ts
}

func (ts *testServer) enroll(t *testing.T, dataDir string) *transport.Identity {
	t.Helper()
	tok, err := ts.admin.CreateToken(context.Background(), api.TokenRequest{TTLSeconds: 300, Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	id, err := transport.Enroll(context.Background(), ts.url, tok.Token, dataDir, transport.HostInfo{Hostname: "agent-test"}, transport.EnrollOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (ts *testServer) events(t *testing.T, where ...string) []schema.Event {
	t.Helper()
	evs, err := ts.admin.Events(context.Background(), apiclient.EventFilter{Where: where, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// runningAgent is an agent runtime in process; stop is what SIGTERM does.
type runningAgent struct {
	a    *Agent
	dir  string
	stop func() error
}

func startAgent(t *testing.T, dir string, mod func(*Config)) *runningAgent {
	t.Helper()
	cfg := Config{DataDir: dir, Logger: quiet, BatchInterval: 100 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond, StatusInterval: 200 * time.Millisecond, SpoolMaxBytes: 16 << 20,
		SpoolSegmentBytes: 1 << 20}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var result error
	stopped := false
	ra := &runningAgent{a: a, dir: dir}
	ra.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("agent did not stop within 30s")
			}
		}
		return result
	}
	t.Cleanup(func() { ra.stop() })
	waitFor(t, 60*time.Second, "agent status socket", func() bool {
		select {
		case err := <-done:
			t.Fatalf("agent exited: %v", err)
		default:
		}
		_, err := QueryStatus(dir)
		return err == nil
	})
	return ra
}

// waitFor polls cond until it holds. Deadlines are generous: in CI every
// test's agent records the whole host while the other suites run beside it.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the agent loads eBPF programs")
	}
}

// freshBinary copies /bin/true to a new file, so its hash is computed anew.
func freshBinary(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "mamori-test-true")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A command run on the host reaches the real server with its lineage, and
// SIGTERM (context cancel) flushes and stops cleanly.
func TestAgentEndToEnd(t *testing.T) {
	needRoot(t)
	ts := startServer(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	id := ts.enroll(t, dir)
	ra := startAgent(t, dir, nil)

	st, err := QueryStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.SensorMode == SensorModeNone || len(st.Hooks) == 0 {
		t.Fatalf("sensor not running: mode %q hooks %v err %q", st.SensorMode, st.Hooks, st.SensorError)
	}
	if st.HostID != id.HostID {
		t.Fatalf("status host %q, want %q", st.HostID, id.HostID)
	}
	waitFor(t, 60*time.Second, "connected", func() bool {
		st, err := QueryStatus(dir)
		return err == nil && st.Connection.State == transport.StateConnected
	})

	bin := freshBinary(t)
	marker := fmt.Sprintf("mamori-e2e-%d", time.Now().UnixNano())
	if out, err := exec.Command("/bin/sh", "-c", bin+" "+marker+"; exit 7").CombinedOutput(); err == nil || !strings.Contains(err.Error(), "7") {
		t.Fatalf("workload: %v %s", err, out)
	}
	var exe schema.Event
	waitFor(t, 60*time.Second, "the exec on the server", func() bool {
		for _, ev := range ts.events(t, "process.args~"+marker) {
			if ev.Type == schema.ProcessExec && ev.Process.Exe == bin {
				exe = ev
				return true
			}
		}
		return false
	})
	p := exe.Process
	if exe.HostID != id.HostID || p.Args[len(p.Args)-1] != marker {
		t.Fatalf("exec event host %q args %v", exe.HostID, p.Args)
	}
	if exe.Parent == nil || !strings.HasSuffix(exe.Parent.Exe, "sh") && !strings.Contains(exe.Parent.Exe, "dash") && !strings.Contains(exe.Parent.Exe, "bash") {
		t.Fatalf("parent = %+v, want the shell", exe.Parent)
	}
	tree, err := ts.admin.Tree(context.Background(), p.EntityID, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(tree.Ancestors) == 0 || tree.Ancestors[0].PID != 1 {
		var pids []uint32
		for _, a := range tree.Ancestors {
			pids = append(pids, a.PID)
		}
		t.Fatalf("lineage does not reach pid 1: ancestors %v", pids)
	}

	if err := ra.stop(); err != nil {
		t.Fatalf("agent stop: %v", err)
	}
	if _, err := QueryStatus(dir); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("status after stop: %v, want ErrNotRunning", err)
	}
	if _, err := os.Stat(filepath.Join(dir, SocketFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// With the server down the agent keeps spooling; on shutdown the data stays
// in the spool, and after a restart of both everything arrives exactly once.
func TestAgentSpoolsThroughOutage(t *testing.T) {
	needRoot(t)
	srvDir := t.TempDir()
	ts := startServer(t, srvDir, "127.0.0.1:0")
	listen := ts.listen
	dir := t.TempDir()
	ts.enroll(t, dir)
	ra := startAgent(t, dir, func(c *Config) { c.ShutdownTimeout = 500 * time.Millisecond })
	waitFor(t, 60*time.Second, "connected", func() bool {
		st, err := QueryStatus(dir)
		return err == nil && st.Connection.State == transport.StateConnected
	})
	ts.stop()

	bin := freshBinary(t)
	marker := fmt.Sprintf("outage-%d", time.Now().UnixNano())
	const n = 50
	for i := range n {
		if err := exec.Command(bin, marker, fmt.Sprint(i)).Run(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 60*time.Second, "disconnected with pending data", func() bool {
		st, err := QueryStatus(dir)
		return err == nil && st.Connection.State == transport.StateDisconnected && st.Spool.Pending > 0
	})
	if err := ra.stop(); err != nil {
		t.Fatalf("agent stop with server down: %v", err)
	}

	ts = startServer(t, srvDir, listen)
	startAgent(t, dir, nil)
	waitFor(t, 60*time.Second, "all execs after the outage", func() bool {
		count := 0
		for _, ev := range ts.events(t, "process.args~"+marker) {
			if ev.Type == schema.ProcessExec {
				count++
			}
		}
		if count > n {
			t.Fatalf("%d exec events for %d execs: duplicates", count, n)
		}
		return count == n
	})
	// Other activity on the host keeps the spool busy: wait for the ack to
	// pass what was spooled by now, rather than for an empty spool.
	st, err := QueryStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "spool drained", func() bool {
		cur, err := QueryStatus(dir)
		return err == nil && cur.Spool.AckedSeq >= st.Spool.LastSeq
	})
}

// A revoked agent stops sending but keeps every event in its spool.
func TestAgentRevokedKeepsData(t *testing.T) {
	needRoot(t)
	ts := startServer(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	id := ts.enroll(t, dir)
	startAgent(t, dir, nil)
	waitFor(t, 60*time.Second, "connected", func() bool {
		st, err := QueryStatus(dir)
		return err == nil && st.Connection.State == transport.StateConnected
	})
	if _, err := ts.admin.RevokeHost(context.Background(), id.HostID, ""); err != nil {
		t.Fatal(err)
	}
	bin := freshBinary(t)
	for range 5 {
		if err := exec.Command(bin, "after-revoke").Run(); err != nil {
			t.Fatal(err)
		}
	}
	var st wire.AgentStatus
	waitFor(t, 60*time.Second, "revoked state", func() bool {
		var err error
		st, err = QueryStatus(dir)
		return err == nil && st.Connection.State == transport.StateRevoked
	})
	before := st.Spool.Pending
	for range 5 {
		if err := exec.Command(bin, "after-revoke").Run(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "spool keeps growing", func() bool {
		st, err := QueryStatus(dir)
		return err == nil && st.Spool.Pending > before && st.Connection.State == transport.StateRevoked
	})
	if evs := ts.events(t, "process.args~after-revoke"); len(evs) != 0 {
		t.Fatalf("server stored %d events from a revoked agent", len(evs))
	}
}

// Without the sensor (or when it cannot load) the agent still ships and says why.
func TestAgentWithoutSensorReportsWhy(t *testing.T) {
	ts := startServer(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	ts.enroll(t, dir)
	startAgent(t, dir, func(c *Config) { c.NoSensor = true })
	var st wire.AgentStatus
	waitFor(t, 60*time.Second, "snapshot shipped", func() bool {
		var err error
		st, err = QueryStatus(dir)
		return err == nil && st.Spool.LastSeq > 0 && st.Spool.Pending == 0
	})
	if st.SensorMode != SensorModeNone || st.SensorError == "" {
		t.Fatalf("mode %q error %q", st.SensorMode, st.SensorError)
	}
	var buf bytes.Buffer
	FormatStatus(&buf, st)
	for _, want := range []string{"sensor:        none (disabled", "connection:    connected", "spool:"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, buf.String())
		}
	}
	// A second agent on the same data directory would corrupt the spool.
	a2, err := New(Config{DataDir: dir, Logger: quiet, NoSensor: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.Run(context.Background()); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second agent: %v, want ErrAlreadyRunning", err)
	}
	evs := ts.events(t, "type=process_snapshot", "process.pid=1")
	if len(evs) != 1 {
		t.Fatalf("snapshot of pid 1: %d events", len(evs))
	}
}

func TestQueryStatusNotRunning(t *testing.T) {
	dir := t.TempDir()
	if _, err := QueryStatus(dir); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("err = %v", err)
	}
	// A stale socket file from a crashed agent is not an agent.
	if err := os.WriteFile(filepath.Join(dir, SocketFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := QueryStatus(dir); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("stale socket: err = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		msg  string
	}{
		{"defaults", Config{}, ""},
		{"tiny spool", Config{SpoolMaxBytes: 1000}, "spool_max_bytes 1000"},
		{"segment above budget", Config{SpoolMaxBytes: 8 << 20, SpoolSegmentBytes: 8 << 20}, "spool_segment_bytes"},
		{"batch records over wire limit", Config{BatchRecords: wire.MaxBatchRecords + 1}, "batch_records"},
		{"negative batch", Config{BatchRecords: -1}, "batch_records -1"},
		{"batch bytes over limit", Config{BatchBytes: 1 << 30}, "batch_bytes"},
		{"ring not a power of two", Config{RingBytes: 5000}, "ring_bytes 5000"},
		{"tiny queue", Config{QueueLen: 3}, "queue_len 3"},
		{"huge hash wait", Config{HashWait: time.Hour}, "hash_wait"},
		{"fast interval", Config{BatchInterval: time.Microsecond}, "batch_interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			err := cfg.Validate()
			if tc.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.DataDir != DefaultDataDir || cfg.BatchRecords != 5000 || cfg.SpoolMaxBytes != 512<<20 || cfg.HashWait != 50*time.Millisecond {
					t.Fatalf("defaults not filled: %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %q", err, tc.msg)
			}
		})
	}
}

func TestNewRequiresEnrollment(t *testing.T) {
	_, err := New(Config{DataDir: t.TempDir()})
	if !errors.Is(err, transport.ErrNotEnrolled) {
		t.Fatalf("err = %v, want ErrNotEnrolled", err)
	}
}

// Ring-buffer drops reach the server as agent_loss events in the host's own
// event stream, not only in its status.
func TestAgentReportsLossAsEvents(t *testing.T) {
	needRoot(t)
	ts := startServer(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	ts.enroll(t, dir)
	startAgent(t, dir, func(c *Config) { c.RingBytes = 4096 })
	bin := freshBinary(t)
	script := `i=0; while [ $i -lt 400 ]; do "$0"; i=$((i+1)); done`
	waitFor(t, 30*time.Second, "an agent_loss event with ring-buffer drops", func() bool {
		if out, err := exec.Command("/bin/sh", "-c", script, bin).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, ev := range ts.events(t, "type=agent_loss") {
			if ev.Loss != nil && lossTotal(*ev.Loss) > 0 && len(ev.Loss.RingDropped) > 0 {
				return true
			}
		}
		return false
	})
}
