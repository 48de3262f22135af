package transport

import (
	"context"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/wire"
)

// forwarder is a TCP relay on a fixed loopback port standing for the
// server's direct route: closing it makes "direct" unreachable, reopening
// it on the same port brings it back.
type forwarder struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	l      net.Listener
	conns  []net.Conn
}

func startForwarder(t *testing.T, target string) *forwarder {
	f := &forwarder{t: t, target: target, addr: "127.0.0.1:" + freePort(t)}
	f.open()
	t.Cleanup(f.close)
	return f
}

func (f *forwarder) open() {
	l, err := net.Listen("tcp", f.addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.l = l
	f.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", f.target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, u)
			f.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

// close stops listening and cuts every relayed connection.
func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.l != nil {
		f.l.Close()
		f.l = nil
	}
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

func hostOf(t *testing.T, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// Direct route down: traffic moves to the proxy at once; when direct comes
// back, background probes find it and traffic returns to it. Every event
// is stored exactly once.
func TestFallbackToProxyAndBack(t *testing.T) {
	srv, admin := realServer(t)
	serverURL := srv.Info().URL
	tp := startTinyproxy(t, portOf(t, serverURL))
	fwd := startForwarder(t, hostOf(t, serverURL))
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := Enroll(ctx, serverURL, newToken(t, admin), dir, HostInfo{Hostname: "fb1"}, EnrollOptions{}); err != nil {
		t.Fatal(err)
	}
	eps := []Endpoint{{URL: "https://" + fwd.addr}, {URL: serverURL, Proxy: tp.url(proxyUser, proxyPass)}}
	c, err := NewClient(dir, ClientOptions{Endpoints: eps, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, ProbeInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seq := uint64(0)
	send := func(wantVia string) {
		t.Helper()
		seq++
		res, err := c.Deliver(ctx, wire.Batch{BootID: "b1", Records: []wire.Record{event(seq, "fallback-back")}})
		if err != nil || res.AckedSeq != seq {
			t.Fatalf("deliver %d: %+v %v", seq, res, err)
		}
		if st := c.Status(); st.Via != wantVia {
			t.Fatalf("seq %d went via %q, want %q (status %+v)", seq, st.Via, wantVia, st)
		}
	}
	send("direct")
	fwd.close()
	send("proxy http://" + tp.addr)
	// The cut shows as "connection refused" on a new dial, or as a broken
	// pipe or reset on the kept-alive connection: either way, down with why.
	if st := c.Status(); st.Endpoints[0].State != EndpointDown || st.Endpoints[0].LastError == "" {
		t.Fatalf("direct should be down: %+v", st.Endpoints[0])
	}
	send("proxy http://" + tp.addr)
	fwd.open()
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().Endpoints[0].State != EndpointUp {
		if time.Now().After(deadline) {
			t.Fatalf("direct never probed back up: %+v", c.Status())
		}
		if err := c.Heartbeat(ctx, wire.Heartbeat{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	send("direct")
	if n := countEvents(t, admin, "fallback-back"); n != int(seq) {
		t.Fatalf("stored %d events, want %d", n, seq)
	}
	assertNoSecret(t, "status", c.Status())
}

// The proxy dies mid-run: the client falls back to direct without losing
// or duplicating an event.
func TestProxyKilledFallsBackToDirect(t *testing.T) {
	srv, admin := realServer(t)
	serverURL := srv.Info().URL
	tp := startTinyproxy(t, portOf(t, serverURL))
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := Enroll(ctx, serverURL, newToken(t, admin), dir, HostInfo{Hostname: "fb2"}, EnrollOptions{}); err != nil {
		t.Fatal(err)
	}
	eps := []Endpoint{{URL: serverURL, Proxy: tp.url(proxyUser, proxyPass)}, {URL: serverURL}}
	c, err := NewClient(dir, ClientOptions{Endpoints: eps, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for s := uint64(1); s <= 10; s++ {
		if s == 5 {
			tp.kill()
		}
		res, err := c.Deliver(ctx, wire.Batch{BootID: "b1", Records: []wire.Record{event(s, "proxy-killed")}})
		if err != nil || res.AckedSeq != s {
			t.Fatalf("deliver %d: %+v %v", s, res, err)
		}
		want := "proxy http://" + tp.addr
		if s >= 5 {
			want = "direct"
		}
		if st := c.Status(); st.Via != want {
			t.Fatalf("seq %d via %q, want %q", s, st.Via, want)
		}
	}
	if n := countEvents(t, admin, "proxy-killed"); n != 10 {
		t.Fatalf("stored %d events, want 10", n)
	}
}

// HTTPS_PROXY is used for a direct endpoint unless NO_PROXY names the
// server, as http.ProxyFromEnvironment does. Loopback IPs are never
// proxied by that rule, so the server is addressed by this host's name.
func TestEnvProxyAndNoProxy(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := net.LookupHost(host)
	if err != nil || len(addrs) == 0 || !net.ParseIP(addrs[0]).IsLoopback() {
		t.Skipf("host name %q does not resolve to loopback (%v %v)", host, addrs, err)
	}
	srv, admin := realServer(t, host)
	port := portOf(t, srv.Info().URL)
	serverURL := "https://" + net.JoinHostPort(host, port)
	tp := startTinyproxy(t, port)
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := Enroll(ctx, srv.Info().URL, newToken(t, admin), dir, HostInfo{Hostname: "env1"}, EnrollOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, noProxy, wantVia string
		viaProxy               bool
	}{
		{"proxied", "", "direct via HTTPS_PROXY http://" + tp.addr, true},
		{"no_proxy", "example.org," + host, "direct", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HTTPS_PROXY", tp.url(proxyUser, proxyPass))
			t.Setenv("NO_PROXY", tc.noProxy)
			before := tp.connects(t)
			c, err := NewClient(dir, ClientOptions{Endpoints: []Endpoint{{URL: serverURL}}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Heartbeat(ctx, wire.Heartbeat{}); err != nil {
				t.Fatal(err)
			}
			st := c.Status()
			if st.Via != tc.wantVia || (tp.connects(t) > before) != tc.viaProxy {
				t.Fatalf("via %q, proxy CONNECTs %d -> %d; want via %q", st.Via, before, tp.connects(t), tc.wantVia)
			}
			assertNoSecret(t, "status", st)
		})
	}
}

// SetEndpoints swaps the list at once, concurrently with traffic.
func TestSetEndpointsSwaps(t *testing.T) {
	srv, admin := realServer(t)
	serverURL := srv.Info().URL
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := Enroll(ctx, serverURL, newToken(t, admin), dir, HostInfo{Hostname: "sw1"}, EnrollOptions{}); err != nil {
		t.Fatal(err)
	}
	dead := "https://127.0.0.1:" + freePort(t)
	c, err := NewClient(dir, ClientOptions{Endpoints: []Endpoint{{URL: dead}}, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Heartbeat(ctx, wire.Heartbeat{}); err == nil {
		t.Fatal("heartbeat to a closed port succeeded")
	}
	if err := c.SetEndpoints([]Endpoint{{URL: "http://plain:80"}}); err == nil {
		t.Fatal("SetEndpoints accepted a non-TLS url")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				_ = c.Heartbeat(ctx, wire.Heartbeat{})
				_ = c.Status()
			}
		}()
	}
	if err := c.SetEndpoints([]Endpoint{{URL: dead}, {URL: serverURL}}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := c.Heartbeat(ctx, wire.Heartbeat{}); err != nil {
		t.Fatalf("after SetEndpoints: %v", err)
	}
	if got := c.Endpoints(); len(got) != 2 || got[1].URL != serverURL {
		t.Fatalf("Endpoints() = %+v", got)
	}
	if st := c.Status(); st.State != StateConnected || st.Server != serverURL || len(st.Endpoints) != 2 {
		t.Fatalf("status %+v", st)
	}
}
