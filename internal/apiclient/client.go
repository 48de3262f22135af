// Package apiclient is the Go client of Mamori's REST API, used by the
// `mamori` CLI verbs and by tests.
//
// The trap: the server's certificate is signed by Mamori's own CA, not a
// public one, so a client must be given that CA (FromDataDir reads it from the
// server's data directory); without it TLS verification fails, and turning
// verification off would hand the API key to anyone in the middle.
package apiclient

import (
	"bufio"
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
	"strconv"
	"strings"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/server/api"
)

// Client calls one Mamori server with one API key. It is safe for concurrent use.
type Client struct {
	base string
	key  string
	hc   *http.Client
}

// Error is a non-2xx answer of the server.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("server: %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("server: %s (%d)", e.Message, e.Status)
}

// New returns a client of the server at baseURL (https://host:port) using
// key; caPEM is the CA that signed the server certificate (nil: system roots).
func New(baseURL, key string, caPEM []byte) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("server url %q: want https://HOST:PORT", baseURL)
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return nil, errors.New("api key: empty")
	}
	if strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, errors.New("api key: not a key (has spaces or line breaks; is this the right file?)")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("ca: no PEM certificate found")
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &Client{base: u.String(), key: key, hc: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}, nil
}

// serverInfo mirrors the server's server.json.
type serverInfo struct {
	URL            string `json:"url"`
	CAFile         string `json:"ca_file"`
	AdminTokenFile string `json:"admin_token_file"`
}

// FromDataDir returns an admin client of the server whose data directory is
// dir, reading its URL, CA and admin key from the files the server wrote there.
func FromDataDir(dir string) (*Client, error) {
	b, err := os.ReadFile(filepath.Join(dir, "server.json"))
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w (has the server been started there?)", dir, err)
	}
	var info serverInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("data dir %s: server.json: %w", dir, err)
	}
	rel := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	return FromFiles(info.URL, rel(info.AdminTokenFile), rel(info.CAFile))
}

// FromFiles returns a client of baseURL with the key read from credFile and,
// when caFile is not empty, the server's CA read from caFile.
func FromFiles(baseURL, credFile, caFile string) (*Client, error) {
	key, err := os.ReadFile(credFile)
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	var ca []byte
	if caFile != "" {
		if ca, err = os.ReadFile(caFile); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
	}
	return New(baseURL, string(key), ca)
}

// BaseURL returns the server URL this client calls.
func (c *Client) BaseURL() string { return c.base }

func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	resp, err := c.send(ctx, method, path, q, in, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, q url.Values, in any, accept string) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", accept)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		e := &Error{Status: resp.StatusCode}
		var ae api.Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &ae) == nil && ae.Error != "" {
			e.Code, e.Message = ae.Code, ae.Error
		} else {
			e.Message = strings.TrimSpace(string(b))
		}
		return nil, e
	}
	return resp, nil
}

func tenantQuery(tenant string) url.Values {
	if tenant == "" {
		return nil
	}
	return url.Values{"tenant": {tenant}}
}

// CreateToken creates a one-time enrollment token.
func (c *Client) CreateToken(ctx context.Context, req api.TokenRequest) (api.TokenResponse, error) {
	var out api.TokenResponse
	err := c.do(ctx, "POST", api.Prefix+"/tokens", nil, req, &out)
	return out, err
}

// CreateKey creates an API key.
func (c *Client) CreateKey(ctx context.Context, req api.KeyRequest) (api.KeyResponse, error) {
	var out api.KeyResponse
	err := c.do(ctx, "POST", api.Prefix+"/keys", nil, req, &out)
	return out, err
}

// Hosts lists the hosts of the key's tenant (or tenant, for a root admin).
func (c *Client) Hosts(ctx context.Context, tenant string) ([]api.Host, error) {
	var out api.HostsResponse
	err := c.do(ctx, "GET", api.Prefix+"/hosts", tenantQuery(tenant), nil, &out)
	return out.Hosts, err
}

// Host returns one host with its status and gaps.
func (c *Client) Host(ctx context.Context, id, tenant string) (api.Host, error) {
	var out api.Host
	err := c.do(ctx, "GET", api.Prefix+"/hosts/"+url.PathEscape(id), tenantQuery(tenant), nil, &out)
	return out, err
}

// RevokeHost revokes a host's certificate.
func (c *Client) RevokeHost(ctx context.Context, id, tenant string) (api.Host, error) {
	var out api.Host
	err := c.do(ctx, "POST", api.Prefix+"/hosts/"+url.PathEscape(id)+"/revoke", tenantQuery(tenant), nil, &out)
	return out, err
}

// EventFilter selects events; zero fields do not filter.
type EventFilter struct {
	Tenant   string
	From, To time.Time
	Hosts    []string
	Types    []string
	Where    []string // conditions in query.ParseCondition syntax
	Limit    int
	Desc     bool
}

func (f EventFilter) values() url.Values {
	q := url.Values{}
	if f.Tenant != "" {
		q.Set("tenant", f.Tenant)
	}
	if !f.From.IsZero() {
		q.Set("from", f.From.UTC().Format(time.RFC3339Nano))
	}
	if !f.To.IsZero() {
		q.Set("to", f.To.UTC().Format(time.RFC3339Nano))
	}
	q["host"], q["type"], q["where"] = f.Hosts, f.Types, f.Where
	for _, k := range []string{"host", "type", "where"} {
		if len(q[k]) == 0 {
			delete(q, k)
		}
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Desc {
		q.Set("order", "desc")
	}
	return q
}

// Events returns the events matching f.
func (c *Client) Events(ctx context.Context, f EventFilter) ([]schema.Event, error) {
	var out api.EventsResponse
	err := c.do(ctx, "GET", api.Prefix+"/events", f.values(), nil, &out)
	return out.Events, err
}

// StreamEvents calls fn for each event matching f as the server streams them
// (NDJSON); an error from fn stops the stream and is returned.
func (c *Client) StreamEvents(ctx context.Context, f EventFilter, fn func(schema.Event) error) error {
	resp, err := c.send(ctx, "GET", api.Prefix+"/events", f.values(), nil, api.NDJSON)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var ev schema.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("event stream: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("event stream: %w", err)
	}
	return nil
}

// Tree returns a process with its ancestors, descendants and events.
func (c *Client) Tree(ctx context.Context, entityID, tenant string) (api.Tree, error) {
	var out api.Tree
	err := c.do(ctx, "GET", api.Prefix+"/processes/"+url.PathEscape(entityID)+"/tree", tenantQuery(tenant), nil, &out)
	return out, err
}

// Audit returns the newest audit entries, newest first.
func (c *Client) Audit(ctx context.Context, tenant string, limit int) ([]api.AuditEntry, error) {
	q := tenantQuery(tenant)
	if limit > 0 {
		if q == nil {
			q = url.Values{}
		}
		q.Set("limit", strconv.Itoa(limit))
	}
	var out api.AuditResponse
	err := c.do(ctx, "GET", api.Prefix+"/audit", q, nil, &out)
	return out.Entries, err
}

// OpenAPI returns the server's OpenAPI document.
func (c *Client) OpenAPI(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.do(ctx, "GET", api.Prefix+"/openapi.json", nil, nil, &out)
	return out, err
}
