//go:build duckdb

package duckdb

import (
	"testing"

	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/store/storetest"
)

func TestEventStoreConformance(t *testing.T) {
	storetest.TestEventStore(t, func(t *testing.T, dir string) store.EventStore {
		s, err := OpenEvents(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
