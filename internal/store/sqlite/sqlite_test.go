package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/store/storetest"
)

func TestEventStoreConformance(t *testing.T) {
	storetest.TestEventStore(t, func(dir string) (store.EventStore, error) { return OpenEvents(dir) })
}

func TestStateStoreConformance(t *testing.T) {
	storetest.TestStateStore(t, func(dir string) (store.StateStore, error) { return OpenState(dir) })
}

func TestEventStoreHostile(t *testing.T) {
	storetest.TestEventStoreHostile(t, func(dir string) (store.EventStore, error) { return OpenEvents(dir) })
}

func TestStateCorruptFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StateFile)
	if err := os.WriteFile(path, []byte("SQLite format 3\x00 but then garbage"+strings.Repeat("\xff", 5000)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenState(dir)
	if err == nil {
		s.Close()
		t.Fatal("opened a corrupt state file")
	}
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("error does not name the file: %v", err)
	}
}

func TestAuditIsAppendOnly(t *testing.T) {
	s, err := OpenState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.AppendAudit(ctx, store.AuditEntry{Tenant: "a", Action: "x"}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`UPDATE audit SET action = 'y'`, `DELETE FROM audit`} {
		if _, err := s.db.w.ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v, want the append-only trigger to refuse", q, err)
		}
	}
}

func TestEscapeLike(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"100%", `100\%`},
		{"a_b", `a\_b`},
		{`c:\x`, `c:\\x`},
		{`%_\`, `\%\_\\`},
		{"ünï%", `ünï\%`},
	} {
		if got := EscapeLike(tc.in); got != tc.want {
			t.Errorf("EscapeLike(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestNetworkColumnsMigration opens an events.db written before the network
// columns existed: opening adds them, and old rows become queryable.
func TestNetworkColumnsMigration(t *testing.T) {
	dir := t.TempDir()
	p, err := openPair(filepath.Join(dir, EventsFile), eventSchema)
	if err != nil {
		t.Fatal(err)
	}
	old := &EventStore{db: p}
	if err := old.Append(context.Background(), "a", storetest.NetFixture()); err != nil {
		t.Fatal(err)
	}
	old.Close()

	for range 2 { // the second open finds the columns in place
		s, err := OpenEvents(dir)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Query(context.Background(), store.EventQuery{Tenant: "a",
			Conditions: []store.Condition{{Field: "network.dst_port", Op: store.OpEq, Value: "8080"}}})
		if err != nil {
			t.Fatal(err)
		}
		if k := storetest.Keys(got); !slices.Equal(k, []string{"n1/1", "n1/2", "n1/3", "n1/4"}) {
			t.Errorf("old rows by dst_port: %v", k)
		}
		var plan, detail string
		var id, parent, notused int
		err = s.db.r.QueryRow(`EXPLAIN QUERY PLAN SELECT body FROM events WHERE tenant = ? AND dst_port = ?`, "a", 8080).
			Scan(&id, &parent, &notused, &detail)
		if err != nil {
			t.Fatal(err)
		}
		plan = detail
		if !strings.Contains(plan, "events_dst_port") {
			t.Errorf("query plan %q does not use events_dst_port", plan)
		}
		s.Close()
	}
}
