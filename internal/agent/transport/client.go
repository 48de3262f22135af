package transport

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mamori-edr/mamori/internal/pki"
	"github.com/mamori-edr/mamori/internal/wire"
	"golang.org/x/net/http/httpproxy"
)

// Connection states reported in wire.ConnStatus.State.
const (
	StateConnected    = "connected"
	StateDisconnected = "disconnected"
	StateRevoked      = "revoked"
)

var (
	// ErrRevoked means the server refused the agent's certificate (HTTP 401
	// or 403): sending stops, spooling goes on.
	ErrRevoked = errors.New("server refused the agent certificate (revoked?)")
	// ErrRejected means the server refused a batch's content (HTTP 400, 413
	// or 422); retrying the same bytes would fail the same way.
	ErrRejected = errors.New("server rejected the batch")
)

// HTTPError is a non-2xx answer from the server. It matches ErrRevoked or
// ErrRejected through errors.Is according to its status.
type HTTPError struct {
	Status int
	Msg    string
	Code   string // wire.Code* when the server gave one
	Seq    uint64 // the offending record for wire.CodeBadRecord
}

func (e *HTTPError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("server: HTTP %d (%s): %s", e.Status, e.Code, e.Msg)
	}
	return fmt.Sprintf("server: HTTP %d: %s", e.Status, e.Msg)
}

// Is classifies the status and code for errors.Is.
func (e *HTTPError) Is(target error) bool {
	switch target {
	case ErrRevoked:
		return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
	case ErrRejected:
		if e.Code == wire.CodeStoreUnavailable {
			return false
		}
		return e.Status == http.StatusBadRequest || e.Status == http.StatusRequestEntityTooLarge ||
			e.Status == http.StatusUnprocessableEntity
	case ErrBatchTooLarge:
		return e.Status == http.StatusRequestEntityTooLarge || e.Code == wire.CodeTooLarge
	}
	return false
}

func newHTTPError(status int, body []byte) *HTTPError {
	he := &HTTPError{Status: status, Msg: errorText(body)}
	var we wire.Error
	if json.Unmarshal(body, &we) == nil {
		he.Code, he.Seq = we.Code, we.Seq
	}
	return he
}

// Retryable reports whether err is worth retrying later: network failures,
// timeouts and server-side errors, but not revocation or rejection.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, ErrRevoked) || errors.Is(err, ErrRejected) {
		return false
	}
	return !errors.Is(err, context.Canceled)
}

// ClientOptions configure a Client. Zero values take the defaults.
type ClientOptions struct {
	// Endpoints are tried in order, earlier ones preferred; default: the
	// list stored in the data dir (EndpointsFile), else the identity's
	// server, direct.
	Endpoints []Endpoint
	// RequestTimeout bounds one request; default 60 s.
	RequestTimeout time.Duration
	// MinBackoff and MaxBackoff bound retry delays; defaults 500 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// ProbeInterval caps the backoff between probes of a down endpoint;
	// default 30 s.
	ProbeInterval time.Duration
}

// Client sends batches and heartbeats over mutual TLS with the identity
// stored by Enroll, over an ordered list of endpoints with fallback. It is
// safe for concurrent use.
type Client struct {
	id      Identity
	opts    ClientOptions
	tlsConf *tls.Config

	probeCtx    context.Context
	probeCancel context.CancelFunc
	probes      sync.WaitGroup

	mu     sync.Mutex
	eps    []*endpoint
	cur    int // index of the endpoint last used successfully
	status wire.ConnStatus
}

// NewClient loads the identity, key, certificate and CA from dataDir. The
// stored CA is the only root trusted for the server.
func NewClient(dataDir string, opts ClientOptions) (*Client, error) {
	id, err := LoadIdentity(dataDir)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dataDir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("client: read ca: %w", err)
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", CAFile, err)
	}
	if id.CAPin != "" && pki.Pin(ca) != id.CAPin {
		return nil, fmt.Errorf("client: %s: %w", CAFile, ErrPinMismatch)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dataDir, CertFile), filepath.Join(dataDir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("client: agent certificate: %w", err)
	}
	if len(opts.Endpoints) == 0 {
		if opts.Endpoints, err = LoadEndpoints(dataDir); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	if len(opts.Endpoints) == 0 {
		opts.Endpoints = []Endpoint{{URL: id.Server}}
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 60 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = 30 * time.Second
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	c := &Client{id: *id, opts: opts, tlsConf: &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      roots,
		NextProtos:   []string{"h2", "http/1.1"},
	}}
	eps, err := c.build(opts.Endpoints)
	if err != nil {
		return nil, err
	}
	c.eps = eps
	c.probeCtx, c.probeCancel = context.WithCancel(context.Background())
	c.status = wire.ConnStatus{State: StateDisconnected, Server: eps[0].base.String(), Via: eps[0].via()}
	return c, nil
}

func (c *Client) build(list []Endpoint) ([]*endpoint, error) {
	if len(list) == 0 {
		return nil, errors.New("client: no endpoints")
	}
	env := httpproxy.FromEnvironment()
	var eps []*endpoint
	for i, spec := range list {
		e, err := newEndpoint(spec, c.tlsConf, env, c.opts.RequestTimeout)
		if err != nil {
			return nil, fmt.Errorf("client: endpoint %d: %w", i, err)
		}
		e.bo = Backoff{Min: c.opts.MinBackoff, Max: c.opts.ProbeInterval}
		eps = append(eps, e)
	}
	return eps, nil
}

// SetEndpoints replaces the endpoint list at once (the server may push a new
// one). Requests in flight finish on the old endpoints; the next request
// uses the new list, starting from its first entry. The proxy environment
// is read again.
func (c *Client) SetEndpoints(list []Endpoint) error {
	eps, err := c.build(list)
	if err != nil {
		return err
	}
	c.mu.Lock()
	old := c.eps
	c.eps, c.cur = eps, 0
	c.mu.Unlock()
	for _, e := range old {
		e.tr.CloseIdleConnections()
	}
	return nil
}

// Endpoints returns the list in use.
func (c *Client) Endpoints() []Endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Endpoint, len(c.eps))
	for i, e := range c.eps {
		out[i] = e.spec
	}
	return out
}

// Identity returns the identity the client speaks for.
func (c *Client) Identity() Identity { return c.id }

// Status returns the connection state, last ack time and last error, the
// path in use and each endpoint's health. Credentials never appear in it.
func (c *Client) Status() wire.ConnStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status
	st.Endpoints = make([]wire.EndpointStatus, len(c.eps))
	for i, e := range c.eps {
		es := wire.EndpointStatus{Endpoint: e.spec.String(), State: e.state, InUse: i == c.cur && st.State != StateDisconnected,
			Failures: e.failures, LastError: e.lastErr}
		if e.fromEnv {
			es.Endpoint += " (HTTPS_PROXY " + redactURL(e.proxy) + ")"
		}
		if e.state == EndpointDown {
			es.NextRetry = e.retryAt.UTC().Format(time.RFC3339Nano)
		}
		st.Endpoints[i] = es
	}
	return st
}

// Revoked reports whether the server last refused the certificate.
func (c *Client) Revoked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status.State == StateRevoked
}

// Close stops probes and releases idle connections.
func (c *Client) Close() {
	c.probeCancel()
	c.probes.Wait()
	c.mu.Lock()
	eps := c.eps
	c.mu.Unlock()
	for _, e := range eps {
		e.tr.CloseIdleConnections()
	}
}

// gzipWriters keeps compressors between batches: each holds over a MiB of
// tables that would otherwise be allocated per batch.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return zw
}}

// batchBufs keeps the uncompressed batch buffer between batches.
var batchBufs = sync.Pool{New: func() any { return new([]byte) }}

// ErrBatchTooLarge means a batch exceeds wire's limits before sending.
var ErrBatchTooLarge = errors.New("batch exceeds wire limits")

// EncodeBatch returns the gzip-compressed JSON of b, checking wire's limits.
// Records' events are copied as they are: they are JSON the agent encoded
// itself and the spool checksummed, and re-validating them through
// json.Marshal (which compacts every RawMessage) was the agent's largest
// CPU cost. A damaged record still cannot poison a batch for good: the
// server rejects the batch and Deliver isolates the record.
func EncodeBatch(b wire.Batch) ([]byte, error) {
	if len(b.Records) > wire.MaxBatchRecords {
		return nil, fmt.Errorf("%w: %d records > %d", ErrBatchTooLarge, len(b.Records), wire.MaxBatchRecords)
	}
	size := 256
	for _, r := range b.Records {
		size += len(r.Event) + 40
	}
	bp := batchBufs.Get().(*[]byte)
	out := slices.Grow((*bp)[:0], size)
	defer func() {
		if cap(out) <= 16<<20 {
			*bp = out[:0]
			batchBufs.Put(bp)
		}
	}()
	bootID, _ := json.Marshal(b.BootID)
	out = append(out, `{"boot_id":`...)
	out = append(out, bootID...)
	out = append(out, `,"records":[`...)
	for i, r := range b.Records {
		if len(r.Event) == 0 {
			return nil, fmt.Errorf("encode batch: record %d has no event", r.Seq)
		}
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"seq":`...)
		out = strconv.AppendUint(out, r.Seq, 10)
		out = append(out, `,"event":`...)
		out = append(out, r.Event...)
		out = append(out, '}')
	}
	out = append(out, ']')
	if b.Loss != nil {
		raw, err := json.Marshal(b.Loss)
		if err != nil {
			return nil, fmt.Errorf("encode batch loss: %w", err)
		}
		out = append(append(out, `,"loss":`...), raw...)
	}
	if b.Status != nil {
		raw, err := json.Marshal(b.Status)
		if err != nil {
			return nil, fmt.Errorf("encode batch status: %w", err)
		}
		out = append(append(out, `,"status":`...), raw...)
	}
	out = append(out, '}')
	if len(out) > wire.MaxBatchDecompressed {
		return nil, fmt.Errorf("%w: %d bytes > %d uncompressed", ErrBatchTooLarge, len(out), wire.MaxBatchDecompressed)
	}
	var buf bytes.Buffer
	buf.Grow(len(out) / 4)
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&buf)
	if _, err := zw.Write(out); err != nil {
		return nil, fmt.Errorf("compress batch: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress batch: %w", err)
	}
	if buf.Len() > wire.MaxBatchCompressed {
		return nil, fmt.Errorf("%w: %d bytes > %d compressed", ErrBatchTooLarge, buf.Len(), wire.MaxBatchCompressed)
	}
	return buf.Bytes(), nil
}

// SendBatch makes one attempt to deliver b. Errors match ErrRevoked,
// ErrRejected or ErrBatchTooLarge, or are retryable (see Retryable).
func (c *Client) SendBatch(ctx context.Context, b wire.Batch) (wire.BatchResponse, error) {
	body, err := EncodeBatch(b)
	if err != nil {
		return wire.BatchResponse{}, err
	}
	var resp wire.BatchResponse
	if err := c.post(ctx, wire.PathEvents, body, true, &resp); err != nil {
		return wire.BatchResponse{}, err
	}
	if n := len(b.Records); n > 0 && resp.AckedSeq > b.Records[n-1].Seq {
		// An ack beyond what we sent would make us delete unsent data.
		return wire.BatchResponse{}, fmt.Errorf("server acked seq %d beyond the batch's last %d", resp.AckedSeq, b.Records[n-1].Seq)
	}
	c.mu.Lock()
	c.status.LastAck = time.Now().UTC().Format(time.RFC3339)
	c.mu.Unlock()
	return resp, nil
}

// Heartbeat makes one attempt to report status when there is nothing to send.
func (c *Client) Heartbeat(ctx context.Context, hb wire.Heartbeat) error {
	raw, err := json.Marshal(hb)
	if err != nil {
		return fmt.Errorf("encode heartbeat: %w", err)
	}
	return c.post(ctx, wire.PathHeartbeat, raw, false, nil)
}

// post sends on the preferred healthy endpoint and, when the path fails
// (connect, proxy, TLS, transport), at once on the next ones, each once.
// Server answers (HTTPError) end the walk: another path reaches the same
// server.
func (c *Client) post(ctx context.Context, path string, body []byte, gzipped bool, out any) error {
	var tried []*endpoint
	var err error
	for {
		e := c.pick(tried)
		if e == nil {
			return err
		}
		tried = append(tried, e)
		err = c.do(ctx, e, path, body, gzipped, out)
		c.record(e, err, false)
		if !linkFailure(err) || ctx.Err() != nil {
			return err
		}
	}
}

// linkFailure reports whether err says the path failed rather than the
// server or our own caller.
func linkFailure(err error) bool {
	var he *HTTPError
	return err != nil && !errors.As(err, &he) && !errors.Is(err, context.Canceled)
}

// pick returns the first endpoint, in order, not tried yet and not known
// down; failing that, the untried down endpoint due soonest. A preferred
// endpoint that is down and due for a retry is probed in the background
// instead of carrying traffic.
func (c *Client) pick(tried []*endpoint) *endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var soonest *endpoint
	for _, e := range c.eps {
		if slices.Contains(tried, e) {
			continue
		}
		if e.state != EndpointDown {
			return e
		}
		if !e.probing && !now.Before(e.retryAt) && c.probeCtx.Err() == nil {
			e.probing = true
			c.probes.Add(1)
			go c.runProbe(e)
		}
		if soonest == nil || e.retryAt.Before(soonest.retryAt) {
			soonest = e
		}
	}
	return soonest
}

func (c *Client) runProbe(e *endpoint) {
	defer c.probes.Done()
	err := e.probe(c.probeCtx)
	c.mu.Lock()
	e.probing = false
	c.mu.Unlock()
	if c.probeCtx.Err() != nil {
		return
	}
	c.record(e, err, true)
}

// Probe checks every endpoint now (connect, CONNECT, mutual TLS handshake)
// and records their health; it returns the health as Status does.
func (c *Client) Probe(ctx context.Context) []wire.EndpointStatus {
	c.mu.Lock()
	eps := slices.Clone(c.eps)
	c.mu.Unlock()
	for _, e := range eps {
		c.record(e, e.probe(ctx), true)
	}
	return c.Status().Endpoints
}

func (c *Client) do(ctx context.Context, e *endpoint, path string, body []byte, gzipped bool, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base.JoinPath(path).String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if gzipped {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		var pe *ProxyError
		if errors.As(err, &pe) {
			return fmt.Errorf("post %s: %w", path, pe)
		}
		return fmt.Errorf("post %s via %s: %w", path, e.via(), err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("post %s: read response: %w", path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return newHTTPError(resp.StatusCode, rb)
	}
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			return fmt.Errorf("post %s: response: %w", path, err)
		}
	}
	return nil
}

// record updates e's health after a request (probe false) or a probe, and
// the connection status after a request. A probe's success only marks e up:
// traffic moves back to it on the next request, since pick prefers earlier
// endpoints.
func (c *Client) record(e *endpoint, err error, probe bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if errors.Is(err, context.Canceled) {
		// Our own shutdown says nothing about the link.
		return
	}
	var he *HTTPError
	up := err == nil || errors.As(err, &he)
	if up {
		// The server answered: the path works (the request may not have).
		e.state, e.lastErr, e.failures = EndpointUp, "", 0
		e.bo.Reset()
	} else {
		e.state, e.lastErr = EndpointDown, err.Error()
		e.failures++
		e.retryAt = time.Now().Add(e.bo.Next())
	}
	idx := slices.Index(c.eps, e)
	if probe || idx < 0 {
		return // a probe, or e was replaced by SetEndpoints meanwhile
	}
	if !up {
		c.status.State, c.status.LastError = StateDisconnected, err.Error()
		return
	}
	c.cur = idx
	c.status.Server, c.status.Via = e.base.String(), e.via()
	switch {
	case err == nil:
		c.status.State, c.status.LastError = StateConnected, ""
	case errors.Is(err, ErrRevoked):
		c.status.State, c.status.LastError = StateRevoked, err.Error()
	default:
		c.status.State, c.status.LastError = StateConnected, err.Error()
	}
}

// Backoff yields exponentially growing delays with full jitter, so a fleet
// of agents coming back after a server outage does not arrive in lockstep.
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next returns the delay before the next retry.
func (b *Backoff) Next() time.Duration {
	ceil := b.Min << min(b.n, 30)
	if ceil <= 0 || ceil > b.Max {
		ceil = b.Max
	} else {
		b.n++
	}
	// Half fixed, half random: never zero, never above ceil.
	return ceil/2 + rand.N(ceil/2+1)
}

// Reset starts the sequence again after a success.
func (b *Backoff) Reset() { b.n = 0 }

// DeliverResult is the outcome of Deliver.
type DeliverResult struct {
	// AckedSeq is the highest seq the spool may acknowledge: stored by the
	// server, or rejected and skipped.
	AckedSeq   uint64
	Stored     int
	Duplicates int
	// Rejected lists the seqs the server refused one by one; they are lost
	// and must be reported as such.
	Rejected []uint64
	// RejectedErrs holds the server's reason for each rejected seq.
	RejectedErrs []string
	// Retries counts failed attempts that were retried.
	Retries int
}

// Deliver sends b until the server acknowledges it: retryable failures are
// retried with backoff; a rejected batch is split in halves to isolate the
// bad records, which are skipped and listed; revocation returns ErrRevoked
// at once. It returns early with ctx's error, reporting what was acked so far.
func (c *Client) Deliver(ctx context.Context, b wire.Batch) (DeliverResult, error) {
	var res DeliverResult
	bo := &Backoff{Min: c.opts.MinBackoff, Max: c.opts.MaxBackoff}
	err := c.deliver(ctx, b, &res, bo)
	return res, err
}

func (c *Client) deliver(ctx context.Context, b wire.Batch, res *DeliverResult, bo *Backoff) error {
	for {
		resp, err := c.SendBatch(ctx, b)
		if err == nil {
			bo.Reset()
			// A batch without records acknowledges nothing: the server's
			// watermark may describe data this spool no longer has.
			if n := len(b.Records); n > 0 {
				res.AckedSeq = max(res.AckedSeq, min(resp.AckedSeq, b.Records[n-1].Seq))
			}
			res.Stored += resp.Stored
			res.Duplicates += resp.Duplicates
			return nil
		}
		switch {
		case errors.Is(err, ErrRevoked):
			return err
		case errors.Is(err, ErrRejected) || errors.Is(err, ErrBatchTooLarge):
			n := len(b.Records)
			if n == 0 {
				// Only loss/status rode on this batch: nothing to skip.
				return err
			}
			// The server named the poisoned record: drop just it and
			// resend the rest (the server stored nothing of this batch,
			// and drops duplicates anyway).
			var he *HTTPError
			if errors.As(err, &he) && he.Code == wire.CodeBadRecord && n > 1 {
				if i := indexSeq(b.Records, he.Seq); i >= 0 {
					res.Rejected = append(res.Rejected, he.Seq)
					res.RejectedErrs = append(res.RejectedErrs, err.Error())
					rest := b
					rest.Records = append(append(make([]wire.Record, 0, n-1), b.Records[:i]...), b.Records[i+1:]...)
					if err := c.deliver(ctx, rest, res, bo); err != nil {
						return err
					}
					res.AckedSeq = max(res.AckedSeq, he.Seq)
					return nil
				}
			}
			if n == 1 {
				res.Rejected = append(res.Rejected, b.Records[0].Seq)
				res.RejectedErrs = append(res.RejectedErrs, err.Error())
				res.AckedSeq = max(res.AckedSeq, b.Records[0].Seq)
				return nil
			}
			first, second := b, b
			first.Records, second.Records = b.Records[:n/2], b.Records[n/2:]
			second.Loss, second.Status = nil, nil
			if err := c.deliver(ctx, first, res, bo); err != nil {
				return err
			}
			return c.deliver(ctx, second, res, bo)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res.Retries++
		t := time.NewTimer(bo.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func indexSeq(rs []wire.Record, seq uint64) int {
	for i, r := range rs {
		if r.Seq == seq {
			return i
		}
	}
	return -1
}
