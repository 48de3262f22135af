package sqlite

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/store/storetest"
)

// FuzzQuery feeds arbitrary conditions to the query builder and a real
// store: a query either fails with ErrBadQuery or returns only rows of its
// tenant that satisfy the condition, whatever the value holds.
func FuzzQuery(f *testing.F) {
	for _, c := range []struct{ field, op, value string }{
		{"process.args", "contains", "curl"},
		{"process.args", "contains", "%"},
		{"process.args", "contains", "_"},
		{"process.exe", "prefix", `\`},
		{"process.exe", "suffix", "'; DROP TABLE events; --"},
		{"process.name", "eq", "' OR '1'='1"},
		{"process.pid", "gt", "1 OR 1=1"},
		{"process.pid", "eq", "200"},
		{"nope", "eq", "x"},
		{"process.name", "regex", ".*"},
	} {
		f.Add(c.field, c.op, c.value)
	}
	s, err := OpenEvents(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Append(ctx, "a", storetest.Fixture()); err != nil {
		f.Fatal(err)
	}
	other := storetest.Fixture()
	for i := range other {
		if other[i].Process != nil {
			other[i].Process.User = "tenant-b"
		}
	}
	if err := s.Append(ctx, "b", other); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, field, op, value string) {
		c := store.Condition{Field: field, Op: store.Op(op), Value: value}
		got, err := s.Query(ctx, store.EventQuery{Tenant: "a", Conditions: []store.Condition{c}})
		if err != nil {
			if !errors.Is(err, store.ErrBadQuery) {
				t.Fatalf("%+v: %v, want nil or ErrBadQuery", c, err)
			}
			return
		}
		for _, e := range got {
			if e.Tenant != "a" || (e.Process != nil && e.Process.User == "tenant-b") {
				t.Fatalf("%+v returned another tenant's row", c)
			}
			if v, ok := stringField(e, field); ok && !holds(v, c.Op, value) {
				t.Fatalf("%+v returned %q, which does not satisfy it", c, v)
			}
		}
	})
}

func stringField(e schema.Event, field string) (string, bool) {
	if e.Process == nil {
		return "", false
	}
	switch field {
	case "process.args":
		return e.Process.CommandLine(), true
	case "process.exe":
		return e.Process.Exe, true
	case "process.name":
		return e.Process.Name, true
	}
	return "", false
}

func holds(v string, op store.Op, want string) bool {
	switch op {
	case store.OpEq:
		return v == want
	case store.OpNe:
		return v != want
	case store.OpContains:
		return strings.Contains(v, want)
	case store.OpPrefix:
		return strings.HasPrefix(v, want)
	case store.OpSuffix:
		return strings.HasSuffix(v, want)
	case store.OpGt:
		return v > want
	case store.OpLt:
		return v < want
	}
	return false
}
