package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/agent/hashcache"
	"github.com/mamori-edr/mamori/internal/agent/sensor"
	"github.com/mamori-edr/mamori/internal/schema"
)

func bootID(t testing.TB) string {
	t.Helper()
	id, err := BootID()
	if err != nil {
		t.Fatal(err)
	}
	if len(id) != 36 {
		t.Fatalf("boot id %q: want a uuid", id)
	}
	return id
}

func statOf(t testing.TB, pid int) statInfo {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(uint32(pid)) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseStat(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSnapshotHasSelfAndAncestors(t *testing.T) {
	hc := hashcache.New(hashcache.Options{})
	defer hc.Close()
	c := New(bootID(t), hc, Options{})
	evs, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, ev := range evs {
		if ev.Type != schema.ProcessSnapshot || ev.Process == nil {
			t.Fatalf("event %d: %+v", i, ev)
		}
		pos[ev.Process.EntityID] = i
	}
	// Every parent present precedes its child.
	for i, ev := range evs {
		if pe := ev.Process.ParentEntityID; pe != "" {
			j, ok := pos[pe]
			if !ok {
				t.Fatalf("%s: parent %s not in snapshot", ev.Process.EntityID, pe)
			}
			if j >= i {
				t.Fatalf("%s at %d before its parent at %d", ev.Process.EntityID, i, j)
			}
		}
	}
	// Walk from this test process to pid 1 through the cache.
	pid := os.Getpid()
	st := statOf(t, pid)
	id := schema.EntityID(c.bootID, uint32(pid), st.StartTicks*ticksNs)
	p, ok := c.Lookup(id)
	if !ok {
		t.Fatalf("self %s not in cache", id)
	}
	// On a loaded machine the snapshot's hash budget may run out: then the
	// hash is pending and arrives late in the cache.
	for deadline := time.Now().Add(30 * time.Second); p.Hash != nil && p.Hash.Status == "pending" && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		p, _ = c.Lookup(id)
	}
	self, _ := os.Executable()
	if p.Exe != self || p.UID != uint32(os.Getuid()) || len(p.Args) == 0 || p.Hash == nil || p.Hash.Status != "ok" {
		t.Fatalf("self = %+v (hash %+v), want exe %s, uid, args, ok hash", p, p.Hash, self)
	}
	if p.User != "root" && os.Getuid() == 0 {
		t.Errorf("user %q, want root", p.User)
	}
	if p.CgroupPath == "" || p.CgroupID == 0 {
		t.Errorf("cgroup path %q id %d: want both", p.CgroupPath, p.CgroupID)
	}
	depth := 0
	for p.PID != 1 {
		ps := statOf(t, int(p.PID))
		if got, _, start, _ := schema.ParseEntityID(p.EntityID); got != c.bootID || start != ps.StartTicks {
			t.Fatalf("pid %d: entity %s, want start ticks %d from /proc", p.PID, p.EntityID, ps.StartTicks)
		}
		parent, ok := c.Lookup(p.ParentEntityID)
		if !ok {
			t.Fatalf("pid %d: parent %q not in cache", p.PID, p.ParentEntityID)
		}
		if parent.PID != ps.PPID {
			t.Fatalf("pid %d: parent pid %d, /proc says %d", p.PID, parent.PID, ps.PPID)
		}
		p = parent
		if depth++; depth > 100 {
			t.Fatal("lineage loop")
		}
	}
	if c.Len() < len(evs) {
		t.Fatalf("Len %d < %d snapshot events", c.Len(), len(evs))
	}
}

// child starts a copied binary so its exe and hash are our own.
func child(t testing.TB) (*exec.Cmd, string) {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "mamori-sleep")
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "30", "1") // sleep rejects any non-number argument and would exit
	cmd.Dir = "/tmp"
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Wait for the exec to finish (comm changes from the test's).
	for deadline := time.Now().Add(5 * time.Second); ; {
		if b, _ := os.ReadFile("/proc/" + itoa(uint32(cmd.Process.Pid)) + "/cmdline"); strings.Contains(string(b), "30\x001") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child never exec'd")
		}
		time.Sleep(time.Millisecond)
	}
	return cmd, exe
}

// execEvent builds the exec event the sensor would report for a real child.
func execEvent(t testing.TB, pid int, exe string) sensor.ProcessEvent {
	t.Helper()
	st := statOf(t, pid)
	self := statOf(t, os.Getpid())
	key, err := hashcache.StatKey(exe)
	if err != nil {
		t.Fatal(err)
	}
	cg, _ := os.ReadFile("/proc/" + itoa(uint32(pid)) + "/cgroup")
	v2, _, _ := parseCgroupFile(cg)
	cgID := newCgroups(cgroupV2Mount()).idOf(v2)
	if cgID == 0 {
		t.Fatalf("no cgroup id for %q", v2)
	}
	return sensor.ProcessEvent{
		CgroupID:          cgID,
		Kind:              sensor.KindExec,
		BootNs:            st.StartTicks*ticksNs + 1000,
		PID:               uint32(pid),
		TID:               uint32(pid),
		PPID:              uint32(os.Getpid()),
		StartBootNs:       st.StartTicks*ticksNs + 123, // sub-tick precision from the kernel
		ParentStartBootNs: self.StartTicks*ticksNs + 456,
		UID:               uint32(os.Getuid()), EUID: uint32(os.Geteuid()),
		GID: uint32(os.Getgid()), EGID: uint32(os.Getegid()),
		LoginUID: ^uint32(0), SessionID: ^uint32(0),
		Comm:   "mamori-sleep",
		Exe:    exe,
		Args:   []string{exe, "30", "1"},
		Cwd:    "/tmp",
		ExeDev: key.Dev, ExeIno: key.Ino, ExeSize: key.Size, ExeMtimeNs: key.MtimeNs, ExeCtimeNs: key.CtimeNs,
	}
}

func sha256sum(t testing.TB, p string) string {
	out, err := exec.Command("sha256sum", p).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))[0]
}

// TestHandleExecLineageColdCache gives Handle an exec with nothing cached:
// the parent chain must come from /proc, back to pid 1.
func TestHandleExecLineageColdCache(t *testing.T) {
	cmd, exe := child(t)
	hc := hashcache.New(hashcache.Options{})
	defer hc.Close()
	c := New(bootID(t), hc, Options{HashWait: 5 * time.Second})
	ev := execEvent(t, cmd.Process.Pid, exe)
	out := c.Handle(ev)
	if len(out) < 2 {
		t.Fatalf("%d events, want ancestors then the exec", len(out))
	}
	last := out[len(out)-1]
	if last.Type != schema.ProcessExec {
		t.Fatalf("last event %s, want exec", last.Type)
	}
	for _, a := range out[:len(out)-1] {
		if a.Type != schema.ProcessSnapshot {
			t.Fatalf("ancestor event %s, want snapshot", a.Type)
		}
	}
	if out[0].Process.PID != 1 {
		t.Fatalf("first ancestor pid %d, want 1", out[0].Process.PID)
	}
	p := last.Process
	selfSt := statOf(t, os.Getpid())
	wantParent := schema.EntityID(c.bootID, uint32(os.Getpid()), selfSt.StartTicks*ticksNs)
	if p.ParentEntityID != wantParent || last.Parent == nil || last.Parent.EntityID != wantParent {
		t.Fatalf("parent %q / %+v, want %s", p.ParentEntityID, last.Parent, wantParent)
	}
	self, _ := os.Executable()
	if last.Parent.Exe != self {
		t.Errorf("parent exe %q, want %q", last.Parent.Exe, self)
	}
	chSt := statOf(t, cmd.Process.Pid)
	if want := schema.EntityID(c.bootID, uint32(cmd.Process.Pid), chSt.StartTicks*ticksNs); p.EntityID != want {
		t.Fatalf("entity %s, want %s (agrees with /proc)", p.EntityID, want)
	}
	if p.Exe != exe || p.Args[2] != "1" || p.Cwd != "/tmp" || p.Name != "mamori-sleep" {
		t.Fatalf("process %+v", p)
	}
	cg, _ := os.ReadFile("/proc/" + itoa(uint32(cmd.Process.Pid)) + "/cgroup")
	if v2, _, _ := parseCgroupFile(cg); p.CgroupPath != v2 || p.CgroupID != ev.CgroupID {
		t.Errorf("cgroup %q id %d, want %q id %d", p.CgroupPath, p.CgroupID, v2, ev.CgroupID)
	}
	if p.Hash == nil || p.Hash.Status != "ok" || p.Hash.SHA256 != sha256sum(t, exe) {
		t.Fatalf("hash %+v, want sha256 of %s", p.Hash, exe)
	}
	if d := time.Since(last.Time); d < 0 || d > time.Minute {
		t.Errorf("event time %v off by %v", last.Time, d)
	}
	if d := p.StartTime.Sub(last.Time); d > time.Millisecond || d < -time.Minute {
		t.Errorf("start %v vs event %v", p.StartTime, last.Time)
	}
	// Every ancestor is now in the cache, parent before child.
	for i := 1; i < len(out); i++ {
		if out[i].Process.ParentEntityID != out[i-1].Process.EntityID {
			t.Fatalf("event %d parent %s, want %s", i, out[i].Process.ParentEntityID, out[i-1].Process.EntityID)
		}
	}

	// Fork of the child inherits its image and hash.
	fork := sensor.ProcessEvent{
		Kind: sensor.KindFork, BootNs: ev.BootNs + 10, PID: 1 << 22, TID: 1 << 22,
		PPID: ev.PID, StartBootNs: ev.BootNs + 5, ParentStartBootNs: ev.StartBootNs,
		UID: ev.UID, EUID: ev.EUID, Comm: "mamori-sleep",
	}
	fo := c.Handle(fork)
	if len(fo) != 1 || fo[0].Type != schema.ProcessFork {
		t.Fatalf("fork: %+v", fo)
	}
	fp := fo[0].Process
	if fp.Exe != exe || fp.Hash == nil || fp.Hash.SHA256 != p.Hash.SHA256 || fp.ParentEntityID != p.EntityID || fo[0].Parent.Exe != exe {
		t.Fatalf("fork child %+v, want parent's image and hash", fp)
	}

	// Exit carries the code; the entry lingers.
	exit := fork
	exit.Kind, exit.BootNs, exit.ExitCode = sensor.KindExit, ev.BootNs+20, 3
	xo := c.Handle(exit)
	if len(xo) != 1 || xo[0].Type != schema.ProcessExit || xo[0].Process.ExitCode == nil || *xo[0].Process.ExitCode != 3 {
		t.Fatalf("exit: %+v", xo)
	}
	if _, ok := c.Lookup(fp.EntityID); !ok {
		t.Fatal("exited process evicted before ExitLinger")
	}
}

func TestExitLingerAndMaxEntries(t *testing.T) {
	c := New("boot", nil, Options{ExitLinger: time.Minute, MaxEntries: 50, ProcRoot: t.TempDir()})
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	for pid := uint32(100); pid < 140; pid++ {
		c.Handle(sensor.ProcessEvent{Kind: sensor.KindExec, PID: pid, StartBootNs: uint64(pid) * 1e9, Exe: "/bin/x"})
	}
	for pid := uint32(100); pid < 110; pid++ {
		out := c.Handle(sensor.ProcessEvent{Kind: sensor.KindExit, PID: pid, StartBootNs: uint64(pid) * 1e9, ExitSignal: 9})
		if out[len(out)-1].Process.ExitSignal != 9 || out[len(out)-1].Process.Exe != "/bin/x" {
			t.Fatalf("exit %+v", out[len(out)-1].Process)
		}
	}
	if c.Len() != 40 {
		t.Fatalf("Len %d, want 40", c.Len())
	}
	now = now.Add(2 * time.Minute)
	c.Handle(sensor.ProcessEvent{Kind: sensor.KindExec, PID: 200, StartBootNs: 200e9})
	if c.Len() != 31 {
		t.Fatalf("Len %d after linger, want 31 (10 exited evicted)", c.Len())
	}
	for pid := uint32(300); pid < 400; pid++ {
		c.Handle(sensor.ProcessEvent{Kind: sensor.KindExec, PID: pid, StartBootNs: uint64(pid) * 1e9})
	}
	if c.Len() != 50 {
		t.Fatalf("Len %d, want MaxEntries 50", c.Len())
	}
	if _, ok := c.Lookup(schema.EntityID("boot", 399, 399e9)); !ok {
		t.Fatal("newest entry evicted")
	}
}

func TestPidReuseIsANewProcess(t *testing.T) {
	c := New("boot", nil, Options{ProcRoot: t.TempDir()})
	c.Handle(sensor.ProcessEvent{Kind: sensor.KindExec, PID: 77, StartBootNs: 1e9, Exe: "/old"})
	out := c.Handle(sensor.ProcessEvent{Kind: sensor.KindExec, PID: 77, StartBootNs: 9e9, Exe: "/new"})
	if out[0].Process.EntityID == schema.EntityID("boot", 77, 1e9) {
		t.Fatal("reused pid got the old entity id")
	}
	old, ok := c.Lookup(schema.EntityID("boot", 77, 1e9))
	if !ok || old.Exe != "/old" {
		t.Fatalf("old process %+v lost", old)
	}
}

func TestLateHashDelivery(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(40 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	key, _ := hashcache.StatKey(big)
	hc := hashcache.New(hashcache.Options{})
	defer hc.Close()
	c := New("boot", hc, Options{HashWait: time.Microsecond, ProcRoot: dir})
	var mu sync.Mutex
	var late []schema.Event
	got := make(chan struct{}, 4)
	c.SetLateSink(func(ev schema.Event) {
		mu.Lock()
		late = append(late, ev)
		mu.Unlock()
		got <- struct{}{}
	})
	out := c.Handle(sensor.ProcessEvent{
		Kind: sensor.KindExec, PID: 4242, StartBootNs: 5e9, Exe: big,
		ExeDev: key.Dev, ExeIno: key.Ino, ExeSize: key.Size, ExeMtimeNs: key.MtimeNs, ExeCtimeNs: key.CtimeNs,
	})
	p := out[len(out)-1].Process
	if p.Hash == nil || p.Hash.Status != "pending" {
		t.Fatalf("hash %+v, want pending", p.Hash)
	}
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no late hash")
	}
	mu.Lock()
	ev := late[0]
	mu.Unlock()
	if ev.Type != schema.ProcessHash || ev.Process.EntityID != p.EntityID || ev.Process.Hash.Status != "ok" || ev.Process.Hash.SHA256 != sha256sum(t, big) {
		t.Fatalf("late event %+v hash %+v", ev, ev.Process.Hash)
	}
	if cp, _ := c.Lookup(p.EntityID); cp.Hash == nil || cp.Hash.Status != "ok" {
		t.Fatalf("cache not updated: %+v", cp.Hash)
	}
}

func TestParseStat(t *testing.T) {
	tail := " S 1 2 3 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4242 0 0 18446744073709551615"
	tests := []struct {
		name, in string
		comm     string
		ppid     uint32
		start    uint64
		wantErr  bool
	}{
		{"plain", "12 (bash)" + tail, "bash", 1, 4242, false},
		{"spaces and parens", "12 (a) b (c) )" + tail, "a) b (c) ", 1, 4242, false},
		{"empty comm", "12 ()" + tail, "", 1, 4242, false},
		{"no parens", "12 bash" + tail, "", 0, 0, true},
		{"truncated", "12 (bash) S 1 2 3", "", 0, 0, true},
		{"bad ppid", "12 (x) S -1 2 3 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4242", "", 0, 0, true},
		{"bad start", "12 (x) S 1 2 3 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 zz", "", 0, 0, true},
		{"empty", "", "", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := parseStat([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && (s.Comm != tt.comm || s.PPID != tt.ppid || s.StartTicks != tt.start) {
				t.Fatalf("got %+v", s)
			}
		})
	}
}

func TestContainerID(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	const id2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	tests := []struct{ path, want string }{
		{"/system.slice/docker-" + id + ".scope", id},
		{"/docker/" + id, id},
		{"/kubepods/burstable/pod1b2c3d4e-aaaa-bbbb-cccc-1234567890ab/" + id, id},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b2c.slice/cri-containerd-" + id + ".scope", id},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podx.slice/crio-" + id + ".scope", id},
		{"/machine.slice/libpod-" + id + ".scope/container", id},
		{"/system.slice/containerd.service/kubepods-burstable-pod1.slice:cri-containerd:" + id, id},
		{"/docker/" + id + "/docker/" + id2, id},
		{"/machine.slice/libpod-conmon-" + id + ".scope", ""},
		{"/kubepods.slice/crio-conmon-" + id + ".scope", ""},
		{"/user.slice/user-0.slice/session-1.scope", ""},
		{"/", ""},
		{"", ""},
		{"/something/" + id, ""},
		{"/docker/" + strings.ToUpper(id), ""},
		{"/docker/" + id[:63], ""},
		{"/system.slice/docker-" + id + "x.scope", ""},
	}
	for _, tt := range tests {
		if got := ContainerID(tt.path); got != tt.want {
			t.Errorf("ContainerID(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestUsersReread(t *testing.T) {
	p := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(p, []byte("root:x:0:0:root:/root:/bin/bash\nbad line\nalice:x:1000:1000::/home/a:/bin/sh\nalias:x:1000:1000::/:/bin/sh\n"), 0o644)
	u := newUsers(p)
	if u.name(0) != "root" || u.name(1000) != "alice" || u.name(5) != "" {
		t.Fatalf("names %v", u.names)
	}
	os.WriteFile(p, []byte("bob:x:1000:1000::/home/b:/bin/sh\n"), 0o644)
	u.mu.Lock()
	u.checked = time.Time{}
	u.mu.Unlock()
	if u.name(1000) != "bob" {
		t.Fatalf("after change: %v", u.names)
	}
}

func TestHostileEvents(t *testing.T) {
	c := New("boot", nil, Options{ProcRoot: t.TempDir()})
	tests := []struct {
		name string
		ev   sensor.ProcessEvent
		n    int
	}{
		{"unknown kind", sensor.ProcessEvent{Kind: 99, PID: 5}, 0},
		{"pid 0 exec", sensor.ProcessEvent{Kind: sensor.KindExec}, 1},
		{"exit of unknown", sensor.ProcessEvent{Kind: sensor.KindExit, PID: 9, PPID: 8, StartBootNs: 1}, 1},
		{"self parent", sensor.ProcessEvent{Kind: sensor.KindFork, PID: 9, PPID: 9, StartBootNs: 5, ParentStartBootNs: 5}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if out := c.Handle(tt.ev); len(out) != tt.n {
				t.Fatalf("%d events, want %d", len(out), tt.n)
			}
		})
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1 (systemd) S 0 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 2 0 0"))
	f.Add([]byte("12 (a) b (c) ) S 1 2 3 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4242 0"))
	f.Add([]byte("7 ()) R 1"))
	f.Add([]byte(")("))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseStat(b)
		if err != nil {
			return
		}
		if strings.Count(string(b), ")") == 0 || len(s.Comm) > len(b) {
			t.Fatalf("accepted %q as %+v", b, s)
		}
	})
}

func FuzzParsePasswd(f *testing.F) {
	f.Add([]byte("root:x:0:0:root:/root:/bin/bash\n"))
	f.Add([]byte("a::4294967295:\n:x:1:1\n+nis\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, name := range parsePasswd(b) {
			if name == "" || strings.ContainsAny(name, ":\n") {
				t.Fatalf("bad name %q from %q", name, b)
			}
		}
	})
}

func FuzzContainerID(f *testing.F) {
	f.Add("/docker/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	f.Add("/a:b:c/docker-x.scope")
	f.Fuzz(func(t *testing.T, path string) {
		if id := ContainerID(path); id != "" && (!isHex64(id) || !strings.Contains(path, id)) {
			t.Fatalf("ContainerID(%q) = %q", path, id)
		}
	})
}

func BenchmarkHandleExecHit(b *testing.B) {
	cmd, exe := child(b)
	hc := hashcache.New(hashcache.Options{})
	defer hc.Close()
	c := New(bootID(b), hc, Options{HashWait: 5 * time.Second})
	ev := execEvent(b, cmd.Process.Pid, exe)
	c.Handle(ev)
	b.ReportAllocs()
	for b.Loop() {
		c.Handle(ev)
	}
}

func BenchmarkHandleForkExit(b *testing.B) {
	cmd, exe := child(b)
	hc := hashcache.New(hashcache.Options{})
	defer hc.Close()
	c := New(bootID(b), hc, Options{HashWait: 5 * time.Second, MaxEntries: 4096})
	ev := execEvent(b, cmd.Process.Pid, exe)
	c.Handle(ev)
	b.ReportAllocs()
	pid := uint32(1 << 22)
	for b.Loop() {
		pid++
		fork := sensor.ProcessEvent{Kind: sensor.KindFork, PID: pid, PPID: ev.PID, StartBootNs: uint64(pid) * 1e9, ParentStartBootNs: ev.StartBootNs, CgroupID: ev.CgroupID}
		c.Handle(fork)
		fork.Kind = sensor.KindExit
		c.Handle(fork)
	}
}

// TestSnapshotHostileProc runs Snapshot over a fake /proc with malformed,
// missing and oversized files: bad processes are skipped, good ones kept.
func TestSnapshotHostileProc(t *testing.T) {
	root := t.TempDir()
	tail := " 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 " // fields 5-21
	write := func(pid, name, data string) {
		t.Helper()
		os.MkdirAll(filepath.Join(root, pid), 0o755)
		if err := os.WriteFile(filepath.Join(root, pid, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("1", "stat", "1 (init) S 0"+tail+"5 0 0")
	write("1", "status", "Name:\tinit\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
	write("1", "cmdline", "/sbin/init\x00")
	write("1", "cgroup", "0::/init.scope\n")
	write("20", "stat", "20 (evil) (x) R 1"+tail+"50 0 0")
	write("20", "status", "Uid:\tnope\n")
	write("20", "cmdline", strings.Repeat("A", maxArgsBytes+100))
	write("20", "loginuid", "garbage")
	write("20", "cgroup", "garbage\n0::/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n")
	write("30", "stat", "30 (bad stat")
	write("40", "stat", "")
	os.MkdirAll(filepath.Join(root, "50"), 0o755) // no stat at all
	write("notapid", "stat", "x")
	c := New("boot", nil, Options{ProcRoot: root, PasswdPath: filepath.Join(root, "nopasswd")})
	evs, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Process.PID != 1 || evs[1].Process.PID != 20 {
		t.Fatalf("got %d events: %+v", len(evs), evs)
	}
	evil := evs[1].Process
	if evil.Name != "evil) (x" || evil.ParentEntityID != "boot:1:5" || !evil.ArgsTruncated ||
		len(evil.Args[0]) != maxArgsBytes || evil.LoginUID != ^uint32(0) ||
		evil.ContainerID != "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
		t.Fatalf("evil: name %q parent %q truncated %v args0 %d login %d container %q",
			evil.Name, evil.ParentEntityID, evil.ArgsTruncated, len(evil.Args[0]), evil.LoginUID, evil.ContainerID)
	}
	if evs[1].Parent == nil || evs[1].Parent.Args[0] != "/sbin/init" {
		t.Fatalf("parent copy %+v", evs[1].Parent)
	}
	if _, err := New("boot", nil, Options{ProcRoot: t.TempDir()}).Snapshot(); err == nil {
		t.Fatal("empty /proc: want an error")
	}
	if _, err := New("boot", nil, Options{ProcRoot: filepath.Join(root, "missing")}).Snapshot(); err == nil {
		t.Fatal("missing /proc: want an error")
	}
}

func FuzzParseProcFiles(f *testing.F) {
	f.Add([]byte("Name:\tx\nUid:\t0\t1\t0\t0\nGid:\t2\t3\t0\t0\n"))
	f.Add([]byte("12:memory:/docker/x\n0::/user.slice\n1:name=systemd:/a:b\n"))
	f.Add([]byte("Uid:\t\n0::"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, e, err := parseIDs(b, "Uid:"); err != nil && (r != 0 || e != 0) {
			t.Fatalf("error %v with ids %d %d", err, r, e)
		}
		v2, has, all := parseCgroupFile(b)
		if !has && v2 != "" {
			t.Fatalf("v2 path %q without a 0:: line", v2)
		}
		if has && len(all) == 0 {
			t.Fatal("v2 path not among all paths")
		}
	})
}

func TestAttribute(t *testing.T) {
	boot, err := BootID()
	if err != nil {
		t.Fatal(err)
	}
	c := New(boot, nil, Options{})
	self := uint32(os.Getpid())
	st, err := readProc("/proc", self)
	if err != nil {
		t.Fatal(err)
	}
	start := st.stat.StartTicks * ticksNs

	for _, tc := range []struct {
		name      string
		pid       uint32
		start     uint64
		wantExe   bool
		snapshots bool
	}{
		{"miss reads /proc", self, start, true, true},
		{"hit", self, start, true, false},
		{"pid reused: start differs", self, start + 10*ticksNs, false, false},
		{"gone", 1 << 30, 1, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := schema.Event{Type: schema.NetworkConnect, Time: time.Now()}
			snaps := c.Attribute(&ev, tc.pid, tc.start)
			if ev.Process == nil || ev.Process.PID != tc.pid || ev.Process.EntityID != schema.EntityID(boot, tc.pid, tc.start) {
				t.Fatalf("process %+v: want pid %d with its entity id", ev.Process, tc.pid)
			}
			if got := ev.Process.Exe != ""; got != tc.wantExe {
				t.Errorf("exe %q: want set=%v", ev.Process.Exe, tc.wantExe)
			}
			if tc.wantExe && (ev.Parent == nil || ev.Parent.PID != uint32(os.Getppid())) {
				t.Errorf("parent %+v: want pid %d", ev.Parent, os.Getppid())
			}
			if (len(snaps) > 0) != tc.snapshots {
				t.Errorf("%d snapshot events, want some=%v", len(snaps), tc.snapshots)
			}
			for _, s := range snaps {
				if s.Type != schema.ProcessSnapshot {
					t.Errorf("returned a %s event, want process_snapshot", s.Type)
				}
			}
		})
	}
}
