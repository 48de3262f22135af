package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/pki"
	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/wire"
)

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServerBinary builds the real binary and runs `mamori server`.
func startServerBinary(t *testing.T) (dir string, stop func() (int, string)) {
	bin := filepath.Join(t.TempDir(), "mamori")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir = t.TempDir()
	cmd := exec.Command(bin, "server", "--data", dir, "--listen", freePort(t), "--log-format", "json")
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Scan()
		first <- sc.Text()
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-first:
		if !strings.Contains(l, "listening on https://127.0.0.1:") {
			t.Fatalf("start banner: %q", l)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("server did not start: %s", stderr.String())
	}
	stopped := false
	stop = func() (int, string) {
		if stopped {
			return 0, ""
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return code, stderr.String()
	}
	t.Cleanup(func() { stop() })
	return dir, stop
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// enrollAndSend plays an agent: enrolls with tok and sends a small process tree.
func enrollAndSend(t *testing.T, dir, tok string) (hostID string, shID string) {
	var info struct {
		URL string `json:"url"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "server.json"))
	json.Unmarshal(b, &info)
	caPEM, _ := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	keyPEM, csrPEM, _ := pki.NewKeyAndCSR("cli-host")
	body, _ := json.Marshal(wire.EnrollRequest{Token: tok, CSR: string(csrPEM), Hostname: "cli-host"})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Post(info.URL+wire.PathEnroll, "application/json", bytes.NewReader(body))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("enroll: %v %v", resp, err)
	}
	var er wire.EnrollResponse
	json.NewDecoder(resp.Body).Decode(&er)
	resp.Body.Close()
	cert, _ := tls.X509KeyPair([]byte(er.Cert), keyPEM)
	hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	now := time.Now().UTC()
	mk := func(pid, ppid uint32, exe string, args ...string) schema.Event {
		return schema.Event{Schema: schema.Version, BootID: "boot", Time: now.Add(time.Duration(pid) * time.Millisecond), Type: schema.ProcessExec,
			Process: &schema.Process{EntityID: fmt.Sprintf("boot:%d:1", pid), PID: pid, PPID: ppid, ParentEntityID: fmt.Sprintf("boot:%d:1", ppid), Exe: exe, Args: append([]string{exe}, args...)}}
	}
	evs := []schema.Event{mk(1, 0, "/sbin/init"), mk(50, 1, "/bin/bash"), mk(60, 50, "/usr/bin/curl", "http://evil.invalid")}
	var batch wire.Batch
	batch.Status = &wire.AgentStatus{SensorMode: "tp_btf", EventsPerS: 3, Spool: wire.SpoolStatus{Bytes: 2048, Pending: 0}}
	for i, ev := range evs {
		j, _ := json.Marshal(ev)
		batch.Records = append(batch.Records, wire.Record{Seq: uint64(i + 1), Event: j})
	}
	raw, _ := json.Marshal(batch)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	req, _ := http.NewRequest("POST", info.URL+wire.PathEvents, &gz)
	req.Header.Set("Content-Encoding", "gzip")
	resp, err = hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("batch: %v %v", resp, err)
	}
	resp.Body.Close()
	return er.HostID, "boot:50:1"
}

func TestCLIAgainstRealServer(t *testing.T) {
	dir, stop := startServerBinary(t)

	code, tok, errOut := runCLI(t, "token", "create", "--data", dir, "--ttl", "1h", "--note", "cli test")
	if code != 0 || !strings.HasPrefix(tok, "mmr1.") {
		t.Fatalf("token create: %d %q %q", code, tok, errOut)
	}
	code, js, _ := runCLI(t, "token", "create", "--data", dir, "--json")
	var tr map[string]any
	if code != 0 || json.Unmarshal([]byte(js), &tr) != nil || tr["expires_at"] == nil {
		t.Fatalf("token create --json: %d %q", code, js)
	}
	hostID, shID := enrollAndSend(t, dir, strings.TrimSpace(tok))

	t.Setenv("MAMORI_DATA", dir) // the env var works as --data
	code, out, errOut := runCLI(t, "hosts")
	if code != 0 || !strings.Contains(out, hostID) || !strings.Contains(out, "cli-host") || !strings.Contains(out, "tp_btf") {
		t.Fatalf("hosts: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, "events", "--since", "10m", "--where", "process.args~evil", "--type", "process_exec")
	if code != 0 || !strings.Contains(out, "/usr/bin/curl") || strings.Contains(out, "/bin/bash") {
		t.Fatalf("events table: %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "events", "--json", "--host", hostID)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("events --json: %d %d lines\n%s", code, len(lines), out)
	}
	for _, l := range lines {
		var ev schema.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.HostID != hostID {
			t.Fatalf("line %q: %v", l, err)
		}
	}
	code, out, _ = runCLI(t, "tree", shID)
	if code != 0 || !strings.Contains(out, "/sbin/init") || !strings.Contains(out, "* 50 /bin/bash") || !strings.Contains(out, "    60 /usr/bin/curl") {
		t.Fatalf("tree: %d\n%s", code, out)
	}
	if strings.Index(out, "/sbin/init") > strings.Index(out, "/bin/bash") {
		t.Fatalf("tree: ancestors must come first:\n%s", out)
	}
	// Elsewhere: --server URL --credential FILE --ca FILE.
	var info struct {
		URL string `json:"url"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "server.json"))
	json.Unmarshal(b, &info)
	code, out, errOut = runCLI(t, "hosts", "--json", "--data", "", "--server", info.URL, "--credential", filepath.Join(dir, "admin.token"), "--ca", filepath.Join(dir, "ca.crt"))
	if code != 0 || !strings.Contains(out, hostID) {
		t.Fatalf("hosts via --server: %d %s %s", code, out, errOut)
	}

	wrongKey := filepath.Join(t.TempDir(), "key")
	os.WriteFile(wrongKey, []byte("mak_wrong\n"), 0o600)
	usage := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, 2, "no command"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"bad flag", []string{"hosts", "--nope"}, 2, "not defined"},
		{"bad where", []string{"events", "--where", "nofield~x"}, 2, "unknown field"},
		{"bad type", []string{"events", "--type", "nope"}, 2, "--type"},
		{"bad time", []string{"events", "--from", "yesterday"}, 2, "RFC 3339"},
		{"tree without id", []string{"tree"}, 2, "entity id"},
		{"tree bad id", []string{"tree", "nonsense"}, 2, "BOOTID"},
		{"server without credential", []string{"hosts", "--server", info.URL}, 2, "--credential"},
		{"no such data dir", []string{"hosts", "--data", filepath.Join(dir, "nope")}, 1, "server.json"},
		{"not a key file", []string{"hosts", "--data", "", "--server", info.URL, "--credential", filepath.Join(dir, "ca.crt"), "--ca", filepath.Join(dir, "ca.crt")}, 1, "not a key"},
		{"wrong key", []string{"hosts", "--data", "", "--server", info.URL, "--credential", wrongKey, "--ca", filepath.Join(dir, "ca.crt")}, 1, "unknown API key"},
		{"unknown process", []string{"tree", "boot:4242:1"}, 1, "no events"},
	}
	for _, tc := range usage {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d stderr %q; want %d with %q", code, errOut, tc.code, tc.want)
			}
		})
	}
	code, logs := stop()
	if code != 0 {
		t.Fatalf("server exit code after SIGTERM: %d\n%s", code, logs)
	}
	if !strings.Contains(logs, `"msg":"stopped"`) {
		t.Fatalf("no JSON stop log:\n%s", logs)
	}
	_ = context.Background
}
