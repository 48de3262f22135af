package proc

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// containerPrefixes are the leaf-name prefixes container runtimes use under
// the systemd cgroup driver (docker-ID.scope, cri-containerd-ID.scope, …).
var containerPrefixes = []string{"docker-", "cri-containerd-", "crio-", "libpod-", "containerd-"}

// containerParents are directory names under which a bare 64-hex name is a
// container (cgroupfs driver: /docker/ID, /kubepods/burstable/podUID/ID).
func containerParent(name string) bool {
	return name == "docker" || name == "libpod_parent" || name == "crio" || name == "containerd" ||
		strings.HasPrefix(name, "kubepods") || strings.HasPrefix(name, "pod")
}

// ContainerID extracts a container id from a cgroup path, or "" when the path
// is not a container's. The outermost container wins: that is the id the
// host's runtime knows. Runtime helpers (conmon) are not containers.
func ContainerID(path string) string {
	parts := strings.Split(path, "/")
	for i, name := range parts {
		name = strings.TrimSuffix(name, ".scope")
		if strings.Contains(name, "conmon") {
			continue
		}
		for _, p := range containerPrefixes {
			if id, ok := strings.CutPrefix(name, p); ok && isHex64(id) {
				return id
			}
		}
		// containerd with systemd cgroups: "kubepods-…slice:cri-containerd:ID".
		if j := strings.LastIndexByte(name, ':'); j >= 0 && isHex64(name[j+1:]) {
			return name[j+1:]
		}
		if isHex64(name) && i > 0 && containerParent(parts[i-1]) {
			return name
		}
	}
	return ""
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// cgroupV2Mount finds where the unified hierarchy is mounted: /sys/fs/cgroup
// on pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
func cgroupV2Mount() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 25 0:30 / /sys/fs/cgroup rw,... - cgroup2 cgroup2 rw"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 && f[3] == "/" {
			return unescapeMount(f[4])
		}
	}
	return ""
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// cgroupInfo is what the agent attaches for one cgroup v2 id.
type cgroupInfo struct {
	Path        string
	ContainerID string
}

// cgroups maps cgroup v2 ids (the inode of the cgroup directory) to paths.
type cgroups struct {
	mount string

	mu       sync.Mutex
	byID     map[uint64]cgroupInfo
	missing  map[uint64]time.Time // ids not found, so a burst does not re-read /proc
	lastWalk time.Time
}

// missTTL is how long an unresolvable cgroup id is not looked up again.
const missTTL = 5 * time.Second

const maxCgroups = 16384

func newCgroups(mount string) *cgroups {
	return &cgroups{mount: mount, byID: make(map[uint64]cgroupInfo), missing: make(map[uint64]time.Time)}
}

// idOf returns the cgroup id of a v2 path, 0 when unknown, and caches it.
func (g *cgroups) idOf(path string) uint64 {
	if g.mount == "" {
		return 0
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(g.mount, path), &st); err != nil {
		return 0
	}
	g.put(st.Ino, path)
	return st.Ino
}

func (g *cgroups) put(id uint64, path string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.byID[id]; !ok && len(g.byID) >= maxCgroups {
		clear(g.byID)
	}
	g.byID[id] = cgroupInfo{Path: path, ContainerID: ContainerID(path)}
	delete(g.missing, id)
}

// lookup resolves a cgroup id. On a miss it tries the process's own
// /proc/PID/cgroup (checked by inode), then walks the hierarchy, at most once
// a second, so a burst of unknown ids cannot turn into a burst of walks.
func (g *cgroups) lookup(procRoot string, pid uint32, id uint64) (cgroupInfo, bool) {
	if id == 0 {
		return cgroupInfo{}, false
	}
	g.mu.Lock()
	info, ok := g.byID[id]
	missedAt, missed := g.missing[id]
	g.mu.Unlock()
	if ok {
		return info, true
	}
	if missed && time.Since(missedAt) < missTTL {
		return cgroupInfo{}, false
	}
	if b, err := os.ReadFile(procRoot + "/" + itoa(pid) + "/cgroup"); err == nil {
		if path, has, _ := parseCgroupFile(b); has && g.idOf(path) == id {
			g.mu.Lock()
			info = g.byID[id]
			g.mu.Unlock()
			return info, true
		}
	}
	g.walk()
	g.mu.Lock()
	defer g.mu.Unlock()
	info, ok = g.byID[id]
	if !ok {
		if len(g.missing) >= maxCgroups {
			clear(g.missing)
		}
		g.missing[id] = time.Now()
	}
	return info, ok
}

func (g *cgroups) walk() {
	if g.mount == "" {
		return
	}
	g.mu.Lock()
	if time.Since(g.lastWalk) < time.Second {
		g.mu.Unlock()
		return
	}
	g.lastWalk = time.Now()
	g.mu.Unlock()
	n := 0
	filepath.WalkDir(g.mount, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if n++; n > maxCgroups {
			return filepath.SkipAll
		}
		rel := strings.TrimPrefix(p, g.mount)
		if rel == "" {
			rel = "/"
		}
		g.idOf(rel)
		return nil
	})
}
