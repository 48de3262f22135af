// Package storetest is the conformance suite every store engine passes: one
// set of behaviours (tenant isolation, dedup, query semantics, tokens,
// hosts, audit) checked identically against SQLite, DuckDB and any later
// engine.
//
// The trap: the suite only proves what it asserts. Every check here is run
// with a second tenant holding identical rows, because an engine that
// forgets the tenant predicate passes every single-tenant test.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/store"
)

// Base is the time of the first synthetic event.
var Base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Proc builds a process event of host with seq; the entity id is
// "boot:<pid>:<pid*10>" and the parent is pid ppid.
func Proc(host string, seq uint64, typ schema.EventType, pid, ppid uint32, exe string, args ...string) schema.Event {
	name := exe
	for i := len(exe) - 1; i >= 0; i-- {
		if exe[i] == '/' {
			name = exe[i+1:]
			break
		}
	}
	ev := schema.Event{
		Schema: schema.Version,
		HostID: host,
		BootID: "boot",
		Seq:    seq,
		Time:   Base.Add(time.Duration(seq) * time.Second),
		Type:   typ,
		Process: &schema.Process{
			EntityID:       EntityID(pid),
			ParentEntityID: EntityID(ppid),
			PID:            pid,
			PPID:           ppid,
			StartTime:      Base,
			Name:           name,
			Exe:            exe,
			Args:           args,
			Cwd:            "/root",
			UID:            1000,
			EUID:           1000,
			LoginUID:       4294967295,
			Hash:           &schema.FileHash{SHA256: fmt.Sprintf("%064x", pid), MD5: fmt.Sprintf("%032x", pid), Size: 10, Status: "ok"},
		},
		Parent: &schema.Ancestor{EntityID: EntityID(ppid), PID: ppid, Exe: "/usr/bin/parent" + strconv.Itoa(int(ppid))},
	}
	if typ == schema.ProcessExit {
		code := int(pid % 7)
		ev.Process.ExitCode = &code
	}
	return ev
}

// EntityID is the entity id Proc gives pid.
func EntityID(pid uint32) string { return schema.EntityID("boot", pid, uint64(pid)*10*1e7) }

// TestEventStore runs the event store suite. open must return a fresh,
// empty store for a new dir and the same data when called again on a dir.
func TestEventStore(t *testing.T, openErr func(dir string) (store.EventStore, error)) {
	ctx := context.Background()
	open := func(t *testing.T, dir string) store.EventStore {
		t.Helper()
		s, err := openErr(dir)
		if err != nil {
			t.Fatalf("open %s: %v", dir, err)
		}
		return s
	}
	// fixture appends the same rows for tenants "a" and "b" ("b" gets
	// a marker in args so a leak is visible) and returns the store.
	fixture := func(t *testing.T) store.EventStore {
		t.Helper()
		s := open(t, t.TempDir())
		t.Cleanup(func() { s.Close() })
		for _, tenant := range []string{"a", "b"} {
			evs := Fixture()
			if tenant == "b" {
				for i := range evs {
					if evs[i].Process != nil {
						evs[i].Process.User = "tenant-b"
					}
				}
			}
			if err := s.Append(ctx, tenant, evs); err != nil {
				t.Fatalf("append %s: %v", tenant, err)
			}
		}
		return s
	}

	t.Run("AppendCountDedup", func(t *testing.T) {
		s := fixture(t)
		n := mustCount(t, s, "a")
		if n != int64(len(Fixture())) {
			t.Fatalf("count a = %d, want %d", n, len(Fixture()))
		}
		// Retry of the whole batch plus one new event: only the new one lands.
		evs := append(Fixture(), Proc("h1", 1000, schema.ProcessExec, 900, 1, "/bin/new"))
		evs[0].Process.Exe = "/changed/by/retry" // a duplicate never overwrites
		if err := s.Append(ctx, "a", evs); err != nil {
			t.Fatal(err)
		}
		if got := mustCount(t, s, "a"); got != n+1 {
			t.Fatalf("count after retry = %d, want %d", got, n+1)
		}
		if got := mustCount(t, s, "b"); got != n {
			t.Fatalf("count b changed to %d, want %d", got, n)
		}
		got := mustQuery(t, s, store.EventQuery{Tenant: "a", HostIDs: []string{"h1"}, Conditions: []store.Condition{{Field: "seq", Op: store.OpEq, Value: "1"}}})
		if len(got) != 1 || got[0].Process.Exe == "/changed/by/retry" {
			t.Fatalf("duplicate overwrote or vanished: %+v", got)
		}
		// Duplicates inside one batch.
		dup := []schema.Event{Proc("h9", 1, schema.ProcessExec, 5, 1, "/x"), Proc("h9", 1, schema.ProcessExec, 6, 1, "/y")}
		if err := s.Append(ctx, "a", dup); err != nil {
			t.Fatal(err)
		}
		if got := mustQuery(t, s, store.EventQuery{Tenant: "a", HostIDs: []string{"h9"}}); len(got) != 1 || got[0].Process.Exe != "/x" {
			t.Fatalf("in-batch duplicate: %+v", got)
		}
		// Same (host, seq) in another tenant is a different event.
		if err := s.Append(ctx, "c", dup[:1]); err != nil {
			t.Fatal(err)
		}
		if got := mustCount(t, s, "c"); got != 1 {
			t.Fatalf("count c = %d", got)
		}
		if err := s.Append(ctx, "a", nil); err != nil {
			t.Fatalf("empty batch: %v", err)
		}
		if got := mustCount(t, s, "nobody"); got != 0 {
			t.Fatalf("count of unknown tenant = %d", got)
		}
	})

	t.Run("RoundTrip", func(t *testing.T) {
		s := fixture(t)
		want := Fixture()
		got := mustQuery(t, s, store.EventQuery{Tenant: "a"})
		if len(got) != len(want) {
			t.Fatalf("got %d events, want %d", len(got), len(want))
		}
		for i := range want {
			w, g := want[i], got[i]
			if g.Tenant != "a" || g.HostID != w.HostID || g.Seq != w.Seq || !g.Time.Equal(w.Time) || g.Type != w.Type || g.BootID != w.BootID {
				t.Fatalf("event %d header: got %+v want %+v", i, g, w)
			}
			if (w.Process == nil) != (g.Process == nil) {
				t.Fatalf("event %d process presence differs", i)
			}
			if w.Process != nil && (!slices.Equal(g.Process.Args, w.Process.Args) || g.Process.EntityID != w.Process.EntityID || g.Process.Hash.SHA256 != w.Process.Hash.SHA256) {
				t.Fatalf("event %d process: got %+v want %+v", i, g.Process, w.Process)
			}
			if w.Loss != nil && (g.Loss == nil || g.Loss.SpoolDropped != w.Loss.SpoolDropped) {
				t.Fatalf("event %d loss: got %+v", i, g.Loss)
			}
		}
	})

	t.Run("TenantTakenFromArgument", func(t *testing.T) {
		s := open(t, t.TempDir())
		defer s.Close()
		ev := Proc("h1", 1, schema.ProcessExec, 10, 1, "/bin/sh")
		ev.Tenant = "b" // a lying event cannot move itself to another tenant
		if err := s.Append(ctx, "a", []schema.Event{ev}); err != nil {
			t.Fatal(err)
		}
		if n := mustCount(t, s, "b"); n != 0 {
			t.Fatalf("event landed in the tenant it claimed: %d", n)
		}
		got := mustQuery(t, s, store.EventQuery{Tenant: "a"})
		if len(got) != 1 || got[0].Tenant != "a" {
			t.Fatalf("got %+v", got)
		}
	})

	t.Run("BadEvents", func(t *testing.T) {
		s := fixture(t)
		before := mustCount(t, s, "a")
		good := Proc("h1", 5000, schema.ProcessExec, 10, 1, "/bin/sh")
		for _, tc := range []struct {
			name   string
			tenant string
			ev     func(schema.Event) schema.Event
		}{
			{"empty tenant", "", func(e schema.Event) schema.Event { return e }},
			{"empty host", "a", func(e schema.Event) schema.Event { e.HostID = ""; return e }},
			{"seq zero", "a", func(e schema.Event) schema.Event { e.Seq = 0; return e }},
			{"seq overflow", "a", func(e schema.Event) schema.Event { e.Seq = 1 << 63; return e }},
			{"zero time", "a", func(e schema.Event) schema.Event { e.Time = time.Time{}; return e }},
			{"empty type", "a", func(e schema.Event) schema.Event { e.Type = ""; return e }},
			{"start time year 10000", "a", func(e schema.Event) schema.Event {
				p := *e.Process
				p.StartTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
				e.Process = &p
				return e
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := s.Append(ctx, tc.tenant, []schema.Event{good, tc.ev(Proc("h1", 5001, schema.ProcessExec, 11, 1, "/bin/sh"))})
				if !errors.Is(err, store.ErrBadEvent) {
					t.Fatalf("err = %v, want ErrBadEvent", err)
				}
				if n := mustCount(t, s, "a"); n != before {
					t.Fatalf("a rejected batch stored events: %d -> %d", before, n)
				}
			})
		}
	})

	t.Run("MaxSeq", func(t *testing.T) {
		s := fixture(t)
		for _, tc := range []struct {
			tenant, host string
			want         uint64
		}{{"a", "h1", 12}, {"a", "h2", 4}, {"a", "nope", 0}, {"nobody", "h1", 0}} {
			got, err := s.MaxSeq(ctx, tc.tenant, tc.host)
			if err != nil || got != tc.want {
				t.Errorf("MaxSeq(%s,%s) = %d, %v; want %d", tc.tenant, tc.host, got, err, tc.want)
			}
		}
		if err := s.Append(ctx, "b", []schema.Event{Proc("h1", 99, schema.ProcessExec, 1, 0, "/x")}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.MaxSeq(ctx, "a", "h1"); got != 12 {
			t.Errorf("MaxSeq of a moved with b's append: %d", got)
		}
	})

	t.Run("Query", func(t *testing.T) {
		s := fixture(t)
		for _, tc := range QueryCases() {
			t.Run(tc.Name, func(t *testing.T) {
				got, ok := runQuery(t, s, tc, "a")
				if !ok {
					return
				}
				for _, e := range got {
					if e.Tenant != "a" || (e.Process != nil && e.Process.User == "tenant-b") {
						t.Fatalf("row of another tenant returned: %+v", e)
					}
				}
				// The same query for tenant b returns b's copy, never a's.
				gotB, _ := runQuery(t, s, tc, "b")
				for _, e := range gotB {
					if e.Tenant != "b" {
						t.Fatalf("tenant b got %+v", e)
					}
				}
				q := tc.Query
				q.Tenant = "nobody"
				if got, err := s.Query(ctx, q); err != nil || len(got) != 0 {
					t.Fatalf("unknown tenant: %d events, %v", len(got), err)
				}
			})
		}
	})

	t.Run("QueryEmptyTenant", func(t *testing.T) {
		s := fixture(t)
		if _, err := s.Query(ctx, store.EventQuery{}); !errors.Is(err, store.ErrBadQuery) {
			t.Fatalf("query without tenant: %v, want ErrBadQuery", err)
		}
	})

	t.Run("MaxLimit", func(t *testing.T) {
		if testing.Short() {
			t.Skip("appends more than MaxLimit events")
		}
		s := open(t, t.TempDir())
		defer s.Close()
		n := store.MaxLimit + 10
		batch := make([]schema.Event, 0, 5000)
		for i := 1; i <= n; i++ {
			batch = append(batch, Proc("h1", uint64(i), schema.ProcessFork, uint32(i), 1, "/bin/sh"))
			if len(batch) == cap(batch) || i == n {
				if err := s.Append(ctx, "a", batch); err != nil {
					t.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		for _, lim := range []int{0, store.MaxLimit + 5} {
			got, err := s.Query(ctx, store.EventQuery{Tenant: "a", Limit: lim})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != store.MaxLimit {
				t.Fatalf("limit %d: got %d events, want the cap %d", lim, len(got), store.MaxLimit)
			}
		}
	})

	t.Run("ProcessAndChildEvents", func(t *testing.T) {
		s := fixture(t)
		for _, tc := range []struct {
			name  string
			child bool
			ids   []string
			want  []string
		}{
			{"process", false, []string{EntityID(200)}, []string{"h1/5", "h1/6", "h1/9"}},
			{"two processes dup ids", false, []string{EntityID(300), EntityID(200), EntityID(300)}, []string{"h1/5", "h1/6", "h1/7", "h1/9", "h1/10"}},
			{"children", true, []string{EntityID(100)}, []string{"h1/5", "h1/6", "h1/9", "h1/11"}},
			{"unknown", false, []string{"nope"}, nil},
			{"none", false, nil, nil},
			{"metachar id", false, []string{"' OR 1=1 --"}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := s.ProcessEvents
				if tc.child {
					f = s.ChildEvents
				}
				got, err := f(ctx, "a", tc.ids)
				if err != nil {
					t.Fatal(err)
				}
				if keys := Keys(got); !slices.Equal(keys, tc.want) {
					t.Fatalf("got %v want %v", keys, tc.want)
				}
				for _, e := range got {
					if e.Tenant != "a" {
						t.Fatalf("leak: %+v", e)
					}
				}
			})
		}
	})

	t.Run("HugeIDList", func(t *testing.T) {
		s := open(t, t.TempDir())
		defer s.Close()
		var evs []schema.Event
		for i := 1; i <= 3000; i++ {
			evs = append(evs, Proc("h1", uint64(i), schema.ProcessExec, uint32(i), uint32(i/2), "/bin/sh"))
		}
		if err := s.Append(ctx, "a", evs); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(ctx, "b", evs); err != nil {
			t.Fatal(err)
		}
		ids := make([]string, 0, 70000)
		for i := 1; i <= 70000; i++ { // beyond any engine's bound-parameter limit
			ids = append(ids, EntityID(uint32(i)))
		}
		got, err := s.ProcessEvents(ctx, "a", ids)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3000 {
			t.Fatalf("got %d events, want 3000", len(got))
		}
		for i := 1; i < len(got); i++ {
			if got[i].Seq <= got[i-1].Seq || got[i].Tenant != "a" {
				t.Fatalf("not in order or leaked at %d", i)
			}
		}
		got, err = s.ChildEvents(ctx, "a", ids)
		if err != nil || len(got) != 2999 { // pid 1 has parent 0
			t.Fatalf("children: %d, %v", len(got), err)
		}
	})

	t.Run("Persistence", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		if err := s.Append(ctx, "a", Fixture()); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = open(t, dir)
		defer s.Close()
		if n := mustCount(t, s, "a"); n != int64(len(Fixture())) {
			t.Fatalf("after reopen count = %d", n)
		}
		if m, _ := s.MaxSeq(ctx, "a", "h1"); m != 12 {
			t.Fatalf("after reopen max seq = %d", m)
		}
		if err := s.Append(ctx, "a", Fixture()); err != nil {
			t.Fatal(err)
		}
		if n := mustCount(t, s, "a"); n != int64(len(Fixture())) {
			t.Fatalf("dedup after reopen: count = %d", n)
		}
	})

	t.Run("ConcurrentAppendAndQuery", func(t *testing.T) {
		s := open(t, t.TempDir())
		defer s.Close()
		errc := make(chan error, 8)
		for w := 0; w < 4; w++ {
			go func() {
				host := "h" + strconv.Itoa(w)
				for b := 0; b < 10; b++ {
					var evs []schema.Event
					for i := 1; i <= 50; i++ {
						evs = append(evs, Proc(host, uint64(b*50+i), schema.ProcessExec, uint32(i), 1, "/bin/sh", "-c", "x"))
					}
					if err := s.Append(ctx, "a", evs); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			go func() {
				for i := 0; i < 20; i++ {
					if _, err := s.Query(ctx, store.EventQuery{Tenant: "a", Limit: 100, Desc: true,
						Conditions: []store.Condition{{Field: "process.args", Op: store.OpContains, Value: "x"}}}); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
		}
		for i := 0; i < 8; i++ {
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		}
		if n := mustCount(t, s, "a"); n != 4*10*50 {
			t.Fatalf("count = %d, want 2000", n)
		}
	})

	t.Run("Network", func(t *testing.T) {
		s := open(t, t.TempDir())
		t.Cleanup(func() { s.Close() })
		for _, tenant := range []string{"a", "b"} {
			if err := s.Append(ctx, tenant, NetFixture()); err != nil {
				t.Fatalf("append %s: %v", tenant, err)
			}
		}
		for _, tc := range NetQueryCases() {
			t.Run(tc.Name, func(t *testing.T) {
				got, ok := runQuery(t, s, tc, "a")
				if !ok {
					return
				}
				for _, ev := range got {
					if ev.Process == nil || (ev.Network == nil) != (ev.Type == schema.ProcessExec) {
						t.Fatalf("%s/%d lost its network or process part: %+v", ev.HostID, ev.Seq, ev)
					}
				}
			})
		}
	})
}

// runQuery runs tc's query as tenant and checks its error or its keys. It
// returns the events and true, or false when tc expects an error.
func runQuery(t *testing.T, s store.EventStore, tc QueryCase, tenant string) ([]schema.Event, bool) {
	t.Helper()
	q := tc.Query
	q.Tenant = tenant
	got, err := s.Query(context.Background(), q)
	if tc.Err != nil {
		if !errors.Is(err, tc.Err) {
			t.Fatalf("err = %v, want %v", err, tc.Err)
		}
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if keys := Keys(got); !slices.Equal(keys, tc.Want) {
		t.Fatalf("got %v\nwant %v", keys, tc.Want)
	}
	return got, true
}

func mustCount(t *testing.T, s store.EventStore, tenant string) int64 {
	t.Helper()
	n, err := s.Count(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustQuery(t *testing.T, s store.EventStore, q store.EventQuery) []schema.Event {
	t.Helper()
	got, err := s.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// Keys renders events as "host/seq" for comparison.
func Keys(evs []schema.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.HostID+"/"+strconv.FormatUint(e.Seq, 10))
	}
	return out
}
