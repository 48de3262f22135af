// Package store defines the two storage interfaces of the server: the event
// store (append-only telemetry, hunts, process trees) and the state store
// (tenants, hosts, tokens, API keys, gaps, audit). Engines live in one
// sub-folder each; storetest holds the conformance suite every engine passes.
//
// The trap: every method takes a tenant and must scope every read and write
// by it. A method that forgets is a cross-tenant data leak.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
)

// Sentinel errors. Engines wrap them with %w.
var (
	ErrNotFound     = errors.New("not found")
	ErrTokenExpired = errors.New("enrollment token expired")
	ErrTokenUsed    = errors.New("enrollment token already used")
	ErrTokenInvalid = errors.New("enrollment token unknown")
	ErrBadQuery     = errors.New("bad query")
	ErrExists       = errors.New("already exists")
	// ErrBadEvent rejects a batch holding an event the store cannot key
	// (empty host id, seq 0, time out of range); nothing of it is stored.
	ErrBadEvent = errors.New("bad event")
)

// Op is a comparison in a field condition.
type Op string

// Condition operators.
const (
	OpEq       Op = "eq"
	OpNe       Op = "ne"
	OpContains Op = "contains"
	OpPrefix   Op = "prefix"
	OpSuffix   Op = "suffix"
	OpGt       Op = "gt"
	OpLt       Op = "lt"
)

// Condition compares one event field with a value. Field names are those of
// QueryFields; engines reject any other with ErrBadQuery.
type Condition struct {
	Field string
	Op    Op
	Value string
}

// QueryFields are the event fields a Condition may name, with their kind
// ("string" or "int"). process.args matches the joined command line.
var QueryFields = map[string]string{
	"type":                     "string",
	"host_id":                  "string",
	"boot_id":                  "string",
	"seq":                      "int",
	"process.entity_id":        "string",
	"process.parent_entity_id": "string",
	"process.pid":              "int",
	"process.ppid":             "int",
	"process.name":             "string",
	"process.exe":              "string",
	"process.args":             "string",
	"process.cwd":              "string",
	"process.uid":              "int",
	"process.euid":             "int",
	"process.login_uid":        "int",
	"process.container_id":     "string",
	"process.hash.sha256":      "string",
	"process.hash.md5":         "string",
	"process.exit_code":        "int",
	"parent.exe":               "string",
	"network.family":           "string",
	"network.protocol":         "string",
	"network.direction":        "string",
	"network.result":           "string",
	"network.src_ip":           "string",
	"network.src_port":         "int",
	"network.dst_ip":           "string",
	"network.dst_port":         "int",
}

// EventQuery selects events of one tenant. Zero values mean "no limit" on
// that dimension; Limit is capped by the engine (MaxLimit).
type EventQuery struct {
	Tenant     string
	From, To   time.Time // To is exclusive
	HostIDs    []string
	Types      []schema.EventType
	Conditions []Condition
	Limit      int
	Desc       bool // newest first
}

// MaxLimit is the largest number of events one query returns.
const MaxLimit = 100000

// EventStore holds telemetry.
type EventStore interface {
	// Append stores events of one tenant; they are durable when it returns nil.
	// Each event carries HostID and Seq; (tenant, host, seq) is unique and
	// an event whose key is already stored is silently skipped.
	Append(ctx context.Context, tenant string, events []schema.Event) error
	// MaxSeq returns the highest stored seq of a host (0 if none).
	MaxSeq(ctx context.Context, tenant, hostID string) (uint64, error)
	// Query returns matching events in time order (then seq).
	Query(ctx context.Context, q EventQuery) ([]schema.Event, error)
	// ProcessEvents returns every event whose process.entity_id is in ids.
	ProcessEvents(ctx context.Context, tenant string, ids []string) ([]schema.Event, error)
	// ChildEvents returns every event whose process.parent_entity_id is in ids.
	ChildEvents(ctx context.Context, tenant string, ids []string) ([]schema.Event, error)
	// Count returns the number of stored events of a tenant.
	Count(ctx context.Context, tenant string) (int64, error)
	Close() error
}

// Tenant is a customer whose data is kept apart from every other's.
type Tenant struct {
	ID      string
	Name    string
	Created time.Time
}

// EnrollToken is a one-time secret an agent trades for a certificate. Only
// the hash of the secret is stored.
type EnrollToken struct {
	Hash      string
	Tenant    string
	Created   time.Time
	ExpiresAt time.Time
	UsesLeft  int
	Note      string
}

// Host is an enrolled agent.
type Host struct {
	ID           string
	Tenant       string
	Hostname     string
	OS           string
	Kernel       string
	AgentVersion string
	CertSerial   string
	Enrolled     time.Time
	LastSeen     time.Time
	Revoked      bool
	// Status is the agent's last reported status (JSON), shown as is.
	Status string
}

// APIKey authenticates a user or tool on the REST API. Only its hash is stored.
type APIKey struct {
	Hash    string
	Tenant  string
	Name    string
	Role    string // admin, analyst, readonly
	Created time.Time
}

// Gap is a range of sequence numbers of a host that never arrived.
type Gap struct {
	Tenant   string
	HostID   string
	FirstSeq uint64
	LastSeq  uint64
	Reported time.Time
	Reason   string
}

// AuditEntry is one line of the append-only audit log.
type AuditEntry struct {
	Time   time.Time
	Tenant string
	Actor  string
	Action string
	Target string
	Detail string
}

// Action is one response action queued for a host. States are those of
// wire (queued, delivered, done, failed, expired).
type Action struct {
	ID        string
	Tenant    string
	HostID    string
	Type      string
	Params    string // JSON
	Reason    string
	Actor     string
	State     string
	Result    string // JSON from the agent
	Error     string
	Created   time.Time
	ExpiresAt time.Time
	Delivered time.Time
	Finished  time.Time
}

// ErrBadState refuses a state change an action cannot make (e.g. finishing
// an action that was never delivered).
var ErrBadState = errors.New("bad action state")

// StateStore holds everything that is not telemetry.
type StateStore interface {
	PutTenant(ctx context.Context, t Tenant) error // ErrExists if present
	GetTenant(ctx context.Context, id string) (Tenant, error)
	ListTenants(ctx context.Context) ([]Tenant, error)

	CreateEnrollToken(ctx context.Context, t EnrollToken) error
	// ConsumeEnrollToken uses the token once, atomically, and returns it.
	ConsumeEnrollToken(ctx context.Context, hash string, now time.Time) (EnrollToken, error)

	PutHost(ctx context.Context, h Host) error // insert or replace
	GetHost(ctx context.Context, tenant, id string) (Host, error)
	// FindHost looks a host up by id across tenants (the agent endpoint
	// learns the tenant from the host record, never from the request).
	FindHost(ctx context.Context, id string) (Host, error)
	ListHosts(ctx context.Context, tenant string) ([]Host, error)
	TouchHost(ctx context.Context, tenant, id string, seen time.Time, status string) error
	RevokeHost(ctx context.Context, tenant, id string) error

	PutAPIKey(ctx context.Context, k APIKey) error
	GetAPIKey(ctx context.Context, hash string) (APIKey, error)

	AddGap(ctx context.Context, g Gap) error
	ListGaps(ctx context.Context, tenant, hostID string) ([]Gap, error)

	AppendAudit(ctx context.Context, e AuditEntry) error
	// ListAudit returns the newest limit entries (all if limit <= 0) in
	// append order, oldest first.
	ListAudit(ctx context.Context, tenant string, limit int) ([]AuditEntry, error)

	// EnqueueAction stores a queued action; ErrExists if the tenant already
	// has an action with its id.
	EnqueueAction(ctx context.Context, a Action) error
	// GetAction returns one action of a tenant or ErrNotFound.
	GetAction(ctx context.Context, tenant, id string) (Action, error)
	// ListActions returns the newest limit actions of a tenant (of one host
	// unless hostID is empty), newest first; all if limit <= 0.
	ListActions(ctx context.Context, tenant, hostID string, limit int) ([]Action, error)
	// DeliverActions atomically marks the host's queued, unexpired actions
	// delivered at now and returns them, oldest first. With again, actions
	// delivered earlier but never finished are returned too (for an agent
	// that restarted before reporting them).
	DeliverActions(ctx context.Context, tenant, hostID string, now time.Time, again bool) ([]Action, error)
	// FinishAction records the outcome (done or failed) of a delivered action
	// of the host; ErrNotFound if the host has no such action, ErrBadState
	// if it is not delivered.
	FinishAction(ctx context.Context, tenant, hostID, id, state, result, errText string, now time.Time) (Action, error)
	// ExpireActions marks every queued action whose expiry is at or before
	// now expired, across tenants, and returns them.
	ExpireActions(ctx context.Context, now time.Time) ([]Action, error)

	Close() error
}
