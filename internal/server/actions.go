package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/server/api"
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/wire"
)

// Bounds on response actions.
const (
	defaultActionTTL = time.Hour
	maxActionTTL     = 7 * 24 * time.Hour
	maxReasonLen     = 1024
	maxResultBytes   = 256 << 10
	maxListActions   = 1000
)

var actionIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// actionHub wakes the long polls of a host when an action is queued for it.
// The zero value is ready to use.
type actionHub struct {
	mu       sync.Mutex
	ch       map[string]chan struct{}
	stopOnce sync.Once
	stopped  chan struct{} // closed when the server shuts down
}

// stopCh is closed on shutdown, so long polls end instead of holding the
// graceful drain for their full wait.
func (h *actionHub) stopCh() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped == nil {
		h.stopped = make(chan struct{})
	}
	return h.stopped
}

func (h *actionHub) stop() {
	h.stopCh()
	h.stopOnce.Do(func() { close(h.stopped) })
}

// waitCh returns a channel closed at the next wake of key. Take it before
// looking at the store, so a wake in between is not lost.
func (h *actionHub) waitCh(key string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ch == nil {
		h.ch = map[string]chan struct{}{}
	}
	c := h.ch[key]
	if c == nil {
		c = make(chan struct{})
		h.ch[key] = c
	}
	return c
}

func (h *actionHub) wake(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.ch[key]; c != nil {
		close(c)
		delete(h.ch, key)
	}
}

func toAPIAction(a store.Action) api.Action {
	out := api.Action{ID: a.ID, Tenant: a.Tenant, HostID: a.HostID, Type: a.Type, Reason: a.Reason, Actor: a.Actor,
		State: a.State, Error: a.Error, Created: a.Created, ExpiresAt: a.ExpiresAt}
	if a.Params != "" {
		out.Params = json.RawMessage(a.Params)
	}
	if a.Result != "" {
		out.Result = json.RawMessage(a.Result)
	}
	if !a.Delivered.IsZero() {
		d := a.Delivered
		out.Delivered = &d
	}
	if !a.Finished.IsZero() {
		f := a.Finished
		out.Finished = &f
	}
	return out
}

// checkActionParams validates and normalises the params of an action type.
func checkActionParams(typ string, raw json.RawMessage) (string, error) {
	bad := func(format string, args ...any) error {
		return errorf(http.StatusBadRequest, "bad_params", format, args...)
	}
	trimmed := bytes.TrimSpace(raw)
	empty := len(trimmed) == 0 || string(trimmed) == "null" || string(trimmed) == "{}"
	switch typ {
	case wire.ActionIsolate, wire.ActionRelease:
		if !empty {
			return "", bad("%s takes no params", typ)
		}
		return "{}", nil
	case wire.ActionKill:
		if empty {
			return "", bad("kill: params.entity_id is required")
		}
		var p wire.KillParams
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return "", bad("kill params: %v", err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return "", bad("kill params: trailing data after the JSON object")
		}
		_, pid, _, err := schema.ParseEntityID(p.EntityID)
		if err != nil {
			return "", bad("kill: %v", err)
		}
		if pid <= 1 {
			return "", bad("kill: pid %d may not be killed", pid)
		}
		b, _ := json.Marshal(p)
		return string(b), nil
	default:
		return "", bad("type %q: want isolate, release or kill", typ)
	}
}

func validText(s string, max int) bool {
	return len(s) <= max && !strings.ContainsAny(s, "\x00\r")
}

// expireActions marks overdue queued actions expired and audits each.
func (s *Server) expireActions(ctx context.Context) {
	exp, err := s.state.ExpireActions(ctx, time.Now().UTC())
	if err != nil {
		s.log.Warn("actions not expired", "err", err)
		return
	}
	for _, a := range exp {
		s.audit(ctx, store.AuditEntry{Tenant: a.Tenant, Actor: "server", Action: "action.expired", Target: a.HostID,
			Detail: fmt.Sprintf("id=%s type=%s created=%s expires_at=%s", a.ID, a.Type, a.Created.Format(time.RFC3339), a.ExpiresAt.Format(time.RFC3339))})
	}
}

func (s *Server) handleCreateAction(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	k := apiKeyOf(r)
	hostID := r.PathValue("id")
	q, err := queryParams(r)
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	tenant, err := tenantFor(k, q.Get("tenant"))
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	var req api.ActionRequest
	// refuse records a refused request in the audit log, then answers it.
	refuse := func(err error) {
		ae := statusOf(err)
		s.audit(ctx, store.AuditEntry{Tenant: tenant, Actor: k.Name, Action: "action.refused", Target: hostID,
			Detail: fmt.Sprintf("status=%d code=%s id=%q type=%q reason=%q error=%q", ae.status, ae.code, req.ID, req.Type, req.Reason, ae.msg)})
		writeAPIErr(w, err)
	}
	if err := decodeStrict(w, r, &req); err != nil {
		refuse(err)
		return
	}
	params, err := checkActionParams(req.Type, req.Params)
	switch {
	case err != nil:
	case req.ID != "" && !actionIDRE.MatchString(req.ID):
		err = errorf(http.StatusBadRequest, "bad_request", "id %q: want 1-64 letters, digits, '_', '.', '-'", req.ID)
	case strings.TrimSpace(req.Reason) == "":
		err = errorf(http.StatusBadRequest, "bad_request", "reason: required (the audit log records why)")
	case !validText(req.Reason, maxReasonLen):
		err = errorf(http.StatusBadRequest, "bad_request", "reason: longer than %d bytes or has control characters", maxReasonLen)
	case req.TTLSeconds < 0 || req.TTLSeconds > int64(maxActionTTL/time.Second): // compare in seconds: no overflow
		err = errorf(http.StatusBadRequest, "bad_request", "ttl_seconds %d: want 1..%d", req.TTLSeconds, int64(maxActionTTL/time.Second))
	}
	if err != nil {
		refuse(err)
		return
	}
	h, err := s.state.GetHost(ctx, tenant, hostID)
	if err != nil {
		refuse(fmt.Errorf("host %q: %w", hostID, err))
		return
	}
	if h.Revoked {
		refuse(errorf(http.StatusConflict, "revoked", "host %s is revoked: no agent will take the action", hostID))
		return
	}
	ttl := defaultActionTTL
	if req.TTLSeconds > 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	if req.ID == "" {
		req.ID = "act_" + newHostID()[:20]
	}
	now := time.Now().UTC()
	a := store.Action{ID: req.ID, Tenant: tenant, HostID: hostID, Type: req.Type, Params: params, Reason: req.Reason,
		Actor: k.Name, State: wire.ActionQueued, Created: now, ExpiresAt: now.Add(ttl)}
	if _, err := s.state.GetAction(ctx, tenant, a.ID); err == nil {
		refuse(errorf(http.StatusConflict, "exists", "action id %q already used", a.ID))
		return
	}
	// Audit first: an action that cannot be audited does not happen.
	if err := s.state.AppendAudit(ctx, store.AuditEntry{Time: now, Tenant: tenant, Actor: k.Name, Action: "action.create", Target: hostID,
		Detail: fmt.Sprintf("id=%s type=%s params=%s reason=%q expires_at=%s", a.ID, a.Type, a.Params, a.Reason, a.ExpiresAt.Format(time.RFC3339))}); err != nil {
		writeAPIErr(w, fmt.Errorf("audit: %w", err))
		return
	}
	if err := s.state.EnqueueAction(ctx, a); err != nil {
		if errors.Is(err, store.ErrExists) {
			refuse(errorf(http.StatusConflict, "exists", "action id %q already used", a.ID))
			return
		}
		writeAPIErr(w, fmt.Errorf("queue action: %w", err))
		return
	}
	s.acts.wake(tenant + "/" + hostID)
	s.log.Info("action queued", "id", a.ID, "type", a.Type, "host_id", hostID, "actor", k.Name)
	writeJSON(w, http.StatusCreated, toAPIAction(a))
}

func (s *Server) listActions(w http.ResponseWriter, r *http.Request, hostID string) {
	q, tenant, err := scopedQuery(r, "limit", "host")
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	if hostID == "" {
		hostID = q.Get("host")
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxListActions {
			writeAPIErr(w, errorf(http.StatusBadRequest, "bad_request", "limit %q: want 1..%d", v, maxListActions))
			return
		}
	}
	ctx := r.Context()
	if hostID != "" {
		if _, err := s.state.GetHost(ctx, tenant, hostID); err != nil {
			writeAPIErr(w, fmt.Errorf("host %q: %w", hostID, err))
			return
		}
	}
	s.expireActions(ctx)
	list, err := s.state.ListActions(ctx, tenant, hostID, limit)
	if err != nil {
		writeAPIErr(w, fmt.Errorf("list actions: %w", err))
		return
	}
	out := api.ActionsResponse{Actions: make([]api.Action, 0, len(list))}
	for _, a := range list {
		out.Actions = append(out.Actions, toAPIAction(a))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleHostActions(w http.ResponseWriter, r *http.Request) {
	s.listActions(w, r, r.PathValue("id"))
}

func (s *Server) handleActions(w http.ResponseWriter, r *http.Request) { s.listActions(w, r, "") }

func (s *Server) handleAction(w http.ResponseWriter, r *http.Request) {
	_, tenant, err := scopedQuery(r)
	if err != nil {
		writeAPIErr(w, err)
		return
	}
	s.expireActions(r.Context())
	id := r.PathValue("id")
	a, err := s.state.GetAction(r.Context(), tenant, id)
	if err != nil {
		writeAPIErr(w, fmt.Errorf("action %q: %w", id, err))
		return
	}
	writeJSON(w, http.StatusOK, toAPIAction(a))
}

// handleActionPoll returns the host's queued actions, marking them
// delivered, or waits for one up to the requested time.
func (s *Server) handleActionPoll(w http.ResponseWriter, r *http.Request) {
	h := r.Context().Value(hostKey).(store.Host)
	var p wire.ActionPoll
	if err := decodeAgentJSON(w, r, &p); err != nil {
		writeAgentErr(w, err)
		return
	}
	wait := time.Duration(min(max(p.WaitSeconds, 0), wire.MaxPollWait)) * time.Second
	ctx := r.Context()
	deadline := time.Now().Add(wait)
	key := h.Tenant + "/" + h.ID
	timer := time.NewTimer(wait)
	defer timer.Stop()
	stopping := s.acts.stopCh()
	for {
		woken := s.acts.waitCh(key)
		s.expireActions(ctx)
		now := time.Now().UTC()
		again := p.First
		p.First = false // redeliver once per agent run
		acts, err := s.state.DeliverActions(ctx, h.Tenant, h.ID, now, again)
		if err != nil {
			writeAgentErr(w, fmt.Errorf("deliver actions: %w", err))
			return
		}
		if len(acts) > 0 || !now.Before(deadline) {
			out := wire.ActionPollResponse{Actions: make([]wire.Action, 0, len(acts))}
			for _, a := range acts {
				s.audit(ctx, store.AuditEntry{Tenant: h.Tenant, Actor: "agent:" + h.ID, Action: "action.delivered", Target: h.ID,
					Detail: fmt.Sprintf("id=%s type=%s boot_id=%s first_poll=%v", a.ID, a.Type, p.BootID, again)})
				out.Actions = append(out.Actions, wire.Action{ID: a.ID, Type: a.Type, Params: json.RawMessage(a.Params),
					Reason: a.Reason, ExpiresAt: a.ExpiresAt.Format(time.RFC3339)})
			}
			writeJSON(w, http.StatusOK, out)
			return
		}
		select {
		case <-woken:
		case <-timer.C:
		case <-stopping:
			// Answer now (empty): the agent polls again after the restart.
			writeJSON(w, http.StatusOK, wire.ActionPollResponse{Actions: []wire.Action{}})
			return
		case <-ctx.Done():
			return
		}
	}
}

func (s *Server) handleActionResult(w http.ResponseWriter, r *http.Request) {
	h := r.Context().Value(hostKey).(store.Host)
	var res wire.ActionResult
	if err := decodeAgentJSON(w, r, &res); err != nil {
		writeAgentErr(w, err)
		return
	}
	var err error
	switch {
	case res.State != wire.ActionDone && res.State != wire.ActionFailed:
		err = errorf(http.StatusBadRequest, "bad_request", "state %q: want done or failed", res.State)
	case len(res.Result) > maxResultBytes:
		err = errorf(http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "result larger than %d bytes", maxResultBytes)
	case len(res.Result) > 0 && !json.Valid(res.Result):
		err = errorf(http.StatusBadRequest, "bad_request", "result: not JSON")
	case !validText(res.Error, 4096):
		err = errorf(http.StatusBadRequest, "bad_request", "error: longer than 4096 bytes or has control characters")
	}
	if err != nil {
		writeAgentErr(w, err)
		return
	}
	ctx := r.Context()
	a, err := s.state.FinishAction(ctx, h.Tenant, h.ID, res.ID, res.State, string(res.Result), res.Error, time.Now().UTC())
	if errors.Is(err, store.ErrBadState) {
		err = errorf(http.StatusConflict, "bad_state", "%v", err)
	}
	if err != nil {
		writeAgentErr(w, err)
		return
	}
	s.audit(ctx, store.AuditEntry{Tenant: h.Tenant, Actor: "agent:" + h.ID, Action: "action." + a.State, Target: h.ID,
		Detail: fmt.Sprintf("id=%s type=%s requested_by=%s result=%s error=%q", a.ID, a.Type, a.Actor, a.Result, a.Error)})
	s.log.Info("action finished", "id", a.ID, "type", a.Type, "host_id", h.ID, "state", a.State, "error", a.Error)
	writeJSON(w, http.StatusOK, struct{}{})
}
