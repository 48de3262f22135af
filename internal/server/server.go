// Package server is Mamori's server: it enrolls agents, ingests their
// batches over mutual TLS, stores events, and serves the REST API the CLI and
// console use. One TLS listener serves all three: agent routes demand a
// client certificate signed by the server's CA, API routes a bearer key.
//
// The trap: an agent's identity and tenant come only from its verified
// certificate, and a batch is acknowledged only after the event store has
// made it durable — the agent deletes its spool on that acknowledgement.
package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mamori-edr/mamori/internal/pki"
	"github.com/mamori-edr/mamori/internal/store"
)

// RootTenant is the provider tenant created on first start; its admins may
// act on every tenant.
const RootTenant = "default"

// Files the server keeps in its data directory besides the CA.
const (
	AdminTokenFile = "admin.token"
	InfoFile       = "server.json"
)

// Options configure a Server. Zero values take the documented defaults.
type Options struct {
	DataDir string // required
	Listen  string // default "127.0.0.1:8443"
	// Hostnames are extra DNS names or IPs for the server certificate, so
	// agents on other hosts can reach it by them.
	Hostnames []string
	// EventEngine selects the embedded event store: "sqlite" (default) or "duckdb".
	EventEngine string
	Logger      *slog.Logger
	// OpenEvents opens the event store; tests may replace it. Nil means the
	// engine named by EventEngine in DataDir.
	OpenEvents func(dir string) (store.EventStore, error)
	OpenState  func(dir string) (store.StateStore, error)
}

// Info is written to DataDir/server.json so CLI verbs given --data find the server.
type Info struct {
	URL            string `json:"url"`
	CAFile         string `json:"ca_file"`
	AdminTokenFile string `json:"admin_token_file"`
	CAPin          string `json:"ca_pin"`
}

func (o *Options) validate() error {
	if o.DataDir == "" {
		return errors.New("options: data: a data directory is required")
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:8443"
	}
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		return fmt.Errorf("options: listen %q: %w", o.Listen, err)
	}
	if o.EventEngine == "" {
		o.EventEngine = DefaultEventEngine
	}
	if _, ok := eventEngines[o.EventEngine]; !ok && o.OpenEvents == nil {
		return fmt.Errorf("options: event engine %q: unknown (have %s)", o.EventEngine, strings.Join(EventEngines(), ", "))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Server is a running Mamori server.
type Server struct {
	opts   Options
	log    *slog.Logger
	ca     *pki.CA
	events store.EventStore
	state  store.StateStore
	http   *http.Server
	ln     net.Listener
	info   Info

	ingestMu  sync.Mutex
	hostLocks map[string]*hostState

	acts actionHub // wakes action long polls
}

type hostState struct {
	mu        sync.Mutex
	loaded    bool
	watermark uint64
}

// New prepares the data directory (CA, admin key, stores) and binds the
// listener, so the address is known when New returns.
func New(opts Options) (*Server, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "server"), hostLocks: map[string]*hostState{}}
	ca, err := pki.LoadOrCreateCA(opts.DataDir)
	if err != nil {
		return nil, err
	}
	s.ca = ca
	certPath, keyPath, err := ca.EnsureServerCert(opts.DataDir, opts.Hostnames)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	cert.Certificate = append(cert.Certificate, ca.Cert.Raw)

	openState := opts.OpenState
	if openState == nil {
		openState = openSQLiteState
	}
	if s.state, err = openState(opts.DataDir); err != nil {
		return nil, fmt.Errorf("state store: %w", err)
	}
	openEvents := opts.OpenEvents
	if openEvents == nil {
		openEvents = eventEngines[opts.EventEngine]
	}
	if s.events, err = openEvents(opts.DataDir); err != nil {
		s.state.Close()
		return nil, fmt.Errorf("event store (%s): %w", opts.EventEngine, err)
	}
	if err := s.bootstrap(); err != nil {
		s.closeStores()
		return nil, err
	}

	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("listen %s: %w", opts.Listen, err)
	}
	s.ln = ln
	s.info = Info{URL: "https://" + urlHost(ln.Addr()), CAFile: pki.CACertFile, AdminTokenFile: AdminTokenFile, CAPin: ca.Pin()}
	infoJSON, _ := json.MarshalIndent(s.info, "", "  ")
	if err := pki.WriteFile(filepath.Join(opts.DataDir, InfoFile), append(infoJSON, '\n')); err != nil {
		ln.Close()
		s.closeStores()
		return nil, fmt.Errorf("write %s: %w", InfoFile, err)
	}

	tlsCfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
		NextProtos:   []string{"h2", "http/1.1"},
	}
	s.http = &http.Server{
		Handler:           s.routes(),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		WriteTimeout:      5 * time.Minute,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.With("source", "http").Handler(), slog.LevelWarn),
	}
	s.http.RegisterOnShutdown(s.acts.stop)
	return s, nil
}

// Addr is the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Info returns what CLI verbs need to reach this server.
func (s *Server) Info() Info { return s.info }

// Run serves until ctx is cancelled, then drains in-flight requests (up to
// 15 s) and closes the stores.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.ServeTLS(s.ln, "", "") }()
	s.log.Info("serving", "url", s.info.URL, "event_engine", s.opts.EventEngine, "data", s.opts.DataDir)
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		s.log.Info("shutting down: draining requests")
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err = s.http.Shutdown(sctx)
		cancel()
		<-errc
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if cerr := s.closeStores(); err == nil {
		err = cerr
	}
	s.log.Info("stopped")
	return err
}

func (s *Server) closeStores() error {
	var errs []error
	if s.events != nil {
		errs = append(errs, s.events.Close())
	}
	if s.state != nil {
		errs = append(errs, s.state.Close())
	}
	return errors.Join(errs...)
}

// bootstrap creates the root tenant and the admin key on first start.
func (s *Server) bootstrap() error {
	ctx := context.Background()
	if err := s.state.PutTenant(ctx, store.Tenant{ID: RootTenant, Name: "Default", Created: time.Now().UTC()}); err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("create root tenant: %w", err)
	}
	path := filepath.Join(s.opts.DataDir, AdminTokenFile)
	b, err := os.ReadFile(path)
	var key string
	switch {
	case err == nil:
		key = strings.TrimSpace(string(b))
	case errors.Is(err, os.ErrNotExist):
		key = "mak_" + randomToken(32)
		if err := pki.WriteFile(path, []byte(key+"\n")); err != nil {
			return fmt.Errorf("write admin credential: %w", err)
		}
		s.log.Info("created admin credential", "file", path)
	default:
		return fmt.Errorf("read admin credential: %w", err)
	}
	h := hashSecret(key)
	if _, err := s.state.GetAPIKey(ctx, h); errors.Is(err, store.ErrNotFound) {
		return s.state.PutAPIKey(ctx, store.APIKey{Hash: h, Tenant: RootTenant, Name: "admin", Role: RoleAdmin, Created: time.Now().UTC()})
	} else if err != nil {
		return fmt.Errorf("look up admin credential: %w", err)
	}
	return nil
}

func urlHost(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
