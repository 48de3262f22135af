package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/mamori-edr/mamori/internal/agent/hashcache"
)

// maxArgsBytes bounds how much of /proc/PID/cmdline is read; longer command
// lines are cut and flagged ArgsTruncated.
const maxArgsBytes = 64 << 10

// errBadStat reports a /proc/PID/stat line that does not parse.
var errBadStat = errors.New("malformed /proc stat")

// statInfo is what the agent needs from /proc/PID/stat.
type statInfo struct {
	Comm       string
	State      byte
	PPID       uint32
	StartTicks uint64 // field 22, clock ticks since boot
}

// parseStat parses /proc/PID/stat. The comm field is in parentheses and may
// itself hold spaces and ')', so the fields after it start at the last ')'.
func parseStat(b []byte) (statInfo, error) {
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return statInfo{}, fmt.Errorf("%w: no (comm)", errBadStat)
	}
	var s statInfo
	s.Comm = string(b[open+1 : closing])
	rest := strings.Fields(string(b[closing+1:]))
	// rest[0] is field 3 (state); field N is rest[N-3].
	if len(rest) < 20 {
		return statInfo{}, fmt.Errorf("%w: %d fields after comm, want at least 20", errBadStat, len(rest))
	}
	if len(rest[0]) != 1 {
		return statInfo{}, fmt.Errorf("%w: state %q", errBadStat, rest[0])
	}
	s.State = rest[0][0]
	ppid, err := strconv.ParseUint(rest[1], 10, 32)
	if err != nil {
		return statInfo{}, fmt.Errorf("%w: ppid: %w", errBadStat, err)
	}
	s.PPID = uint32(ppid)
	s.StartTicks, err = strconv.ParseUint(rest[19], 10, 64)
	if err != nil {
		return statInfo{}, fmt.Errorf("%w: starttime: %w", errBadStat, err)
	}
	return s, nil
}

// parseIDs parses the Uid: or Gid: line of /proc/PID/status into real and
// effective ids.
func parseIDs(status []byte, field string) (real, eff uint32, err error) {
	for line := range bytes.SplitSeq(status, []byte{'\n'}) {
		v, ok := bytes.CutPrefix(line, []byte(field))
		if !ok {
			continue
		}
		f := strings.Fields(string(v))
		if len(f) < 2 {
			return 0, 0, fmt.Errorf("status %s %q: want real and effective", field, v)
		}
		r, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("status %s: %w", field, err)
		}
		e, err := strconv.ParseUint(f[1], 10, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("status %s: %w", field, err)
		}
		return uint32(r), uint32(e), nil
	}
	return 0, 0, fmt.Errorf("status: no %s line", field)
}

// splitArgs splits a NUL-separated cmdline.
func splitArgs(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	parts := bytes.Split(b, []byte{0})
	args := make([]string, len(parts))
	for i, p := range parts {
		args[i] = string(p)
	}
	return args
}

// procInfo is one process as read from /proc.
type procInfo struct {
	PID         uint32
	stat        statInfo
	Exe         string
	ExeKey      hashcache.Key
	HasExeKey   bool
	Args        []string
	Truncated   bool
	Cwd         string
	UID, EUID   uint32
	GID, EGID   uint32
	LoginUID    uint32
	SessionID   uint32
	CgroupV2    string   // path in the unified hierarchy
	CgroupAll   []string // every hierarchy's path, for container ids on v1/hybrid hosts
	HasCgroupV2 bool
}

// readProc reads one process from root (normally "/proc"). Only stat is
// required: the others fail for kernel threads or races and stay empty.
func readProc(root string, pid uint32) (procInfo, error) {
	dir := root + "/" + strconv.FormatUint(uint64(pid), 10)
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return procInfo{}, fmt.Errorf("read pid %d: %w", pid, err)
	}
	st, err := parseStat(b)
	if err != nil {
		return procInfo{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	p := procInfo{PID: pid, stat: st, LoginUID: ^uint32(0), SessionID: ^uint32(0)}
	if status, err := os.ReadFile(dir + "/status"); err == nil {
		p.UID, p.EUID, _ = parseIDs(status, "Uid:")
		p.GID, p.EGID, _ = parseIDs(status, "Gid:")
	}
	p.LoginUID = readUint32(dir+"/loginuid", p.LoginUID)
	p.SessionID = readUint32(dir+"/sessionid", p.SessionID)
	if f, err := os.Open(dir + "/cmdline"); err == nil {
		buf := make([]byte, maxArgsBytes+1)
		n, _ := readFull(f, buf)
		f.Close()
		if n > maxArgsBytes {
			n = maxArgsBytes
			p.Truncated = true
		}
		p.Args = splitArgs(buf[:n])
	}
	if exe, err := os.Readlink(dir + "/exe"); err == nil {
		p.Exe = strings.TrimSuffix(exe, " (deleted)")
		if k, err := hashcache.StatKey(dir + "/exe"); err == nil {
			p.ExeKey, p.HasExeKey = k, true
		}
	}
	if cwd, err := os.Readlink(dir + "/cwd"); err == nil {
		p.Cwd = strings.TrimSuffix(cwd, " (deleted)")
	}
	if cg, err := os.ReadFile(dir + "/cgroup"); err == nil {
		p.CgroupV2, p.HasCgroupV2, p.CgroupAll = parseCgroupFile(cg)
	}
	return p, nil
}

func readFull(f *os.File, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := f.Read(buf[n:])
		n += k
		if err != nil || k == 0 {
			return n, err
		}
	}
	return n, nil
}

func readUint32(path string, def uint32) uint32 {
	b, err := os.ReadFile(path)
	if err != nil {
		return def
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return def
	}
	return uint32(v)
}

// parseCgroupFile parses /proc/PID/cgroup ("ID:controllers:path" lines). It
// returns the cgroup v2 path ("0::" line) and all paths.
func parseCgroupFile(b []byte) (v2 string, hasV2 bool, all []string) {
	for line := range strings.SplitSeq(string(b), "\n") {
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrl, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if id == "0" && ctrl == "" {
			v2, hasV2 = path, true
		}
		all = append(all, path)
	}
	return v2, hasV2, all
}
