package sqlite

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

func TestStateStoreConformance(t *testing.T) {
	storetest.TestStateStore(t, func(t *testing.T, dir string) store.StateStore {
		s, err := OpenState(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
