package schema

import (
	"fmt"
	"testing"
)

func TestEntityIDRoundTrip(t *testing.T) {
	for _, c := range []struct {
		boot  string
		pid   uint32
		start uint64
	}{
		{"872a9a35-4839-448a-89e8-eb8003fccdb4", 1, 0},
		{"b", 4294967295, 18446744073709551615},
		{"b", 42, 123456789012},
	} {
		id := EntityID(c.boot, c.pid, c.start)
		if want := fmt.Sprintf("%s:%d:%d", c.boot, c.pid, c.start/(1e9/ClockTicks)); id != want {
			t.Errorf("EntityID = %q, want %q", id, want)
		}
		boot, pid, ticks, err := ParseEntityID(id)
		if err != nil || boot != c.boot || pid != c.pid || ticks != c.start/(1e9/ClockTicks) {
			t.Errorf("ParseEntityID(%q) = %q %d %d %v", id, boot, pid, ticks, err)
		}
	}
	for _, bad := range []string{"", "a", "a:b:c", ":1:2", "a:1:", "a:-1:2", "a:99999999999:2", "a:1:2:3"} {
		if _, _, _, err := ParseEntityID(bad); err == nil {
			t.Errorf("ParseEntityID(%q) accepted", bad)
		}
	}
}

func FuzzParseEntityID(f *testing.F) {
	f.Add("872a9a35-4839-448a-89e8-eb8003fccdb4:1:25")
	f.Add("a:1:2:3")
	f.Fuzz(func(t *testing.T, s string) {
		boot, pid, ticks, err := ParseEntityID(s)
		if err != nil {
			return
		}
		if id := EntityID(boot, pid, ticks*(1e9/ClockTicks)); id != s && fmt.Sprintf("%s:%d:%d", boot, pid, ticks) == s {
			t.Fatalf("round trip of %q gave %q", s, id)
		}
	})
}

func BenchmarkEntityID(b *testing.B) {
	for i := 0; i < b.N; i++ {
		EntityID("872a9a35-4839-448a-89e8-eb8003fccdb4", uint32(i), 123456789012)
	}
}
