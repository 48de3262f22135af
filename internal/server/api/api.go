// Package api holds the JSON shapes of Mamori's REST API (/api/v1/…), shared
// by the server that writes them and the Go client that reads them.
//
// The trap: these types are a public contract (the CLI, the console and
// integrations script against them, and openapi.json documents them); rename
// a JSON field and every client breaks, so only add fields.
package api

import (
	"encoding/json"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
)

// Version prefix of every API path.
const Prefix = "/api/v1"

// Roles an API key may have, from most to least powerful.
const (
	RoleAdmin    = "admin"
	RoleAnalyst  = "analyst"
	RoleReadonly = "readonly"
)

// NDJSON is the media type that makes GET /api/v1/events stream one event per line.
const NDJSON = "application/x-ndjson"

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// TokenRequest asks for an enrollment token.
type TokenRequest struct {
	Tenant     string `json:"tenant,omitempty"`
	TTLSeconds int64  `json:"ttl_seconds"`
	Uses       int    `json:"uses"`
	Note       string `json:"note,omitempty"`
}

// TokenResponse carries a new enrollment token; the secret is shown only once.
type TokenResponse struct {
	Token     string    `json:"token"`
	Tenant    string    `json:"tenant"`
	Uses      int       `json:"uses"`
	ExpiresAt time.Time `json:"expires_at"`
}

// KeyRequest asks for a new API key.
type KeyRequest struct {
	Tenant string `json:"tenant,omitempty"`
	Name   string `json:"name"`
	Role   string `json:"role"`
}

// KeyResponse carries a new API key; the secret is shown only once.
type KeyResponse struct {
	Key    string `json:"key"`
	Tenant string `json:"tenant"`
	Name   string `json:"name"`
	Role   string `json:"role"`
}

// Gap is a range of sequence numbers of a host that never arrived.
type Gap struct {
	FirstSeq uint64    `json:"first_seq"`
	LastSeq  uint64    `json:"last_seq"`
	Reported time.Time `json:"reported"`
	Reason   string    `json:"reason"`
}

// Host is an enrolled agent as the API shows it.
type Host struct {
	ID           string          `json:"id"`
	Tenant       string          `json:"tenant"`
	Hostname     string          `json:"hostname"`
	OS           string          `json:"os,omitempty"`
	Kernel       string          `json:"kernel,omitempty"`
	AgentVersion string          `json:"agent_version,omitempty"`
	Enrolled     time.Time       `json:"enrolled"`
	LastSeen     time.Time       `json:"last_seen"`
	Revoked      bool            `json:"revoked"`
	Status       json.RawMessage `json:"status,omitempty"`
	Gaps         []Gap           `json:"gaps,omitempty"`
}

// HostsResponse lists hosts.
type HostsResponse struct {
	Hosts []Host `json:"hosts"`
}

// EventsResponse lists events.
type EventsResponse struct {
	Events []schema.Event `json:"events"`
}

// Tree is a process with its lineage and descendants.
type Tree struct {
	Process schema.Process `json:"process"`
	// Ancestors run from the root (pid 1 when known) down to the parent.
	Ancestors []schema.Process `json:"ancestors"`
	// Descendants are in depth-first order; ParentEntityID links them.
	Descendants []schema.Process `json:"descendants"`
	// Events maps each entity id above to its events in time order.
	Events map[string][]schema.Event `json:"events"`
	// Truncated is set when depth or size bounds cut the tree short.
	Truncated bool `json:"truncated,omitempty"`
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	Time   time.Time `json:"time"`
	Tenant string    `json:"tenant"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// AuditResponse lists audit entries, newest first.
type AuditResponse struct {
	Entries []AuditEntry `json:"entries"`
}
