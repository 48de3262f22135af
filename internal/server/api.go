package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mamori-edr/mamori/internal/query"
	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/wire"
)

// API key roles.
const (
	RoleAdmin    = api.RoleAdmin
	RoleAnalyst  = api.RoleAnalyst
	RoleReadonly = api.RoleReadonly
)

var roleRank = map[string]int{RoleReadonly: 1, RoleAnalyst: 2, RoleAdmin: 3}

var tenantRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// route is one HTTP route; the OpenAPI test checks each is documented.
type route struct {
	method, path string
	role         string // "" = no API key; agent routes use certificates
	agent        bool   // needs a verified agent certificate
	handler      http.HandlerFunc
}

func (s *Server) routeTable() []route {
	return []route{
		{method: "POST", path: wire.PathEnroll, handler: s.handleEnroll},
		{method: "POST", path: wire.PathEvents, agent: true, handler: s.handleEvents},
		{method: "POST", path: wire.PathHeartbeat, agent: true, handler: s.handleHeartbeat},
		{method: "GET", path: api.Prefix + "/openapi.json", handler: s.handleOpenAPI},
		{method: "POST", path: api.Prefix + "/tokens", role: RoleAdmin, handler: s.handleCreateToken},
		{method: "POST", path: api.Prefix + "/keys", role: RoleAdmin, handler: s.handleCreateKey},
		{method: "GET", path: api.Prefix + "/hosts", role: RoleReadonly, handler: s.handleHosts},
		{method: "GET", path: api.Prefix + "/hosts/{id}", role: RoleReadonly, handler: s.handleHost},
		{method: "POST", path: api.Prefix + "/hosts/{id}/revoke", role: RoleAdmin, handler: s.handleRevoke},
		{method: "GET", path: api.Prefix + "/events", role: RoleReadonly, handler: s.handleQueryEvents},
		{method: "GET", path: api.Prefix + "/processes/{entity_id}/tree", role: RoleReadonly, handler: s.handleTree},
		{method: "GET", path: api.Prefix + "/audit", role: RoleAnalyst, handler: s.handleAudit},
		{method: "POST", path: wire.PathActionsPoll, agent: true, handler: s.handleActionPoll},
		{method: "POST", path: wire.PathActionsResult, agent: true, handler: s.handleActionResult},
		{method: "POST", path: api.Prefix + "/hosts/{id}/actions", role: RoleAnalyst, handler: s.handleCreateAction},
		{method: "GET", path: api.Prefix + "/hosts/{id}/actions", role: RoleReadonly, handler: s.handleHostActions},
		{method: "GET", path: api.Prefix + "/actions", role: RoleReadonly, handler: s.handleActions},
		{method: "GET", path: api.Prefix + "/actions/{id}", role: RoleReadonly, handler: s.handleAction},
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routeTable() {
		h := rt.handler
		switch {
		case rt.agent:
			h = s.agentAuth(h)
		case rt.role != "":
			h = s.apiAuth(rt.role, h)
		}
		mux.HandleFunc(rt.method+" "+rt.path, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIErr(w, errorf(http.StatusNotFound, "not_found", "no route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// apiAuth admits requests with a bearer key of at least the given role.
func (s *Server) apiAuth(role string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		authz := r.Header.Get("Authorization")
		key, ok := strings.CutPrefix(authz, "Bearer ")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mamori"`)
			writeAPIErr(w, errorf(http.StatusUnauthorized, "unauthenticated", "missing API key: send Authorization: Bearer <key>"))
			return
		}
		k, err := s.state.GetAPIKey(r.Context(), hashSecret(key))
		if errors.Is(err, store.ErrNotFound) {
			writeAPIErr(w, errorf(http.StatusUnauthorized, "unauthenticated", "unknown API key"))
			return
		} else if err != nil {
			writeAPIErr(w, fmt.Errorf("look up API key: %w", err))
			return
		}
		if roleRank[k.Role] < roleRank[role] {
			writeAPIErr(w, errorf(http.StatusForbidden, "forbidden", "role %s may not do this (needs %s)", k.Role, role))
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), keyKey, k)))
	}
}

func apiKeyOf(r *http.Request) store.APIKey { return r.Context().Value(keyKey).(store.APIKey) }

// tenantFor resolves the tenant a call acts on: the key's own, or any
// tenant when a root-tenant admin names one.
func tenantFor(k store.APIKey, requested string) (string, error) {
	if requested == "" || requested == k.Tenant {
		return k.Tenant, nil
	}
	if k.Tenant != RootTenant || k.Role != RoleAdmin {
		return "", errorf(http.StatusForbidden, "forbidden", "tenant %q: this key is scoped to tenant %q", requested, k.Tenant)
	}
	if !tenantRE.MatchString(requested) {
		return "", errorf(http.StatusBadRequest, "bad_request", "tenant %q: want lowercase letters, digits, - and _ (max 63)", requested)
	}
	return requested, nil
}

// queryParams checks that only known parameters are present, so a typo is
// an error rather than a silently ignored filter.
func queryParams(r *http.Request, known ...string) (url.Values, error) {
	q := r.URL.Query()
	for k := range q {
		ok := k == "tenant"
		for _, n := range known {
			ok = ok || k == n
		}
		if !ok {
			return nil, errorf(http.StatusBadRequest, "bad_request", "unknown query parameter %q", k)
		}
	}
	return q, nil
}

// scopedQuery checks the query parameters like queryParams and resolves the
// tenant the caller's key may act on (its own, or ?tenant= for root admins).
func scopedQuery(r *http.Request, known ...string) (url.Values, string, error) {
	q, err := queryParams(r, known...)
	if err != nil {
		return nil, "", err
	}
	tenant, err := tenantFor(apiKeyOf(r), q.Get("tenant"))
	if err != nil {
		return nil, "", err
	}
	return q, tenant, nil
}

const (
	maxTokenTTL  = 365 * 24 * time.Hour
	maxTokenUses = 10000
)

func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenRequest
	if err := decodeStrict(w, r, &req); err != nil {
		writeAPIErr(w, err)
		return
	}
	k := apiKeyOf(r)
	tenant, err := tenantFor(k, req.Tenant)
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	if req.TTLSeconds == 0 {
		req.TTLSeconds = 24 * 3600
	}
	if req.Uses == 0 {
		req.Uses = 1
	}
	switch {
	case req.TTLSeconds < 0 || time.Duration(req.TTLSeconds)*time.Second > maxTokenTTL:
		err = errorf(http.StatusBadRequest, "bad_request", "ttl_seconds %d: want 1..%d", req.TTLSeconds, int64(maxTokenTTL/time.Second))
	case req.Uses < 0 || req.Uses > maxTokenUses:
		err = errorf(http.StatusBadRequest, "bad_request", "uses %d: want 1..%d", req.Uses, maxTokenUses)
	case len(req.Note) > 256:
		err = errorf(http.StatusBadRequest, "bad_request", "note: longer than 256 bytes")
	}
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	ctx := r.Context()
	if err := s.ensureTenant(ctx, tenant); err != nil {
		writeAPIErr(w, err)
		return
	}
	secret := randomToken(24)
	now := time.Now().UTC()
	tok := store.EnrollToken{Hash: hashSecret(secret), Tenant: tenant, Created: now,
		ExpiresAt: now.Add(time.Duration(req.TTLSeconds) * time.Second), UsesLeft: req.Uses, Note: req.Note}
	// Audit first: an action that cannot be audited does not happen.
	if err := s.state.AppendAudit(ctx, store.AuditEntry{Time: now, Tenant: tenant, Actor: k.Name, Action: "token.create",
		Target: tok.Hash[:12], Detail: fmt.Sprintf("uses=%d expires=%s note=%q", tok.UsesLeft, tok.ExpiresAt.Format(time.RFC3339), tok.Note)}); err != nil {
		writeAPIErr(w, fmt.Errorf("audit: %w", err))
		return
	}
	if err := s.state.CreateEnrollToken(ctx, tok); err != nil {
		writeAPIErr(w, fmt.Errorf("store token: %w", err))
		return
	}
	writeJSON(w, http.StatusCreated, api.TokenResponse{Token: wire.FormatToken(secret, s.ca.Pin()), Tenant: tenant, Uses: tok.UsesLeft, ExpiresAt: tok.ExpiresAt})
}

func (s *Server) ensureTenant(ctx context.Context, id string) error {
	err := s.state.PutTenant(ctx, store.Tenant{ID: id, Name: id, Created: time.Now().UTC()})
	if err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("create tenant: %w", err)
	}
	return nil
}

func (s *Server) handleCreateKey(w http.ResponseWriter, r *http.Request) {
	var req api.KeyRequest
	if err := decodeStrict(w, r, &req); err != nil {
		writeAPIErr(w, err)
		return
	}
	k := apiKeyOf(r)
	tenant, err := tenantFor(k, req.Tenant)
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	if _, ok := roleRank[req.Role]; !ok {
		writeAPIErr(w, errorf(http.StatusBadRequest, "bad_request", "role %q: want admin, analyst or readonly", req.Role))
		return
	}
	if req.Name == "" || len(req.Name) > 128 {
		writeAPIErr(w, errorf(http.StatusBadRequest, "bad_request", "name: required, at most 128 bytes"))
		return
	}
	ctx := r.Context()
	if err := s.ensureTenant(ctx, tenant); err != nil {
		writeAPIErr(w, err)
		return
	}
	secret := "mak_" + randomToken(32)
	now := time.Now().UTC()
	if err := s.state.AppendAudit(ctx, store.AuditEntry{Time: now, Tenant: tenant, Actor: k.Name, Action: "key.create", Target: req.Name, Detail: "role=" + req.Role}); err != nil {
		writeAPIErr(w, fmt.Errorf("audit: %w", err))
		return
	}
	if err := s.state.PutAPIKey(ctx, store.APIKey{Hash: hashSecret(secret), Tenant: tenant, Name: req.Name, Role: req.Role, Created: now}); err != nil {
		writeAPIErr(w, fmt.Errorf("store key: %w", err))
		return
	}
	writeJSON(w, http.StatusCreated, api.KeyResponse{Key: secret, Tenant: tenant, Name: req.Name, Role: req.Role})
}

func toAPIHost(h store.Host) api.Host {
	out := api.Host{ID: h.ID, Tenant: h.Tenant, Hostname: h.Hostname, OS: h.OS, Kernel: h.Kernel, AgentVersion: h.AgentVersion,
		Enrolled: h.Enrolled, LastSeen: h.LastSeen, Revoked: h.Revoked}
	if h.Status != "" && json.Valid([]byte(h.Status)) {
		out.Status = json.RawMessage(h.Status)
	}
	return out
}

func (s *Server) handleHosts(w http.ResponseWriter, r *http.Request) {
	_, tenant, err := scopedQuery(r)
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	hosts, err := s.state.ListHosts(r.Context(), tenant)
	if err != nil {
		writeAPIErr(w, fmt.Errorf("list hosts: %w", err))
		return
	}
	out := api.HostsResponse{Hosts: make([]api.Host, 0, len(hosts))}
	for _, h := range hosts {
		out.Hosts = append(out.Hosts, toAPIHost(h))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleHost(w http.ResponseWriter, r *http.Request) {
	_, tenant, err := scopedQuery(r)
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	id := r.PathValue("id")
	h, err := s.state.GetHost(r.Context(), tenant, id)
	if err != nil {
		writeAPIErr(w, fmt.Errorf("host %q: %w", id, err))
		return
	}
	gaps, err := s.state.ListGaps(r.Context(), tenant, id)
	if err != nil {
		writeAPIErr(w, fmt.Errorf("list gaps: %w", err))
		return
	}
	out := toAPIHost(h)
	for _, g := range gaps {
		out.Gaps = append(out.Gaps, api.Gap{FirstSeq: g.FirstSeq, LastSeq: g.LastSeq, Reported: g.Reported, Reason: g.Reason})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	q, err := queryParams(r)
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	k := apiKeyOf(r)
	tenant, err := tenantFor(k, q.Get("tenant"))
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	id := r.PathValue("id")
	ctx := r.Context()
	h, err := s.state.GetHost(ctx, tenant, id)
	if err != nil {
		writeAPIErr(w, fmt.Errorf("host %q: %w", id, err))
		return
	}
	if err := s.state.AppendAudit(ctx, store.AuditEntry{Time: time.Now().UTC(), Tenant: tenant, Actor: k.Name, Action: "host.revoke", Target: id, Detail: "hostname=" + h.Hostname}); err != nil {
		writeAPIErr(w, fmt.Errorf("audit: %w", err))
		return
	}
	if err := s.state.RevokeHost(ctx, tenant, id); err != nil {
		writeAPIErr(w, fmt.Errorf("revoke host %q: %w", id, err))
		return
	}
	h.Revoked = true
	writeJSON(w, http.StatusOK, toAPIHost(h))
}

// parseEventQuery turns URL parameters into a store query.
func parseEventQuery(k store.APIKey, q url.Values) (store.EventQuery, error) {
	var eq store.EventQuery
	var err error
	if eq.Tenant, err = tenantFor(k, q.Get("tenant")); err != nil {
		return eq, err
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &eq.From}, {"to", &eq.To}} {
		if v := q.Get(p.name); v != "" {
			if *p.dst, err = time.Parse(time.RFC3339Nano, v); err != nil {
				return eq, errorf(http.StatusBadRequest, "bad_request", "%s %q: want RFC 3339 time such as 2006-01-02T15:04:05Z", p.name, v)
			}
		}
	}
	if !eq.From.IsZero() && !eq.To.IsZero() && !eq.To.After(eq.From) {
		return eq, errorf(http.StatusBadRequest, "bad_request", "to must be after from")
	}
	eq.HostIDs = q["host"]
	for _, t := range q["type"] {
		if !schema.EventType(t).Valid() {
			return eq, errorf(http.StatusBadRequest, "bad_request", "type %q: unknown", t)
		}
		eq.Types = append(eq.Types, schema.EventType(t))
	}
	if eq.Conditions, err = query.ParseConditions(q["where"]); err != nil {
		return eq, errorf(http.StatusBadRequest, "bad_query", "where: %v", err)
	}
	eq.Limit = 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxLimit {
			return eq, errorf(http.StatusBadRequest, "bad_request", "limit %q: want 1..%d", v, store.MaxLimit)
		}
		eq.Limit = n
	}
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		eq.Desc = true
	default:
		return eq, errorf(http.StatusBadRequest, "bad_request", "order %q: want asc or desc", q.Get("order"))
	}
	return eq, nil
}

func (s *Server) handleQueryEvents(w http.ResponseWriter, r *http.Request) {
	q, err := queryParams(r, "from", "to", "host", "type", "where", "limit", "order")
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	eq, err := parseEventQuery(apiKeyOf(r), q)
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	events, err := s.events.Query(r.Context(), eq)
	if err != nil {
		writeAPIErr(w, fmt.Errorf("query events: %w", err))
		return
	}
	if strings.Contains(r.Header.Get("Accept"), api.NDJSON) {
		w.Header().Set("Content-Type", api.NDJSON)
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		fl, _ := w.(http.Flusher)
		for i := range events {
			if err := enc.Encode(&events[i]); err != nil {
				return // client went away
			}
			if fl != nil && i%500 == 499 {
				fl.Flush()
			}
		}
		return
	}
	if events == nil {
		events = []schema.Event{}
	}
	writeJSON(w, http.StatusOK, api.EventsResponse{Events: events})
}

func (s *Server) handleTree(w http.ResponseWriter, r *http.Request) {
	_, tenant, err := scopedQuery(r)
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	id := r.PathValue("entity_id")
	if _, _, _, err := schema.ParseEntityID(id); err != nil {
		writeAPIErr(w, errorf(http.StatusBadRequest, "bad_request", "%v", err))
		return
	}
	t, err := buildTree(r.Context(), s.events, tenant, id)
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	q, tenant, err := scopedQuery(r, "limit")
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 10000 {
			writeAPIErr(w, errorf(http.StatusBadRequest, "bad_request", "limit %q: want 1..10000", v))
			return
		}
	}
	entries, err := s.state.ListAudit(r.Context(), tenant, limit)
	if err != nil {
		writeAPIErr(w, fmt.Errorf("list audit: %w", err))
		return
	}
	out := api.AuditResponse{Entries: make([]api.AuditEntry, 0, len(entries))}
	for i := len(entries) - 1; i >= 0; i-- { // the store lists oldest first
		e := entries[i]
		out.Entries = append(out.Entries, api.AuditEntry{Time: e.Time, Tenant: e.Tenant, Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail})
	}
	writeJSON(w, http.StatusOK, out)
}
