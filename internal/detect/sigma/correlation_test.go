package sigma

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func corrRules(t *testing.T, docs ...string) []*Rule {
	t.Helper()
	var out []*Rule
	for _, d := range docs {
		out = append(out, mustParse(t, d))
	}
	return out
}

const baseFail = `title: failed login
id: 11111111-0000-0000-0000-000000000001
name: failed_login
logsource: {product: linux, service: auth}
detection: {s: {Outcome: failure}, condition: s}
`
const baseOK = `title: successful login
id: 11111111-0000-0000-0000-000000000002
name: successful_login
logsource: {product: linux, service: auth}
detection: {s: {Outcome: success}, condition: s}
`

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// TestEventCount follows the correlation spec's event_count example (gte over a window, per group).
func TestEventCount(t *testing.T) {
	co, err := NewCorrelator(corrRules(t, baseFail, `title: brute force
correlation:
  type: event_count
  rules: [failed_login]
  group-by: [User]
  timespan: 1m
  condition: {gte: 3}
`), CorrelatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	feed := func(user string, sec int) []CorrelationHit {
		return co.Feed("11111111-0000-0000-0000-000000000001", ev("User", user), t0.Add(time.Duration(sec)*time.Second))
	}
	if h := feed("bob", 0); len(h) != 0 {
		t.Fatal("fired on first event")
	}
	feed("alice", 1)
	feed("bob", 30)
	if h := feed("alice", 20); len(h) != 0 {
		t.Fatal("alice fired with 2 events")
	}
	// bob's third failure is 70s after the first: out of the 1m window.
	if h := feed("bob", 70); len(h) != 0 {
		t.Fatalf("fired across the timespan: %+v", h)
	}
	h := feed("bob", 75)
	if len(h) != 1 || h[0].Group["User"] != "bob" || h[0].Value != 3 {
		t.Fatalf("hits = %+v, want bob x3", h)
	}
	var h2 []CorrelationHit
	for i := 0; i < 3; i++ {
		h2 = co.Feed("failed_login", ev("User", "carol"), t0.Add(time.Duration(80+i)*time.Second))
	}
	if len(h2) != 1 || h2[0].Group["User"] != "carol" {
		t.Fatalf("feeding by name: hits = %+v", h2)
	}
}

// TestValueCount follows the value_count example: distinct field values per group.
func TestValueCount(t *testing.T) {
	co, err := NewCorrelator(corrRules(t, baseFail, `title: spray
correlation:
  type: value_count
  rules: [failed_login]
  group-by: [Host]
  timespan: 1h
  condition: {field: User, gte: 3}
`), CorrelatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var hits []CorrelationHit
	for i, u := range []string{"a", "a", "b", "b", "c"} {
		hits = append(hits, co.Feed("failed_login", ev("Host", "h1", "User", u), t0.Add(time.Duration(i)*time.Minute))...)
	}
	if len(hits) != 1 || hits[0].Value != 3 {
		t.Fatalf("hits = %+v, want one with 3 users", hits)
	}
}

// TestTemporalOrdered follows the failed-then-successful login example of the spec.
func TestTemporalOrdered(t *testing.T) {
	rules := corrRules(t, baseFail, baseOK, `title: fail then success
correlation:
  type: temporal_ordered
  rules: [failed_login, successful_login]
  group-by: [User]
  timespan: 10m
`)
	cases := []struct {
		name  string
		seq   []string
		gaps  []int
		wantN int
	}{
		{"in order", []string{"failed_login", "successful_login"}, []int{0, 60}, 1},
		{"wrong order", []string{"successful_login", "failed_login"}, []int{0, 60}, 0},
		{"too late", []string{"failed_login", "successful_login"}, []int{0, 601}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			co, err := NewCorrelator(rules, CorrelatorOptions{})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for i, r := range c.seq {
				n += len(co.Feed(r, ev("User", "bob"), t0.Add(time.Duration(c.gaps[i])*time.Second)))
			}
			if n != c.wantN {
				t.Fatalf("hits %d, want %d", n, c.wantN)
			}
		})
	}
}

// TestTemporalAliases follows the spec's field name aliases example.
func TestTemporalAliases(t *testing.T) {
	co, err := NewCorrelator(corrRules(t, `title: e
name: internal_error
logsource: {category: webserver}
detection: {s: {status: 500}, condition: s}
`, `title: n
name: new_network_connection
logsource: {category: network_connection}
detection: {s: {Initiated: true}, condition: s}
`, `title: alias
correlation:
  type: temporal
  rules: [internal_error, new_network_connection]
  group-by: [internal_ip, remote_ip]
  timespan: 10s
  aliases:
    internal_ip:
      internal_error: destination.ip
      new_network_connection: source.ip
    remote_ip:
      internal_error: source.ip
      new_network_connection: destination.ip
`), CorrelatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := co.Feed("internal_error", ev("destination.ip", "10.0.0.1", "source.ip", "1.2.3.4"), t0); len(h) != 0 {
		t.Fatal("fired with one rule")
	}
	if h := co.Feed("new_network_connection", ev("source.ip", "10.0.0.9", "destination.ip", "1.2.3.4"), t0.Add(time.Second)); len(h) != 0 {
		t.Fatal("fired for a different internal ip")
	}
	h := co.Feed("new_network_connection", ev("source.ip", "10.0.0.1", "destination.ip", "1.2.3.4"), t0.Add(2*time.Second))
	if len(h) != 1 || h[0].Group["internal_ip"] != "10.0.0.1" || h[0].Group["remote_ip"] != "1.2.3.4" {
		t.Fatalf("hits = %+v", h)
	}
}

// TestValueAggregates covers value_sum, value_avg, value_percentile and an upper-bound (tumbling) condition.
func TestValueAggregates(t *testing.T) {
	mk := func(typ, cond string) *Correlator {
		co, err := NewCorrelator(corrRules(t, baseOK, fmt.Sprintf(`title: agg
correlation:
  type: %s
  rules: [successful_login]
  group-by: [Host]
  timespan: 1h
  condition: %s
`, typ, cond)), CorrelatorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return co
	}
	co := mk("value_sum", "{field: Bytes, gt: 1000}")
	n := 0
	for i := 0; i < 3; i++ {
		n += len(co.Feed("successful_login", ev("Host", "h", "Bytes", int64(400)), t0.Add(time.Duration(i)*time.Minute)))
	}
	if n != 1 {
		t.Fatalf("value_sum hits %d, want 1", n)
	}
	co = mk("value_avg", "{field: Bytes, gt: 500}")
	co.Feed("successful_login", ev("Host", "h", "Bytes", int64(100)), t0)
	if h := co.Feed("successful_login", ev("Host", "h", "Bytes", "1000"), t0.Add(time.Minute)); len(h) != 1 || h[0].Value != 550 {
		t.Fatalf("value_avg hits %+v", h)
	}
	co = mk("value_percentile", "{field: Image, lte: 10}")
	for i := 0; i < 20; i++ {
		co.Feed("successful_login", ev("Host", "h", "Image", "/bin/common"), t0.Add(time.Duration(i)*time.Second))
	}
	if h := co.Feed("successful_login", ev("Host", "h", "Image", "/tmp/rare"), t0.Add(30*time.Second)); len(h) != 1 {
		t.Fatalf("value_percentile rare image hits %+v", h)
	}
	// lt can only be decided when the window closes: Flush emits it.
	co = mk("event_count", "{lt: 3}")
	if h := co.Feed("successful_login", ev("Host", "h"), t0); len(h) != 0 {
		t.Fatal("upper-bound condition fired before its window closed")
	}
	if h := co.Flush(t0.Add(2 * time.Hour)); len(h) != 1 || h[0].Value != 1 {
		t.Fatalf("flush hits %+v", h)
	}
	if co.Groups() != 0 {
		t.Fatalf("groups left after flush: %d", co.Groups())
	}
}

// TestCorrelatorBoundedMemory checks state expires past the timespan and MaxGroups caps groups.
func TestCorrelatorBoundedMemory(t *testing.T) {
	co, err := NewCorrelator(corrRules(t, baseFail, `title: bf
correlation:
  type: event_count
  rules: [failed_login]
  group-by: [User]
  timespan: 1m
  condition: {gte: 1000}
`), CorrelatorOptions{MaxGroups: 500})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5000; i++ {
		co.Feed("failed_login", ev("User", fmt.Sprint("u", i)), t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	if g := co.Groups(); g > 500 {
		t.Fatalf("groups %d above cap", g)
	}
	co.Flush(t0.Add(time.Hour))
	if g := co.Groups(); g != 0 {
		t.Fatalf("groups %d after flush past timespan", g)
	}
	if co.Dropped == 0 {
		t.Fatal("cap reached but nothing counted as dropped")
	}
}

// TestChainedCorrelation checks a correlation can refer to another correlation.
func TestChainedCorrelation(t *testing.T) {
	co, err := NewCorrelator(corrRules(t, baseFail, baseOK, `title: many failed
name: many_failed_logins
correlation:
  type: event_count
  rules: [failed_login]
  group-by: [User]
  timespan: 10m
  condition: {gte: 2}
`, `title: brute force success
correlation:
  type: temporal_ordered
  rules: [many_failed_logins, successful_login]
  group-by: [User]
  timespan: 1h
`), CorrelatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var all []CorrelationHit
	all = append(all, co.Feed("failed_login", ev("User", "bob"), t0)...)
	all = append(all, co.Feed("failed_login", ev("User", "bob"), t0.Add(time.Second))...)
	all = append(all, co.Feed("successful_login", ev("User", "bob"), t0.Add(time.Minute))...)
	if len(all) != 2 || all[1].Rule.Title != "brute force success" {
		t.Fatalf("hits = %+v", all)
	}
}

func TestCorrelatorErrors(t *testing.T) {
	_, err := NewCorrelator(corrRules(t, `title: bad
correlation:
  type: temporal
  rules: [a, b]
  group-by: [x]
  timespan: 1m
  aliases:
    x: {nope: field}
`), CorrelatorOptions{})
	if !errors.Is(err, ErrCorrelation) {
		t.Fatalf("err = %v, want ErrCorrelation", err)
	}
}
