package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mamori-edr/mamori/internal/schema"
	"github.com/mamori-edr/mamori/internal/store"
)

// EventsFile is the name of the event database inside the data directory.
const EventsFile = "events.db"

// inChunk bounds the ids bound in one IN list.
const inChunk = 500

// MaxFilterValues bounds the hosts or types one EventQuery may list.
const MaxFilterValues = 10000

var eventSchema = []string{
	`CREATE TABLE IF NOT EXISTS events (
		tenant           TEXT    NOT NULL,
		host_id          TEXT    NOT NULL,
		seq              INTEGER NOT NULL,
		boot_id          TEXT    NOT NULL,
		time             INTEGER NOT NULL,
		type             TEXT    NOT NULL,
		entity_id        TEXT,
		parent_entity_id TEXT,
		pid              INTEGER,
		ppid             INTEGER,
		name             TEXT,
		exe              TEXT,
		args             TEXT,
		cwd              TEXT,
		uid              INTEGER,
		euid             INTEGER,
		login_uid        INTEGER,
		container_id     TEXT,
		sha256           TEXT,
		md5              TEXT,
		exit_code        INTEGER,
		parent_exe       TEXT,
		body             BLOB    NOT NULL,
		UNIQUE (tenant, host_id, seq)
	)`,
	`CREATE INDEX IF NOT EXISTS events_time ON events (tenant, time, seq, host_id)`,
	`CREATE INDEX IF NOT EXISTS events_host_time ON events (tenant, host_id, time)`,
	`CREATE INDEX IF NOT EXISTS events_entity ON events (tenant, entity_id)`,
	`CREATE INDEX IF NOT EXISTS events_parent ON events (tenant, parent_entity_id)`,
}

// columns maps each store.QueryFields name to its column.
var columns = map[string]string{
	"type":                     "type",
	"host_id":                  "host_id",
	"boot_id":                  "boot_id",
	"seq":                      "seq",
	"process.entity_id":        "entity_id",
	"process.parent_entity_id": "parent_entity_id",
	"process.pid":              "pid",
	"process.ppid":             "ppid",
	"process.name":             "name",
	"process.exe":              "exe",
	"process.args":             "args",
	"process.cwd":              "cwd",
	"process.uid":              "uid",
	"process.euid":             "euid",
	"process.login_uid":        "login_uid",
	"process.container_id":     "container_id",
	"process.hash.sha256":      "sha256",
	"process.hash.md5":         "md5",
	"process.exit_code":        "exit_code",
	"parent.exe":               "parent_exe",
	"network.family":           "net_family",
	"network.protocol":         "net_protocol",
	"network.direction":        "net_direction",
	"network.result":           "net_result",
	"network.src_ip":           "src_ip",
	"network.src_port":         "src_port",
	"network.dst_ip":           "dst_ip",
	"network.dst_port":         "dst_port",
}

// netColumns are generated from the body, so events.db files made before
// they existed gain them by ALTER TABLE (see migrateEvents) and Append is
// unchanged. Only destination port and addresses are indexed (partial
// indexes: process events add nothing to them).
var netColumns = []struct{ name, typ, path string }{
	{"net_family", "TEXT", "$.network.family"},
	{"net_protocol", "TEXT", "$.network.protocol"},
	{"net_direction", "TEXT", "$.network.direction"},
	{"net_result", "TEXT", "$.network.result"},
	{"src_ip", "TEXT", "$.network.src_ip"},
	{"src_port", "INTEGER", "$.network.src_port"},
	{"dst_ip", "TEXT", "$.network.dst_ip"},
	{"dst_port", "INTEGER", "$.network.dst_port"},
}

var netIndexes = []string{
	`CREATE INDEX IF NOT EXISTS events_dst_port ON events (tenant, dst_port) WHERE dst_port IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS events_dst_ip ON events (tenant, dst_ip) WHERE dst_ip IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS events_src_ip ON events (tenant, src_ip) WHERE src_ip IS NOT NULL`,
}

// migrateEvents adds the generated network columns and their indexes.
func migrateEvents(ctx context.Context, db *sql.DB) error {
	have := map[string]bool{}
	rows, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_xinfo('events')`)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return fmt.Errorf("migrate: %w", err)
		}
		have[n] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	for _, c := range netColumns {
		if have[c.name] {
			continue
		}
		stmt := fmt.Sprintf(`ALTER TABLE events ADD COLUMN %s %s GENERATED ALWAYS AS (json_extract(CAST(body AS TEXT), '%s')) VIRTUAL`,
			c.name, c.typ, c.path)
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("migrate: add %s: %w", c.name, err)
		}
	}
	for _, stmt := range netIndexes {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

const insertSQL = `INSERT OR IGNORE INTO events (tenant, host_id, seq, boot_id, time, type,
	entity_id, parent_entity_id, pid, ppid, name, exe, args, cwd, uid, euid, login_uid,
	container_id, sha256, md5, exit_code, parent_exe, body)
	VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`

// EventStore is the SQLite event store. It is safe for concurrent use.
type EventStore struct {
	db *pair
}

var _ store.EventStore = (*EventStore)(nil)

// OpenEvents opens (or creates) dir/events.db.
func OpenEvents(dir string) (*EventStore, error) {
	p, err := openPair(filepath.Join(dir, EventsFile), eventSchema)
	if err != nil {
		return nil, fmt.Errorf("event store: %w", err)
	}
	if err := migrateEvents(context.Background(), p.w); err != nil {
		p.close()
		return nil, fmt.Errorf("event store: %w", err)
	}
	return &EventStore{db: p}, nil
}

// Close closes both connection pools.
func (s *EventStore) Close() error { return s.db.close() }

// Row is the flattened form of one event: the extracted columns plus the
// JSON body. Engines sharing this layout use it to validate and flatten.
type Row struct {
	Tenant, HostID string
	Seq            int64
	BootID         string
	Time           int64
	Type           string
	Cols           [15]any // entity_id … parent_exe, nil when absent
	Body           []byte
}

// Flatten validates ev for tenant and returns its row. The event's Tenant
// field is overwritten with tenant, which is authoritative.
func Flatten(tenant string, ev schema.Event) (Row, error) {
	if ev.HostID == "" {
		return Row{}, errors.New("empty host id")
	}
	if ev.Seq == 0 || ev.Seq > math.MaxInt64 {
		return Row{}, fmt.Errorf("seq %d out of range 1..2^63-1", ev.Seq)
	}
	if ev.Type == "" {
		return Row{}, errors.New("empty type")
	}
	// UnixNano is only defined for years 1678..2262.
	if ev.Time.Year() < 1678 || ev.Time.Year() > 2261 {
		return Row{}, fmt.Errorf("time %s out of range", ev.Time.Format(time.RFC3339))
	}
	if p := ev.Process; p != nil && (p.StartTime.Year() < 0 || p.StartTime.Year() > 9999) {
		return Row{}, fmt.Errorf("process start time year %d out of range", p.StartTime.Year())
	}
	ev.Tenant = tenant
	body := ev.AppendJSON(nil)
	r := Row{Tenant: tenant, HostID: ev.HostID, Seq: int64(ev.Seq), BootID: ev.BootID,
		Time: ev.Time.UnixNano(), Type: string(ev.Type), Body: body}
	if p := ev.Process; p != nil {
		r.Cols[0] = p.EntityID
		r.Cols[1] = p.ParentEntityID
		r.Cols[2] = int64(p.PID)
		r.Cols[3] = int64(p.PPID)
		r.Cols[4] = p.Name
		r.Cols[5] = p.Exe
		r.Cols[6] = p.CommandLine()
		r.Cols[7] = p.Cwd
		r.Cols[8] = int64(p.UID)
		r.Cols[9] = int64(p.EUID)
		r.Cols[10] = int64(p.LoginUID)
		r.Cols[11] = p.ContainerID
		if p.Hash != nil {
			r.Cols[12] = p.Hash.SHA256
			r.Cols[13] = p.Hash.MD5
		}
		if p.ExitCode != nil {
			r.Cols[14] = int64(*p.ExitCode)
		}
	}
	return r, nil
}

// ParentExe returns the parent executable column value of ev.
func ParentExe(ev schema.Event) any {
	if ev.Parent == nil {
		return nil
	}
	return ev.Parent.Exe
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
	rows := make([][]any, len(events))
	for i, ev := range events {
		r, err := Flatten(tenant, ev)
		if err != nil {
			return fmt.Errorf("append: event %d: %w: %w", i, store.ErrBadEvent, err)
		}
		args := make([]any, 0, 23)
		args = append(args, r.Tenant, r.HostID, r.Seq, r.BootID, r.Time, r.Type)
		args = append(args, r.Cols[:]...)
		args = append(args, ParentExe(ev), r.Body)
		rows[i] = args
	}
	tx, err := s.db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append: begin: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, insertSQL)
	if err != nil {
		return fmt.Errorf("append: prepare: %w", err)
	}
	defer st.Close()
	for i, args := range rows {
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("append: event %d: %w", i, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("append: commit: %w", err)
	}
	return nil
}

// MaxSeq returns the highest stored seq of a host (0 if none).
func (s *EventStore) MaxSeq(ctx context.Context, tenant, hostID string) (uint64, error) {
	var n sql.NullInt64
	err := s.db.r.QueryRowContext(ctx,
		`SELECT max(seq) FROM events WHERE tenant = ? AND host_id = ?`, tenant, hostID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("max seq: %w", err)
	}
	return uint64(n.Int64), nil
}

// Count returns the number of stored events of a tenant.
func (s *EventStore) Count(ctx context.Context, tenant string) (int64, error) {
	var n int64
	if err := s.db.r.QueryRowContext(ctx, `SELECT count(*) FROM events WHERE tenant = ?`, tenant).Scan(&n); err != nil {
		return 0, fmt.Errorf("count: %w", err)
	}
	return n, nil
}

// EscapeLike escapes the LIKE metacharacters % _ and \ with a backslash, for
// use with ESCAPE '\'.
func EscapeLike(s string) string {
	if !strings.ContainsAny(s, `%_\`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r == '%' || r == '_' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Condition returns the SQL predicate and arguments for c, or an error
// wrapping store.ErrBadQuery. col maps a field name to its column.
func Condition(c store.Condition, col func(string) string) (string, []any, error) {
	kind, ok := store.QueryFields[c.Field]
	if !ok {
		return "", nil, fmt.Errorf("%w: unknown field %q", store.ErrBadQuery, c.Field)
	}
	// SQLite's LIKE stops at a NUL in the pattern, which would turn
	// "contains NUL" into "matches everything"; no event field holds one.
	if strings.IndexByte(c.Value, 0) >= 0 {
		return "", nil, fmt.Errorf("%w: %s: value contains a NUL byte", store.ErrBadQuery, c.Field)
	}
	name := col(c.Field)
	if name == "" {
		// An engine without a column for the field reads it from the
		// JSON body (same syntax in SQLite and DuckDB).
		name = "(CAST(body AS TEXT) ->> '$." + c.Field + "')"
		if kind == "int" {
			name = "CAST(" + name + " AS BIGINT)"
		}
	}
	var v any = c.Value
	if kind == "int" {
		n, err := strconv.ParseInt(strings.TrimSpace(c.Value), 10, 64)
		if err != nil {
			return "", nil, fmt.Errorf("%w: %s needs a whole number, got %q", store.ErrBadQuery, c.Field, c.Value)
		}
		v = n
		switch c.Op {
		case store.OpContains, store.OpPrefix, store.OpSuffix:
			return "", nil, fmt.Errorf("%w: operator %s does not apply to the number field %s", store.ErrBadQuery, c.Op, c.Field)
		}
	}
	switch c.Op {
	case store.OpEq:
		return name + " = ?", []any{v}, nil
	case store.OpNe:
		// A missing field is "not equal" too.
		return name + " IS DISTINCT FROM ?", []any{v}, nil
	case store.OpGt:
		return name + " > ?", []any{v}, nil
	case store.OpLt:
		return name + " < ?", []any{v}, nil
	case store.OpContains:
		return name + ` LIKE ? ESCAPE '\'`, []any{"%" + EscapeLike(c.Value) + "%"}, nil
	case store.OpPrefix:
		return name + ` LIKE ? ESCAPE '\'`, []any{EscapeLike(c.Value) + "%"}, nil
	case store.OpSuffix:
		return name + ` LIKE ? ESCAPE '\'`, []any{"%" + EscapeLike(c.Value)}, nil
	}
	return "", nil, fmt.Errorf("%w: unknown operator %q", store.ErrBadQuery, c.Op)
}

// Where builds the WHERE clause of q, starting with tenant = ?. It checks
// every part of q and returns errors wrapping store.ErrBadQuery.
func Where(q store.EventQuery, col func(string) string) (string, []any, error) {
	if q.Tenant == "" {
		return "", nil, fmt.Errorf("%w: empty tenant", store.ErrBadQuery)
	}
	if q.Limit < 0 {
		return "", nil, fmt.Errorf("%w: negative limit %d", store.ErrBadQuery, q.Limit)
	}
	where := []string{"tenant = ?"}
	args := []any{q.Tenant}
	if !q.From.IsZero() {
		where = append(where, "time >= ?")
		args = append(args, clampNs(q.From))
	}
	if !q.To.IsZero() {
		where = append(where, "time < ?")
		args = append(args, clampNs(q.To))
	}
	if len(q.HostIDs) > 0 {
		if len(q.HostIDs) > MaxFilterValues {
			return "", nil, fmt.Errorf("%w: more than %d hosts", store.ErrBadQuery, MaxFilterValues)
		}
		where = append(where, "host_id IN ("+placeholders(len(q.HostIDs))+")")
		for _, h := range q.HostIDs {
			args = append(args, h)
		}
	}
	if len(q.Types) > 0 {
		if len(q.Types) > MaxFilterValues {
			return "", nil, fmt.Errorf("%w: more than %d types", store.ErrBadQuery, MaxFilterValues)
		}
		where = append(where, "type IN ("+placeholders(len(q.Types))+")")
		for _, t := range q.Types {
			args = append(args, string(t))
		}
	}
	for _, c := range q.Conditions {
		p, a, err := Condition(c, col)
		if err != nil {
			return "", nil, err
		}
		where = append(where, p)
		args = append(args, a...)
	}
	return strings.Join(where, " AND "), args, nil
}

func clampNs(t time.Time) int64 {
	switch {
	case t.Year() < 1678:
		return math.MinInt64
	case t.Year() > 2261:
		return math.MaxInt64
	}
	return t.UnixNano()
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// EffectiveLimit applies the default and the cap of store.MaxLimit.
func EffectiveLimit(n int) int {
	if n <= 0 || n > store.MaxLimit {
		return store.MaxLimit
	}
	return n
}

func sqliteCol(f string) string { return columns[f] }

// Query returns matching events in time order (then seq).
func (s *EventStore) Query(ctx context.Context, q store.EventQuery) ([]schema.Event, error) {
	where, args, err := Where(q, sqliteCol)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	order := "time, seq, host_id"
	if q.Desc {
		order = "time DESC, seq DESC, host_id DESC"
	}
	args = append(args, EffectiveLimit(q.Limit))
	// Without statistics the planner walks the time index for a host
	// query and filters every host's rows in the window; a host's own
	// index is always the better path.
	from := "events"
	if len(q.HostIDs) > 0 {
		from = "events INDEXED BY events_host_time"
	}
	return s.selectEvents(ctx, "SELECT body FROM "+from+" WHERE "+where+" ORDER BY "+order+" LIMIT ?", args)
}

func (s *EventStore) selectEvents(ctx context.Context, query string, args []any) ([]schema.Event, error) {
	rows, err := s.db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	defer rows.Close()
	var out []schema.Event
	var body []byte
	for rows.Next() {
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("query: scan: %w", err)
		}
		var ev schema.Event
		if err := json.Unmarshal(body, &ev); err != nil {
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
	err := Chunks(ids, inChunk, func(chunk []string) error {
		args := make([]any, 0, len(chunk)+1)
		args = append(args, tenant)
		for _, id := range chunk {
			args = append(args, id)
		}
		evs, err := s.selectEvents(ctx, "SELECT body FROM events WHERE tenant = ? AND "+col+
			" IN ("+placeholders(len(chunk))+")", args)
		out = append(out, evs...)
		return err
	})
	if err != nil {
		return nil, err
	}
	SortEvents(out)
	return out, nil
}

// Chunks calls fn with the distinct ids in slices of at most n.
func Chunks(ids []string, n int, fn func([]string) error) error {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for len(ids) > 0 {
		k := min(n, len(ids))
		if err := fn(ids[:k]); err != nil {
			return err
		}
		ids = ids[k:]
	}
	return nil
}

// SortEvents orders events by time, then seq, then host.
func SortEvents(evs []schema.Event) {
	slices.SortFunc(evs, func(a, b schema.Event) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		if a.Seq != b.Seq {
			if a.Seq < b.Seq {
				return -1
			}
			return 1
		}
		return strings.Compare(a.HostID, b.HostID)
	})
}
