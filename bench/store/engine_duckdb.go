//go:build duckdb

package main

import (
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/store/duckdb"
)

func init() {
	engines["duckdb"] = func(dir string) (store.EventStore, error) { return duckdb.OpenEvents(dir) }
}
