package api

import (
	"encoding/json"
	"time"
)

// ActionRequest queues a response action (isolate, release, kill) for a host.
type ActionRequest struct {
	// ID is optional and client-chosen, for idempotent retries: a second
	// request with the same id is refused with 409.
	ID     string          `json:"id,omitempty"`
	Type   string          `json:"type"`
	Params json.RawMessage `json:"params,omitempty"`
	Reason string          `json:"reason"`
	// TTLSeconds is how long the action may wait for the agent; default 3600.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
}

// Action is a response action and its outcome.
type Action struct {
	ID        string          `json:"id"`
	Tenant    string          `json:"tenant"`
	HostID    string          `json:"host_id"`
	Type      string          `json:"type"`
	Params    json.RawMessage `json:"params,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Actor     string          `json:"actor"`
	State     string          `json:"state"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     string          `json:"error,omitempty"`
	Created   time.Time       `json:"created"`
	ExpiresAt time.Time       `json:"expires_at"`
	Delivered *time.Time      `json:"delivered,omitempty"`
	Finished  *time.Time      `json:"finished,omitempty"`
}

// ActionsResponse lists actions, newest first.
type ActionsResponse struct {
	Actions []Action `json:"actions"`
}
