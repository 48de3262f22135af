// Package sensor defines what the agent's kernel sensors deliver. Each hook
// family lives in a sub-package (process/, later file/, network/…) holding its
// eBPF C source, the committed bpf2go output and a loader that produces the
// events declared here.
//
// The trap: kernel timestamps are nanoseconds since boot (CLOCK_BOOTTIME), not
// wall-clock time; convert with BootNsToTime, once, in user space.
package sensor

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Kind says what a ProcessEvent records.
type Kind uint8

// Process event kinds.
const (
	KindExec Kind = 1
	KindFork Kind = 2
	KindExit Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindExec:
		return "exec"
	case KindFork:
		return "fork"
	case KindExit:
		return "exit"
	}
	return "unknown"
}

// ProcessEvent is one process lifecycle event as the kernel saw it.
type ProcessEvent struct {
	Kind   Kind
	BootNs uint64 // event time, ns since boot

	PID  uint32 // thread-group id (what user space calls a pid)
	TID  uint32 // the acting thread
	PPID uint32 // real parent's thread-group id

	StartBootNs       uint64 // task start_boottime, ns since boot
	ParentStartBootNs uint64 // real parent's start_boottime

	UID, EUID, GID, EGID uint32
	LoginUID, SessionID  uint32
	CgroupID             uint64 // cgroup v2 id (inode of the cgroup directory)
	Comm                 string

	// Exec (and, for convenience, fork: the image the child runs).
	Exe           string   // absolute path of the executable file
	Args          []string // argv
	ArgsTruncated bool
	Cwd           string

	// Identity of the executable file, for the hash cache. ExeDev uses the
	// st_dev encoding of stat(2), so it compares with os.Stat.
	ExeDev     uint64
	ExeIno     uint64
	ExeSize    int64
	ExeMtimeNs int64
	ExeCtimeNs int64

	// Exit.
	ExitCode   int // exit status (0-255) when the process exited normally
	ExitSignal int // terminating signal, 0 if none
}

// Stats describes a sensor at run time.
type Stats struct {
	Mode    string            `json:"mode"`    // e.g. "tp_btf" or "raw_tp"
	Hooks   []string          `json:"hooks"`   // attached programs
	Events  map[string]uint64 `json:"events"`  // delivered events per hook
	Dropped map[string]uint64 `json:"dropped"` // ring-buffer drops per hook
}

// BootNsToTime converts a CLOCK_BOOTTIME timestamp to wall-clock time. The
// offset between the two clocks is read at most once a second: two clock
// syscalls per event showed in the agent's profile, and the offset only moves
// with clock steps and suspend.
func BootNsToTime(ns uint64) time.Time {
	return time.Unix(0, bootOffset()+int64(ns))
}

var offsetNs, offsetAt atomic.Int64

func bootOffset() int64 {
	now := time.Now().UnixNano()
	if at := offsetAt.Load(); at != 0 && now >= at && now-at < int64(time.Second) {
		return offsetNs.Load()
	}
	var boot, real unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot)
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &real)
	off := real.Nano() - boot.Nano()
	offsetNs.Store(off)
	offsetAt.Store(now)
	return off
}
