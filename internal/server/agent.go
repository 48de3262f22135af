package server

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/wire"
)

// decodeAgentJSON decodes a small agent message. Unknown fields are allowed
// so a newer agent can talk to an older server.
func decodeAgentJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "request body larger than %d bytes", maxRequestBody)
		}
		return errorf(http.StatusBadRequest, wire.CodeBadBatch, "request body: %v", err)
	}
	return nil
}

func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	var req wire.EnrollRequest
	if err := decodeAgentJSON(w, r, &req); err != nil {
		writeAgentErr(w, err)
		return
	}
	resp, err := s.enroll(r.Context(), req)
	if err != nil {
		s.log.Warn("enrollment refused", "remote", r.RemoteAddr, "hostname", req.Hostname, "err", err)
		writeAgentErr(w, err)
		return
	}
	s.log.Info("host enrolled", "host_id", resp.HostID, "tenant", resp.Tenant, "hostname", req.Hostname)
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) enroll(ctx context.Context, req wire.EnrollRequest) (wire.EnrollResponse, error) {
	secret, pin, err := wire.ParseToken(req.Token)
	if err != nil {
		return wire.EnrollResponse{}, errorf(http.StatusBadRequest, "bad_token", "%v", err)
	}
	if pin != s.ca.Pin() {
		return wire.EnrollResponse{}, errorf(http.StatusBadRequest, "bad_token", "enrollment token was issued by another server (CA pin mismatch)")
	}
	for name, v := range map[string]string{"hostname": req.Hostname, "os": req.OS, "kernel": req.Kernel, "agent_version": req.AgentVersion, "machine_id": req.MachineID} {
		if len(v) > 255 || strings.ContainsAny(v, "\x00\n\r") {
			return wire.EnrollResponse{}, errorf(http.StatusBadRequest, "bad_request", "%s: longer than 255 bytes or has control characters", name)
		}
	}
	if req.Hostname == "" {
		return wire.EnrollResponse{}, errorf(http.StatusBadRequest, "bad_request", "hostname: required")
	}
	// Check the request before consuming the token, so a bad CSR does not burn it.
	if err := checkCSR(req.CSR); err != nil {
		return wire.EnrollResponse{}, errorf(http.StatusBadRequest, "bad_csr", "%v", err)
	}
	tok, err := s.state.ConsumeEnrollToken(ctx, hashSecret(secret), time.Now().UTC())
	switch {
	case errors.Is(err, store.ErrTokenExpired), errors.Is(err, store.ErrTokenUsed), errors.Is(err, store.ErrTokenInvalid), errors.Is(err, store.ErrNotFound):
		msg := store.ErrTokenInvalid.Error()
		switch {
		case errors.Is(err, store.ErrTokenExpired):
			msg = store.ErrTokenExpired.Error()
		case errors.Is(err, store.ErrTokenUsed):
			msg = store.ErrTokenUsed.Error()
		}
		return wire.EnrollResponse{}, errorf(http.StatusGone, "token_rejected", "%s", msg)
	case err != nil:
		return wire.EnrollResponse{}, fmt.Errorf("consume enrollment token: %w", err)
	}
	hostID := newHostID()
	certPEM, serial, err := s.ca.SignAgent([]byte(req.CSR), hostID, tok.Tenant)
	if err != nil {
		return wire.EnrollResponse{}, errorf(http.StatusBadRequest, "bad_csr", "%v", err)
	}
	now := time.Now().UTC()
	h := store.Host{ID: hostID, Tenant: tok.Tenant, Hostname: req.Hostname, OS: req.OS, Kernel: req.Kernel,
		AgentVersion: req.AgentVersion, CertSerial: serial, Enrolled: now, LastSeen: now}
	if err := s.state.PutHost(ctx, h); err != nil {
		return wire.EnrollResponse{}, fmt.Errorf("store host: %w", err)
	}
	s.audit(ctx, store.AuditEntry{Tenant: tok.Tenant, Actor: "agent:" + hostID, Action: "host.enroll", Target: hostID,
		Detail: fmt.Sprintf("hostname=%s token_note=%s", req.Hostname, tok.Note)})
	return wire.EnrollResponse{HostID: hostID, Tenant: tok.Tenant, Cert: string(certPEM), CA: string(s.ca.CertPEM)}, nil
}

func checkCSR(csrPEM string) error {
	block, _ := pem.Decode([]byte(csrPEM))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return errors.New("csr: not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("csr signature: %w", err)
	}
	return nil
}

func newHostID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

type ctxKey int

const (
	hostKey ctxKey = iota
	keyKey
)

// agentAuth admits requests whose verified client certificate names a known,
// current, unrevoked host, and passes the host record on.
func (s *Server) agentAuth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h, err := s.agentHost(r)
		if err != nil {
			s.log.Warn("agent request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
			writeAgentErr(w, err)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), hostKey, h)))
	}
}

func (s *Server) agentHost(r *http.Request) (store.Host, error) {
	// The TLS layer verified any presented chain against our CA.
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
		return store.Host{}, errorf(http.StatusUnauthorized, "no_client_cert", "client certificate required")
	}
	cert := r.TLS.PeerCertificates[0]
	id := cert.Subject.CommonName
	h, err := s.state.FindHost(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Host{}, errorf(http.StatusUnauthorized, "unknown_host", "client certificate names unknown host %q", id)
	} else if err != nil {
		return store.Host{}, fmt.Errorf("look up host: %w", err)
	}
	if h.Revoked {
		return store.Host{}, errorf(http.StatusForbidden, "revoked", "host %s is revoked", id)
	}
	if cert.SerialNumber.Text(16) != h.CertSerial {
		return store.Host{}, errorf(http.StatusUnauthorized, "cert_superseded", "client certificate is not the current one of host %s", id)
	}
	return h, nil
}

// hostState returns the ingest lock and watermark of a host.
func (s *Server) hostState(tenant, id string) *hostState {
	s.ingestMu.Lock()
	defer s.ingestMu.Unlock()
	k := tenant + "/" + id
	hs := s.hostLocks[k]
	if hs == nil {
		hs = &hostState{}
		s.hostLocks[k] = hs
	}
	return hs
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	h := r.Context().Value(hostKey).(store.Host)
	if r.ContentLength > wire.MaxBatchCompressed {
		writeAgentErr(w, errorf(http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "batch larger than %d bytes compressed", wire.MaxBatchCompressed))
		return
	}
	body := http.MaxBytesReader(w, r.Body, wire.MaxBatchCompressed)
	batch, events, err := DecodeBatch(body, r.Header.Get("Content-Encoding"), h.Tenant, h.ID)
	if err != nil {
		s.log.Warn("batch refused", "host_id", h.ID, "err", err)
		writeAgentErr(w, err)
		return
	}
	resp, err := s.ingest(r.Context(), h, batch, events)
	if err != nil {
		s.log.Error("batch not stored", "host_id", h.ID, "records", len(events), "err", err)
		writeAgentErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// ingest stores a decoded batch under the host's lock and acknowledges it
// only once the event store has accepted it.
func (s *Server) ingest(ctx context.Context, h store.Host, b wire.Batch, events []schema.Event) (wire.BatchResponse, error) {
	hs := s.hostState(h.Tenant, h.ID)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if !hs.loaded {
		max, err := s.events.MaxSeq(ctx, h.Tenant, h.ID)
		if err != nil {
			return wire.BatchResponse{}, fmt.Errorf("event store: %w", err)
		}
		hs.watermark, hs.loaded = max, true
	}
	var resp wire.BatchResponse
	fresh := events[:0:0]
	for _, ev := range events {
		if ev.Seq <= hs.watermark {
			resp.Duplicates++
			continue
		}
		fresh = append(fresh, ev)
	}
	now := time.Now().UTC()
	if len(fresh) > 0 {
		if err := s.events.Append(ctx, h.Tenant, fresh); err != nil {
			if errors.Is(err, store.ErrBadEvent) {
				return wire.BatchResponse{}, errorf(http.StatusBadRequest, wire.CodeBadBatch, "event store refused the batch: %v", err)
			}
			return wire.BatchResponse{}, fmt.Errorf("event store: %w", err)
		}
	}
	// Gaps: between the stored watermark and the first new record, and
	// between consecutive records of the batch.
	prev := hs.watermark
	for _, ev := range fresh {
		if ev.Seq > prev+1 {
			g := store.Gap{Tenant: h.Tenant, HostID: h.ID, FirstSeq: prev + 1, LastSeq: ev.Seq - 1, Reported: now, Reason: gapReason(b.Loss, prev+1, ev.Seq-1)}
			if err := s.state.AddGap(ctx, g); err != nil {
				s.log.Error("gap not recorded", "host_id", h.ID, "first_seq", g.FirstSeq, "last_seq", g.LastSeq, "err", err)
			}
		}
		prev = ev.Seq
		resp.Stored++
	}
	hs.watermark = prev
	resp.AckedSeq = hs.watermark
	if n := len(events); n > 0 {
		resp.AckedSeq = events[n-1].Seq
	}
	if b.Status != nil || b.Loss != nil {
		s.touch(ctx, h, b.Status, b.Loss, now)
	} else if err := s.state.TouchHost(ctx, h.Tenant, h.ID, now, h.Status); err != nil {
		s.log.Warn("last seen not updated", "host_id", h.ID, "err", err)
	}
	return resp, nil
}

func gapReason(l *schema.Loss, first, last uint64) string {
	if l != nil && l.DroppedSeqLast != 0 && l.DroppedSeqFirst <= last && l.DroppedSeqLast >= first {
		return "spool_dropped"
	}
	return "missing"
}

// touch updates LastSeen and merges the agent's status and loss counters
// into the host's status JSON.
func (s *Server) touch(ctx context.Context, h store.Host, st *wire.AgentStatus, loss *schema.Loss, now time.Time) {
	m := map[string]json.RawMessage{}
	if h.Status != "" {
		_ = json.Unmarshal([]byte(h.Status), &m)
	}
	if st != nil {
		var sm map[string]json.RawMessage
		if b, err := json.Marshal(st); err == nil && json.Unmarshal(b, &sm) == nil {
			for k, v := range sm {
				m[k] = v
			}
		}
	}
	if loss != nil {
		if b, err := json.Marshal(loss); err == nil {
			m["loss"] = b
		}
	}
	m["server_seen"], _ = json.Marshal(now)
	out, _ := json.Marshal(m)
	if err := s.state.TouchHost(ctx, h.Tenant, h.ID, now, string(out)); err != nil {
		s.log.Warn("host status not updated", "host_id", h.ID, "err", err)
	}
}

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	h := r.Context().Value(hostKey).(store.Host)
	var hb wire.Heartbeat
	if err := decodeAgentJSON(w, r, &hb); err != nil {
		writeAgentErr(w, err)
		return
	}
	s.touch(r.Context(), h, hb.Status, nil, time.Now().UTC())
	writeJSON(w, http.StatusOK, struct{}{})
}

// audit appends to the audit log; a failure is logged, the action stands.
func (s *Server) audit(ctx context.Context, e store.AuditEntry) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if err := s.state.AppendAudit(ctx, e); err != nil {
		s.log.Error("audit entry not written", "action", e.Action, "target", e.Target, "err", err)
	}
}
