package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TestMain lets the test binary double as a helper process:
// MAMORI_HELPER=connect ADDR N connects N times to ADDR (failures allowed)
// and exits 0.
func TestMain(m *testing.M) {
	if os.Getenv("MAMORI_HELPER") == "connect" {
		n, _ := strconv.Atoi(os.Getenv("MAMORI_N"))
		for range max(n, 1) {
			c, err := net.DialTimeout("tcp", os.Getenv("MAMORI_ADDR"), 2*time.Second)
			if err == nil {
				c.Close()
			}
		}
		os.Exit(0)
	}
	if err := loopbackUp(); err != nil {
		fmt.Fprintln(os.Stderr, "bring up lo:", err)
	}
	os.Exit(m.Run())
}

// loopbackUp sets lo up: the QEMU guest of scripts/test-kernels.sh boots
// with it down, and every test here talks over loopback.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	if ifr.Uint16()&unix.IFF_UP != 0 {
		return nil
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond) // ::1 becomes usable after DAD-free setup
	return nil
}

type collector struct {
	s   *Sensor
	mu  sync.Mutex
	evs []Event
}

func openSensor(t testing.TB, opts Options) *Sensor {
	t.Helper()
	s, err := Open(opts)
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("kernel cannot run the network sensor: %v", err)
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

func startCollector(t *testing.T, opts Options) *collector {
	t.Helper()
	c := &collector{s: openSensor(t, opts)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.s.Run(ctx, func(ev Event) {
			c.mu.Lock()
			c.evs = append(c.evs, ev)
			c.mu.Unlock()
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

// wait returns the events matching f once at least n arrived, or fails.
func (c *collector) wait(t *testing.T, n int, what string, f func(Event) bool) []Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []Event
		c.mu.Lock()
		for _, ev := range c.evs {
			if f(ev) {
				got = append(got, ev)
			}
		}
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d events after 10s", what, len(got), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runHelper connects n times to addr from a child process and returns its pid.
func runHelper(t *testing.T, addr string, n int) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MAMORI_HELPER=connect", "MAMORI_ADDR="+addr, "MAMORI_N="+strconv.Itoa(n))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	return cmd.Process.Pid
}

// serve listens on addr and accepts until the test ends.
func serve(t *testing.T, network, addr string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.(*net.TCPListener)
}

func TestConnectAcceptListen(t *testing.T) {
	for _, tc := range []struct {
		name, network, addr, family string
	}{
		{"ipv4", "tcp4", "127.0.0.1:0", "ipv4"},
		{"ipv6", "tcp6", "[::1]:0", "ipv6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCollector(t, Options{})
			ln := serve(t, tc.network, tc.addr)
			srv := ln.Addr().(*net.TCPAddr).AddrPort()
			srv = netip.AddrPortFrom(srv.Addr().Unmap(), srv.Port())
			self := uint32(os.Getpid())

			// The sensor is open before the listen, so it is reported.
			l := c.wait(t, 1, "listen", func(e Event) bool { return e.Kind == KindListen && e.Dst == srv })[0]
			if l.PID != self || l.Family() != tc.family || l.Protocol != protoTCP || l.Src.IsValid() {
				t.Errorf("listen event %+v: want pid %d, family %s, tcp, no source", l, self, tc.family)
			}

			pid := uint32(runHelper(t, srv.String(), 1))
			conn := c.wait(t, 1, "connect", func(e Event) bool { return e.Kind == KindConnect && e.Dst == srv })[0]
			if conn.PID != pid || conn.Failed || conn.Family() != tc.family || conn.Protocol != protoTCP ||
				conn.Src.Addr() != srv.Addr() || conn.Src.Port() == 0 || conn.Count != 1 || conn.StartBootNs == 0 {
				t.Errorf("connect event %+v: want helper pid %d, established, %s from %s", conn, pid, tc.family, srv.Addr())
			}
			if conn.PPID != self {
				t.Errorf("connect ppid %d, want the test's pid %d", conn.PPID, self)
			}
			acc := c.wait(t, 1, "accept", func(e Event) bool { return e.Kind == KindAccept && e.Src == conn.Src })[0]
			if acc.PID != self || acc.Dst != srv || acc.Family() != tc.family {
				t.Errorf("accept event %+v: want pid %d, dst %s, src %s", acc, self, srv, conn.Src)
			}
		})
	}
}

func TestRefusedConnect(t *testing.T) {
	c := startCollector(t, Options{})
	// A port nobody listens on: bind one, note it, close it.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	pid := uint32(runHelper(t, dst.String(), 1))
	ev := c.wait(t, 1, "failed connect", func(e Event) bool { return e.Kind == KindConnect && e.Dst == dst })[0]
	if !ev.Failed || ev.PID != pid {
		t.Errorf("connect to closed port: %+v: want Failed from pid %d", ev, pid)
	}
}

func TestDedup(t *testing.T) {
	const n = 1000
	const window = 500 * time.Millisecond
	c := startCollector(t, Options{Window: window})
	ln := serve(t, "tcp4", "127.0.0.1:0")
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	began := time.Now()
	pid := uint32(runHelper(t, dst.String(), n))
	took := time.Since(began)
	// One first event per window the connects spanned (a slow kernel under
	// QEMU spans several), each followed by a summary.
	maxFirsts := int(took/window) + 2
	sum := func(evs []Event) (total uint64, firsts int) {
		for _, e := range evs {
			total += e.Count
			if !e.Summary {
				firsts++
			}
		}
		return total, firsts
	}
	for _, tc := range []struct {
		what string
		f    func(Event) bool
	}{
		{"connects", func(e Event) bool { return e.Kind == KindConnect && e.PID == pid && e.Dst == dst }},
		{"accepts", func(e Event) bool { return e.Kind == KindAccept && e.Dst == dst }},
	} {
		var got []Event
		var total uint64
		var firsts int
		for deadline := time.Now().Add(10 * time.Second); total < n && time.Now().Before(deadline); {
			got = c.wait(t, 1, tc.what, tc.f)
			total, firsts = sum(got)
			time.Sleep(50 * time.Millisecond)
		}
		if total != n {
			t.Errorf("%s: counts add up to %d, want %d (%d events)", tc.what, total, n, len(got))
		}
		if firsts < 1 || firsts > maxFirsts || len(got) > 2*maxFirsts {
			t.Errorf("%s: %d events (%d first) for %d in %v: want at most %d first events and as many summaries",
				tc.what, len(got), firsts, n, took.Round(time.Millisecond), maxFirsts)
		}
	}
	st := c.s.Stats()
	if st.Events["flow_summary"] == 0 {
		t.Errorf("stats %+v: no flow summary counted", st)
	}
	if st.Mode != ModeTPBTF && st.Mode != ModeRawTP || len(st.Hooks) != 3 {
		t.Errorf("stats mode %q hooks %v", st.Mode, st.Hooks)
	}
}

func TestRawTPFallback(t *testing.T) {
	c := startCollector(t, Options{ForceRawTP: true})
	if c.s.Stats().Mode != ModeRawTP {
		t.Fatalf("mode %q, want raw_tp", c.s.Stats().Mode)
	}
	ln := serve(t, "tcp4", "127.0.0.1:0")
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	pid := uint32(runHelper(t, dst.String(), 1))
	ev := c.wait(t, 1, "connect", func(e Event) bool { return e.Kind == KindConnect && e.Dst == dst })[0]
	if ev.PID != pid || ev.Failed {
		t.Errorf("raw_tp connect %+v, want established from %d", ev, pid)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{
		{RingBytes: 1000}, {RingBytes: 3 << 20}, {Poll: time.Nanosecond}, {Window: time.Millisecond}, {Window: 2 * time.Hour},
	} {
		if _, err := Open(o); err == nil {
			t.Errorf("Open(%+v) succeeded, want an error", o)
		}
	}
}
