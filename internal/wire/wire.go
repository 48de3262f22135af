// Package wire holds the messages exchanged between agent and server on the
// agent endpoint (/agent/v1/…), and the enrollment token format.
//
// The trap: nothing in a message identifies the agent or its tenant; the
// server takes both from the verified client certificate, so a message body
// can never speak for another host.
package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/mamori-edr/mamori/internal/schema"
)

// Agent endpoint paths.
const (
	PathEnroll    = "/agent/v1/enroll"
	PathEvents    = "/agent/v1/events"
	PathHeartbeat = "/agent/v1/heartbeat"
)

// Limits the server enforces on a batch; the agent stays below them.
const (
	MaxBatchCompressed   = 16 << 20 // bytes on the wire
	MaxBatchDecompressed = 64 << 20 // bytes after gunzip (zip-bomb guard)
	MaxBatchRecords      = 20000
)

// EnrollRequest trades a one-time token for a certificate.
type EnrollRequest struct {
	Token        string `json:"token"`
	CSR          string `json:"csr"` // PEM certificate request
	Hostname     string `json:"hostname"`
	OS           string `json:"os"`
	Kernel       string `json:"kernel"`
	AgentVersion string `json:"agent_version"`
	MachineID    string `json:"machine_id,omitempty"`
}

// EnrollResponse carries the agent's identity and certificate.
type EnrollResponse struct {
	HostID string `json:"host_id"`
	Tenant string `json:"tenant"`
	Cert   string `json:"cert"` // PEM
	CA     string `json:"ca"`   // PEM
}

// Record is one spooled event with its spool sequence number.
type Record struct {
	Seq   uint64          `json:"seq"`
	Event json.RawMessage `json:"event"`
}

// Batch is what the agent sends: records in strictly increasing seq order.
type Batch struct {
	BootID  string       `json:"boot_id"`
	Records []Record     `json:"records"`
	Loss    *schema.Loss `json:"loss,omitempty"`
	Status  *AgentStatus `json:"status,omitempty"`
}

// BatchResponse acknowledges a durably stored batch.
type BatchResponse struct {
	AckedSeq   uint64 `json:"acked_seq"`
	Stored     int    `json:"stored"`
	Duplicates int    `json:"duplicates"`
}

// Heartbeat reports status when there is nothing to send.
type Heartbeat struct {
	BootID string       `json:"boot_id"`
	Status *AgentStatus `json:"status,omitempty"`
}

// Error is the JSON body of every error response.
type Error struct {
	Error string `json:"error"`
	// Code is a stable machine-readable reason (one of the Code constants).
	Code string `json:"code,omitempty"`
	// Seq names the offending record when Code is CodeBadRecord.
	Seq uint64 `json:"seq,omitempty"`
}

// Error codes the agent endpoint returns, so an agent can act on them.
const (
	// CodeBadRecord: record Seq can never be stored; the agent drops that
	// record (counting it as lost) and resends the rest, never retries as is.
	CodeBadRecord = "bad_record"
	// CodeBadBatch: the batch body is not decodable; retrying the same bytes
	// will fail again.
	CodeBadBatch = "bad_batch"
	// CodeTooLarge: over a limit above; split the batch and resend.
	CodeTooLarge = "too_large"
	// CodeStoreUnavailable: the server could not store; keep the spool, retry later.
	CodeStoreUnavailable = "store_unavailable"
)

// AgentStatus is what `mamori-agent status` shows and the server keeps.
type AgentStatus struct {
	Version     string            `json:"version"`
	HostID      string            `json:"host_id"`
	Tenant      string            `json:"tenant"`
	Hostname    string            `json:"hostname"`
	BootID      string            `json:"boot_id"`
	Started     string            `json:"started"`
	SensorMode  string            `json:"sensor_mode"`
	Hooks       []string          `json:"hooks"`
	EventsTotal uint64            `json:"events_total"`
	EventsPerS  float64           `json:"events_per_s"`
	RingDropped map[string]uint64 `json:"ring_dropped"`
	Spool       SpoolStatus       `json:"spool"`
	Connection  ConnStatus        `json:"connection"`
	Hash        map[string]uint64 `json:"hash,omitempty"`
	// SensorError says why the sensor is not running (sensor_mode "none").
	SensorError string `json:"sensor_error,omitempty"`
	// Loss is everything the agent lost so far, as sent in Batch.Loss.
	Loss *schema.Loss `json:"loss,omitempty"`
	// SpooledThrough is the time of the newest event on disk (RFC 3339):
	// everything the sensor saw before it is durable on the host.
	SpooledThrough string `json:"spooled_through,omitempty"`
	// Isolation is the host isolation state (nil: the agent cannot isolate).
	Isolation *IsolationStatus `json:"isolation,omitempty"`
}

// SpoolStatus summarises the agent's spool.
type SpoolStatus struct {
	Bytes    int64  `json:"bytes"`
	Segments int    `json:"segments"`
	Pending  uint64 `json:"pending"`
	LastSeq  uint64 `json:"last_seq"`
	AckedSeq uint64 `json:"acked_seq"`
	Dropped  uint64 `json:"dropped"`
	Corrupt  uint64 `json:"corrupt"`
}

// ConnStatus describes the agent's link to the server.
type ConnStatus struct {
	State     string `json:"state"` // connected, disconnected, revoked
	Server    string `json:"server"`
	LastAck   string `json:"last_ack,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// Via is the path in use, without credentials: "direct",
	// "proxy http://host:port" or "direct via HTTPS_PROXY http://host:port".
	Via string `json:"via,omitempty"`
	// Endpoints is the agent's ordered endpoint list and each one's health.
	Endpoints []EndpointStatus `json:"endpoints,omitempty"`
}

// EndpointStatus is the health of one way to reach the server.
type EndpointStatus struct {
	Endpoint  string `json:"endpoint"` // without credentials
	State     string `json:"state"`    // unknown, up, down
	InUse     bool   `json:"in_use,omitempty"`
	Failures  int    `json:"failures,omitempty"`
	LastError string `json:"last_error,omitempty"`
	NextRetry string `json:"next_retry,omitempty"` // RFC 3339, when down
}

// Enrollment tokens look like "mmr1.SECRET.PIN": SECRET is random, PIN the
// hex SHA-256 of the CA's public key the agent must find on the server.
const tokenPrefix = "mmr1"

var (
	secretRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16,128}$`)
	pinRE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ErrBadToken means a token string is not in the mmr1 format.
var ErrBadToken = errors.New("malformed enrollment token")

// FormatToken builds a token from its secret and the CA pin.
func FormatToken(secret, pin string) string { return tokenPrefix + "." + secret + "." + pin }

// ParseToken splits a token into secret and CA pin.
func ParseToken(tok string) (secret, pin string, err error) {
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 || parts[0] != tokenPrefix {
		return "", "", fmt.Errorf("%w: want mmr1.SECRET.PIN", ErrBadToken)
	}
	if !secretRE.MatchString(parts[1]) {
		return "", "", fmt.Errorf("%w: bad secret", ErrBadToken)
	}
	if !pinRE.MatchString(parts[2]) {
		return "", "", fmt.Errorf("%w: bad CA pin", ErrBadToken)
	}
	return parts[1], parts[2], nil
}

// Response action paths on the agent endpoint.
const (
	// PathActionsPoll long-polls for the host's queued actions.
	PathActionsPoll = "/agent/v1/actions/poll"
	// PathActionsResult reports the outcome of one delivered action.
	PathActionsResult = "/agent/v1/actions/result"
)

// Response action types.
const (
	ActionIsolate = "isolate"
	ActionRelease = "release"
	ActionKill    = "kill"
)

// Action states.
const (
	ActionQueued    = "queued"
	ActionDelivered = "delivered"
	ActionDone      = "done"
	ActionFailed    = "failed"
	ActionExpired   = "expired"
)

// MaxPollWait is the longest the server holds an action poll open.
const MaxPollWait = 25

// ActionPoll asks for queued actions, waiting up to WaitSeconds (capped at
// MaxPollWait) when there are none.
type ActionPoll struct {
	BootID      string `json:"boot_id"`
	WaitSeconds int    `json:"wait_seconds,omitempty"`
	// First marks the first poll of an agent run: actions delivered to an
	// earlier run but never finished are delivered again (every action
	// type is safe to repeat: kill checks identity, isolation is a state).
	First bool `json:"first,omitempty"`
}

// Action is one response action delivered to an agent.
type Action struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Params    json.RawMessage `json:"params,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	ExpiresAt string          `json:"expires_at,omitempty"` // RFC 3339
}

// ActionPollResponse carries the actions now marked delivered.
type ActionPollResponse struct {
	Actions []Action `json:"actions"`
}

// ActionResult reports how a delivered action ended: State is ActionDone
// or ActionFailed.
type ActionResult struct {
	ID     string          `json:"id"`
	State  string          `json:"state"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// KillParams selects the process to kill by identity, never by bare pid.
type KillParams struct {
	EntityID string `json:"entity_id"`
	Tree     bool   `json:"tree,omitempty"`
}

// KillResult lists entity ids signalled and those already gone.
type KillResult struct {
	Killed []string `json:"killed"`
	Gone   []string `json:"gone,omitempty"`
}

// IsolationStatus is the host isolation state an agent reports.
type IsolationStatus struct {
	Isolated bool     `json:"isolated"`
	Since    string   `json:"since,omitempty"` // RFC 3339
	Layers   []string `json:"layers,omitempty"`
	// Allowed lists the management addresses that stay reachable.
	Allowed []string `json:"allowed,omitempty"`
	Error   string   `json:"error,omitempty"`
}
