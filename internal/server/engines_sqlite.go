package server

import (
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/store/sqlite"
)

func init() {
	eventEngines["sqlite"] = func(dir string) (store.EventStore, error) { return sqlite.OpenEvents(dir) }
	openSQLiteState = func(dir string) (store.StateStore, error) { return sqlite.OpenState(dir) }
}
