package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mamori-edr/mamori/internal/agent/sensor"
)

// TestMain lets the test binary double as a helper process: with
// MAMORI_HELPER=threads it starts OS threads and exits 5 from one of them.
func TestMain(m *testing.M) {
	if os.Getenv("MAMORI_HELPER") == "threads" {
		ready := make(chan struct{})
		for i := range 4 {
			go func() {
				runtime.LockOSThread()
				if i == 3 {
					<-ready
					os.Exit(5) // exit_group from a non-main thread
				}
				select {}
			}()
		}
		time.Sleep(50 * time.Millisecond)
		close(ready)
		select {}
	}
	os.Exit(m.Run())
}

// collector runs a Sensor and keeps what it emits for the test to search.
type collector struct {
	s      *Sensor
	mu     sync.Mutex
	evs    []sensor.ProcessEvent
	notify chan struct{}
}

// openSensor opens a sensor, skipping only when the kernel cannot run it.
func openSensor(t testing.TB, opts Options) *Sensor {
	t.Helper()
	s, err := Open(opts)
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("kernel cannot run the process sensor: %v", err)
	}
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// startCollector opens a sensor and runs it until the test ends.
func startCollector(t *testing.T, opts Options) *collector {
	t.Helper()
	c := &collector{s: openSensor(t, opts), notify: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.s.Run(ctx, func(e sensor.ProcessEvent) {
			c.mu.Lock()
			c.evs = append(c.evs, e)
			c.mu.Unlock()
			select {
			case c.notify <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

// wait returns the first event matching pred, failing after a timeout.
func (c *collector) wait(t *testing.T, what string, pred func(sensor.ProcessEvent) bool) sensor.ProcessEvent {
	t.Helper()
	return c.waitWithin(t, 5*time.Second, what, pred)
}

func (c *collector) waitWithin(t *testing.T, d time.Duration, what string, pred func(sensor.ProcessEvent) bool) sensor.ProcessEvent {
	t.Helper()
	deadline := time.After(d)
	seen := 0
	for {
		c.mu.Lock()
		for ; seen < len(c.evs); seen++ {
			if pred(c.evs[seen]) {
				e := c.evs[seen]
				c.mu.Unlock()
				return e
			}
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no %s event within %v (stats %+v)", what, d, c.s.Stats())
		}
	}
}

func (c *collector) all(pred func(sensor.ProcessEvent) bool) []sensor.ProcessEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []sensor.ProcessEvent
	for _, e := range c.evs {
		if pred(e) {
			out = append(out, e)
		}
	}
	return out
}

// copyTrue copies /bin/true into dir and returns its path.
func copyTrue(t *testing.T, dir, name string) string {
	t.Helper()
	src, err := os.Open("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p := filepath.Join(dir, name)
	dst, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func tempDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readProcUint(t *testing.T, name string) uint32 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/" + name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		t.Fatalf("/proc/self/%s: %v", name, err)
	}
	return uint32(v)
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted, or "".
func cgroup2Mount() string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f, pf := strings.Fields(pre), strings.Fields(post); ok && len(f) > 4 && len(pf) > 0 && pf[0] == "cgroup2" {
			return f[4]
		}
	}
	return ""
}

// cgroupIno returns the inode of this process's cgroup v2 directory, or 0.
func cgroupIno(t *testing.T) uint64 {
	mnt := cgroup2Mount()
	b, err := os.ReadFile("/proc/self/cgroup")
	if mnt == "" || err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			var st syscall.Stat_t
			if syscall.Stat(filepath.Join(mnt, rest), &st) == nil {
				return st.Ino
			}
		}
	}
	return 0
}

func TestExecForkExit(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		mode string
	}{
		{"auto", Options{}, ""},
		{"raw_tp", Options{ForceRawTP: true}, ModeRawTP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCollector(t, tc.opts)
			st := c.s.Stats()
			if tc.mode != "" && st.Mode != tc.mode {
				t.Fatalf("Mode = %q, want %q", st.Mode, tc.mode)
			}
			if len(st.Hooks) != 3 {
				t.Fatalf("Hooks = %v, want 3", st.Hooks)
			}
			t.Logf("mode %s, hooks %v", st.Mode, st.Hooks)
			checkExec(t, c)
		})
	}
}

func checkExec(t *testing.T, c *collector) {
	dir := tempDir(t)
	exe := copyTrue(t, dir, "mtrue")
	work := filepath.Join(dir, "work dir")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	marker := fmt.Sprintf("--marker=%d", time.Now().UnixNano())
	cmd := exec.Command("/bin/sh", "-c", `cd "$1" && "$2" "$3" "two words" ""; exit 0`, "sh", work, exe, marker)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh: %v: %s", err, out)
	}
	shPID := uint32(cmd.Process.Pid)

	execEv := c.wait(t, "exec", func(e sensor.ProcessEvent) bool {
		return e.Kind == sensor.KindExec && e.Exe == exe
	})
	wantArgs := []string{exe, marker, "two words", ""}
	if !slices.Equal(execEv.Args, wantArgs) || execEv.ArgsTruncated {
		t.Errorf("Args = %q (truncated %v), want %q", execEv.Args, execEv.ArgsTruncated, wantArgs)
	}
	if execEv.PPID != shPID {
		t.Errorf("PPID = %d, want the shell %d", execEv.PPID, shPID)
	}
	if execEv.PID != execEv.TID || execEv.PID == shPID {
		t.Errorf("PID/TID = %d/%d, want a new single-threaded process", execEv.PID, execEv.TID)
	}
	if execEv.Cwd != work {
		t.Errorf("Cwd = %q, want %q", execEv.Cwd, work)
	}
	if uid := uint32(os.Getuid()); execEv.UID != uid || execEv.EUID != uint32(os.Geteuid()) {
		t.Errorf("UID/EUID = %d/%d, want %d/%d", execEv.UID, execEv.EUID, uid, os.Geteuid())
	}
	if execEv.GID != uint32(os.Getgid()) || execEv.EGID != uint32(os.Getegid()) {
		t.Errorf("GID/EGID = %d/%d, want %d/%d", execEv.GID, execEv.EGID, os.Getgid(), os.Getegid())
	}
	if want := readProcUint(t, "loginuid"); execEv.LoginUID != want {
		t.Errorf("LoginUID = %d, want %d", execEv.LoginUID, want)
	}
	if want := readProcUint(t, "sessionid"); execEv.SessionID != want {
		t.Errorf("SessionID = %d, want %d", execEv.SessionID, want)
	}
	if want := cgroupIno(t); want != 0 && execEv.CgroupID != want {
		t.Errorf("CgroupID = %d, want %d", execEv.CgroupID, want)
	}
	if execEv.Comm != "mtrue" {
		t.Errorf("Comm = %q, want mtrue", execEv.Comm)
	}
	var fi syscall.Stat_t
	if err := syscall.Stat(exe, &fi); err != nil {
		t.Fatal(err)
	}
	if execEv.ExeIno != fi.Ino || execEv.ExeDev != fi.Dev || execEv.ExeSize != fi.Size {
		t.Errorf("exe identity = dev %d ino %d size %d, want dev %d ino %d size %d",
			execEv.ExeDev, execEv.ExeIno, execEv.ExeSize, fi.Dev, fi.Ino, fi.Size)
	}
	if want := fi.Mtim.Nano(); execEv.ExeMtimeNs != want {
		t.Errorf("ExeMtimeNs = %d, want %d", execEv.ExeMtimeNs, want)
	}
	if want := fi.Ctim.Nano(); execEv.ExeCtimeNs != want {
		t.Errorf("ExeCtimeNs = %d, want %d", execEv.ExeCtimeNs, want)
	}
	if execEv.StartBootNs == 0 || execEv.ParentStartBootNs == 0 || execEv.BootNs < execEv.StartBootNs {
		t.Errorf("times: event %d start %d parent start %d", execEv.BootNs, execEv.StartBootNs, execEv.ParentStartBootNs)
	}

	// The shell forked the child that exec'ed mtrue.
	forkEv := c.wait(t, "fork", func(e sensor.ProcessEvent) bool {
		return e.Kind == sensor.KindFork && e.PID == execEv.PID
	})
	if forkEv.PPID != shPID || forkEv.StartBootNs != execEv.StartBootNs {
		t.Errorf("fork PPID %d start %d, want %d and %d", forkEv.PPID, forkEv.StartBootNs, shPID, execEv.StartBootNs)
	}
	if forkEv.Cwd == "" || forkEv.Exe == "" || len(forkEv.Args) == 0 || forkEv.Args[0] != "/bin/sh" {
		t.Errorf("fork image: exe %q cwd %q args %q, want the shell's", forkEv.Exe, forkEv.Cwd, forkEv.Args)
	}
	// The shell's own exec names the parent's start time.
	shExec := c.wait(t, "shell exec", func(e sensor.ProcessEvent) bool {
		return e.Kind == sensor.KindExec && e.PID == shPID
	})
	if shExec.StartBootNs != execEv.ParentStartBootNs {
		t.Errorf("ParentStartBootNs = %d, want the shell's start %d", execEv.ParentStartBootNs, shExec.StartBootNs)
	}
	exitEv := c.wait(t, "exit", func(e sensor.ProcessEvent) bool {
		return e.Kind == sensor.KindExit && e.PID == execEv.PID
	})
	if exitEv.ExitCode != 0 || exitEv.ExitSignal != 0 || exitEv.StartBootNs != execEv.StartBootNs {
		t.Errorf("exit = code %d signal %d start %d", exitEv.ExitCode, exitEv.ExitSignal, exitEv.StartBootNs)
	}
}

// modes lists the hook modes every kernel test runs in.
var modes = []struct {
	name string
	opts Options
}{
	{ModeTPBTF, Options{}},
	{ModeRawTP, Options{ForceRawTP: true}},
}

// startMode starts a collector and skips when the kernel loaded another
// mode than the one under test (tp_btf refused: Open fell back).
func startMode(t *testing.T, mode string, opts Options) *collector {
	t.Helper()
	c := startCollector(t, opts)
	if got := c.s.Stats().Mode; got != mode {
		t.Skipf("kernel refused %s, loaded %s", mode, got)
	}
	return c
}

func TestExitCodeAndSignal(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { checkExitCodeAndSignal(t, startMode(t, m.name, m.opts)) })
	}
}

func checkExitCodeAndSignal(t *testing.T, c *collector) {

	cmd := exec.Command("/bin/sh", "-c", "exit 7")
	if err := cmd.Run(); err == nil {
		t.Fatal("sh exit 7 succeeded")
	}
	pid := uint32(cmd.Process.Pid)
	ev := c.wait(t, "exit 7", func(e sensor.ProcessEvent) bool {
		return e.Kind == sensor.KindExit && e.PID == pid
	})
	if ev.ExitCode != 7 || ev.ExitSignal != 0 {
		t.Errorf("exit 7: code %d signal %d", ev.ExitCode, ev.ExitSignal)
	}

	sleep := exec.Command("/bin/sleep", "30")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	spid := uint32(sleep.Process.Pid)
	sleepExec := c.wait(t, "sleep exec", func(e sensor.ProcessEvent) bool {
		return e.Kind == sensor.KindExec && e.PID == spid
	})
	// /proc/PID/stat field 22 is start_boottime in USER_HZ (100) ticks.
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", spid)); err != nil {
		t.Fatal(err)
	} else {
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		ticks, err := strconv.ParseUint(fields[19], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if got := sleepExec.StartBootNs / 1e7; got != ticks {
			t.Errorf("StartBootNs = %d (%d ticks), /proc says %d ticks", sleepExec.StartBootNs, got, ticks)
		}
	}
	if err := sleep.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = sleep.Wait()
	ev = c.wait(t, "kill -9", func(e sensor.ProcessEvent) bool {
		return e.Kind == sensor.KindExit && e.PID == spid
	})
	if ev.ExitSignal != int(syscall.SIGKILL) || ev.ExitCode != 0 {
		t.Errorf("kill -9: code %d signal %d", ev.ExitCode, ev.ExitSignal)
	}
}

// TestThreadsFiltered checks that thread creation and thread exit are not
// reported as process fork and exit.
func TestThreadsFiltered(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { checkThreadsFiltered(t, startMode(t, m.name, m.opts)) })
	}
}

func checkThreadsFiltered(t *testing.T, c *collector) {
	self := uint32(os.Getpid())

	// A goroutine that locks its thread and returns without unlocking
	// makes the runtime create a thread and then terminate it.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			time.Sleep(10 * time.Millisecond)
		}()
	}
	wg.Wait()
	// A marker process proves the sensor saw events after the threads.
	cmd := exec.Command("/bin/true", "thread-marker")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	mpid := uint32(cmd.Process.Pid)
	c.wait(t, "marker exit", func(e sensor.ProcessEvent) bool {
		return e.Kind == sensor.KindExit && e.PID == mpid
	})
	if bad := c.all(func(e sensor.ProcessEvent) bool {
		return (e.Kind == sensor.KindFork || e.Kind == sensor.KindExit) && e.PID == self
	}); len(bad) > 0 {
		t.Errorf("thread fork/exit reported as process events: %+v", bad[0])
	}
	if bad := c.all(func(e sensor.ProcessEvent) bool { return e.PID != e.TID && e.Kind == sensor.KindFork }); len(bad) > 0 {
		t.Errorf("fork event for a thread: %+v", bad[0])
	}
}

func TestArgsTruncated(t *testing.T) {
	c := startCollector(t, Options{ArgsMax: 64})
	long := strings.Repeat("x", 200)
	cmd := exec.Command("/bin/true", "trunc-marker", long)
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	ev := c.wait(t, "exec", func(e sensor.ProcessEvent) bool {
		return e.Kind == sensor.KindExec && e.PID == pid
	})
	if !ev.ArgsTruncated {
		t.Error("ArgsTruncated = false for 200-byte argv with ArgsMax 64")
	}
	if n := len(strings.Join(ev.Args, "\x00")); n > 64 {
		t.Errorf("captured %d argv bytes, want <= 64", n)
	}
	if len(ev.Args) != 3 || ev.Args[1] != "trunc-marker" || !strings.HasPrefix(long, ev.Args[2]) {
		t.Errorf("Args = %q, want a prefix of the argv", ev.Args)
	}
}

// TestDropsCounted fills a one-page ring without reading it and expects
// the kernel to count the events it could not queue.
func TestDropsCounted(t *testing.T) {
	s := openSensor(t, Options{RingBytes: 4096})
	for range 50 {
		if err := exec.Command("/bin/true").Run(); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	var total uint64
	for _, n := range st.Dropped {
		total += n
	}
	if total == 0 || st.Dropped["sched_process_exec"] == 0 {
		t.Fatalf("Dropped = %v after 50 execs into a 4 KiB ring, want > 0", st.Dropped)
	}
	// What did fit is still delivered.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	n := 0
	if err := s.Run(ctx, func(sensor.ProcessEvent) { n++ }); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Error("no events delivered from the full ring")
	}
	t.Logf("dropped %v, delivered %d", st.Dropped, n)
}

func TestOptionsRejected(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		key  string
	}{
		{Options{RingBytes: 1000}, "RingBytes"},
		{Options{RingBytes: 3 << 20}, "RingBytes"},
		{Options{RingBytes: -4096}, "RingBytes"},
		{Options{RingBytes: 1 << 32}, "RingBytes"},
		{Options{ArgsMax: -1}, "ArgsMax"},
		{Options{ArgsMax: MaxArgsMax + 1}, "ArgsMax"},
		{Options{Poll: time.Microsecond}, "Poll"},
		{Options{Poll: time.Hour}, "Poll"},
	} {
		_, err := Open(tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("Open(%+v) = %v, want an error naming %s", tc.opts, err, tc.key)
		}
	}
}

func TestRunStopsAndCloseIsIdempotent(t *testing.T) {
	s := openSensor(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func(sensor.ProcessEvent) {}) }()
	time.Sleep(50 * time.Millisecond)
	if err := s.Run(context.Background(), func(sensor.ProcessEvent) {}); err == nil {
		t.Error("second concurrent Run succeeded")
	}
	if err := s.Run(context.Background(), nil); err == nil {
		t.Error("Run with a nil emit succeeded")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestPaths checks the in-kernel path walk across mounts, through scripts
// and past its depth limit.
func TestPaths(t *testing.T) {
	c := startCollector(t, Options{})
	dir := tempDir(t)

	deep := dir
	for i := range 70 {
		deep = filepath.Join(deep, fmt.Sprintf("d%02d", i))
	}
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dash, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, cwd string
		argv      []string
		check     func(t *testing.T, e sensor.ProcessEvent)
	}{
		{"root cwd", "/", []string{"/bin/true", "paths-root"}, func(t *testing.T, e sensor.ProcessEvent) {
			if e.Cwd != "/" {
				t.Errorf("Cwd = %q, want /", e.Cwd)
			}
		}},
		{"cwd across two mounts", "/sys/fs/cgroup", []string{"/bin/true", "paths-mounts"}, func(t *testing.T, e sensor.ProcessEvent) {
			if e.Cwd != "/sys/fs/cgroup" {
				t.Errorf("Cwd = %q, want /sys/fs/cgroup", e.Cwd)
			}
		}},
		{"cwd deeper than the walk", deep, []string{"/bin/true", "paths-deep"}, func(t *testing.T, e sensor.ProcessEvent) {
			if strings.HasPrefix(e.Cwd, "/") || !strings.HasSuffix(deep, "/"+e.Cwd) || !strings.HasSuffix(e.Cwd, "d69") {
				t.Errorf("Cwd = %q, want a relative suffix of %q", e.Cwd, deep)
			}
		}},
		{"fileless exec from a memfd", "/", []string{"memfd"}, func(t *testing.T, e sensor.ProcessEvent) {
			if e.Exe != "/memfd:mtrue (deleted)" {
				t.Errorf("Exe = %q, want /memfd:mtrue (deleted)", e.Exe)
			}
		}},
		{"script runs its interpreter", dir, []string{script, "paths-script"}, func(t *testing.T, e sensor.ProcessEvent) {
			if e.Exe != dash || len(e.Args) < 2 || e.Args[1] != script {
				t.Errorf("Exe %q Args %q, want %s running %s", e.Exe, e.Args, dash, script)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := os.Stat(tc.cwd); err != nil {
				t.Skipf("no %s here: %v", tc.cwd, err)
			}
			if tc.argv[0] == "memfd" {
				tc.argv = []string{memfdTrue(t), "paths-memfd"}
			}
			cmd := exec.Command(tc.argv[0], tc.argv[1:]...)
			cmd.Dir = tc.cwd
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v: %v: %s", tc.argv, err, out)
			}
			pid := uint32(cmd.Process.Pid)
			tc.check(t, c.wait(t, "exec", func(e sensor.ProcessEvent) bool {
				return e.Kind == sensor.KindExec && e.PID == pid
			}))
		})
	}
}

// memfdTrue copies /bin/true into a memfd and returns a path that execs it.
func memfdTrue(t *testing.T) string {
	t.Helper()
	fd, err := unix.MemfdCreate("mtrue", 0)
	if err != nil {
		t.Skipf("memfd_create: %v", err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	t.Cleanup(func() { f.Close() })
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd)
}

// TestWakeupOnFill checks that a filling ring wakes the reader long before
// its poll timer would.
func TestWakeupOnFill(t *testing.T) {
	// Only a wake-up by the kernel can deliver the events before the 10s
	// poll. The bound is generous: in CI the whole host is busy with other
	// suites and two emulated kernels.
	c := startCollector(t, Options{RingBytes: 1 << 16, Poll: 10 * time.Second})
	time.Sleep(200 * time.Millisecond) // let Run start its long wait
	start := time.Now()
	self := uint32(os.Getpid())
	for range 30 {
		if err := exec.Command("/bin/true", "wakeup").Run(); err != nil {
			t.Fatal(err)
		}
	}
	c.waitWithin(t, 9500*time.Millisecond, "child exec", func(e sensor.ProcessEvent) bool {
		return e.Kind == sensor.KindExec && e.PPID == self && len(e.Args) == 2 && e.Args[1] == "wakeup"
	})
	if d := time.Since(start); d > 9500*time.Millisecond {
		t.Errorf("first event after %v, want it before the 10s poll", d)
	}
}

// TestCloseStopsRun checks that Close during Run makes Run return cleanly.
func TestCloseStopsRun(t *testing.T) {
	s, err := Open(Options{Poll: 5 * time.Second})
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("kernel cannot run the process sensor: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background(), func(sensor.ProcessEvent) {}) }()
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after Close = %v, want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run still running 3s after Close")
	}
	if st := s.Stats(); st.Mode == "" {
		t.Error("Stats after Close lost the mode")
	}
}

// TestCgroupID starts a child straight into a new cgroup (clone3
// CLONE_INTO_CGROUP) and expects its fork and exec events to carry that
// cgroup's id, the inode of its directory.
func TestCgroupID(t *testing.T) {
	mnt := cgroup2Mount()
	if mnt == "" {
		t.Skip("no cgroup v2 hierarchy mounted")
	}
	dir := filepath.Join(mnt, fmt.Sprintf("mamori-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot create a cgroup: %v", err)
	}
	t.Cleanup(func() { _ = os.Remove(dir) })
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(cg.Fd()), &st); err != nil {
		t.Fatal(err)
	}

	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := startMode(t, m.name, m.opts)
			cmd := exec.Command("/bin/true", "cgroup-marker")
			cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
			if err := cmd.Run(); err != nil {
				t.Skipf("clone into cgroup: %v", err)
			}
			pid := uint32(cmd.Process.Pid)
			for _, k := range []sensor.Kind{sensor.KindFork, sensor.KindExec, sensor.KindExit} {
				ev := c.wait(t, k.String(), func(e sensor.ProcessEvent) bool { return e.Kind == k && e.PID == pid })
				if ev.CgroupID != st.Ino {
					t.Errorf("%s CgroupID = %d, want %d (%s)", k, ev.CgroupID, st.Ino, dir)
				}
			}
		})
	}
}

// TestLeanFork checks that LeanFork strips the image from fork events only.
func TestLeanFork(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			opts := m.opts
			opts.LeanFork = true
			c := startMode(t, m.name, opts)
			cmd := exec.Command("/bin/true", "lean-marker")
			if err := cmd.Run(); err != nil {
				t.Fatal(err)
			}
			pid := uint32(cmd.Process.Pid)
			fork := c.wait(t, "fork", func(e sensor.ProcessEvent) bool { return e.Kind == sensor.KindFork && e.PID == pid })
			if fork.Exe != "" || fork.Cwd != "" || fork.Args != nil || fork.ExeIno != 0 {
				t.Errorf("lean fork carries an image: exe %q cwd %q args %q ino %d", fork.Exe, fork.Cwd, fork.Args, fork.ExeIno)
			}
			if fork.PPID != uint32(os.Getpid()) || fork.StartBootNs == 0 {
				t.Errorf("lean fork lost its identity: %+v", fork)
			}
			ex := c.wait(t, "exec", func(e sensor.ProcessEvent) bool { return e.Kind == sensor.KindExec && e.PID == pid })
			if ex.Exe == "" || len(ex.Args) != 2 || ex.Args[1] != "lean-marker" || ex.Cwd == "" {
				t.Errorf("exec lost its image: exe %q args %q cwd %q", ex.Exe, ex.Args, ex.Cwd)
			}
		})
	}
}

// TestMultiThreadedExit checks that a process with several threads yields
// one fork and one exit event, with the exit code of its exit_group.
func TestMultiThreadedExit(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := startMode(t, m.name, m.opts)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "MAMORI_HELPER=threads")
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 5 {
				t.Fatalf("helper: %v, want exit status 5", err)
			}
			pid := uint32(cmd.Process.Pid)
			exit := c.wait(t, "exit", func(e sensor.ProcessEvent) bool { return e.Kind == sensor.KindExit && e.PID == pid })
			if exit.ExitCode != 5 || exit.ExitSignal != 0 {
				t.Errorf("exit code %d signal %d, want 5", exit.ExitCode, exit.ExitSignal)
			}
			// Give straggling thread events time to arrive, then count.
			marker := exec.Command("/bin/true", "mt-marker")
			if err := marker.Run(); err != nil {
				t.Fatal(err)
			}
			mpid := uint32(marker.Process.Pid)
			c.wait(t, "marker exit", func(e sensor.ProcessEvent) bool { return e.Kind == sensor.KindExit && e.PID == mpid })
			for _, k := range []sensor.Kind{sensor.KindFork, sensor.KindExit} {
				if n := len(c.all(func(e sensor.ProcessEvent) bool { return e.Kind == k && e.PID == pid })); n != 1 {
					t.Errorf("%d %s events for a 5-thread process, want 1", n, k)
				}
			}
		})
	}
}

// TestCredentials runs a setuid+setgid copy of true as an unprivileged user
// so that every id field differs, and sets a login uid, so a field read
// from the wrong place cannot pass by being zero.
func TestCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users and set a login uid")
	}
	dir := tempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(dir); d != "/" && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe := copyTrue(t, dir, "suidtrue")
	if err := os.Chmod(exe, 0o755|os.ModeSetuid|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	// By path: a busybox shell (the QEMU guests') would run its own applet.
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	const uid, gid, loginuid = 12345, 23456, 4242

	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := startMode(t, m.name, m.opts)
			// The shell sets its login uid while still root, then setpriv
			// drops to uid/gid and execs the setuid/setgid copy.
			cmd := exec.Command("/bin/sh", "-c", `echo $1 > /proc/self/loginuid || exit 3; exec "$5" --reuid=$2 --regid=$3 --clear-groups "$4" cred-marker`,
				"sh", strconv.Itoa(loginuid), strconv.Itoa(uid), strconv.Itoa(gid), exe, setpriv)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() == 3 {
				t.Skipf("cannot set a login uid here: %s", out)
			}
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			pid := uint32(cmd.Process.Pid)
			ev := c.wait(t, "exec", func(e sensor.ProcessEvent) bool {
				return e.Kind == sensor.KindExec && e.PID == pid && e.Exe == exe
			})
			if ev.UID != uid || ev.EUID != 0 || ev.GID != gid || ev.EGID != 0 {
				t.Errorf("uid/euid/gid/egid = %d/%d/%d/%d, want %d/0/%d/0", ev.UID, ev.EUID, ev.GID, ev.EGID, uid, gid)
			}
			if ev.LoginUID != loginuid || ev.SessionID == 0 || ev.SessionID == ^uint32(0) {
				t.Errorf("loginuid %d session %d, want %d and a real session", ev.LoginUID, ev.SessionID, loginuid)
			}
		})
	}
}
