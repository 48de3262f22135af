package network

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestConnectAttributedInSoftirq makes the SYN_SENT->ESTABLISHED transition
// run from a timer: the listener's accept queue is full, so the helper's
// first SYN is dropped and its retransmission (a timer, in softirq, while
// the helper sleeps in connect) completes the handshake. The event must
// still name the helper, not whatever task the timer interrupted.
func TestConnectAttributedInSoftirq(t *testing.T) {
	c := startCollector(t, Options{})
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil { // queue full after one connection
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	filler, err := net.Dial("tcp4", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()

	// Free the queue once the helper's first SYN was dropped.
	go func() {
		time.Sleep(300 * time.Millisecond)
		for range 2 {
			nfd, _, err := unix.Accept(fd)
			if err != nil {
				return
			}
			unix.Close(nfd)
		}
	}()
	start := time.Now()
	pid := uint32(runHelper(t, dst.String(), 1))
	if time.Since(start) < 500*time.Millisecond {
		t.Logf("connect took %v: the SYN was not dropped, the retransmit path was not exercised", time.Since(start))
	}
	var helper Event
	for _, e := range c.wait(t, 2, "connects", func(e Event) bool { return e.Kind == KindConnect && e.Dst == dst }) {
		if e.PID != uint32(os.Getpid()) {
			helper = e
		}
	}
	if helper.PID != pid || helper.Failed {
		t.Errorf("connect completed by a timer: %+v, want established by helper pid %d", helper, pid)
	}
}
