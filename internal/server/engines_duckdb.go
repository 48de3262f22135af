//go:build duckdb

package server

import (
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/store/duckdb"
)

func init() {
	eventEngines["duckdb"] = func(dir string) (store.EventStore, error) { return duckdb.OpenEvents(dir) }
}
