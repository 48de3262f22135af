package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/apiclient"
	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/wire"
)

const (
	proxyUser = "agent"
	proxyPass = "s3cr3t-Pw9" // must never show up in status or errors
)

// tinyproxy is a real Debian tinyproxy on 127.0.0.1, started by the test.
type tinyproxy struct {
	addr string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startTinyproxy runs tinyproxy in the foreground with Basic auth and
// CONNECT allowed to connectPort; it is killed when the test ends.
func startTinyproxy(t *testing.T, connectPort string) *tinyproxy {
	t.Helper()
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		t.Skip("tinyproxy not installed (apt-get install tinyproxy; scripts/setup.sh --test does it)")
	}
	dir := t.TempDir()
	port := freePort(t)
	tp := &tinyproxy{addr: "127.0.0.1:" + port, log: filepath.Join(dir, "tinyproxy.log"), done: make(chan struct{})}
	conf := fmt.Sprintf("Port %s\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nLogLevel Connect\nLogFile %q\nPidFile %q\nBasicAuth %s %s\nConnectPort %s\nAllow 127.0.0.1\n",
		port, tp.log, filepath.Join(dir, "tinyproxy.pid"), proxyUser, proxyPass, connectPort)
	confPath := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	tp.cmd = exec.Command(bin, "-d", "-c", confPath)
	if err := tp.cmd.Start(); err != nil {
		t.Fatalf("start tinyproxy: %v", err)
	}
	go func() { _ = tp.cmd.Wait(); close(tp.done) }()
	t.Cleanup(tp.kill)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", tp.addr)
		if err == nil {
			c.Close()
			return tp
		}
		if time.Now().After(deadline) {
			t.Fatalf("tinyproxy did not listen on %s: %v", tp.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops this tinyproxy (by its pid) and waits for it to exit.
func (tp *tinyproxy) kill() {
	_ = tp.cmd.Process.Kill()
	<-tp.done
}

func (tp *tinyproxy) url(user, pass string) string {
	return (&url.URL{Scheme: "http", User: url.UserPassword(user, pass), Host: tp.addr}).String()
}

func (tp *tinyproxy) connects(t *testing.T) int {
	b, err := os.ReadFile(tp.log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "CONNECT")
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

func portOf(t *testing.T, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

// assertNoSecret fails when the proxy password shows in v's JSON.
func assertNoSecret(t *testing.T, what string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if strings.Contains(string(b), proxyPass) {
		t.Fatalf("%s leaks the proxy password: %s", what, b)
	}
}

func newToken(t *testing.T, admin *apiclient.Client) string {
	t.Helper()
	tok, err := admin.CreateToken(context.Background(), api.TokenRequest{TTLSeconds: 60, Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

func countEvents(t *testing.T, admin *apiclient.Client, marker string) int {
	t.Helper()
	evs, err := admin.Events(context.Background(), apiclient.EventFilter{Where: []string{"process.args~" + marker}})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

// Enrollment and batches through a real tinyproxy with Basic auth; mutual
// TLS runs inside the tunnel and the status names the proxy, not the
// password.
func TestTinyproxyEnrollAndSend(t *testing.T) {
	srv, admin := realServer(t)
	serverURL := srv.Info().URL
	tp := startTinyproxy(t, portOf(t, serverURL))
	ctx := context.Background()
	eps := []Endpoint{{URL: serverURL, Proxy: tp.url(proxyUser, proxyPass)}}

	dir := t.TempDir()
	id, err := Enroll(ctx, serverURL, newToken(t, admin), dir, HostInfo{Hostname: "px1"}, EnrollOptions{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	if n := tp.connects(t); n < 1 {
		t.Fatalf("enrollment did not go through tinyproxy (%d CONNECTs logged)", n)
	}
	c, err := NewClient(dir, ClientOptions{Endpoints: eps, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Deliver(ctx, wire.Batch{BootID: "b1", Records: []wire.Record{event(1, "via-tinyproxy"), event(2, "via-tinyproxy")}})
	if err != nil || res.AckedSeq != 2 || res.Stored != 2 {
		t.Fatalf("deliver: %+v %v", res, err)
	}
	if err := c.Heartbeat(ctx, wire.Heartbeat{}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	if n := countEvents(t, admin, "via-tinyproxy"); n != 2 {
		t.Fatalf("server stored %d events, want 2", n)
	}
	st := c.Status()
	if st.State != StateConnected || st.Via != "proxy http://"+tp.addr || len(st.Endpoints) != 1 || st.Endpoints[0].State != EndpointUp {
		t.Fatalf("status %+v", st)
	}
	if !strings.Contains(st.Endpoints[0].Endpoint, tp.addr) {
		t.Fatalf("endpoint status %q does not name the proxy", st.Endpoints[0].Endpoint)
	}
	assertNoSecret(t, "status", st)
	if _, err := admin.Hosts(ctx, ""); err != nil {
		t.Fatal(err)
	}
	_ = id
}

// A wrong proxy password gives a clear 407 error, distinct from a server
// error, and the client falls back to the next endpoint.
func TestTinyproxyWrongPasswordFallsBack(t *testing.T) {
	srv, admin := realServer(t)
	serverURL := srv.Info().URL
	tp := startTinyproxy(t, portOf(t, serverURL))
	ctx := context.Background()
	bad := Endpoint{URL: serverURL, Proxy: tp.url(proxyUser, proxyPass+"x")}

	_, err := Enroll(ctx, serverURL, newToken(t, admin), t.TempDir(), HostInfo{Hostname: "px2"}, EnrollOptions{Endpoints: []Endpoint{bad}})
	var pe *ProxyError
	if !errors.Is(err, ErrProxyRefused) || !errors.As(err, &pe) || (pe.Status != 407 && pe.Status != 401) || !strings.Contains(err.Error(), "credentials rejected") || errors.Is(err, ErrEnrollRefused) {
		t.Fatalf("enroll through a proxy refusing us: %v, want a 401/407 ProxyError", err)
	}
	t.Log(err)
	assertNoSecret(t, "error", err.Error())

	// Enroll falls back too: wrong proxy first, direct second.
	dir := t.TempDir()
	direct := Endpoint{URL: serverURL}
	if _, err := Enroll(ctx, serverURL, newToken(t, admin), dir, HostInfo{Hostname: "px2"}, EnrollOptions{Endpoints: []Endpoint{bad, direct}}); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(dir, ClientOptions{Endpoints: []Endpoint{bad, direct}, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Deliver(ctx, wire.Batch{BootID: "b1", Records: []wire.Record{event(1, "after-407")}})
	if err != nil || res.Stored != 1 || res.Retries != 0 {
		t.Fatalf("deliver: %+v %v (want stored at once through the fallback)", res, err)
	}
	st := c.Status()
	if st.State != StateConnected || st.Via != "direct" || st.Endpoints[0].State != EndpointDown || st.Endpoints[1].State != EndpointUp ||
		!strings.Contains(st.Endpoints[0].LastError, "credentials rejected") || st.Endpoints[0].NextRetry == "" {
		t.Fatalf("status %+v", st)
	}
	t.Log(st.Endpoints[0].LastError)
	assertNoSecret(t, "status", st)
}
