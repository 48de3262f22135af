//go:build duckdb

// An event store on DuckDB (cgo), built only with the
// `duckdb` build tag so the agent and the default build never link it. The
// state store stays on SQLite (OpenState re-exports it).
//
// The trap: DuckDB is a columnar engine tuned for bulk loads and scans.
// Row-at-a-time INSERTs are slow, so Append loads a batch through the
// Appender into a connection-local staging table and moves it with one
// INSERT … ON CONFLICT DO NOTHING; and point lookups (a process tree) scan
// a column instead of walking a B-tree.

package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	duck "github.com/duckdb/duckdb-go/v2"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/store"
	"github.com/mamori-edr/mamori/internal/store/sqlite"
)

// EventsFile is the name of the DuckDB event database in the data directory.
const EventsFile = "events.duckdb"

const inChunk = 500

const columnDefs = `
	tenant           VARCHAR NOT NULL,
	host_id          VARCHAR NOT NULL,
	seq              BIGINT  NOT NULL,
	boot_id          VARCHAR NOT NULL,
	time             BIGINT  NOT NULL,
	type             VARCHAR NOT NULL,
	entity_id        VARCHAR,
	parent_entity_id VARCHAR,
	pid              BIGINT,
	ppid             BIGINT,
	name             VARCHAR,
	exe              VARCHAR,
	args             VARCHAR,
	cwd              VARCHAR,
	uid              BIGINT,
	euid             BIGINT,
	login_uid        BIGINT,
	container_id     VARCHAR,
	sha256           VARCHAR,
	md5              VARCHAR,
	exit_code        BIGINT,
	parent_exe       VARCHAR,
	body             VARCHAR NOT NULL`

const columnList = `tenant, host_id, seq, boot_id, time, type, entity_id, parent_entity_id, pid, ppid,
	name, exe, args, cwd, uid, euid, login_uid, container_id, sha256, md5, exit_code, parent_exe, body`

// EventStore is the DuckDB event store. It is safe for concurrent use.
type EventStore struct {
	path string
	c    *duck.Connector
	db   *sql.DB

	mu sync.Mutex // one writer at a time, on w
	w  *sql.Conn
}

var _ store.EventStore = (*EventStore)(nil)

// OpenEvents opens (or creates) dir/events.duckdb.
func OpenEvents(dir string) (*EventStore, error) {
	path := filepath.Join(dir, EventsFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("event store: open %s: %w", path, err)
	}
	c, err := duck.NewConnector(path, nil)
	if err != nil {
		return nil, fmt.Errorf("event store: open %s: not a usable duckdb database: %w", path, err)
	}
	db := sql.OpenDB(c)
	s := &EventStore{path: path, c: c, db: db}
	ctx := context.Background()
	if err := s.init(ctx); err != nil {
		db.Close()
		c.Close()
		return nil, fmt.Errorf("event store: open %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		s.Close()
		return nil, fmt.Errorf("event store: open %s: %w", path, err)
	}
	return s, nil
}

func (s *EventStore) init(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS events (`+columnDefs+`,
		PRIMARY KEY (tenant, host_id, seq))`); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	w, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	// The staging table is per connection and never reaches the WAL.
	if _, err := w.ExecContext(ctx, `CREATE TEMP TABLE staging (ord INTEGER NOT NULL, `+columnDefs+`)`); err != nil {
		w.Close()
		return fmt.Errorf("schema: %w", err)
	}
	s.w = w
	return nil
}

// Close closes the database.
func (s *EventStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.w != nil {
		errs = append(errs, s.w.Close())
		s.w = nil
	}
	errs = append(errs, s.db.Close(), s.c.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close %s: %w", s.path, err)
	}
	return nil
}

// Append stores events in one transaction; duplicates are skipped. An
// invalid event rejects the whole batch and nothing is stored.
func (s *EventStore) Append(ctx context.Context, tenant string, events []schema.Event) error {
	if tenant == "" {
		return fmt.Errorf("append: %w: empty tenant", store.ErrBadEvent)
	}
	if len(events) == 0 {
		return nil
	}
	rows := make([][]driver.Value, len(events))
	for i, ev := range events {
		r, err := sqlite.Flatten(tenant, ev)
		if err != nil {
			return fmt.Errorf("append: event %d: %w: %w", i, store.ErrBadEvent, err)
		}
		v := make([]driver.Value, 0, 24)
		v = append(v, int32(i), r.Tenant, r.HostID, r.Seq, r.BootID, r.Time, r.Type)
		for _, c := range r.Cols {
			v = append(v, c)
		}
		v = append(v, sqlite.ParentExe(ev), string(r.Body))
		rows[i] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return errors.New("append: store closed")
	}
	if _, err := s.w.ExecContext(ctx, `DELETE FROM staging`); err != nil {
		return fmt.Errorf("append: clear staging: %w", err)
	}
	err := s.w.Raw(func(dc any) error {
		conn, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		a, err := duck.NewAppender(conn, "temp", "main", "staging")
		if err != nil {
			return err
		}
		for _, v := range rows {
			if err := a.AppendRow(v...); err != nil {
				a.Close()
				return err
			}
		}
		return a.Close()
	})
	if err != nil {
		return fmt.Errorf("append: stage: %w", err)
	}
	// The first copy of a key within the batch wins, as with SQLite.
	_, err = s.w.ExecContext(ctx, `INSERT INTO events (`+columnList+`)
		SELECT `+columnList+` FROM (
			SELECT DISTINCT ON (host_id, seq) * FROM staging ORDER BY host_id, seq, ord)
		ON CONFLICT DO NOTHING`)
	if err != nil {
		return fmt.Errorf("append: %w", err)
	}
	return nil
}

// MaxSeq returns the highest stored seq of a host (0 if none).
func (s *EventStore) MaxSeq(ctx context.Context, tenant, hostID string) (uint64, error) {
	var n sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT max(seq) FROM events WHERE tenant = ? AND host_id = ?`, tenant, hostID).Scan(&n); err != nil {
		return 0, fmt.Errorf("max seq: %w", err)
	}
	return uint64(n.Int64), nil
}

// Count returns the number of stored events of a tenant.
func (s *EventStore) Count(ctx context.Context, tenant string) (int64, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM events WHERE tenant = ?`, tenant).Scan(&n); err != nil {
		return 0, fmt.Errorf("count: %w", err)
	}
	return n, nil
}

// Query returns matching events in time order (then seq).
func (s *EventStore) Query(ctx context.Context, q store.EventQuery) ([]schema.Event, error) {
	where, args, err := sqlite.Where(q, column)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	order := "time, seq, host_id"
	if q.Desc {
		order = "time DESC, seq DESC, host_id DESC"
	}
	return s.selectEvents(ctx, fmt.Sprintf("SELECT body FROM events WHERE %s ORDER BY %s LIMIT %d",
		where, order, sqlite.EffectiveLimit(q.Limit)), args)
}

func column(field string) string {
	// Same layout as the SQLite engine.
	return map[string]string{
		"type": "type", "host_id": "host_id", "boot_id": "boot_id", "seq": "seq",
		"process.entity_id": "entity_id", "process.parent_entity_id": "parent_entity_id",
		"process.pid": "pid", "process.ppid": "ppid", "process.name": "name", "process.exe": "exe",
		"process.args": "args", "process.cwd": "cwd", "process.uid": "uid", "process.euid": "euid",
		"process.login_uid": "login_uid", "process.container_id": "container_id",
		"process.hash.sha256": "sha256", "process.hash.md5": "md5", "process.exit_code": "exit_code",
		"parent.exe": "parent_exe",
	}[field]
}

func (s *EventStore) selectEvents(ctx context.Context, query string, args []any) ([]schema.Event, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	defer rows.Close()
	var out []schema.Event
	var body string
	for rows.Next() {
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("query: scan: %w", err)
		}
		var ev schema.Event
		if err := json.Unmarshal([]byte(body), &ev); err != nil {
			return nil, fmt.Errorf("query: decode stored event: %w", err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	return out, nil
}

// ProcessEvents returns every event whose process.entity_id is in ids.
func (s *EventStore) ProcessEvents(ctx context.Context, tenant string, ids []string) ([]schema.Event, error) {
	return s.byIDs(ctx, "entity_id", tenant, ids)
}

// ChildEvents returns every event whose process.parent_entity_id is in ids.
func (s *EventStore) ChildEvents(ctx context.Context, tenant string, ids []string) ([]schema.Event, error) {
	return s.byIDs(ctx, "parent_entity_id", tenant, ids)
}

func (s *EventStore) byIDs(ctx context.Context, col, tenant string, ids []string) ([]schema.Event, error) {
	var out []schema.Event
	err := sqlite.Chunks(ids, inChunk, func(chunk []string) error {
		args := make([]any, 0, len(chunk)+1)
		args = append(args, tenant)
		for _, id := range chunk {
			args = append(args, id)
		}
		ph := strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",")
		evs, err := s.selectEvents(ctx, "SELECT body FROM events WHERE tenant = ? AND "+col+" IN ("+ph+")", args)
		out = append(out, evs...)
		return err
	})
	if err != nil {
		return nil, err
	}
	sqlite.SortEvents(out)
	return out, nil
}

// OpenState opens the state store, which is SQLite for every engine.
func OpenState(dir string) (*sqlite.StateStore, error) { return sqlite.OpenState(dir) }
