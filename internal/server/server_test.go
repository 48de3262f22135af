package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/apiclient"
	"github.com/mamori-edr/mamori/internal/pki"
	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/wire"
)

func TestFirstStartFiles(t *testing.T) {
	env := startServer(t, nil)
	for _, f := range []string{pki.CACertFile, pki.CAKeyFile, pki.ServerKeyFile, AdminTokenFile, InfoFile} {
		fi, err := os.Stat(filepath.Join(env.dir, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	var info Info
	b, _ := os.ReadFile(filepath.Join(env.dir, InfoFile))
	if err := json.Unmarshal(b, &info); err != nil || info.URL != env.url || info.CAPin != env.srv.ca.Pin() {
		t.Fatalf("server.json = %+v, %v", info, err)
	}
}

func TestEnrollment(t *testing.T) {
	env := startServer(t, nil)
	ctx := context.Background()

	good := env.token("", time.Hour, 1)
	st, _, a := env.tryEnroll(good, "web-1")
	if st != http.StatusOK || len(a.hostID) != 32 || a.tenant != RootTenant {
		t.Fatalf("enroll: status %d agent %+v", st, a)
	}
	// The issued certificate works on the mTLS endpoint.
	if st, br, we := a.sendBatch(wire.Batch{BootID: testBoot, Records: nExecs(1, 3)}); st != 200 || br.AckedSeq != 3 || br.Stored != 3 {
		t.Fatalf("first batch: %d %+v %+v", st, br, we)
	}

	expired := store.EnrollToken{Hash: hashSecret("expiredsecret0123456789"), Tenant: RootTenant, Created: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour), UsesLeft: 1}
	if err := env.srv.state.CreateEnrollToken(ctx, expired); err != nil {
		t.Fatal(err)
	}
	pin := env.srv.ca.Pin()
	otherPin := strings.Repeat("ab", 32)
	tests := []struct {
		name   string
		token  string
		status int
		want   string
	}{
		{"reused", good, http.StatusGone, "already used"},
		{"expired", wire.FormatToken("expiredsecret0123456789", pin), http.StatusGone, "expired"},
		{"unknown", wire.FormatToken("neverissuedsecret0123456", pin), http.StatusGone, "unknown"},
		{"malformed", "hello", http.StatusBadRequest, "malformed"},
		{"malformed pin", "mmr1.abcdefghijklmnopq.zz", http.StatusBadRequest, "malformed"},
		{"other server", wire.FormatToken("neverissuedsecret0123456", otherPin), http.StatusBadRequest, "another server"},
		{"empty", "", http.StatusBadRequest, "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, we, _ := env.tryEnroll(tc.token, "web-2")
			if st != tc.status || !strings.Contains(we.Error, tc.want) {
				t.Fatalf("got %d %q, want %d containing %q", st, we.Error, tc.status, tc.want)
			}
		})
	}

	t.Run("bad csr keeps token", func(t *testing.T) {
		tok := env.token("", time.Hour, 1)
		st, body, err := postJSON(env.plainClient(), env.url+wire.PathEnroll, wire.EnrollRequest{Token: tok, CSR: "garbage", Hostname: "x"})
		if err != nil || st != http.StatusBadRequest || !strings.Contains(string(body), "csr") {
			t.Fatalf("bad csr: %d %s %v", st, body, err)
		}
		if st, we, _ := env.tryEnroll(tok, "x"); st != http.StatusOK {
			t.Fatalf("token burnt by a bad csr: %d %+v", st, we)
		}
	})
	t.Run("hostile body", func(t *testing.T) {
		for _, body := range []string{"{", "[]", strings.Repeat("a", 2<<20)} {
			resp, err := env.plainClient().Post(env.url+wire.PathEnroll, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 400 && resp.StatusCode != 413 {
				t.Errorf("body %.10q: status %d", body, resp.StatusCode)
			}
		}
	})
	hosts, err := env.admin.Hosts(ctx, "")
	if err != nil || len(hosts) != 2 {
		t.Fatalf("hosts: %d %v", len(hosts), err)
	}
	audit, err := env.admin.Audit(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var creates, enrolls int
	for _, e := range audit {
		switch e.Action {
		case "token.create":
			creates++
		case "host.enroll":
			enrolls++
		}
	}
	if creates != 2 || enrolls != 2 {
		t.Fatalf("audit: %d token.create, %d host.enroll; want 2, 2: %+v", creates, enrolls, audit)
	}
}

// selfSignedCert makes a client certificate from a CA the server never saw.
func selfSignedCert(t *testing.T, cn string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestAgentAuth(t *testing.T) {
	env := startServer(t, nil)
	a := env.enroll("")
	batch := wire.Batch{BootID: testBoot, Records: nExecs(1, 1)}
	body, _ := json.Marshal(batch)

	t.Run("no client cert", func(t *testing.T) {
		st, b, err := postJSON(env.plainClient(), env.url+wire.PathEvents, batch)
		if err != nil || st != http.StatusUnauthorized || !strings.Contains(string(b), "client certificate required") {
			t.Fatalf("%d %s %v", st, b, err)
		}
	})
	t.Run("cert from another CA", func(t *testing.T) {
		foreign := selfSignedCert(t, a.hostID)
		hc := env.plainClient()
		// Send it even though the server asks for certificates of its own CA.
		hc.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
		_, _, err := postJSON(hc, env.url+wire.PathEvents, batch)
		// TLS 1.3 reports the server's alert either as "bad certificate"
		// or, when the request was already being written, a broken pipe.
		if err == nil {
			t.Fatal("a certificate from another CA was accepted")
		}
		if n := env.count(RootTenant); n != 0 {
			t.Fatalf("stored %d events from a foreign certificate", n)
		}
	})
	t.Run("server cert as client cert", func(t *testing.T) {
		cert, err := tls.LoadX509KeyPair(filepath.Join(env.dir, pki.ServerCertFile), filepath.Join(env.dir, pki.ServerKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = postJSON(env.plainClient(cert), env.url+wire.PathEvents, batch)
		if err == nil {
			t.Fatal("a server-auth certificate was accepted as a client certificate")
		}
	})
	t.Run("unknown host CN", func(t *testing.T) {
		_, csr, _ := pki.NewKeyAndCSR("x")
		keyPEM, csrPEM, _ := pki.NewKeyAndCSR("x")
		_ = csr
		certPEM, _, err := env.srv.ca.SignAgent(csrPEM, "nosuchhost", RootTenant)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := tls.X509KeyPair(certPEM, keyPEM)
		st, b, err := postJSON(env.plainClient(cert), env.url+wire.PathEvents, batch)
		if err != nil || st != http.StatusUnauthorized || !strings.Contains(string(b), "unknown host") {
			t.Fatalf("%d %s %v", st, b, err)
		}
	})
	t.Run("superseded cert", func(t *testing.T) {
		keyPEM, csrPEM, _ := pki.NewKeyAndCSR("x")
		certPEM, _, _ := env.srv.ca.SignAgent(csrPEM, a.hostID, a.tenant)
		cert, _ := tls.X509KeyPair(certPEM, keyPEM)
		st, b, err := postJSON(env.plainClient(cert), env.url+wire.PathEvents, batch)
		if err != nil || st != http.StatusUnauthorized || !strings.Contains(string(b), "not the current") {
			t.Fatalf("%d %s %v", st, b, err)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		if st, _, we := a.send(gz(body), true); st != 200 {
			t.Fatalf("before revoke: %d %+v", st, we)
		}
		if _, err := env.admin.RevokeHost(context.Background(), a.hostID, ""); err != nil {
			t.Fatal(err)
		}
		st, _, we := a.send(gz(body), true)
		if st != http.StatusForbidden || !strings.Contains(we.Error, "revoked") {
			t.Fatalf("after revoke: %d %+v", st, we)
		}
		st2, b, _ := postJSON(a.hc, env.url+wire.PathHeartbeat, wire.Heartbeat{BootID: testBoot})
		if st2 != http.StatusForbidden {
			t.Fatalf("heartbeat after revoke: %d %s", st2, b)
		}
		if n := env.count(RootTenant); n != 1 {
			t.Fatalf("stored %d events, want 1", n)
		}
	})
	t.Run("garbage on the TLS port", func(t *testing.T) {
		for _, junk := range [][]byte{[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), {0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0}, make([]byte, 4096)} {
			c, err := net.DialTimeout("tcp", env.srv.Addr().String(), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			c.Write(junk)
			buf := make([]byte, 512)
			c.Read(buf) // the server answers with an alert or HTTP 400, then closes
			c.Close()
		}
		if _, err := env.admin.Hosts(context.Background(), ""); err != nil {
			t.Fatalf("server not serving after garbage: %v", err)
		}
	})
}

func TestIngestRoundTrip(t *testing.T) {
	env := startServer(t, nil)
	a := env.enroll("")
	ctx := context.Background()
	root := execEvent(1, 0, "/sbin/init")
	root.Process.ParentEntityID = ""
	sh := execEvent(100, 1, "/bin/bash", "-c", "curl x")
	curl := execEvent(200, 100, "/usr/bin/curl", "https://example.invalid")
	code := 0
	exit := curl
	exit.Type, exit.Time = schema.ProcessExit, curl.Time.Add(time.Second)
	exitProc := *curl.Process
	exitProc.ExitCode = &code
	exit.Process = &exitProc
	batch := wire.Batch{BootID: testBoot, Records: records(1, root, sh, curl, exit),
		Status: &wire.AgentStatus{SensorMode: "tp_btf", EventsPerS: 12.5, Spool: wire.SpoolStatus{Bytes: 4096}}}
	st, br, we := a.sendBatch(batch)
	if st != 200 || br.AckedSeq != 4 || br.Stored != 4 || br.Duplicates != 0 {
		t.Fatalf("batch: %d %+v %+v", st, br, we)
	}
	// Retry of the same batch: all duplicates, acked again.
	st, br, _ = a.sendBatch(batch)
	if st != 200 || br.AckedSeq != 4 || br.Stored != 0 || br.Duplicates != 4 {
		t.Fatalf("retry: %d %+v", st, br)
	}
	// Overlapping retry: 3,4 duplicate, 5 new.
	st, br, _ = a.sendBatch(wire.Batch{BootID: testBoot, Records: append(records(3, curl, exit), nExecs(5, 1)...)})
	if st != 200 || br.AckedSeq != 5 || br.Stored != 1 || br.Duplicates != 2 {
		t.Fatalf("overlap: %d %+v", st, br)
	}
	evs, err := env.admin.Events(ctx, apiclient.EventFilter{Where: []string{"process.args~curl"}, Types: []string{"process_exec"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("events matching curl: %d, want 2", len(evs))
	}
	for _, ev := range evs {
		if ev.Tenant != RootTenant || ev.HostID != a.hostID || ev.Seq == 0 {
			t.Fatalf("event not stamped: %+v", ev)
		}
	}
	var streamed int
	if err := env.admin.StreamEvents(ctx, apiclient.EventFilter{Hosts: []string{a.hostID}}, func(schema.Event) error { streamed++; return nil }); err != nil || streamed != 5 {
		t.Fatalf("ndjson: %d events, %v", streamed, err)
	}
	desc, err := env.admin.Events(ctx, apiclient.EventFilter{Desc: true, Limit: 1})
	if err != nil || len(desc) != 1 || desc[0].Type != schema.ProcessExit { // the exit is the newest event
		t.Fatalf("desc limit 1: %+v %v", desc, err)
	}
	tree, err := env.admin.Tree(ctx, sh.Process.EntityID, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(tree.Ancestors) != 1 || tree.Ancestors[0].PID != 1 || tree.Process.Exe != "/bin/bash" ||
		len(tree.Descendants) != 1 || tree.Descendants[0].Exe != "/usr/bin/curl" || tree.Descendants[0].ExitCode == nil ||
		len(tree.Events[curl.Process.EntityID]) != 2 {
		t.Fatalf("tree: %+v", tree)
	}
	if _, err := env.admin.Tree(ctx, "b00t:9999:1", ""); !isStatus(err, 404) {
		t.Fatalf("tree of unknown process: %v", err)
	}
	h, err := env.admin.Host(ctx, a.hostID, "")
	if err != nil {
		t.Fatal(err)
	}
	var status map[string]any
	if err := json.Unmarshal(h.Status, &status); err != nil || status["sensor_mode"] != "tp_btf" {
		t.Fatalf("host status: %s %v", h.Status, err)
	}
	if time.Since(h.LastSeen) > time.Minute {
		t.Fatalf("last seen not updated: %v", h.LastSeen)
	}
}

func isStatus(err error, status int) bool {
	var ae *apiclient.Error
	return errors.As(err, &ae) && ae.Status == status
}

func TestGapsAndLoss(t *testing.T) {
	env := startServer(t, nil)
	a := env.enroll("")
	ctx := context.Background()
	if st, _, we := a.sendBatch(wire.Batch{BootID: testBoot, Records: nExecs(1, 2)}); st != 200 {
		t.Fatal(st, we)
	}
	// 3..9 missing, reported as spool drops; 12..14 missing inside the batch.
	loss := &schema.Loss{SpoolDropped: 7, DroppedSeqFirst: 3, DroppedSeqLast: 9, RingDropped: map[string]uint64{"exec": 2}}
	recs := append(nExecs(10, 2), nExecs(15, 1)...)
	st, br, we := a.sendBatch(wire.Batch{BootID: testBoot, Records: recs, Loss: loss})
	if st != 200 || br.AckedSeq != 15 || br.Stored != 3 {
		t.Fatalf("%d %+v %+v", st, br, we)
	}
	h, err := env.admin.Host(ctx, a.hostID, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []api.Gap{{FirstSeq: 3, LastSeq: 9, Reason: "spool_dropped"}, {FirstSeq: 12, LastSeq: 14, Reason: "missing"}}
	if len(h.Gaps) != len(want) {
		t.Fatalf("gaps: %+v", h.Gaps)
	}
	for i, g := range want {
		if h.Gaps[i].FirstSeq != g.FirstSeq || h.Gaps[i].LastSeq != g.LastSeq || h.Gaps[i].Reason != g.Reason {
			t.Errorf("gap %d: %+v, want %+v", i, h.Gaps[i], g)
		}
	}
	var status struct {
		Loss schema.Loss `json:"loss"`
	}
	if err := json.Unmarshal(h.Status, &status); err != nil || status.Loss.SpoolDropped != 7 || status.Loss.RingDropped["exec"] != 2 {
		t.Fatalf("loss not in host status: %s %v", h.Status, err)
	}
}

func TestHeartbeatAndLossRecord(t *testing.T) {
	env := startServer(t, nil)
	a := env.enroll("")
	ctx := context.Background()
	st, b, err := postJSON(a.hc, env.url+wire.PathHeartbeat, wire.Heartbeat{BootID: testBoot, Status: &wire.AgentStatus{SensorMode: "raw_tp", Hooks: []string{"sched_process_exec"}}})
	if err != nil || st != 200 {
		t.Fatalf("heartbeat: %d %s %v", st, b, err)
	}
	h, err := env.admin.Host(ctx, a.hostID, "")
	if err != nil || !strings.Contains(string(h.Status), `"sensor_mode":"raw_tp"`) {
		t.Fatalf("status after heartbeat: %s %v", h.Status, err)
	}
	// An agent_loss record spooled by the agent is stored like any event.
	loss := schema.Event{Schema: schema.Version, BootID: testBoot, Time: time.Now().UTC(), Type: schema.AgentLoss, Loss: &schema.Loss{SpoolDropped: 3}}
	if st, br, we := a.sendBatch(wire.Batch{BootID: testBoot, Records: records(1, loss)}); st != 200 || br.Stored != 1 {
		t.Fatalf("loss record: %d %+v %+v", st, br, we)
	}
	evs, err := env.admin.Events(ctx, apiclient.EventFilter{Types: []string{"agent_loss"}})
	if err != nil || len(evs) != 1 || evs[0].Loss == nil || evs[0].Loss.SpoolDropped != 3 {
		t.Fatalf("agent_loss query: %+v %v", evs, err)
	}
	if st, b, _ := postJSON(a.hc, env.url+wire.PathHeartbeat, "not an object"); st != 400 {
		t.Fatalf("bad heartbeat: %d %s", st, b)
	}
}
