//go:build duckdb

package duckdb

import (
	"testing"

	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/store/storetest"
)

func TestEventStoreConformance(t *testing.T) {
	storetest.TestEventStore(t, func(dir string) (store.EventStore, error) { return OpenEvents(dir) })
}

func TestEventStoreHostile(t *testing.T) {
	storetest.TestEventStoreHostile(t, func(dir string) (store.EventStore, error) { return OpenEvents(dir) })
}
