// Package sqlite is the embedded store engine on modernc.org/sqlite (pure Go,
// no cgo): events in dir/events.db, state in dir/state.db, both in WAL mode
// with synchronous=FULL, so a write that returns nil survives a power cut.
//
// The trap: SQLite allows one writer at a time. Each store therefore keeps a
// single writer connection (writes queue on it instead of failing with
// SQLITE_BUSY) and a separate pool of read-only connections; a long hunt
// never blocks ingest and ingest never blocks a hunt.
package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// busyTimeout is how long a connection waits for a lock held by another
// process (or a checkpoint) before it returns SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// pair is one database file opened as a single writer plus a reader pool.
type pair struct {
	path string
	w    *sql.DB
	r    *sql.DB
}

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(ON)")
	// LIKE is case-insensitive in SQLite by default; every engine matches
	// case-sensitively, so switch it.
	q.Add("_pragma", "case_sensitive_like(ON)")
	if readOnly {
		q.Add("_pragma", "query_only(ON)")
	} else {
		q.Set("_txlock", "immediate")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// openPair opens path, creating it with schema if absent. A file that is not
// a SQLite database yields an error and is left untouched.
func openPair(path string, schema []string) (*pair, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	ctx := context.Background()
	// The first statement reads the header: a corrupt or foreign file
	// fails here ("file is not a database") before anything is written.
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: not a usable sqlite database: %w", path, err)
	}
	if mode != "wal" {
		w.Close()
		return nil, fmt.Errorf("open %s: journal mode is %q, want wal", path, mode)
	}
	var ok string
	if err := w.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&ok); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: not a usable sqlite database: %w", path, err)
	}
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	for _, s := range schema {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			tx.Rollback()
			w.Close()
			return nil, fmt.Errorf("open %s: schema: %w", path, err)
		}
	}
	if err := tx.Commit(); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: schema: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	return &pair{path: path, w: w, r: r}, nil
}

func (p *pair) close() error {
	errR := p.r.Close()
	errW := p.w.Close()
	if errW != nil {
		return fmt.Errorf("close %s: %w", p.path, errW)
	}
	if errR != nil {
		return fmt.Errorf("close %s: %w", p.path, errR)
	}
	return nil
}

// toNs converts t to unix nanoseconds; the zero time is 0 and times
// outside 1678..2261 are clamped.
func toNs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return clampNs(t)
}

// fromNs is the inverse of toNs; times come back in UTC.
func fromNs(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
