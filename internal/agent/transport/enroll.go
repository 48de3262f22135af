// Package transport is the agent's link to the server: enrollment (trading a
// one-time token for a client certificate) and the mutual-TLS client that
// ships spooled batches and heartbeats.
//
// The trap: the server's certificate is never checked against the system
// roots. At enrollment it must chain to the CA whose public-key pin travels in
// the token; afterwards it must chain to the CA stored at enrollment. A
// network attacker with a certificate from any public CA gets nothing.
package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/mamori-edr/mamori/internal/pki"
	"github.com/mamori-edr/mamori/internal/version"
	"github.com/mamori-edr/mamori/internal/wire"
	"golang.org/x/net/http/httpproxy"
	"golang.org/x/sys/unix"
)

// Files kept in the agent's data directory, all mode 0600.
const (
	IdentityFile = "identity.json"
	KeyFile      = "agent.key"
	CertFile     = "agent.crt"
	CAFile       = "ca.crt"
)

// Sentinel errors callers test with errors.Is.
var (
	// ErrNotEnrolled means the data directory holds no identity.
	ErrNotEnrolled = errors.New("agent not enrolled")
	// ErrPinMismatch means the server's CA is not the one named by the token.
	ErrPinMismatch = errors.New("server CA does not match the enrollment token's pin")
	// ErrEnrollRefused means the server rejected the enrollment request.
	ErrEnrollRefused = errors.New("enrollment refused by server")
)

// Identity is what enrollment leaves in the data directory.
type Identity struct {
	HostID   string    `json:"host_id"`
	Tenant   string    `json:"tenant"`
	Server   string    `json:"server"` // base URL, e.g. https://10.0.0.1:8443
	CAPin    string    `json:"ca_pin"`
	Enrolled time.Time `json:"enrolled"`
}

// HostInfo describes this host to the server at enrollment.
type HostInfo struct {
	Hostname     string
	OS           string
	Kernel       string
	AgentVersion string
	MachineID    string
}

// LocalHostInfo reads this host's name, kernel release and machine id.
func LocalHostInfo() HostInfo {
	h := HostInfo{OS: runtime.GOOS + "/" + runtime.GOARCH, AgentVersion: version.Version}
	h.Hostname, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		h.MachineID = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				h.OS = strings.Trim(v, `"`) + " " + runtime.GOARCH
			}
		}
	}
	return h
}

// LoadIdentity reads the identity stored in dataDir; it wraps ErrNotEnrolled
// when there is none.
func LoadIdentity(dataDir string) (*Identity, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, IdentityFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s in %s", ErrNotEnrolled, IdentityFile, dataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, fmt.Errorf("identity %s: %w", IdentityFile, err)
	}
	if id.HostID == "" || id.Server == "" {
		return nil, fmt.Errorf("identity %s: host_id and server are required", IdentityFile)
	}
	return &id, nil
}

// EnrollOptions adjust Enroll.
type EnrollOptions struct {
	// Force enrolls again even when dataDir already holds an identity.
	Force bool
	// Timeout bounds the whole exchange; default 30 s.
	Timeout time.Duration
	// Endpoints, when set, are the paths tried in order to reach the
	// server (see Endpoint); the next is tried when one cannot connect.
	// Default: serverURL, direct (honouring HTTPS_PROXY and NO_PROXY).
	Endpoints []Endpoint
}

// Enroll trades a one-time token for a client certificate. The private key is
// created here and never leaves dataDir; the server's chain must lead to the
// CA whose pin is in the token. With an existing identity it returns that
// identity and does nothing, unless opts.Force is set.
func Enroll(ctx context.Context, serverURL, token, dataDir string, host HostInfo, opts EnrollOptions) (*Identity, error) {
	if !opts.Force {
		id, err := LoadIdentity(dataDir)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, ErrNotEnrolled) {
			return nil, err
		}
	}
	_, pin, err := wire.ParseToken(token)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	base, err := parseServerURL(serverURL)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("enroll: data dir: %w", err)
	}
	if host.Hostname == "" {
		host = LocalHostInfo()
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(host.Hostname)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	reqBody, err := json.Marshal(wire.EnrollRequest{
		Token: token, CSR: string(csrPEM), Hostname: host.Hostname, OS: host.OS,
		Kernel: host.Kernel, AgentVersion: host.AgentVersion, MachineID: host.MachineID,
	})
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	eps := opts.Endpoints
	if len(eps) == 0 {
		eps = []Endpoint{{URL: base.String()}}
	}
	env := httpproxy.FromEnvironment()
	var resp *http.Response
	for i, spec := range eps {
		u, err := parseServerURL(spec.URL)
		if err != nil {
			return nil, fmt.Errorf("enroll: endpoint %d: %w", i, err)
		}
		e, err := newEndpoint(spec, pinnedTLSConfig(pin, u.Hostname()), env, opts.Timeout)
		if err != nil {
			return nil, fmt.Errorf("enroll: endpoint %d: %w", i, err)
		}
		resp, err = enrollVia(ctx, e, reqBody)
		if err == nil {
			break
		}
		if errors.Is(err, ErrPinMismatch) || ctx.Err() != nil || i == len(eps)-1 {
			return nil, err
		}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("enroll: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: HTTP %d: %s", ErrEnrollRefused, resp.StatusCode, errorText(body))
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal(body, &er); err != nil {
		return nil, fmt.Errorf("enroll: response: %w", err)
	}
	if er.HostID == "" || er.Cert == "" || er.CA == "" {
		return nil, errors.New("enroll: response lacks host_id, cert or ca")
	}
	// The CA handed back must be the pinned one, and our certificate must
	// chain to it and match our key; otherwise nothing is written.
	ca, err := pki.ParseCertPEM([]byte(er.CA))
	if err != nil {
		return nil, fmt.Errorf("enroll: returned ca: %w", err)
	}
	if pki.Pin(ca) != pin {
		return nil, fmt.Errorf("enroll: returned ca: %w", ErrPinMismatch)
	}
	cert, err := pki.ParseCertPEM([]byte(er.Cert))
	if err != nil {
		return nil, fmt.Errorf("enroll: returned certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("enroll: returned certificate does not chain to the pinned ca: %w", err)
	}
	if _, err := tls.X509KeyPair([]byte(er.Cert), keyPEM); err != nil {
		return nil, fmt.Errorf("enroll: returned certificate does not match our key: %w", err)
	}

	id := &Identity{HostID: er.HostID, Tenant: er.Tenant, Server: base.String(), CAPin: pin, Enrolled: time.Now().UTC()}
	idJSON, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	// identity.json is written last: its presence means the rest is complete.
	for _, f := range []struct {
		name string
		data []byte
	}{{KeyFile, keyPEM}, {CertFile, []byte(er.Cert)}, {CAFile, []byte(er.CA)}, {IdentityFile, append(idJSON, '\n')}} {
		if err := pki.WriteFile(filepath.Join(dataDir, f.name), f.data); err != nil {
			return nil, fmt.Errorf("enroll: write %s: %w", f.name, err)
		}
	}
	return id, nil
}

// enrollVia posts the enrollment request through one endpoint.
func enrollVia(ctx context.Context, e *endpoint, reqBody []byte) (*http.Response, error) {
	defer e.tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base.JoinPath(wire.PathEnroll).String(), bytes.NewReader(reqBody))
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		var pe *ProxyError
		switch {
		case errors.Is(err, ErrPinMismatch):
			return nil, fmt.Errorf("enroll %s: %w", e.base.Host, ErrPinMismatch)
		case errors.As(err, &pe):
			return nil, fmt.Errorf("enroll %s: %w", e.base.Host, pe)
		}
		return nil, fmt.Errorf("enroll %s via %s: %w", e.base.Host, e.via(), err)
	}
	return resp, nil
}

// parseServerURL accepts "https://host:port" (or a bare host:port) and
// refuses anything that would not be TLS.
func parseServerURL(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("server url is empty")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("server url %q: %w", s, err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("server url %q: scheme must be https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("server url %q: no host", s)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// pinnedTLSConfig trusts only a chain that contains a CA whose SPKI hash is
// pin and whose leaf is valid for serverName under that CA.
func pinnedTLSConfig(pin, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is done below against the pinned CA alone; the
		// standard verifier would consult the system roots.
		InsecureSkipVerify: true,
		NextProtos:         []string{"h2", "http/1.1"},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyPinned(raw, pin, serverName)
		},
	}
}

func verifyPinned(raw [][]byte, pin, serverName string) error {
	if len(raw) == 0 {
		return errors.New("server sent no certificate")
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("server certificate: %w", err)
		}
		certs = append(certs, c)
	}
	var ca *x509.Certificate
	for _, c := range certs {
		if c.IsCA && pki.Pin(c) == pin {
			ca = c
			break
		}
	}
	if ca == nil {
		return ErrPinMismatch
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: serverName, Roots: roots, Intermediates: inter}); err != nil {
		return fmt.Errorf("server certificate under the pinned ca: %w", err)
	}
	return nil
}

// errorText extracts wire.Error's message from a response body.
func errorText(body []byte) string {
	var e wire.Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	if s == "" {
		s = "(empty body)"
	}
	return s
}
