// Package proc keeps the agent's process cache: it turns raw kernel process
// events into schema events attributed with full lineage (entity ids, parent,
// user, cgroup/container, executable hash), and loads the processes already
// running when the agent starts from /proc.
//
// The trap: a pid is not a process. Pids are reused, so every process is
// keyed by its entity id (boot id, pid, start time in clock ticks), and a
// parent is looked up by the parent's entity id, never by its pid alone. A
// parent missing from the cache (a dropped event) is read from /proc on
// demand, and only accepted when its start time matches.
package proc

import (
	"container/list"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mamori-edr/mamori/internal/agent/hashcache"
	"github.com/mamori-edr/mamori/internal/agent/sensor"
	"github.com/mamori-edr/mamori/internal/schema"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultHashWait   = 50 * time.Millisecond
	DefaultExitLinger = 2 * time.Minute
	DefaultMaxEntries = 65536
)

// ticksNs is the length of one clock tick in nanoseconds.
const ticksNs = 1e9 / schema.ClockTicks

// maxAncestry bounds the on-demand walk up the parent chain.
const maxAncestry = 1024

// Options configures a Cache; zero fields take the defaults.
type Options struct {
	HashWait   time.Duration // how long an exec waits for its hash before "pending"
	ExitLinger time.Duration // how long exited processes stay for lineage
	MaxEntries int           // hard bound on cached processes

	// ProcRoot and PasswdPath exist for tests; defaults "/proc", "/etc/passwd".
	ProcRoot   string
	PasswdPath string
}

// BootID returns the kernel's boot id, part of every entity id.
func BootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	id := string(b)
	for len(id) > 0 && (id[len(id)-1] == '\n' || id[len(id)-1] == ' ') {
		id = id[:len(id)-1]
	}
	if id == "" {
		return "", errors.New("boot id: empty")
	}
	return id, nil
}

type entry struct {
	p        schema.Process
	startNs  uint64
	exeKey   hashcache.Key
	hasKey   bool
	exited   bool
	exitAt   time.Time
	lru      *list.Element // in Cache.lru while alive, in Cache.exited once exited
	hybridCg bool          // container id came from a v1 hierarchy
}

// Cache is the agent's process table. It is safe for concurrent use; Handle
// is meant to be called from one goroutine, in kernel order.
type Cache struct {
	bootID string
	hashes *hashcache.Cache
	opts   Options
	cg     *cgroups
	users  *users
	hybrid bool // v1 hierarchies present: container ids may live there

	sink func(schema.Event)

	mu     sync.Mutex
	byID   map[string]*entry
	byPID  map[uint32]*entry
	lru    *list.List // alive entries, front = most recently used
	exited *list.List // exited entries, front = oldest exit
	now    func() time.Time
}

// New returns an empty Cache; hashes may be nil to skip hashing.
func New(bootID string, hashes *hashcache.Cache, opts Options) *Cache {
	if opts.HashWait <= 0 {
		opts.HashWait = DefaultHashWait
	}
	if opts.ExitLinger <= 0 {
		opts.ExitLinger = DefaultExitLinger
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.PasswdPath == "" {
		opts.PasswdPath = "/etc/passwd"
	}
	c := &Cache{
		bootID: bootID,
		hashes: hashes,
		opts:   opts,
		cg:     newCgroups(cgroupV2Mount()),
		users:  newUsers(opts.PasswdPath),
		byID:   make(map[string]*entry),
		byPID:  make(map[uint32]*entry),
		lru:    list.New(),
		exited: list.New(),
		now:    time.Now,
	}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		_, _, all := parseCgroupFile(b)
		c.hybrid = len(all) > 1
	}
	return c
}

// SetLateSink sets where late results (process_hash events) go. Call it
// before Handle or Snapshot; sink is called from other goroutines.
func (c *Cache) SetLateSink(sink func(schema.Event)) {
	c.mu.Lock()
	c.sink = sink
	c.mu.Unlock()
}

// Len returns the number of cached processes, alive and lingering.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byID)
}

// Lookup returns a copy of the cached process with entityID.
func (c *Cache) Lookup(entityID string) (schema.Process, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byID[entityID]
	if !ok {
		return schema.Process{}, false
	}
	return e.p, true
}

// Snapshot reads every process in /proc, fills the cache and returns one
// process_snapshot event per process, parents before children.
func (c *Cache) Snapshot() ([]schema.Event, error) {
	dir, err := os.ReadDir(c.opts.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	infos := make(map[uint32]procInfo, len(dir))
	for _, d := range dir {
		pid, err := strconv.ParseUint(d.Name(), 10, 32)
		if err != nil || !d.IsDir() {
			continue
		}
		pi, err := readProc(c.opts.ProcRoot, uint32(pid))
		if err != nil {
			continue // exited while we listed
		}
		infos[uint32(pid)] = pi
	}
	if len(infos) == 0 {
		return nil, fmt.Errorf("snapshot: no processes readable in %s", c.opts.ProcRoot)
	}
	order := parentsFirst(infos)

	// Start every hash job first, then wait for them under one budget, so
	// the snapshot costs about one HashWait, not one per binary.
	if c.hashes != nil {
		for _, pid := range order {
			if pi := infos[pid]; pi.HasExeKey {
				c.hashes.Hash(pid, pi.Exe, pi.ExeKey, 0, nil)
			}
		}
	}
	deadline := time.Now().Add(max(c.opts.HashWait, time.Second))

	now := c.now()
	events := make([]schema.Event, 0, len(order))
	for _, pid := range order {
		pi := infos[pid]
		c.mu.Lock()
		e := c.insertLocked(pi)
		c.mu.Unlock()
		if pi.HasExeKey {
			c.hashExe(e, pi.PID, pi.Exe, pi.ExeKey, max(time.Until(deadline), 0))
		}
		c.mu.Lock()
		ev := c.eventLocked(schema.ProcessSnapshot, now, e)
		c.mu.Unlock()
		events = append(events, ev)
	}
	return events, nil
}

// parentsFirst orders pids so that every parent in the set precedes its
// children (breadth-first from the roots, siblings by pid).
func parentsFirst(infos map[uint32]procInfo) []uint32 {
	children := make(map[uint32][]uint32, len(infos))
	var roots []uint32
	for pid, pi := range infos {
		if _, ok := infos[pi.stat.PPID]; ok && pi.stat.PPID != pid {
			children[pi.stat.PPID] = append(children[pi.stat.PPID], pid)
		} else {
			roots = append(roots, pid)
		}
	}
	slices.Sort(roots)
	order := make([]uint32, 0, len(infos))
	order = append(order, roots...)
	for i := 0; i < len(order); i++ {
		kids := children[order[i]]
		slices.Sort(kids)
		order = append(order, kids...)
	}
	return order
}

// insertLocked adds or refreshes the entry for a process read from /proc.
func (c *Cache) insertLocked(pi procInfo) *entry {
	startNs := pi.stat.StartTicks * ticksNs
	id := schema.EntityID(c.bootID, pi.PID, startNs)
	e, ok := c.byID[id]
	if !ok {
		e = &entry{startNs: startNs}
	}
	p := &e.p
	p.EntityID = id
	p.PID = pi.PID
	p.PPID = pi.stat.PPID
	p.StartTime = sensor.BootNsToTime(startNs)
	p.Name = pi.stat.Comm
	p.Exe, p.Args, p.ArgsTruncated, p.Cwd = pi.Exe, pi.Args, pi.Truncated, pi.Cwd
	p.UID, p.EUID, p.GID, p.EGID = pi.UID, pi.EUID, pi.GID, pi.EGID
	p.LoginUID, p.SessionID = pi.LoginUID, pi.SessionID
	p.User = c.users.name(pi.UID)
	if pi.HasCgroupV2 {
		p.CgroupPath = pi.CgroupV2
		p.CgroupID = c.cg.idOf(pi.CgroupV2)
	}
	p.ContainerID = ContainerID(pi.CgroupV2)
	e.hybridCg = false
	if p.ContainerID == "" {
		for _, path := range pi.CgroupAll {
			if id := ContainerID(path); id != "" {
				p.ContainerID, e.hybridCg = id, true
				break
			}
		}
	}
	if pi.stat.PPID != 0 {
		if pe, ok := c.byPID[pi.stat.PPID]; ok && !pe.exited {
			p.ParentEntityID = pe.p.EntityID
		}
	}
	e.exeKey, e.hasKey = pi.ExeKey, pi.HasExeKey
	if !pi.HasExeKey {
		p.Hash = nil
	}
	if !ok {
		c.addLocked(e)
	}
	return e
}

// addLocked indexes a new alive entry and enforces MaxEntries.
func (c *Cache) addLocked(e *entry) {
	if old, ok := c.byPID[e.p.PID]; ok && old != e && !old.exited {
		// The pid was reused: its previous owner exited unseen.
		c.markExitedLocked(old)
	}
	c.byID[e.p.EntityID] = e
	c.byPID[e.p.PID] = e
	e.lru = c.lru.PushFront(e)
	for len(c.byID) > c.opts.MaxEntries {
		var victim *list.Element
		if victim = c.exited.Front(); victim != nil {
			c.exited.Remove(victim)
		} else if victim = c.lru.Back(); victim != nil && victim.Value.(*entry) != e {
			c.lru.Remove(victim)
		} else {
			break
		}
		c.dropLocked(victim.Value.(*entry))
	}
}

func (c *Cache) dropLocked(e *entry) {
	delete(c.byID, e.p.EntityID)
	if c.byPID[e.p.PID] == e {
		delete(c.byPID, e.p.PID)
	}
}

func (c *Cache) markExitedLocked(e *entry) {
	if e.exited {
		return
	}
	e.exited = true
	e.exitAt = c.now()
	c.lru.Remove(e.lru)
	e.lru = c.exited.PushBack(e)
}

// expireLocked evicts exited entries older than ExitLinger.
func (c *Cache) expireLocked(now time.Time) {
	for el := c.exited.Front(); el != nil; el = c.exited.Front() {
		e := el.Value.(*entry)
		if now.Sub(e.exitAt) < c.opts.ExitLinger {
			return
		}
		c.exited.Remove(el)
		c.dropLocked(e)
	}
}

// ensureLocked returns the entry for (pid, startNs), reading it and its
// ancestors from /proc if the cache missed them. loaded collects entries
// read from /proc, oldest ancestor first. It returns nil if the process is
// gone or the pid now belongs to another process.
func (c *Cache) ensureLocked(pid uint32, startNs uint64, loaded *[]*entry) *entry {
	if pid == 0 {
		return nil
	}
	if e, ok := c.byID[schema.EntityID(c.bootID, pid, startNs)]; ok {
		c.touchLocked(e)
		return e
	}
	var chain []procInfo
	want, wantStart := pid, startNs/ticksNs
	checkStart := true
	for range maxAncestry {
		pi, err := readProc(c.opts.ProcRoot, want)
		if err != nil || (checkStart && pi.stat.StartTicks != wantStart) {
			break
		}
		chain = append(chain, pi)
		ppid := pi.stat.PPID
		if ppid == 0 {
			break
		}
		if pe, ok := c.byPID[ppid]; ok && !pe.exited {
			break // the rest of the chain is cached
		}
		// A parent read from /proc is the current parent, whose start
		// is by construction no later than the child's.
		want, checkStart = ppid, false
	}
	var target *entry
	for i := len(chain) - 1; i >= 0; i-- {
		e := c.insertLocked(chain[i])
		*loaded = append(*loaded, e)
		if i == 0 {
			target = e
		}
	}
	return target
}

func (c *Cache) touchLocked(e *entry) {
	if !e.exited {
		c.lru.MoveToFront(e.lru)
	}
}

// Handle turns one kernel event into schema events: the event itself and,
// first, a process_snapshot for each ancestor it had to read from /proc.
func (c *Cache) Handle(ev sensor.ProcessEvent) []schema.Event {
	when := sensor.BootNsToTime(ev.BootNs)
	c.mu.Lock()
	c.expireLocked(c.now())
	var loaded []*entry
	var e *entry
	var typ schema.EventType
	switch ev.Kind {
	case sensor.KindFork:
		typ = schema.ProcessFork
		e = c.forkLocked(ev, &loaded)
	case sensor.KindExec:
		typ = schema.ProcessExec
		e = c.execLocked(ev, &loaded)
	case sensor.KindExit:
		typ = schema.ProcessExit
		e = c.exitLocked(ev, &loaded)
	default:
		c.mu.Unlock()
		return nil
	}
	type hashJob struct {
		e    *entry
		pid  uint32
		exe  string
		key  hashcache.Key
		has  bool
		wait time.Duration
	}
	var jobs []hashJob
	if c.hashes != nil {
		for _, l := range loaded {
			if l.hasKey {
				jobs = append(jobs, hashJob{l, l.p.PID, l.p.Exe, l.exeKey, true, 0})
			}
		}
		if ev.Kind == sensor.KindExec {
			jobs = append(jobs, hashJob{e, ev.PID, e.p.Exe, e.exeKey, e.hasKey, c.opts.HashWait})
		}
	}
	c.mu.Unlock()

	// Hash outside the lock: Lookup must not wait on a slow disk.
	for _, j := range jobs {
		if !j.has {
			// The sensor gave no file identity: take the executed inode's.
			k, err := hashcache.StatKey(c.opts.ProcRoot + "/" + itoa(j.pid) + "/exe")
			if err != nil {
				continue
			}
			c.mu.Lock()
			if j.e.p.Exe == j.exe && !j.e.hasKey {
				j.e.exeKey, j.e.hasKey = k, true
			}
			c.mu.Unlock()
			j.key = k
		}
		c.hashExe(j.e, j.pid, j.exe, j.key, j.wait)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	out := make([]schema.Event, 0, len(loaded)+1)
	for _, l := range loaded {
		out = append(out, c.eventLocked(schema.ProcessSnapshot, now, l))
	}
	return append(out, c.eventLocked(typ, when, e))
}

// newFromEventLocked creates an entry from a kernel event.
func (c *Cache) newFromEventLocked(ev sensor.ProcessEvent) *entry {
	e := &entry{startNs: ev.StartBootNs}
	e.p.EntityID = schema.EntityID(c.bootID, ev.PID, ev.StartBootNs)
	e.p.PID = ev.PID
	e.p.StartTime = sensor.BootNsToTime(ev.StartBootNs)
	c.addLocked(e)
	return e
}

// applyEventLocked copies credentials, lineage and cgroup from ev.
func (c *Cache) applyEventLocked(e *entry, ev sensor.ProcessEvent) {
	p := &e.p
	p.PPID = ev.PPID
	if ev.PPID != 0 {
		p.ParentEntityID = schema.EntityID(c.bootID, ev.PPID, ev.ParentStartBootNs)
	} else {
		p.ParentEntityID = ""
	}
	if ev.Comm != "" {
		p.Name = ev.Comm
	}
	p.UID, p.EUID, p.GID, p.EGID = ev.UID, ev.EUID, ev.GID, ev.EGID
	p.LoginUID, p.SessionID = ev.LoginUID, ev.SessionID
	p.User = c.users.name(ev.UID)
	if ev.CgroupID != 0 && ev.CgroupID != p.CgroupID {
		p.CgroupID = ev.CgroupID
		if info, ok := c.cg.lookup(c.opts.ProcRoot, ev.PID, ev.CgroupID); ok {
			p.CgroupPath, p.ContainerID = info.Path, info.ContainerID
			e.hybridCg = false
		} else {
			p.CgroupPath, p.ContainerID = "", ""
		}
		if p.ContainerID == "" && c.hybrid {
			// Hybrid hosts may place containers only in v1 hierarchies.
			if b, err := os.ReadFile(c.opts.ProcRoot + "/" + itoa(ev.PID) + "/cgroup"); err == nil {
				_, _, all := parseCgroupFile(b)
				for _, path := range all {
					if id := ContainerID(path); id != "" {
						p.ContainerID, e.hybridCg = id, true
						break
					}
				}
			}
		}
	}
}

func (c *Cache) forkLocked(ev sensor.ProcessEvent, loaded *[]*entry) *entry {
	parent := c.ensureLocked(ev.PPID, ev.ParentStartBootNs, loaded)
	id := schema.EntityID(c.bootID, ev.PID, ev.StartBootNs)
	e, ok := c.byID[id]
	if !ok {
		e = c.newFromEventLocked(ev)
	}
	if parent != nil {
		pp := parent.p
		e.p.Name, e.p.Exe, e.p.Args, e.p.ArgsTruncated, e.p.Cwd = pp.Name, pp.Exe, pp.Args, pp.ArgsTruncated, pp.Cwd
		e.p.Hash = pp.Hash
		e.exeKey, e.hasKey = parent.exeKey, parent.hasKey
		e.p.CgroupID, e.p.CgroupPath, e.p.ContainerID, e.hybridCg = pp.CgroupID, pp.CgroupPath, pp.ContainerID, parent.hybridCg
	} else {
		c.imageFromEventLocked(e, ev)
	}
	c.applyEventLocked(e, ev)
	return e
}

func (c *Cache) imageFromEventLocked(e *entry, ev sensor.ProcessEvent) {
	e.p.Exe, e.p.Args, e.p.ArgsTruncated, e.p.Cwd = ev.Exe, ev.Args, ev.ArgsTruncated, ev.Cwd
	e.p.Hash = nil
	e.exeKey = hashcache.Key{Dev: ev.ExeDev, Ino: ev.ExeIno, Size: ev.ExeSize, MtimeNs: ev.ExeMtimeNs, CtimeNs: ev.ExeCtimeNs}
	e.hasKey = ev.ExeIno != 0
}

func (c *Cache) execLocked(ev sensor.ProcessEvent, loaded *[]*entry) *entry {
	c.ensureLocked(ev.PPID, ev.ParentStartBootNs, loaded)
	id := schema.EntityID(c.bootID, ev.PID, ev.StartBootNs)
	e, ok := c.byID[id]
	if !ok {
		e = c.newFromEventLocked(ev)
	} else {
		c.touchLocked(e)
	}
	c.imageFromEventLocked(e, ev)
	c.applyEventLocked(e, ev)
	return e
}

func (c *Cache) exitLocked(ev sensor.ProcessEvent, loaded *[]*entry) *entry {
	id := schema.EntityID(c.bootID, ev.PID, ev.StartBootNs)
	e, ok := c.byID[id]
	if !ok {
		parent := c.ensureLocked(ev.PPID, ev.ParentStartBootNs, loaded)
		e = c.newFromEventLocked(ev)
		if parent != nil {
			e.p.Exe, e.p.Args, e.p.Cwd, e.p.Hash = parent.p.Exe, parent.p.Args, parent.p.Cwd, parent.p.Hash
		}
		if ev.Exe != "" {
			c.imageFromEventLocked(e, ev)
		}
		c.applyEventLocked(e, ev)
	} else if ev.PPID != 0 {
		// Reparenting (to init or a subreaper) shows in the exit event.
		e.p.PPID = ev.PPID
		e.p.ParentEntityID = schema.EntityID(c.bootID, ev.PPID, ev.ParentStartBootNs)
	}
	code := ev.ExitCode
	e.p.ExitCode = &code
	e.p.ExitSignal = ev.ExitSignal
	c.markExitedLocked(e)
	return e
}

// hashExe hashes an entry's executable, waiting at most wait. A late result
// updates every cached process still pending on the same file and is sent
// to the late sink as process_hash events.
func (c *Cache) hashExe(e *entry, pid uint32, exe string, key hashcache.Key, wait time.Duration) {
	if c.hashes == nil {
		return
	}
	h := c.hashes.Hash(pid, exe, key, wait, func(h schema.FileHash) { c.lateHash(key, h) })
	c.mu.Lock()
	if e.hasKey && e.exeKey == key {
		e.p.Hash = &h
	}
	c.mu.Unlock()
}

func (c *Cache) lateHash(key hashcache.Key, h schema.FileHash) {
	c.mu.Lock()
	var out []schema.Event
	now := c.now()
	for _, e := range c.byID {
		if !e.hasKey || e.exeKey != key || e.p.Hash == nil || e.p.Hash.Status != hashcache.StatusPending {
			continue
		}
		e.p.Hash = &h
		out = append(out, schema.Event{
			Schema: schema.Version,
			BootID: c.bootID,
			Time:   now,
			Type:   schema.ProcessHash,
			Process: &schema.Process{
				EntityID:  e.p.EntityID,
				PID:       e.p.PID,
				PPID:      e.p.PPID,
				StartTime: e.p.StartTime,
				Name:      e.p.Name,
				Exe:       e.p.Exe,
				Hash:      &h,
			},
		})
	}
	sink := c.sink
	c.mu.Unlock()
	if sink != nil {
		for _, ev := range out {
			sink(ev)
		}
	}
}

// eventLocked builds an event with a copy of e and of its parent.
func (c *Cache) eventLocked(typ schema.EventType, when time.Time, e *entry) schema.Event {
	p := e.p
	ev := schema.Event{Schema: schema.Version, BootID: c.bootID, Time: when, Type: typ, Process: &p}
	if p.ParentEntityID != "" {
		anc := &schema.Ancestor{EntityID: p.ParentEntityID, PID: p.PPID}
		if pe, ok := c.byID[p.ParentEntityID]; ok {
			anc.Exe, anc.Args = pe.p.Exe, pe.p.Args
		}
		ev.Parent = anc
	}
	return ev
}

// Attribute sets ev.Process and ev.Parent to the cached process (pid,
// startBootNs) and its parent, for events of other sensors (network) that
// name the acting process by pid and start time. A process the cache missed
// is read from /proc; the process_snapshot events returned for what was read
// belong in the stream before ev. A process gone from both keeps its
// identity only (entity id, pid, start time). It is safe to call from any
// goroutine; call it after the process sensor's events up to ev's time were
// handled, or the process may still show the image it had before an exec.
func (c *Cache) Attribute(ev *schema.Event, pid uint32, startBootNs uint64) []schema.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var loaded []*entry
	e := c.ensureLocked(pid, startBootNs, &loaded)
	now := c.now()
	out := make([]schema.Event, 0, len(loaded))
	for _, l := range loaded {
		out = append(out, c.eventLocked(schema.ProcessSnapshot, now, l))
	}
	if e == nil {
		ev.Process = &schema.Process{
			EntityID:  schema.EntityID(c.bootID, pid, startBootNs),
			PID:       pid,
			StartTime: sensor.BootNsToTime(startBootNs),
		}
		ev.Parent = nil
		return out
	}
	full := c.eventLocked(ev.Type, ev.Time, e)
	ev.Process, ev.Parent = full.Process, full.Parent
	return out
}
