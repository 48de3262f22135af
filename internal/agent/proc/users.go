package proc

import (
	"bytes"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxPasswdBytes bounds how much of the passwd file is read.
const maxPasswdBytes = 16 << 20

// users resolves uids to names from a passwd file, re-reading it when its
// identity (inode, size, mtime) changes, checked at most once a second.
type users struct {
	path string

	mu      sync.Mutex
	names   map[uint32]string
	stamp   [3]int64
	checked time.Time
}

func newUsers(path string) *users { return &users{path: path} }

func (u *users) name(uid uint32) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if now := time.Now(); u.names == nil || now.Sub(u.checked) >= time.Second {
		u.checked = now
		u.refresh()
	}
	return u.names[uid]
}

func (u *users) refresh() {
	var st unix.Stat_t
	if err := unix.Stat(u.path, &st); err != nil {
		if u.names == nil {
			u.names = map[uint32]string{}
		}
		return
	}
	stamp := [3]int64{int64(st.Ino), st.Size, st.Mtim.Nano()}
	if u.names != nil && stamp == u.stamp {
		return
	}
	b, err := os.ReadFile(u.path)
	if err != nil {
		if u.names == nil {
			u.names = map[uint32]string{}
		}
		return
	}
	if len(b) > maxPasswdBytes {
		b = b[:maxPasswdBytes]
	}
	u.names = parsePasswd(b)
	u.stamp = stamp
}

// parsePasswd maps uid to name from passwd(5) lines; malformed lines are
// skipped and the first name for a uid wins, as getpwuid does.
func parsePasswd(b []byte) map[uint32]string {
	m := make(map[uint32]string)
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		if len(line) == 0 || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		f := bytes.SplitN(line, []byte{':'}, 4)
		if len(f) < 4 || len(f[0]) == 0 {
			continue
		}
		uid, err := strconv.ParseUint(string(f[2]), 10, 32)
		if err != nil {
			continue
		}
		if _, dup := m[uint32(uid)]; !dup {
			m[uint32(uid)] = string(f[0])
		}
	}
	return m
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
