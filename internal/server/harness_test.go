package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/apiclient"
	"github.com/mamori-edr/mamori/internal/pki"
	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/wire"
)

type testEnv struct {
	t     *testing.T
	srv   *Server
	dir   string
	url   string
	admin *apiclient.Client
	caPEM []byte
}

// startServer runs a real server on 127.0.0.1:0 with the real sqlite stores.
func startServer(t *testing.T, mod func(*Options)) *testEnv {
	t.Helper()
	dir := t.TempDir()
	opts := Options{DataDir: dir, Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	admin, err := apiclient.FromDataDir(dir)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	env := &testEnv{t: t, srv: srv, dir: dir, url: srv.Info().URL, admin: admin, caPEM: srv.ca.CertPEM}
	// Ready when the API answers.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := admin.OpenAPI(context.Background()); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return env
}

func (e *testEnv) token(tenant string, ttl time.Duration, uses int) string {
	e.t.Helper()
	tr, err := e.admin.CreateToken(context.Background(), api.TokenRequest{Tenant: tenant, TTLSeconds: int64(ttl / time.Second), Uses: uses, Note: "test"})
	if err != nil {
		e.t.Fatalf("create token: %v", err)
	}
	return tr.Token
}

// agent is an enrolled test agent speaking the wire protocol over real mTLS.
type agent struct {
	env    *testEnv
	hostID string
	tenant string
	hc     *http.Client
}

func (e *testEnv) caPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(e.caPEM)
	return p
}

func (e *testEnv) plainClient(certs ...tls.Certificate) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.caPool(), Certificates: certs}, ForceAttemptHTTP2: true}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func postJSON(hc *http.Client, url string, v any) (int, []byte, error) {
	b, _ := json.Marshal(v)
	resp, err := hc.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body, nil
}

// tryEnroll enrolls with tok and returns the status, the error body and the agent.
func (e *testEnv) tryEnroll(tok, hostname string) (int, wire.Error, *agent) {
	e.t.Helper()
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(hostname)
	if err != nil {
		e.t.Fatal(err)
	}
	st, body, err := postJSON(e.plainClient(), e.url+wire.PathEnroll, wire.EnrollRequest{Token: tok, CSR: string(csrPEM), Hostname: hostname, OS: "linux", AgentVersion: "test"})
	if err != nil {
		e.t.Fatalf("enroll: %v", err)
	}
	if st != http.StatusOK {
		var we wire.Error
		_ = json.Unmarshal(body, &we)
		return st, we, nil
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal(body, &er); err != nil {
		e.t.Fatalf("enroll response: %v", err)
	}
	cert, err := tls.X509KeyPair([]byte(er.Cert), keyPEM)
	if err != nil {
		e.t.Fatalf("issued cert: %v", err)
	}
	return st, wire.Error{}, &agent{env: e, hostID: er.HostID, tenant: er.Tenant, hc: e.plainClient(cert)}
}

func (e *testEnv) enroll(tenant string) *agent {
	e.t.Helper()
	st, we, a := e.tryEnroll(e.token(tenant, time.Hour, 1), "host-"+tenant)
	if st != http.StatusOK {
		e.t.Fatalf("enroll: %d %+v", st, we)
	}
	return a
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// send posts a raw batch body; gzipped says whether to set Content-Encoding.
func (a *agent) send(body []byte, gzipped bool) (int, wire.BatchResponse, wire.Error) {
	a.env.t.Helper()
	req, _ := http.NewRequest("POST", a.env.url+wire.PathEvents, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if gzipped {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		a.env.t.Fatalf("post batch: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var br wire.BatchResponse
	var we wire.Error
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &br); err != nil {
			a.env.t.Fatalf("batch response %q: %v", b, err)
		}
	} else if err := json.Unmarshal(b, &we); err != nil || we.Error == "" {
		a.env.t.Fatalf("error response %d is not a wire.Error: %q", resp.StatusCode, b)
	}
	return resp.StatusCode, br, we
}

func (a *agent) sendBatch(b wire.Batch) (int, wire.BatchResponse, wire.Error) {
	j, err := json.Marshal(b)
	if err != nil {
		a.env.t.Fatal(err)
	}
	return a.send(gz(j), true)
}

var testBoot = "b00t"

// execEvent builds a process_exec event for pid, child of ppid.
func execEvent(pid, ppid uint32, exe string, args ...string) schema.Event {
	now := time.Now().UTC()
	return schema.Event{Schema: schema.Version, BootID: testBoot, Time: now, Type: schema.ProcessExec,
		Process: &schema.Process{EntityID: fmt.Sprintf("%s:%d:%d", testBoot, pid, pid*10), PID: pid, PPID: ppid,
			ParentEntityID: fmt.Sprintf("%s:%d:%d", testBoot, ppid, ppid*10), StartTime: now, Exe: exe, Args: append([]string{exe}, args...)}}
}

func records(first uint64, evs ...schema.Event) []wire.Record {
	var out []wire.Record
	for i, ev := range evs {
		j, _ := json.Marshal(ev)
		out = append(out, wire.Record{Seq: first + uint64(i), Event: j})
	}
	return out
}

// nExecs makes n exec records starting at seq first.
func nExecs(first uint64, n int) []wire.Record {
	evs := make([]schema.Event, n)
	for i := range evs {
		evs[i] = execEvent(uint32(1000+int(first)+i), 1, "/bin/true", fmt.Sprint(first+uint64(i)))
	}
	return records(first, evs...)
}

func (e *testEnv) count(tenant string) int64 {
	e.t.Helper()
	n, err := e.srv.events.Count(context.Background(), tenant)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

var _ store.EventStore // keep import when unused
