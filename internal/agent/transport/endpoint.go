package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mamori-edr/mamori/internal/pki"
	"golang.org/x/net/http/httpproxy"
)

// EndpointsFile holds the agent's ordered endpoint list (mode 0600: proxy
// credentials live in it).
const EndpointsFile = "endpoints.json"

// Endpoint is one way to reach the server: a server URL, reached directly
// (honouring HTTPS_PROXY and NO_PROXY as Go's http.ProxyFromEnvironment
// does) or through an explicit HTTP CONNECT proxy.
type Endpoint struct {
	// URL is the server's base URL, https://host:port.
	URL string `json:"url"`
	// Proxy is an HTTP CONNECT proxy, http://[user:pass@]host:port; empty
	// means direct.
	Proxy string `json:"proxy,omitempty"`
}

// ErrProxyRefused means a proxy answered CONNECT with something other than
// 200; the server was never reached.
var ErrProxyRefused = errors.New("proxy refused the tunnel")

// ProxyError is a proxy's refusal of CONNECT (407, 403, 502...). It matches
// ErrProxyRefused, never ErrRevoked or ErrRejected: the server said nothing.
type ProxyError struct {
	Proxy  string // host:port of the proxy, without credentials
	Target string // host:port asked for
	Status int
	Msg    string // the proxy's reason and page text, shortened
}

func (e *ProxyError) Error() string {
	if e.Status == http.StatusProxyAuthRequired || e.Status == http.StatusUnauthorized {
		// tinyproxy answers a bad password with 401, others with 407.
		return fmt.Sprintf("proxy %s refused CONNECT %s: HTTP %d: proxy credentials rejected: %s", e.Proxy, e.Target, e.Status, e.Msg)
	}
	return fmt.Sprintf("proxy %s refused CONNECT %s: HTTP %d: %s", e.Proxy, e.Target, e.Status, e.Msg)
}

// Is matches ErrProxyRefused.
func (e *ProxyError) Is(target error) bool { return target == ErrProxyRefused }

// ParseEndpoint reads one endpoint spec:
//
//	https://server:8443                                  direct
//	direct:https://server:8443                           direct
//	proxy:http://user:pass@proxy:3128@https://server:8443 through a CONNECT proxy
//
// In the proxy form the server URL starts at the last "@https://".
// Credentials may be percent-encoded.
func ParseEndpoint(spec string) (Endpoint, error) {
	s := strings.TrimSpace(spec)
	var ep Endpoint
	switch {
	case strings.HasPrefix(s, "direct:"):
		ep.URL = strings.TrimPrefix(s, "direct:")
	case strings.HasPrefix(s, "proxy:"):
		rest := strings.TrimPrefix(s, "proxy:")
		i := strings.LastIndex(rest, "@https://")
		if i < 0 {
			return Endpoint{}, errors.New("endpoint: proxy form is proxy:http://[user:pass@]host:port@https://server:port")
		}
		ep.Proxy, ep.URL = rest[:i], rest[i+1:]
	case strings.HasPrefix(s, "https://"):
		ep.URL = s
	default:
		return Endpoint{}, errors.New("endpoint: want direct:https://server:port or proxy:http://[user:pass@]host:port@https://server:port")
	}
	if err := ep.validate(); err != nil {
		return Endpoint{}, err
	}
	return ep, nil
}

func (ep Endpoint) validate() error {
	u, err := parseServerURL(ep.URL)
	if err != nil {
		return fmt.Errorf("endpoint: %w", err)
	}
	if u.User != nil {
		return errors.New("endpoint: server url must not carry credentials")
	}
	if ep.Proxy != "" {
		if _, err := parseProxyURL(ep.Proxy); err != nil {
			return fmt.Errorf("endpoint: %w", err)
		}
	}
	return nil
}

// String names the endpoint with any proxy credentials left out.
func (ep Endpoint) String() string {
	if ep.Proxy == "" {
		return "direct " + ep.URL
	}
	p, err := parseProxyURL(ep.Proxy)
	if err != nil {
		return "proxy (invalid) " + ep.URL
	}
	return "proxy " + redactURL(p) + " to " + ep.URL
}

func parseProxyURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url's own error would echo the password.
		return nil, errors.New("proxy url does not parse")
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("proxy url: scheme %q: want http", u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return nil, errors.New("proxy url: want http://[user:pass@]host:port")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, errors.New("proxy url: no path, query or fragment allowed")
	}
	return u, nil
}

// redactURL drops credentials: "http://host:port".
func redactURL(u *url.URL) string { return u.Scheme + "://" + u.Host }

// LoadEndpoints reads the list stored in dataDir; no file means none.
func LoadEndpoints(dataDir string) ([]Endpoint, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, EndpointsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read endpoints: %w", err)
	}
	var f struct {
		Endpoints []Endpoint `json:"endpoints"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("endpoints %s: %w", EndpointsFile, err)
	}
	for i, ep := range f.Endpoints {
		if err := ep.validate(); err != nil {
			return nil, fmt.Errorf("endpoints %s: entry %d: %w", EndpointsFile, i, err)
		}
	}
	return f.Endpoints, nil
}

// SaveEndpoints validates eps and stores them in dataDir, mode 0600.
func SaveEndpoints(dataDir string, eps []Endpoint) error {
	for i, ep := range eps {
		if err := ep.validate(); err != nil {
			return fmt.Errorf("save endpoints: entry %d: %w", i, err)
		}
	}
	b, err := json.MarshalIndent(struct {
		Endpoints []Endpoint `json:"endpoints"`
	}{eps}, "", "  ")
	if err != nil {
		return fmt.Errorf("save endpoints: %w", err)
	}
	if err := pki.WriteFile(filepath.Join(dataDir, EndpointsFile), append(b, '\n')); err != nil {
		return fmt.Errorf("save endpoints: %w", err)
	}
	return nil
}

// Endpoint health states reported in wire.EndpointStatus.State.
const (
	EndpointUnknown = "unknown"
	EndpointUp      = "up"
	EndpointDown    = "down"
)

// endpoint is an Endpoint ready to use: its own connection pool and health.
// Health fields are guarded by the owning Client's mu.
type endpoint struct {
	spec    Endpoint
	base    *url.URL
	proxy   *url.URL // nil: no proxy
	fromEnv bool     // proxy taken from HTTPS_PROXY
	tr      *http.Transport
	hc      *http.Client
	tlsConf *tls.Config

	state    string
	lastErr  string
	failures int
	retryAt  time.Time
	bo       Backoff
	probing  bool
}

// via names the path for status, without credentials.
func (e *endpoint) via() string {
	switch {
	case e.proxy == nil:
		return "direct"
	case e.fromEnv:
		return "direct via HTTPS_PROXY " + redactURL(e.proxy)
	}
	return "proxy " + redactURL(e.proxy)
}

// newEndpoint resolves spec (reading the proxy environment for a direct
// one) and builds its transport over tlsConf.
func newEndpoint(spec Endpoint, tlsConf *tls.Config, env *httpproxy.Config, timeout time.Duration) (*endpoint, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	base, _ := parseServerURL(spec.URL)
	e := &endpoint{spec: spec, base: base, tlsConf: tlsConf, state: EndpointUnknown}
	if spec.Proxy != "" {
		e.proxy, _ = parseProxyURL(spec.Proxy)
	} else if env != nil {
		p, err := env.ProxyFunc()(base)
		if err != nil {
			return nil, errors.New("endpoint: HTTPS_PROXY does not parse")
		}
		if p != nil {
			if p.Scheme != "http" {
				return nil, fmt.Errorf("endpoint: HTTPS_PROXY scheme %q: want http", p.Scheme)
			}
			if p.Port() == "" {
				p.Host = net.JoinHostPort(p.Hostname(), "80")
			}
			e.proxy, e.fromEnv = p, true
		}
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	if e.proxy != nil {
		proxy := e.proxy
		dial = func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialConnect(ctx, dialer, proxy, addr)
		}
	}
	e.tr = &http.Transport{
		TLSClientConfig:       tlsConf,
		ForceAttemptHTTP2:     true,
		DialContext:           dial,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   2,
		DisableCompression:    true,
	}
	e.hc = &http.Client{Transport: e.tr, Timeout: timeout}
	return e, nil
}

// probe makes a TCP (+CONNECT) connection and a mutual TLS handshake with
// the server through e, without sending a request.
func (e *endpoint) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addr := e.base.Host
	if e.base.Port() == "" {
		addr = net.JoinHostPort(e.base.Hostname(), "443")
	}
	conn, err := e.tr.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer conn.Close()
	conf := e.tlsConf.Clone()
	conf.ServerName = e.base.Hostname()
	tc := tls.Client(conn, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("probe: tls: %w", err)
	}
	return nil
}

// dialConnect opens a tunnel to addr through an HTTP proxy with CONNECT,
// sending Basic credentials from the proxy URL. TLS then runs inside the
// tunnel end to end: the proxy sees only ciphertext.
func dialConnect(ctx context.Context, d *net.Dialer, proxy *url.URL, addr string) (net.Conn, error) {
	conn, err := d.DialContext(ctx, "tcp", proxy.Host)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", proxy.Host, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	var pass string
	if proxy.User != nil {
		pass, _ = proxy.User.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(proxy.User.Username() + ":" + pass))
		req.Header.Set("Proxy-Authorization", "Basic "+cred)
	}
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy %s: send CONNECT: %w", proxy.Host, ctxErr(ctx, err))
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT response: %w", proxy.Host, ctxErr(ctx, err))
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
		conn.Close()
		msg := http.StatusText(resp.StatusCode)
		if _, text, ok := strings.Cut(resp.Status, " "); ok && text != "" {
			msg = text
		}
		if t := pageText(body); t != "" {
			msg += ": " + t
		}
		if pass != "" {
			msg = strings.ReplaceAll(msg, pass, "xxxxx")
		}
		return nil, &ProxyError{Proxy: proxy.Host, Target: addr, Status: resp.StatusCode, Msg: msg}
	}
	if !stop() {
		conn.Close()
		return nil, ctx.Err()
	}
	_ = conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		return &bufConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// bufConn keeps bytes the proxy sent right after its 200.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// pageText flattens a proxy's error page (often HTML) to one short line.
func pageText(body []byte) string {
	var b strings.Builder
	in := false
	for _, r := range string(body) {
		switch {
		case r == '<':
			in = true
			b.WriteByte(' ')
		case r == '>':
			in = false
		case !in:
			if r < 0x20 || r == 0x7f {
				r = ' '
			}
			b.WriteRune(r)
		}
	}
	s := strings.Join(strings.Fields(b.String()), " ")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return s
}
