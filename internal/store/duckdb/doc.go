// Package duckdb is the DuckDB event store; it is empty unless built with
// the `duckdb` tag (go test -tags duckdb), so the default build and the
// agent never link DuckDB through cgo.
package duckdb
