package transport

import (
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/pki"
	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/wire"
)

const testSecret = "secretsecretsecret01"

// fakeServer is a TLS server signed by a real pki.CA that speaks wire's
// enrollment and batch endpoints; events decides how each batch is answered.
type fakeServer struct {
	t      *testing.T
	ca     *pki.CA
	srv    *httptest.Server
	enroll atomic.Int32

	mu      sync.Mutex
	batches []wire.Batch
	cns     []string
	events  func(n int, b wire.Batch) (int, any) // n counts batch requests from 1
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := ca.EnsureServerCert(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	cert.Certificate = append(cert.Certificate, ca.Cert.Raw)
	fs := &fakeServer{t: t, ca: ca}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.PathEnroll, fs.handleEnroll)
	mux.HandleFunc("POST "+wire.PathEvents, fs.handleEvents)
	mux.HandleFunc("POST "+wire.PathHeartbeat, func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			writeJSON(w, 401, wire.Error{Error: "client certificate required"})
			return
		}
		writeJSON(w, 200, map[string]string{})
	})
	fs.srv = httptest.NewUnstartedServer(mux)
	fs.srv.EnableHTTP2 = true
	fs.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
	}
	fs.srv.StartTLS()
	t.Cleanup(fs.srv.Close)
	return fs
}

func (fs *fakeServer) token() string { return wire.FormatToken(testSecret, fs.ca.Pin()) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (fs *fakeServer) handleEnroll(w http.ResponseWriter, r *http.Request) {
	var req wire.EnrollRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, 400, wire.Error{Error: err.Error()})
		return
	}
	secret, _, err := wire.ParseToken(req.Token)
	if err != nil || secret != testSecret {
		writeJSON(w, 401, wire.Error{Error: "enrollment token unknown"})
		return
	}
	n := fs.enroll.Add(1)
	hostID := fmt.Sprintf("host-%d", n)
	cert, _, err := fs.ca.SignAgent([]byte(req.CSR), hostID, "acme")
	if err != nil {
		writeJSON(w, 400, wire.Error{Error: err.Error()})
		return
	}
	writeJSON(w, 200, wire.EnrollResponse{HostID: hostID, Tenant: "acme", Cert: string(cert), CA: string(fs.ca.CertPEM)})
}

func (fs *fakeServer) handleEvents(w http.ResponseWriter, r *http.Request) {
	if len(r.TLS.PeerCertificates) == 0 {
		writeJSON(w, 401, wire.Error{Error: "client certificate required"})
		return
	}
	if r.Header.Get("Content-Encoding") != "gzip" {
		writeJSON(w, 400, wire.Error{Error: "want gzip"})
		return
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		writeJSON(w, 400, wire.Error{Error: err.Error()})
		return
	}
	var b wire.Batch
	if err := json.NewDecoder(io.LimitReader(zr, wire.MaxBatchDecompressed)).Decode(&b); err != nil {
		writeJSON(w, 400, wire.Error{Error: err.Error()})
		return
	}
	fs.mu.Lock()
	fs.batches = append(fs.batches, b)
	fs.cns = append(fs.cns, r.TLS.PeerCertificates[0].Subject.CommonName)
	n := len(fs.batches)
	h := fs.events
	fs.mu.Unlock()
	if h != nil {
		code, body := h(n, b)
		if code != 200 {
			writeJSON(w, code, body)
			return
		}
	}
	var last uint64
	if len(b.Records) > 0 {
		last = b.Records[len(b.Records)-1].Seq
	}
	writeJSON(w, 200, wire.BatchResponse{AckedSeq: last, Stored: len(b.Records)})
}

func (fs *fakeServer) setEvents(h func(n int, b wire.Batch) (int, any)) {
	fs.mu.Lock()
	fs.events = h
	fs.mu.Unlock()
}

func (fs *fakeServer) received() []wire.Batch {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]wire.Batch(nil), fs.batches...)
}

func enrolled(t *testing.T, fs *fakeServer) (string, *Client) {
	t.Helper()
	dir := t.TempDir()
	if _, err := Enroll(context.Background(), fs.srv.URL, fs.token(), dir, HostInfo{Hostname: "h1"}, EnrollOptions{}); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(dir, ClientOptions{MinBackoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return dir, c
}

func records(from, to uint64) []wire.Record {
	var rs []wire.Record
	for s := from; s <= to; s++ {
		rs = append(rs, wire.Record{Seq: s, Event: json.RawMessage(fmt.Sprintf(`{"n":%d}`, s))})
	}
	return rs
}

func TestEnrollStoresPrivateFiles(t *testing.T) {
	fs := newFakeServer(t)
	dir := t.TempDir()
	id, err := Enroll(context.Background(), fs.srv.URL, fs.token(), dir, HostInfo{Hostname: "h1"}, EnrollOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if id.HostID != "host-1" || id.Tenant != "acme" || id.CAPin != fs.ca.Pin() {
		t.Fatalf("identity = %+v", id)
	}
	for _, f := range []string{IdentityFile, KeyFile, CertFile, CAFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	// Enrolling again is a no-op; the server is not asked.
	id2, err := Enroll(context.Background(), fs.srv.URL, "mmr1.garbage", dir, HostInfo{}, EnrollOptions{})
	if err != nil || id2.HostID != "host-1" || fs.enroll.Load() != 1 {
		t.Fatalf("second enroll: id %+v err %v enrolls %d", id2, err, fs.enroll.Load())
	}
	// Forced enrollment gets a new identity.
	id3, err := Enroll(context.Background(), fs.srv.URL, fs.token(), dir, HostInfo{Hostname: "h1"}, EnrollOptions{Force: true})
	if err != nil || id3.HostID != "host-2" {
		t.Fatalf("forced enroll: id %+v err %v", id3, err)
	}
}

func TestEnrollRefusals(t *testing.T) {
	fs := newFakeServer(t)
	other, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		url    string
		token  string
		target error
		msg    string
	}{
		{"pin of another CA", fs.srv.URL, wire.FormatToken(testSecret, other.Pin()), ErrPinMismatch, "pin"},
		{"unknown secret", fs.srv.URL, wire.FormatToken("wrongwrongwrongwrong", fs.ca.Pin()), ErrEnrollRefused, "token unknown"},
		{"malformed token", fs.srv.URL, "mmr1.short.xyz", wire.ErrBadToken, "malformed"},
		{"empty token", fs.srv.URL, "", wire.ErrBadToken, "malformed"},
		{"plain http url", strings.Replace(fs.srv.URL, "https", "http", 1), fs.token(), nil, "https"},
		{"empty url", "", fs.token(), nil, "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Enroll(context.Background(), tc.url, tc.token, dir, HostInfo{Hostname: "h"}, EnrollOptions{})
			if err == nil {
				t.Fatal("enroll succeeded")
			}
			if tc.target != nil && !errors.Is(err, tc.target) {
				t.Errorf("err = %v, want %v", err, tc.target)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err %q lacks %q", err, tc.msg)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("refused enrollment left files: %v", ents)
			}
		})
	}
}

// A server whose enrollment answer hands back a certificate or CA other than
// the pinned one must not leave an identity behind.
func TestEnrollRejectsBadResponse(t *testing.T) {
	fs := newFakeServer(t)
	other, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		msg     string
	}{
		{"garbage json", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{not json") }, "response"},
		{"empty fields", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, wire.EnrollResponse{}) }, "lacks"},
		{"foreign ca", func(w http.ResponseWriter, r *http.Request) {
			var req wire.EnrollRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			cert, _, _ := other.SignAgent([]byte(req.CSR), "h", "t")
			writeJSON(w, 200, wire.EnrollResponse{HostID: "h", Cert: string(cert), CA: string(other.CertPEM)})
		}, "pin"},
		{"cert from foreign ca", func(w http.ResponseWriter, r *http.Request) {
			var req wire.EnrollRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			cert, _, _ := other.SignAgent([]byte(req.CSR), "h", "t")
			writeJSON(w, 200, wire.EnrollResponse{HostID: "h", Cert: string(cert), CA: string(fs.ca.CertPEM)})
		}, "does not chain"},
		{"cert for another key", func(w http.ResponseWriter, r *http.Request) {
			_, csr, _ := pki.NewKeyAndCSR("x")
			cert, _, _ := fs.ca.SignAgent(csr, "h", "t")
			writeJSON(w, 200, wire.EnrollResponse{HostID: "h", Cert: string(cert), CA: string(fs.ca.CertPEM)})
		}, "does not match our key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs.srv.Config.Handler = tc.handler
			dir := t.TempDir()
			_, err := Enroll(context.Background(), fs.srv.URL, fs.token(), dir, HostInfo{Hostname: "h"}, EnrollOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.msg)
			}
			if _, err := LoadIdentity(dir); !errors.Is(err, ErrNotEnrolled) {
				t.Errorf("identity left behind: %v", err)
			}
		})
	}
}

func TestMTLSSendAndRestart(t *testing.T) {
	fs := newFakeServer(t)
	dir, c := enrolled(t, fs)
	resp, err := c.SendBatch(context.Background(), wire.Batch{BootID: "b", Records: records(1, 3)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.AckedSeq != 3 || resp.Stored != 3 {
		t.Fatalf("resp = %+v", resp)
	}
	if err := c.Heartbeat(context.Background(), wire.Heartbeat{BootID: "b"}); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.State != StateConnected || st.LastAck == "" {
		t.Fatalf("status = %+v", st)
	}
	if fs.cns[0] != "host-1" {
		t.Fatalf("server saw client cert CN %q, want host-1", fs.cns[0])
	}
	// A restarted agent loads the same identity from disk.
	c2, err := NewClient(dir, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if c2.Identity().HostID != "host-1" {
		t.Fatalf("identity after restart = %+v", c2.Identity())
	}
	if _, err := c2.SendBatch(context.Background(), wire.Batch{BootID: "b", Records: records(4, 4)}); err != nil {
		t.Fatal(err)
	}
}

// The client trusts only the CA stored at enrollment: a server presenting a
// certificate from another CA is refused.
func TestClientRefusesOtherServerCA(t *testing.T) {
	fs := newFakeServer(t)
	dir, _ := enrolled(t, fs)
	impostor := newFakeServer(t)
	c, err := NewClient(dir, ClientOptions{Endpoints: []Endpoint{{URL: impostor.srv.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.SendBatch(context.Background(), wire.Batch{Records: records(1, 1)})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err = %v, want a certificate error", err)
	}
	if !Retryable(err) || c.Status().State != StateDisconnected {
		t.Fatalf("retryable %v state %q", Retryable(err), c.Status().State)
	}
	if len(impostor.received()) != 0 {
		t.Fatal("impostor received a batch")
	}
}

func TestDeliverRetriesServerErrors(t *testing.T) {
	fs := newFakeServer(t)
	_, c := enrolled(t, fs)
	fs.setEvents(func(n int, b wire.Batch) (int, any) {
		if n <= 3 {
			return 503, wire.Error{Error: "store busy"}
		}
		return 200, nil
	})
	start := time.Now()
	res, err := c.Deliver(context.Background(), wire.Batch{Records: records(1, 10)})
	if err != nil {
		t.Fatal(err)
	}
	if res.AckedSeq != 10 || res.Retries != 3 || res.Stored != 10 {
		t.Fatalf("res = %+v", res)
	}
	// Three backoffs of at least Min/2, 2*Min/2, 4*Min/2 (5 ms base).
	if d := time.Since(start); d < 17*time.Millisecond {
		t.Fatalf("retried too fast: %v", d)
	}
	if got := len(fs.received()); got != 4 {
		t.Fatalf("server saw %d attempts, want 4", got)
	}
}

func TestDeliverStopsWhenRevoked(t *testing.T) {
	fs := newFakeServer(t)
	_, c := enrolled(t, fs)
	fs.setEvents(func(int, wire.Batch) (int, any) { return 403, wire.Error{Error: "agent revoked"} })
	res, err := c.Deliver(context.Background(), wire.Batch{Records: records(1, 5)})
	if !errors.Is(err, ErrRevoked) {
		t.Fatalf("err = %v, want ErrRevoked", err)
	}
	if res.AckedSeq != 0 {
		t.Fatalf("revoked delivery acked %d: data would be deleted", res.AckedSeq)
	}
	if !c.Revoked() || c.Status().State != StateRevoked || !strings.Contains(c.Status().LastError, "agent revoked") {
		t.Fatalf("status = %+v", c.Status())
	}
	if len(fs.received()) != 1 {
		t.Fatalf("revoked client retried: %d attempts", len(fs.received()))
	}
}

func TestDeliverIsolatesRejectedRecords(t *testing.T) {
	fs := newFakeServer(t)
	_, c := enrolled(t, fs)
	bad := map[uint64]bool{37: true, 38: true, 90: true}
	fs.setEvents(func(_ int, b wire.Batch) (int, any) {
		for _, r := range b.Records {
			if bad[r.Seq] {
				return 400, wire.Error{Error: fmt.Sprintf("record %d: bad event", r.Seq)}
			}
		}
		return 200, nil
	})
	loss := &schema.Loss{SpoolDropped: 1}
	res, err := c.Deliver(context.Background(), wire.Batch{Records: records(1, 100), Loss: loss})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Rejected) != "[37 38 90]" || res.AckedSeq != 100 || res.Stored != 97 {
		t.Fatalf("res = %+v", res)
	}
	if !strings.Contains(res.RejectedErrs[0], "record 37") {
		t.Fatalf("reason = %q", res.RejectedErrs[0])
	}
	got := fs.received()
	// Bisection: a few requests per bad record, never a loop.
	if len(got) > 3*2*7+1 {
		t.Fatalf("%d requests for 3 bad records in 100", len(got))
	}
	seen := map[uint64]int{}
	lossSent := 0
	for _, b := range got {
		if b.Loss != nil {
			lossSent++
		}
	}
	fs.setEvents(nil)
	for _, b := range got {
		for _, r := range b.Records {
			seen[r.Seq]++
		}
	}
	for s := uint64(1); s <= 100; s++ {
		if seen[s] == 0 {
			t.Fatalf("seq %d never sent", s)
		}
	}
	if lossSent == 0 {
		t.Fatal("loss report never sent")
	}
}

// When the server names the poisoned record (wire.CodeBadRecord), the
// client drops exactly it in one extra request, without bisecting.
func TestDeliverDropsNamedBadRecord(t *testing.T) {
	fs := newFakeServer(t)
	_, c := enrolled(t, fs)
	fs.setEvents(func(_ int, b wire.Batch) (int, any) {
		for _, r := range b.Records {
			if r.Seq == 42 {
				return 400, wire.Error{Error: "record 42: bad event", Code: wire.CodeBadRecord, Seq: 42}
			}
		}
		return 200, nil
	})
	res, err := c.Deliver(context.Background(), wire.Batch{Records: records(1, 100)})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Rejected) != "[42]" || res.AckedSeq != 100 || res.Stored != 99 {
		t.Fatalf("res = %+v", res)
	}
	if n := len(fs.received()); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
}

// A 503 with store_unavailable is retried even though 4xx/5xx codes vary.
func TestHTTPErrorClassification(t *testing.T) {
	tests := []struct {
		status          int
		body            string
		revoked, reject bool
		tooLarge, retry bool
	}{
		{401, `{"error":"no cert"}`, true, false, false, false},
		{403, `{"error":"revoked"}`, true, false, false, false},
		{400, `{"error":"x","code":"bad_record","seq":3}`, false, true, false, false},
		{400, `{"error":"x","code":"store_unavailable"}`, false, false, false, true},
		{413, `{"error":"big"}`, false, true, true, false},
		{400, `{"error":"big","code":"too_large"}`, false, true, true, false},
		{503, `{"error":"busy","code":"store_unavailable"}`, false, false, false, true},
		{500, `<html>oops</html>`, false, false, false, true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d %s", tc.status, tc.body), func(t *testing.T) {
			err := error(newHTTPError(tc.status, []byte(tc.body)))
			if errors.Is(err, ErrRevoked) != tc.revoked || errors.Is(err, ErrRejected) != tc.reject ||
				errors.Is(err, ErrBatchTooLarge) != tc.tooLarge || Retryable(err) != tc.retry {
				t.Fatalf("%v: revoked %v rejected %v too large %v retryable %v", err,
					errors.Is(err, ErrRevoked), errors.Is(err, ErrRejected), errors.Is(err, ErrBatchTooLarge), Retryable(err))
			}
		})
	}
}
