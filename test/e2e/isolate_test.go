package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/wire"
	"golang.org/x/sys/unix"
)

// Private test range used only inside the namespaces this test creates:
// 10.201.1.0/24 joins the host (server side) and the agent namespace,
// 10.201.2.0/24 joins the agent namespace and a peer namespace.
const (
	srvIP  = "10.201.1.1"
	agIP   = "10.201.1.2"
	agPIP  = "10.201.2.1"
	peerIP = "10.201.2.2"
)

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs fn on a thread moved into the named network namespace;
// sockets created by fn live there.
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("setns %s: %v", name, err)
	}
	fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with this goroutine instead of
		// running other goroutines in the wrong namespace.
		t.Fatalf("setns back: %v", err)
	}
	runtime.UnlockOSThread()
}

// reach reports whether a TCP connect from namespace ns to addr succeeds
// within a second.
func reach(t *testing.T, ns, addr string) bool {
	var err error
	inNetns(t, ns, func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
	})
	return err == nil
}

// netnsPair creates the agent and peer namespaces and their veth links.
func netnsPair(t *testing.T) (agentNS, peerNS string) {
	id := os.Getpid() % 100000
	agentNS, peerNS = fmt.Sprintf("mmr-ag-%d", id), fmt.Sprintf("mmr-peer-%d", id)
	hostIf, agIf, agPIf, peerIf := fmt.Sprintf("mmh%d", id), fmt.Sprintf("mma%d", id), fmt.Sprintf("mmap%d", id), fmt.Sprintf("mmp%d", id)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", agentNS).Run()
		exec.Command("ip", "netns", "del", peerNS).Run()
		exec.Command("ip", "link", "del", hostIf).Run()
	})
	for _, c := range [][]string{
		{"ip", "netns", "add", agentNS},
		{"ip", "netns", "add", peerNS},
		{"ip", "link", "add", hostIf, "type", "veth", "peer", "name", agIf},
		{"ip", "link", "set", agIf, "netns", agentNS},
		{"ip", "addr", "add", srvIP + "/24", "dev", hostIf},
		{"ip", "link", "set", hostIf, "up"},
		{"ip", "-n", agentNS, "addr", "add", agIP + "/24", "dev", agIf},
		{"ip", "-n", agentNS, "link", "set", agIf, "up"},
		{"ip", "-n", agentNS, "link", "set", "lo", "up"},
		{"ip", "link", "add", agPIf, "type", "veth", "peer", "name", peerIf},
		{"ip", "link", "set", agPIf, "netns", agentNS},
		{"ip", "link", "set", peerIf, "netns", peerNS},
		{"ip", "-n", agentNS, "addr", "add", agPIP + "/24", "dev", agPIf},
		{"ip", "-n", agentNS, "link", "set", agPIf, "up"},
		{"ip", "-n", peerNS, "addr", "add", peerIP + "/24", "dev", peerIf},
		{"ip", "-n", peerNS, "link", "set", peerIf, "up"},
		{"ip", "-n", peerNS, "link", "set", "lo", "up"},
	} {
		sh(t, c...)
	}
	return agentNS, peerNS
}

type isoStatus struct {
	HostID     string                `json:"host_id"`
	Isolation  *wire.IsolationStatus `json:"isolation"`
	Connection struct {
		State string `json:"state"`
	} `json:"connection"`
}

func (e *env) isoStatus() (isoStatus, error) {
	var st isoStatus
	out, err := exec.Command(agentBin, "status", "--data", e.agentDir, "--json").Output()
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

// TestIsolationInNamespaces runs the real server on the host side of a veth
// and the real agent in its own network namespace, and checks what the
// agent's namespace reaches before isolation, while isolated (also after an
// agent restart on a kernel that lost the rules) and after release.
func TestIsolationInNamespaces(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (scripts/setup.sh installs nftables)")
	}
	agentNS, peerNS := netnsPair(t)

	// A peer service the isolated host must no longer reach.
	var peer net.Listener
	inNetns(t, peerNS, func() {
		var err error
		if peer, err = net.Listen("tcp", peerIP+":0"); err != nil {
			t.Fatal(err)
		}
	})
	defer peer.Close()
	go func() {
		for {
			c, err := peer.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	peerAddr := peer.Addr().String()

	// The real server, listening on the host end of the veth.
	ln, err := net.Listen("tcp", srvIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, listen: listen, srvDir: filepath.Join(dir, "server"), agentDir: filepath.Join(dir, "agent")}
	e.server = start(t, filepath.Join(dir, "server.log"), mamoriBin, "server", "--data", e.srvDir, "--listen", listen, "--hostname", srvIP)
	waitFor(t, 60*time.Second, "server ready", func() bool {
		if !e.server.alive() {
			t.Fatalf("server exited:\n%s", tail(e.server.log))
		}
		_, err := e.cli("hosts")
		return err == nil
	})
	e.serverURL = "https://" + listen

	startAgent := func(enroll bool) {
		args := []string{"netns", "exec", agentNS, agentBin, "--data", e.agentDir, "--no-sensor"}
		if enroll {
			tok, err := e.cli("token", "create", "--ttl", "5m")
			if err != nil {
				t.Fatal(err)
			}
			args = append(args, "--server", e.serverURL, "--enroll-token", strings.TrimSpace(tok))
		}
		e.agent = start(t, filepath.Join(dir, "agent.log"), "ip", args...)
		waitFor(t, 60*time.Second, "agent running with isolation support", func() bool {
			if !e.agent.alive() {
				t.Fatalf("agent exited:\n%s", tail(e.agent.log))
			}
			st, err := e.isoStatus()
			return err == nil && st.HostID != "" && st.Isolation != nil
		})
	}
	startAgent(true)
	st, _ := e.isoStatus()
	host := st.HostID

	if !reach(t, agentNS, peerAddr) || !reach(t, agentNS, listen) {
		t.Fatal("before isolation the agent namespace must reach the peer and the server")
	}

	t0 := time.Now()
	a, err := e.action("isolate", host, "--reason", "e2e: contain host")
	if err != nil || a.State != wire.ActionDone {
		t.Fatalf("isolate: %+v %v\n%s", a, err, tail(e.agent.log))
	}
	t.Logf("mamori isolate to isolated (outcome reported back through the isolated link): %v", time.Since(t0))
	if reach(t, agentNS, peerAddr) {
		t.Fatal("isolated namespace still reaches the peer")
	}
	if !reach(t, agentNS, listen) {
		t.Fatal("isolated namespace lost the server")
	}
	st, _ = e.isoStatus()
	if st.Isolation == nil || !st.Isolation.Isolated || strings.Join(st.Isolation.Layers, ",") != "nftables" {
		t.Fatalf("agent status: %+v", st.Isolation)
	}
	// The peer cannot reach in either.
	inNetns(t, peerNS, func() {
		if c, err := net.DialTimeout("tcp", agPIP+":22", time.Second); err == nil {
			c.Close()
			t.Error("peer connected into the isolated namespace")
		}
	})

	// Restart on a kernel that lost the rules (as after a reboot): the
	// agent re-applies isolation from its data directory.
	e.agent.stop()
	sh(t, "ip", "netns", "exec", agentNS, "nft", "delete", "table", "inet", "mamori_isolation")
	if !reach(t, agentNS, peerAddr) {
		t.Fatal("rules deleted but the peer is still unreachable: the test cannot tell a re-apply")
	}
	startAgent(false)
	waitFor(t, 30*time.Second, "isolation re-applied after restart", func() bool { return !reach(t, agentNS, peerAddr) })
	if !reach(t, agentNS, listen) {
		t.Fatal("after restart the server is unreachable")
	}
	waitFor(t, 60*time.Second, "mamori hosts to show the host isolated", func() bool {
		out, err := e.cli("hosts")
		return err == nil && strings.Contains(out, "yes (nftables)")
	})

	a, err = e.action("release", host, "--reason", "e2e: all clear")
	if err != nil || a.State != wire.ActionDone {
		t.Fatalf("release: %+v %v\n%s", a, err, tail(e.agent.log))
	}
	if !reach(t, agentNS, peerAddr) {
		t.Fatal("released namespace does not reach the peer")
	}
	out, err := exec.Command("ip", "netns", "exec", agentNS, "nft", "list", "tables").CombinedOutput()
	if err != nil || strings.Contains(string(out), "mamori_isolation") {
		t.Fatalf("table left after release: %s %v", out, err)
	}
	st, _ = e.isoStatus()
	if st.Isolation == nil || st.Isolation.Isolated {
		t.Fatalf("status after release: %+v", st.Isolation)
	}
}
