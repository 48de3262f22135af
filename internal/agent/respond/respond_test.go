package respond

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamori-edr/mamori/internal/agent/proc"
)

func TestParseStat(t *testing.T) {
	tail := " S 77 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 100 18446744073709551615"
	for _, tc := range []struct {
		name, in string
		ppid     int
		start    uint64
		bad      bool
	}{
		{"plain", "42 (sleep)" + tail, 77, 123456, false},
		{"spaces and parens in comm", "42 (a) b (c))" + tail, 77, 123456, false},
		{"no paren", "42 sleep" + tail, 0, 0, true},
		{"truncated", "42 (x) S 1 2", 0, 0, true},
		{"bad ppid", "42 (x) S x 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 5 1", 0, 0, true},
		{"bad start", "42 (x) S 1 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 -5 1", 0, 0, true},
		{"empty", "", 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := parseStat([]byte(tc.in))
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", st)
				}
				return
			}
			if err != nil || st.ppid != tc.ppid || st.start != tc.start {
				t.Fatalf("got %+v %v", st, err)
			}
		})
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("42 (sleep) S 77 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000"))
	f.Add([]byte("1 ((() R"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseStat(b) // must not panic
	})
}

func bootID(t *testing.T) string {
	t.Helper()
	b, err := proc.BootID()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKillRefusals(t *testing.T) {
	boot := bootID(t)
	k := &Killer{BootID: boot}
	self, err := (&Killer{}).readStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, entity string
		want         error
	}{
		{"init", fmt.Sprintf("%s:1:1", boot), ErrRefused},
		{"the agent itself", fmt.Sprintf("%s:%d:%d", boot, os.Getpid(), self.start), ErrRefused},
		{"another boot", fmt.Sprintf("other:%d:%d", os.Getpid(), self.start), ErrStale},
		{"malformed", "not-an-entity", nil},
		{"pid overflow", boot + ":99999999999:1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.Kill(tc.entity, true)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

// TestKillReusedPid starts a process, then asks to kill its pid with a
// start time one tick off: the process must survive.
func TestKillReusedPid(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	k := &Killer{BootID: bootID(t)}
	st, err := k.readStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.Kill(k.entityID(cmd.Process.Pid, st.start+1), false)
	if !errors.Is(err, ErrStale) {
		t.Fatalf("stale kill: %v", err)
	}
	if now, err := k.readStat(cmd.Process.Pid); err != nil || now.start != st.start {
		t.Fatalf("process gone after a refused kill: %+v %v", now, err)
	}
	res, err := k.Kill(k.entityID(cmd.Process.Pid, st.start), false)
	if err != nil || len(res.Killed) != 1 {
		t.Fatalf("kill: %+v %v", res, err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("wait: %v", err)
	}
}

func TestRuleset(t *testing.T) {
	rs := Ruleset([]Dest{{netip.MustParseAddr("10.0.0.1"), 8443}, {netip.MustParseAddr("fd00::1"), 443}},
		[]netip.Addr{netip.MustParseAddr("10.0.0.53")})
	for _, want := range []string{
		"table inet mamori_isolation {}\ndelete table inet mamori_isolation\ntable inet mamori_isolation {",
		"policy drop;",
		`oif "lo" accept`,
		"ip daddr 10.0.0.1 tcp dport 8443 accept",
		"ip saddr 10.0.0.1 tcp sport 8443 ct state established accept",
		"ip6 daddr fd00::1 tcp dport 443 accept",
		"ip daddr 10.0.0.53 udp dport 53 accept",
	} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rs)
		}
	}
	if _, err := exec.LookPath("nft"); err == nil {
		// nft parses it (check mode: nothing is applied).
		cmd := exec.Command("nft", "-c", "-f", "-")
		cmd.Stdin = strings.NewReader(rs)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft -c: %v\n%s\n%s", err, out, rs)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port uint16
		bad  bool
	}{
		{"https://edr.example:8443", "edr.example", 8443, false},
		{"https://10.0.0.1", "10.0.0.1", 443, false},
		{"http://user:pw@proxy:3128", "proxy", 3128, false},
		{"https://[fd00::1]:9", "fd00::1", 9, false},
		{"ftp://x", "", 0, true},
		{"https://x:0", "", 0, true},
		{"https://x:70000", "", 0, true},
		{"https://:8443", "", 0, true},
		{"::::", "", 0, true},
	} {
		h, p, err := ParseEndpoint(tc.in)
		if tc.bad != (err != nil) || h != tc.host || p != tc.port {
			t.Errorf("%q: %q %d %v", tc.in, h, p, err)
		}
	}
}

func TestParseResolvConf(t *testing.T) {
	got := ParseResolvConf([]byte("# c\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\nsearch x\nnameserver 10.0.0.53\nnameserver\n"))
	if len(got) != 2 || got[0].String() != "10.0.0.53" || got[1].String() != "fe80::1" {
		t.Fatalf("got %v", got)
	}
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"https://edr.example:8443", "http://u:p@h:1", "https://[::1]:1", "%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, p, err := ParseEndpoint(s)
		if err == nil && (h == "" || p == 0) {
			t.Fatalf("%q: accepted %q %d", s, h, p)
		}
	})
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add([]byte("nameserver 1.2.3.4\nnameserver ::1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, a := range ParseResolvConf(b) {
			if !a.IsValid() {
				t.Fatalf("invalid addr from %q", b)
			}
		}
	})
}

func writeRaw(dir, s string) error {
	return os.WriteFile(filepath.Join(dir, IsolationFile), []byte(s), 0o600)
}
