// Command store measures the embedded event store engines on a synthetic
// process-event workload: durable ingest in agent-sized batches, size on
// disk, and tenant-scoped hunt latencies.
//
//	go run ./bench/store -engine sqlite -events 1000000
//	go run -tags duckdb ./bench/store -engine duckdb -events 1000000
//
// The trap: numbers from a warm page cache on a shared 2-core machine are
// relative, not absolute; compare engines within one run of this program,
// on the same machine, at the same -events.
package main

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/store/sqlite"
)

var engines = map[string]func(dir string) (store.EventStore, error){
	"sqlite": func(dir string) (store.EventStore, error) { return sqlite.OpenEvents(dir) },
}

func main() {
	engine := flag.String("engine", "sqlite", "event store engine: sqlite or duckdb (needs -tags duckdb)")
	n := flag.Int("events", 1_000_000, "events to ingest")
	hosts := flag.Int("hosts", 200, "hosts")
	batch := flag.Int("batch", 1000, "events per Append (one agent batch)")
	dir := flag.String("dir", "", "data directory (default: a new temporary one, removed at exit)")
	keep := flag.Bool("keep", false, "keep the data directory")
	reps := flag.Int("reps", 5, "repetitions of each hunt (median reported)")
	flag.Parse()
	if err := run(*engine, *n, *hosts, *batch, *dir, *keep, *reps); err != nil {
		fmt.Fprintln(os.Stderr, "bench/store:", err)
		os.Exit(1)
	}
}

func run(engine string, n, hosts, batch int, dir string, keep bool, reps int) error {
	open, ok := engines[engine]
	if !ok {
		return fmt.Errorf("engine %q not built in (have %v; duckdb needs -tags duckdb)", engine, keys(engines))
	}
	if n <= 0 || hosts <= 0 || batch <= 0 {
		return fmt.Errorf("-events, -hosts and -batch must be positive")
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "mamori-bench-store-")
		if err != nil {
			return err
		}
		dir = d
		if !keep {
			defer os.RemoveAll(dir)
		}
	}
	ctx := context.Background()
	s, err := open(dir)
	if err != nil {
		return err
	}
	g := newGen(hosts)

	// Ingest: batches of one host at a time, as the server receives them.
	// 10% of the events belong to a second tenant, so hunts are scoped.
	start := time.Now()
	var lat []time.Duration
	done := 0
	for done < n {
		k := min(batch, n-done)
		tenant := "t1"
		if (done/batch)%10 == 9 {
			tenant = "t2"
		}
		evs := g.batch(k)
		t0 := time.Now()
		if err := s.Append(ctx, tenant, evs); err != nil {
			return fmt.Errorf("append at %d: %w", done, err)
		}
		lat = append(lat, time.Since(t0))
		done += k
		if done%(n/10+1) < k {
			fmt.Fprintf(os.Stderr, "  %s: %d events, %.0f rows/s\n", engine, done, float64(done)/time.Since(start).Seconds())
		}
	}
	ingest := time.Since(start)

	// Small durable batches: what one quiet agent sends.
	var small []time.Duration
	for i := 0; i < 200; i++ {
		evs := g.batch(10)
		t0 := time.Now()
		if err := s.Append(ctx, "t1", evs); err != nil {
			return fmt.Errorf("small append: %w", err)
		}
		small = append(small, time.Since(t0))
	}

	hunts := []struct {
		name string
		f    func() (int, error)
	}{
		{"args contains (rare, all time)", func() (int, error) {
			evs, err := s.Query(ctx, store.EventQuery{Tenant: "t1", Limit: 1000, Desc: true,
				Conditions: []store.Condition{{Field: "process.args", Op: store.OpContains, Value: "base64 -d"}}})
			return len(evs), err
		}},
		{"args contains (common, limit 100)", func() (int, error) {
			evs, err := s.Query(ctx, store.EventQuery{Tenant: "t1", Limit: 100, Desc: true,
				Conditions: []store.Condition{{Field: "process.args", Op: store.OpContains, Value: "--config"}}})
			return len(evs), err
		}},
		{"parent.exe suffix + name eq", func() (int, error) {
			evs, err := s.Query(ctx, store.EventQuery{Tenant: "t1", Limit: 1000,
				Conditions: []store.Condition{{Field: "parent.exe", Op: store.OpSuffix, Value: "/nginx"}, {Field: "process.name", Op: store.OpEq, Value: "sh"}}})
			return len(evs), err
		}},
		{"process tree (ancestors+descendants)", func() (int, error) { return tree(ctx, s, g.sampleEntity()) }},
		{"host + 10 min window", func() (int, error) {
			from := g.base.Add(g.elapsed() / 2)
			evs, err := s.Query(ctx, store.EventQuery{Tenant: "t1", HostIDs: []string{g.hostID(7)}, From: from, To: from.Add(10 * time.Minute), Limit: 10000})
			return len(evs), err
		}},
		{"count", func() (int, error) { c, err := s.Count(ctx, "t1"); return int(c), err }},
	}
	type result struct {
		name string
		med  time.Duration
		rows int
	}
	var results []result
	for _, h := range hunts {
		var ds []time.Duration
		rows := 0
		for i := 0; i < reps; i++ {
			t0 := time.Now()
			r, err := h.f()
			if err != nil {
				return fmt.Errorf("%s: %w", h.name, err)
			}
			ds = append(ds, time.Since(t0))
			rows = r
		}
		results = append(results, result{h.name, median(ds), rows})
	}
	if err := s.Close(); err != nil {
		return err
	}
	size, err := dirSize(dir)
	if err != nil {
		return err
	}
	fmt.Printf("engine=%s events=%d hosts=%d batch=%d\n", engine, n, hosts, batch)
	fmt.Printf("| metric | value |\n|---|---|\n")
	fmt.Printf("| ingest rows/s (batch %d) | %.0f |\n", batch, float64(n)/ingest.Seconds())
	fmt.Printf("| batch latency p50 / p99 | %s / %s |\n", pct(lat, 50), pct(lat, 99))
	fmt.Printf("| 10-event batch p50 / p99 | %s / %s |\n", pct(small, 50), pct(small, 99))
	fmt.Printf("| size on disk | %.1f MiB (%.0f B/event) |\n", float64(size)/(1<<20), float64(size)/float64(n))
	for _, r := range results {
		fmt.Printf("| %s | %s (%d rows) |\n", r.name, r.med.Round(10*time.Microsecond), r.rows)
	}
	return nil
}

// tree walks ancestors (by parent entity id) and descendants (by child
// events), as `mamori tree` does, and returns the events seen.
func tree(ctx context.Context, s store.EventStore, id string) (int, error) {
	seen := map[string]bool{id: true}
	total := 0
	// Ancestors.
	cur := id
	for depth := 0; depth < 64 && cur != ""; depth++ {
		evs, err := s.ProcessEvents(ctx, "t1", []string{cur})
		if err != nil {
			return 0, err
		}
		total += len(evs)
		next := ""
		for _, e := range evs {
			if e.Process != nil && e.Process.ParentEntityID != "" && !seen[e.Process.ParentEntityID] {
				next = e.Process.ParentEntityID
			}
		}
		seen[next] = true
		cur = next
	}
	// Descendants, level by level.
	level := []string{id}
	for depth := 0; depth < 32 && len(level) > 0; depth++ {
		evs, err := s.ChildEvents(ctx, "t1", level)
		if err != nil {
			return 0, err
		}
		total += len(evs)
		level = level[:0:0]
		for _, e := range evs {
			if e.Process != nil && !seen[e.Process.EntityID] {
				seen[e.Process.EntityID] = true
				level = append(level, e.Process.EntityID)
			}
		}
	}
	return total, nil
}

func median(ds []time.Duration) time.Duration { return pct(ds, 50) }

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(10 * time.Microsecond)
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	return n, err
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// gen produces a deterministic exec-heavy process workload.
type gen struct {
	rnd   *rand.Rand
	base  time.Time
	hosts []*host
	next  int // host of the next batch
	clock time.Duration
	picks []string // sample of entity ids with children, for tree hunts
}

type host struct {
	id, boot string
	seq      uint64
	pid      uint32
	roots    []proc // long-lived daemons
}

type proc struct {
	id   string
	pid  uint32
	exe  string
	args []string
}

var daemons = []proc{
	{exe: "/usr/sbin/nginx", args: []string{"nginx: worker process"}},
	{exe: "/usr/sbin/sshd", args: []string{"sshd: admin@pts/0"}},
	{exe: "/usr/sbin/cron", args: []string{"/usr/sbin/cron", "-f"}},
	{exe: "/usr/bin/containerd-shim-runc-v2", args: []string{"/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io"}},
}

var tools = []string{"/usr/bin/python3", "/usr/bin/curl", "/usr/bin/git", "/usr/bin/grep", "/usr/bin/awk", "/usr/bin/sed",
	"/usr/bin/find", "/usr/bin/tar", "/usr/bin/gzip", "/usr/bin/ls", "/usr/bin/cat", "/usr/bin/systemctl", "/usr/bin/apt-get", "/usr/bin/node"}

func newGen(n int) *gen {
	g := &gen{rnd: rand.New(rand.NewPCG(1, 2)), base: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}
	for i := 0; i < n; i++ {
		h := &host{id: g.hostID(i), boot: fmt.Sprintf("%08x-boot", i), pid: 1000}
		for _, d := range daemons {
			h.pid++
			d.pid = h.pid
			d.id = schema.EntityID(h.boot, d.pid, uint64(d.pid)*1e9)
			h.roots = append(h.roots, d)
		}
		g.hosts = append(g.hosts, h)
	}
	return g
}

func (g *gen) hostID(i int) string { return fmt.Sprintf("host-%05d", i) }

func (g *gen) elapsed() time.Duration { return g.clock }

func (g *gen) sampleEntity() string {
	if len(g.picks) == 0 {
		return "none"
	}
	return g.picks[len(g.picks)/2]
}

func (g *gen) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.rnd.IntN(16)]
	}
	return string(b)
}

func (g *gen) cmdline(exe string) []string {
	name := filepath.Base(exe)
	switch g.rnd.IntN(6) {
	case 0:
		return []string{name, "/opt/app/worker.py", "--config", "/etc/app/config-" + g.hex(6) + ".yaml", "--queue", "jobs-" + g.hex(4), "--token", g.hex(32)}
	case 1:
		return []string{name, "-fsSL", "-H", "Authorization: Bearer " + g.hex(40), "https://api.internal.example/v2/items/" + g.hex(12) + "?expand=owner,labels&page=" + fmt.Sprint(g.rnd.IntN(100))}
	case 2:
		return []string{name, "-c", "cd /srv/build/" + g.hex(8) + " && make -j4 all CFLAGS='-O2 -g' LDFLAGS=-static 2>&1 | tee /var/log/build-" + g.hex(6) + ".log"}
	case 3:
		return []string{name, "-rn", "--include=*.go", "TODO\\|FIXME", "/home/dev/src/" + g.hex(6)}
	case 4:
		return []string{name, "--user", "status", "app-" + g.hex(4) + ".service", "--no-pager", "--lines=50"}
	}
	return []string{name, strings.Repeat("/var/lib/data/"+g.hex(4)+" ", 1+g.rnd.IntN(8))}
}

// batch returns k events of the next host, in time order.
func (g *gen) batch(k int) []schema.Event {
	h := g.hosts[g.next%len(g.hosts)]
	g.next++
	out := make([]schema.Event, 0, k+8)
	for len(out) < k {
		g.clock += time.Millisecond
		now := g.base.Add(g.clock)
		root := h.roots[g.rnd.IntN(len(h.roots))]
		// A shell under a daemon, then a few tool execs under the shell.
		sh := g.spawn(h, root, "/bin/sh", []string{"sh", "-c", "run-parts /etc/app.d " + g.hex(8)}, now, &out)
		if g.rnd.IntN(100_000) == 0 {
			g.spawn(h, sh, "/bin/bash", []string{"bash", "-c", "echo " + g.hex(60) + " | base64 -d | sh"}, now, &out)
		}
		kids := 1 + g.rnd.IntN(4)
		for i := 0; i < kids && len(out) < k; i++ {
			exe := tools[g.rnd.IntN(len(tools))]
			c := g.spawn(h, sh, exe, g.cmdline(exe), now, &out)
			g.exit(h, c, sh, now, &out)
		}
		g.exit(h, sh, root, now, &out)
		if g.rnd.IntN(50) == 0 && len(g.picks) < 1000 {
			g.picks = append(g.picks, sh.id)
		}
	}
	return out[:k]
}

func (g *gen) spawn(h *host, parent proc, exe string, args []string, now time.Time, out *[]schema.Event) proc {
	h.pid++
	if h.pid > 4_000_000 {
		h.pid = 1000 + uint32(len(daemons))
	}
	p := proc{pid: h.pid, exe: exe, args: args, id: schema.EntityID(h.boot, h.pid, uint64(now.UnixNano()))}
	base := func(t schema.EventType, exe string, args []string) schema.Event {
		h.seq++
		return schema.Event{Schema: schema.Version, HostID: h.id, BootID: h.boot, Seq: h.seq, Time: now, Type: t,
			Process: &schema.Process{EntityID: p.id, PID: p.pid, PPID: parent.pid, ParentEntityID: parent.id,
				StartTime: now, Name: filepath.Base(exe), Exe: exe, Args: args, Cwd: "/srv", UID: 1000, EUID: 1000,
				GID: 1000, EGID: 1000, LoginUID: 1000, SessionID: 3,
				Hash: &schema.FileHash{SHA256: g.hex(64), MD5: g.hex(32), Size: 123456, Status: "ok"}},
			Parent: &schema.Ancestor{EntityID: parent.id, PID: parent.pid, Exe: parent.exe, Args: parent.args}}
	}
	*out = append(*out, base(schema.ProcessFork, parent.exe, parent.args), base(schema.ProcessExec, exe, args))
	return p
}

func (g *gen) exit(h *host, p, parent proc, now time.Time, out *[]schema.Event) {
	h.seq++
	code := 0
	*out = append(*out, schema.Event{Schema: schema.Version, HostID: h.id, BootID: h.boot, Seq: h.seq, Time: now.Add(time.Microsecond), Type: schema.ProcessExit,
		Process: &schema.Process{EntityID: p.id, PID: p.pid, PPID: parent.pid, ParentEntityID: parent.id, Name: filepath.Base(p.exe), Exe: p.exe, ExitCode: &code},
		Parent:  &schema.Ancestor{EntityID: parent.id, PID: parent.pid, Exe: parent.exe}})
}
