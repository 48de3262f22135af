// Package schema defines Mamori's event types: what the agent records and the
// server stores. The JSON form is the stable wire and storage format; field
// names never change meaning within a schema version.
//
// The trap: a process is identified by its EntityID (boot id, pid, start
// time), never by a bare pid, which the kernel reuses.
package schema

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Version is the schema version written in every event.
const Version = 1

// EventType names what an event records.
type EventType string

// Event types of the foundation slice. New families add constants here.
const (
	// ProcessExec is a successful execve/execveat.
	ProcessExec EventType = "process_exec"
	// ProcessFork is a new process (not a thread) created by fork/clone.
	ProcessFork EventType = "process_fork"
	// ProcessExit is the exit of a whole process (its last thread).
	ProcessExit EventType = "process_exit"
	// ProcessSnapshot is a process already running when the agent started.
	ProcessSnapshot EventType = "process_snapshot"
	// ProcessHash carries the executable hash of a process whose exec event
	// was sent before hashing finished (a large or busy file): the event path
	// never waits long for a hash.
	ProcessHash EventType = "process_hash"
	// AgentLoss reports data the agent lost (ring-buffer drops, spool overflow).
	AgentLoss EventType = "agent_loss"
	// NetworkConnect is an outbound TCP connect, established or failed.
	NetworkConnect EventType = "network_connect"
	// NetworkAccept is an inbound TCP connection accepted by the process.
	NetworkAccept EventType = "network_accept"
	// NetworkListen is a socket put into the listening state.
	NetworkListen EventType = "network_listen"
)

// KnownEventTypes lists every event type, for validation of filters.
var KnownEventTypes = []EventType{ProcessExec, ProcessFork, ProcessExit, ProcessSnapshot, ProcessHash, AgentLoss,
	NetworkConnect, NetworkAccept, NetworkListen}

// Valid reports whether t is a known event type.
func (t EventType) Valid() bool {
	for _, k := range KnownEventTypes {
		if k == t {
			return true
		}
	}
	return false
}

// Event is one record of host activity.
type Event struct {
	Schema int       `json:"schema"`
	Tenant string    `json:"tenant,omitempty"`  // set by the server from the agent's certificate
	HostID string    `json:"host_id,omitempty"` // set by the server from the agent's certificate
	BootID string    `json:"boot_id"`
	Seq    uint64    `json:"seq,omitempty"` // per-agent spool sequence, set from the spool record
	Time   time.Time `json:"time"`
	Type   EventType `json:"type"`

	Process *Process  `json:"process,omitempty"`
	Parent  *Ancestor `json:"parent,omitempty"`
	Loss    *Loss     `json:"loss,omitempty"`
	Network *Network  `json:"network,omitempty"`
}

// Process describes the acting process.
type Process struct {
	EntityID       string    `json:"entity_id"`
	PID            uint32    `json:"pid"`
	PPID           uint32    `json:"ppid"`
	ParentEntityID string    `json:"parent_entity_id,omitempty"`
	StartTime      time.Time `json:"start_time"`
	Name           string    `json:"name,omitempty"` // comm
	Exe            string    `json:"exe,omitempty"`
	Args           []string  `json:"args,omitempty"`
	ArgsTruncated  bool      `json:"args_truncated,omitempty"`
	Cwd            string    `json:"cwd,omitempty"`

	UID       uint32 `json:"uid"`
	EUID      uint32 `json:"euid"`
	GID       uint32 `json:"gid"`
	EGID      uint32 `json:"egid"`
	LoginUID  uint32 `json:"login_uid"` // 4294967295 when unset
	SessionID uint32 `json:"session_id"`
	User      string `json:"user,omitempty"`

	CgroupID    uint64 `json:"cgroup_id,omitempty"`
	CgroupPath  string `json:"cgroup_path,omitempty"`
	ContainerID string `json:"container_id,omitempty"`

	Hash *FileHash `json:"hash,omitempty"`

	ExitCode   *int `json:"exit_code,omitempty"`
	ExitSignal int  `json:"exit_signal,omitempty"`
}

// FileHash is the content hash of an executable. Status says why hashes are
// absent: "ok", "pending" (a process_hash event follows), "too_large", "busy", "gone" (file vanished or changed before
// it could be read), "error".
type FileHash struct {
	SHA256 string `json:"sha256,omitempty"`
	MD5    string `json:"md5,omitempty"`
	Size   int64  `json:"size"`
	Status string `json:"status"`
}

// Ancestor is a short copy of the parent, so an event is readable alone.
type Ancestor struct {
	EntityID string   `json:"entity_id"`
	PID      uint32   `json:"pid"`
	Exe      string   `json:"exe,omitempty"`
	Args     []string `json:"args,omitempty"`
}

// Network describes a network event. Dst is always the server side (the
// address connected to, the accepting or listening socket) and Src the
// client side, so dst_port finds connects to, accepts on and listens on a
// port alike. A summary event (Summary true) stands for Count repeats of the
// same process, kind, result, remote address and server port within the
// sensor's dedup window; its client port is 0.
type Network struct {
	Family    string `json:"family"`               // "ipv4" or "ipv6"
	Protocol  string `json:"protocol"`             // "tcp"
	Direction string `json:"direction"`            // "outbound", "inbound" or "listen"
	Result    string `json:"result,omitempty"`     // connect: "established" or "failed"
	SrcIP     string `json:"src_ip,omitempty"`     // client side
	SrcPort   uint16 `json:"src_port,omitempty"`   // client side
	DstIP     string `json:"dst_ip,omitempty"`     // server side
	DstPort   uint16 `json:"dst_port"`             // server side
	Count     uint64 `json:"count,omitempty"`      // events this one stands for (1 unless Summary)
	Summary   bool   `json:"summary,omitempty"`    // a dedup window's repeats
	FirstTime string `json:"first_time,omitempty"` // summary: RFC 3339 time of the window's start
}

// Loss reports lost data, cumulative since the agent's data directory was created.
type Loss struct {
	RingDropped     map[string]uint64 `json:"ring_dropped,omitempty"`  // per hook
	SpoolDropped    uint64            `json:"spool_dropped,omitempty"` // records dropped on overflow
	SpoolCorrupt    uint64            `json:"spool_corrupt,omitempty"` // records lost to corruption
	DroppedSeqFirst uint64            `json:"dropped_seq_first,omitempty"`
	DroppedSeqLast  uint64            `json:"dropped_seq_last,omitempty"`
	// QueueDropped counts events lost in the agent between sensor and spool
	// (its bounded queue overflowed, or the spool refused an append).
	QueueDropped uint64 `json:"queue_dropped,omitempty"`
	// Rejected counts spooled records the server refused as malformed; the
	// agent skipped them rather than retry forever.
	Rejected uint64 `json:"rejected,omitempty"`
}

// ClockTicks is USER_HZ: /proc reports start times in these units, so
// process identity uses them to agree between /proc and eBPF.
const ClockTicks = 100

// EntityID returns the stable identity of a process: boot id, pid and start
// time since boot (in clock ticks, the precision /proc offers).
func EntityID(bootID string, pid uint32, startBootNs uint64) string {
	// Built by hand: this runs for every kernel event, and fmt.Sprintf
	// was a tenth of the agent's CPU under an exec storm.
	b := make([]byte, 0, len(bootID)+32)
	b = append(b, bootID...)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(pid), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, startBootNs/(1e9/ClockTicks), 10)
	return string(b)
}

// ParseEntityID splits an entity id into its parts.
func ParseEntityID(id string) (bootID string, pid uint32, startTicks uint64, err error) {
	parts := strings.Split(id, ":")
	if len(parts) != 3 || parts[0] == "" {
		return "", 0, 0, fmt.Errorf("entity id %q: want BOOTID:PID:START", id)
	}
	p, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return "", 0, 0, fmt.Errorf("entity id %q: pid: %w", id, err)
	}
	st, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil {
		return "", 0, 0, fmt.Errorf("entity id %q: start: %w", id, err)
	}
	return parts[0], uint32(p), st, nil
}

// CommandLine joins args the way an analyst reads them.
func (p *Process) CommandLine() string {
	if p == nil {
		return ""
	}
	return strings.Join(p.Args, " ")
}
