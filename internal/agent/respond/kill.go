// Package respond executes the response actions the server queues for this
// host: kill a process (or tree) by identity and isolate the host with
// nftables, and the loop that long-polls for actions and reports results.
//
// The trap: a pid alone names nothing — it is reused as soon as the process
// is reaped. Kill opens a pidfd first and only then checks the start time in
// /proc/PID/stat against the entity id, so the process checked is the one
// signalled; a mismatch is refused with ErrStale, never "best effort".
package respond

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/wire"
	"golang.org/x/sys/unix"
)

// ErrStale means the entity id no longer names a live process: another
// boot, or its pid now belongs to a different process.
var ErrStale = errors.New("stale entity id")

// ErrRefused means the target may not be killed (pid 1, the agent itself).
var ErrRefused = errors.New("kill refused")

// maxTreeRounds bounds the rescans for descendants forked during a tree kill.
const maxTreeRounds = 8

// Killer kills processes by identity. ProcRoot defaults to /proc.
type Killer struct {
	BootID   string
	ProcRoot string
	// SelfPID is never signalled (the agent); default os.Getpid().
	SelfPID int
}

// stat is what Kill needs from /proc/PID/stat.
type stat struct {
	ppid  int
	start uint64 // clock ticks since boot
}

// parseStat reads ppid and start time from the text of /proc/PID/stat. The
// command name may hold spaces and parentheses, so fields are counted from
// the last ')'.
func parseStat(b []byte) (stat, error) {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return stat{}, errors.New("stat: no ')' after the command name")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return stat{}, fmt.Errorf("stat: %d fields after the command name, want at least 20", len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return stat{}, fmt.Errorf("stat: ppid: %w", err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return stat{}, fmt.Errorf("stat: start time: %w", err)
	}
	return stat{ppid: ppid, start: start}, nil
}

func (k *Killer) root() string {
	if k.ProcRoot == "" {
		return "/proc"
	}
	return k.ProcRoot
}

func (k *Killer) self() int {
	if k.SelfPID == 0 {
		return os.Getpid()
	}
	return k.SelfPID
}

func (k *Killer) readStat(pid int) (stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", k.root(), pid))
	if err != nil {
		return stat{}, err
	}
	return parseStat(b)
}

func (k *Killer) entityID(pid int, start uint64) string {
	return schema.EntityID(k.BootID, uint32(pid), start*(1e9/schema.ClockTicks))
}

// target is a process pinned by a pidfd whose identity was checked.
type target struct {
	pid    int
	entity string
	fd     int
}

// pin opens a pidfd for pid and checks, after opening it, that the process
// started at start. gone reports a pid with no process at all.
func (k *Killer) pin(pid int, start uint64) (t target, gone bool, err error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return target{}, true, nil
	}
	if err != nil {
		return target{}, false, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	st, err := k.readStat(pid)
	if errors.Is(err, os.ErrNotExist) {
		unix.Close(fd)
		return target{}, true, nil
	}
	if err != nil {
		unix.Close(fd)
		return target{}, false, fmt.Errorf("pid %d: %w", pid, err)
	}
	if st.start != start {
		unix.Close(fd)
		return target{}, false, fmt.Errorf("%w: pid %d started at tick %d, the entity at %d (pid reused)", ErrStale, pid, st.start, start)
	}
	return target{pid: pid, entity: k.entityID(pid, start), fd: fd}, false, nil
}

// signal sends sig through the pidfd; gone reports a process that already exited.
func signal(t target, sig unix.Signal) (gone bool, err error) {
	err = unix.PidfdSendSignal(t.fd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return true, nil
	}
	return false, err
}

// children maps each live pid to its parent and start, from one /proc scan.
func (k *Killer) scan() (map[int]stat, error) {
	ents, err := os.ReadDir(k.root())
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", k.root(), err)
	}
	out := make(map[int]stat, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := k.readStat(pid); err == nil {
			out[pid] = st
		}
	}
	return out, nil
}

// Kill sends SIGKILL to the process named by entityID and, with tree, to
// all its descendants first (the tree is stopped with SIGSTOP top-down
// before anything is killed, so it cannot fork away). The process itself
// must match the entity id exactly (ErrStale otherwise); a process already
// gone is reported in Gone, not as an error.
func (k *Killer) Kill(entityID string, tree bool) (wire.KillResult, error) {
	res := wire.KillResult{Killed: []string{}}
	boot, pid32, start, err := schema.ParseEntityID(entityID)
	if err != nil {
		return res, err
	}
	pid := int(pid32)
	if boot != k.BootID {
		return res, fmt.Errorf("%w: entity %s is from boot %s, this host runs boot %s", ErrStale, entityID, boot, k.BootID)
	}
	if pid <= 1 || pid == k.self() {
		return res, fmt.Errorf("%w: pid %d is init or the agent", ErrRefused, pid)
	}
	root, gone, err := k.pin(pid, start)
	if err != nil {
		return res, err
	}
	if gone {
		res.Gone = append(res.Gone, entityID)
		return res, nil
	}
	pinned := []target{root}
	defer func() {
		for _, t := range pinned {
			unix.Close(t.fd)
		}
	}()
	if tree {
		if g, err := signal(root, unix.SIGSTOP); err != nil {
			return res, fmt.Errorf("stop %s: %w", root.entity, err)
		} else if g {
			res.Gone = append(res.Gone, entityID)
			return res, nil
		}
		seen := map[int]bool{pid: true}
		// Rescan until no new descendant appears: each round stops the
		// ones found, so the set only shrinks by exits.
		for range maxTreeRounds {
			procs, err := k.scan()
			if err != nil {
				return res, err
			}
			found := false
			for _, parent := range pinned {
				for cpid, st := range procs {
					if seen[cpid] || st.ppid != parent.pid || cpid == k.self() {
						continue
					}
					seen[cpid] = true
					t, g, err := k.pin(cpid, st.start)
					if err != nil || g {
						continue // exited or replaced since the scan
					}
					if g, _ := signal(t, unix.SIGSTOP); g {
						res.Gone = append(res.Gone, t.entity)
						unix.Close(t.fd)
						continue
					}
					pinned = append(pinned, t)
					found = true
				}
			}
			if !found {
				break
			}
		}
	}
	// Children first (pinned is in discovery order, parents before
	// children), the process itself last.
	var errs []error
	for _, t := range slices.Backward(pinned) {
		g, err := signal(t, unix.SIGKILL)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("kill %s: %w", t.entity, err))
		case g:
			res.Gone = append(res.Gone, t.entity)
		default:
			res.Killed = append(res.Killed, t.entity)
		}
	}
	return res, errors.Join(errs...)
}
