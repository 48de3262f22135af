package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/mamori-edr/mamori/internal/store"
)

// StateFile is the name of the state database inside the data directory.
const StateFile = "state.db"

var stateSchema = []string{
	`CREATE TABLE IF NOT EXISTS tenants (
		id      TEXT PRIMARY KEY,
		name    TEXT NOT NULL,
		created INTEGER NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS enroll_tokens (
		hash       TEXT PRIMARY KEY,
		tenant     TEXT NOT NULL,
		created    INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		uses_left  INTEGER NOT NULL,
		note       TEXT NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS hosts (
		id            TEXT PRIMARY KEY,
		tenant        TEXT NOT NULL,
		hostname      TEXT NOT NULL,
		os            TEXT NOT NULL,
		kernel        TEXT NOT NULL,
		agent_version TEXT NOT NULL,
		cert_serial   TEXT NOT NULL,
		enrolled      INTEGER NOT NULL,
		last_seen     INTEGER NOT NULL,
		revoked       INTEGER NOT NULL,
		status        TEXT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS hosts_tenant ON hosts (tenant, id)`,
	`CREATE TABLE IF NOT EXISTS api_keys (
		hash    TEXT PRIMARY KEY,
		tenant  TEXT NOT NULL,
		name    TEXT NOT NULL,
		role    TEXT NOT NULL,
		created INTEGER NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS gaps (
		id        INTEGER PRIMARY KEY AUTOINCREMENT,
		tenant    TEXT NOT NULL,
		host_id   TEXT NOT NULL,
		first_seq INTEGER NOT NULL,
		last_seq  INTEGER NOT NULL,
		reported  INTEGER NOT NULL,
		reason    TEXT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS gaps_host ON gaps (tenant, host_id, first_seq)`,
	`CREATE TABLE IF NOT EXISTS audit (
		id     INTEGER PRIMARY KEY AUTOINCREMENT,
		time   INTEGER NOT NULL,
		tenant TEXT NOT NULL,
		actor  TEXT NOT NULL,
		action TEXT NOT NULL,
		target TEXT NOT NULL,
		detail TEXT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS audit_tenant ON audit (tenant, id)`,
	// The audit log is append-only, in the database itself.
	`CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
		BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END`,
	`CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
		BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END`,
}

// StateStore is the SQLite state store. It is safe for concurrent use.
type StateStore struct {
	db *pair
}

var _ store.StateStore = (*StateStore)(nil)

// OpenState opens (or creates) dir/state.db.
func OpenState(dir string) (*StateStore, error) {
	p, err := openPair(filepath.Join(dir, StateFile), stateSchema)
	if err != nil {
		return nil, fmt.Errorf("state store: %w", err)
	}
	return &StateStore{db: p}, nil
}

// Close closes both connection pools.
func (s *StateStore) Close() error { return s.db.close() }

func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

func notFound(what string, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// PutTenant creates a tenant; ErrExists if its id is taken.
func (s *StateStore) PutTenant(ctx context.Context, t store.Tenant) error {
	if t.ID == "" {
		return errors.New("put tenant: empty id")
	}
	_, err := s.db.w.ExecContext(ctx, `INSERT INTO tenants (id, name, created) VALUES (?,?,?)`,
		t.ID, t.Name, toNs(t.Created))
	if isUnique(err) {
		return fmt.Errorf("put tenant %q: %w", t.ID, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("put tenant %q: %w", t.ID, err)
	}
	return nil
}

// GetTenant returns a tenant or ErrNotFound.
func (s *StateStore) GetTenant(ctx context.Context, id string) (store.Tenant, error) {
	var t store.Tenant
	var created int64
	err := s.db.r.QueryRowContext(ctx, `SELECT id, name, created FROM tenants WHERE id = ?`, id).
		Scan(&t.ID, &t.Name, &created)
	if err != nil {
		return store.Tenant{}, notFound(fmt.Sprintf("get tenant %q", id), err)
	}
	t.Created = fromNs(created)
	return t, nil
}

// ListTenants returns every tenant ordered by id.
func (s *StateStore) ListTenants(ctx context.Context) ([]store.Tenant, error) {
	rows, err := s.db.r.QueryContext(ctx, `SELECT id, name, created FROM tenants ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	defer rows.Close()
	var out []store.Tenant
	for rows.Next() {
		var t store.Tenant
		var created int64
		if err := rows.Scan(&t.ID, &t.Name, &created); err != nil {
			return nil, fmt.Errorf("list tenants: %w", err)
		}
		t.Created = fromNs(created)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return out, nil
}

// CreateEnrollToken stores a token; ErrExists if its hash is taken.
func (s *StateStore) CreateEnrollToken(ctx context.Context, t store.EnrollToken) error {
	if t.Hash == "" || t.Tenant == "" {
		return errors.New("create enroll token: empty hash or tenant")
	}
	_, err := s.db.w.ExecContext(ctx, `INSERT INTO enroll_tokens (hash, tenant, created, expires_at, uses_left, note)
		VALUES (?,?,?,?,?,?)`, t.Hash, t.Tenant, toNs(t.Created), toNs(t.ExpiresAt), t.UsesLeft, t.Note)
	if isUnique(err) {
		return fmt.Errorf("create enroll token: %w", store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create enroll token: %w", err)
	}
	return nil
}

// ConsumeEnrollToken uses the token once, atomically, and returns it with
// UsesLeft already decremented. A zero ExpiresAt never expires.
func (s *StateStore) ConsumeEnrollToken(ctx context.Context, hash string, now time.Time) (store.EnrollToken, error) {
	tx, err := s.db.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the single writer
	if err != nil {
		return store.EnrollToken{}, fmt.Errorf("consume enroll token: %w", err)
	}
	defer tx.Rollback()
	var t store.EnrollToken
	var created, expires int64
	err = tx.QueryRowContext(ctx, `SELECT hash, tenant, created, expires_at, uses_left, note
		FROM enroll_tokens WHERE hash = ?`, hash).
		Scan(&t.Hash, &t.Tenant, &created, &expires, &t.UsesLeft, &t.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return store.EnrollToken{}, fmt.Errorf("consume enroll token: %w", store.ErrTokenInvalid)
	}
	if err != nil {
		return store.EnrollToken{}, fmt.Errorf("consume enroll token: %w", err)
	}
	t.Created, t.ExpiresAt = fromNs(created), fromNs(expires)
	if t.UsesLeft <= 0 {
		return store.EnrollToken{}, fmt.Errorf("consume enroll token: %w", store.ErrTokenUsed)
	}
	if !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt) {
		return store.EnrollToken{}, fmt.Errorf("consume enroll token: %w (at %s)", store.ErrTokenExpired, t.ExpiresAt.Format(time.RFC3339))
	}
	if _, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET uses_left = uses_left - 1 WHERE hash = ?`, hash); err != nil {
		return store.EnrollToken{}, fmt.Errorf("consume enroll token: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return store.EnrollToken{}, fmt.Errorf("consume enroll token: %w", err)
	}
	t.UsesLeft--
	return t, nil
}

const hostCols = `id, tenant, hostname, os, kernel, agent_version, cert_serial, enrolled, last_seen, revoked, status`

// PutHost inserts or replaces a host. A host id already held by another
// tenant is refused with ErrExists: ids never move between tenants.
func (s *StateStore) PutHost(ctx context.Context, h store.Host) error {
	if h.ID == "" || h.Tenant == "" {
		return errors.New("put host: empty id or tenant")
	}
	res, err := s.db.w.ExecContext(ctx, `INSERT INTO hosts (`+hostCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, os = excluded.os,
			kernel = excluded.kernel, agent_version = excluded.agent_version,
			cert_serial = excluded.cert_serial, enrolled = excluded.enrolled,
			last_seen = excluded.last_seen, revoked = excluded.revoked, status = excluded.status
		WHERE hosts.tenant = excluded.tenant`,
		h.ID, h.Tenant, h.Hostname, h.OS, h.Kernel, h.AgentVersion, h.CertSerial,
		toNs(h.Enrolled), toNs(h.LastSeen), h.Revoked, h.Status)
	if err != nil {
		return fmt.Errorf("put host %q: %w", h.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("put host %q: %w", h.ID, err)
	} else if n == 0 {
		return fmt.Errorf("put host %q: %w in another tenant", h.ID, store.ErrExists)
	}
	return nil
}

type scanner interface{ Scan(...any) error }

func scanHost(r scanner) (store.Host, error) {
	var h store.Host
	var enrolled, seen int64
	err := r.Scan(&h.ID, &h.Tenant, &h.Hostname, &h.OS, &h.Kernel, &h.AgentVersion, &h.CertSerial,
		&enrolled, &seen, &h.Revoked, &h.Status)
	h.Enrolled, h.LastSeen = fromNs(enrolled), fromNs(seen)
	return h, err
}

// GetHost returns a host of tenant or ErrNotFound.
func (s *StateStore) GetHost(ctx context.Context, tenant, id string) (store.Host, error) {
	h, err := scanHost(s.db.r.QueryRowContext(ctx, `SELECT `+hostCols+` FROM hosts WHERE tenant = ? AND id = ?`, tenant, id))
	if err != nil {
		return store.Host{}, notFound(fmt.Sprintf("get host %q", id), err)
	}
	return h, nil
}

// FindHost looks a host up by id across tenants.
func (s *StateStore) FindHost(ctx context.Context, id string) (store.Host, error) {
	h, err := scanHost(s.db.r.QueryRowContext(ctx, `SELECT `+hostCols+` FROM hosts WHERE id = ?`, id))
	if err != nil {
		return store.Host{}, notFound(fmt.Sprintf("find host %q", id), err)
	}
	return h, nil
}

// ListHosts returns the hosts of a tenant ordered by id.
func (s *StateStore) ListHosts(ctx context.Context, tenant string) ([]store.Host, error) {
	rows, err := s.db.r.QueryContext(ctx, `SELECT `+hostCols+` FROM hosts WHERE tenant = ? ORDER BY id`, tenant)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer rows.Close()
	var out []store.Host
	for rows.Next() {
		h, err := scanHost(rows)
		if err != nil {
			return nil, fmt.Errorf("list hosts: %w", err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return out, nil
}

func (s *StateStore) updateHost(ctx context.Context, what, tenant, id, set string, args ...any) error {
	args = append(args, tenant, id)
	res, err := s.db.w.ExecContext(ctx, `UPDATE hosts SET `+set+` WHERE tenant = ? AND id = ?`, args...)
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, id, err)
	}
	if n == 0 {
		return fmt.Errorf("%s %q: %w", what, id, store.ErrNotFound)
	}
	return nil
}

// TouchHost records the last contact and status of a host.
func (s *StateStore) TouchHost(ctx context.Context, tenant, id string, seen time.Time, status string) error {
	return s.updateHost(ctx, "touch host", tenant, id, "last_seen = ?, status = ?", toNs(seen), status)
}

// RevokeHost marks a host revoked; its certificate is refused afterwards.
func (s *StateStore) RevokeHost(ctx context.Context, tenant, id string) error {
	return s.updateHost(ctx, "revoke host", tenant, id, "revoked = 1")
}

// PutAPIKey stores an API key; ErrExists if its hash is taken.
func (s *StateStore) PutAPIKey(ctx context.Context, k store.APIKey) error {
	if k.Hash == "" || k.Tenant == "" {
		return errors.New("put api key: empty hash or tenant")
	}
	_, err := s.db.w.ExecContext(ctx, `INSERT INTO api_keys (hash, tenant, name, role, created) VALUES (?,?,?,?,?)`,
		k.Hash, k.Tenant, k.Name, k.Role, toNs(k.Created))
	if isUnique(err) {
		return fmt.Errorf("put api key: %w", store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("put api key: %w", err)
	}
	return nil
}

// GetAPIKey returns the key with this hash or ErrNotFound.
func (s *StateStore) GetAPIKey(ctx context.Context, hash string) (store.APIKey, error) {
	var k store.APIKey
	var created int64
	err := s.db.r.QueryRowContext(ctx, `SELECT hash, tenant, name, role, created FROM api_keys WHERE hash = ?`, hash).
		Scan(&k.Hash, &k.Tenant, &k.Name, &k.Role, &created)
	if err != nil {
		return store.APIKey{}, notFound("get api key", err)
	}
	k.Created = fromNs(created)
	return k, nil
}

// AddGap records a range of sequence numbers that never arrived.
func (s *StateStore) AddGap(ctx context.Context, g store.Gap) error {
	if g.Tenant == "" || g.HostID == "" {
		return errors.New("add gap: empty tenant or host id")
	}
	if g.FirstSeq > g.LastSeq || g.LastSeq > 1<<63-1 {
		return fmt.Errorf("add gap: bad range %d..%d", g.FirstSeq, g.LastSeq)
	}
	_, err := s.db.w.ExecContext(ctx, `INSERT INTO gaps (tenant, host_id, first_seq, last_seq, reported, reason)
		VALUES (?,?,?,?,?,?)`, g.Tenant, g.HostID, int64(g.FirstSeq), int64(g.LastSeq), toNs(g.Reported), g.Reason)
	if err != nil {
		return fmt.Errorf("add gap: %w", err)
	}
	return nil
}

// ListGaps returns the gaps of a host (of every host if hostID is empty)
// ordered by host and first seq.
func (s *StateStore) ListGaps(ctx context.Context, tenant, hostID string) ([]store.Gap, error) {
	q := `SELECT tenant, host_id, first_seq, last_seq, reported, reason FROM gaps WHERE tenant = ?`
	args := []any{tenant}
	if hostID != "" {
		q += ` AND host_id = ?`
		args = append(args, hostID)
	}
	rows, err := s.db.r.QueryContext(ctx, q+` ORDER BY host_id, first_seq, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list gaps: %w", err)
	}
	defer rows.Close()
	var out []store.Gap
	for rows.Next() {
		var g store.Gap
		var first, last, reported int64
		if err := rows.Scan(&g.Tenant, &g.HostID, &first, &last, &reported, &g.Reason); err != nil {
			return nil, fmt.Errorf("list gaps: %w", err)
		}
		g.FirstSeq, g.LastSeq, g.Reported = uint64(first), uint64(last), fromNs(reported)
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list gaps: %w", err)
	}
	return out, nil
}

// AppendAudit appends one entry to the audit log.
func (s *StateStore) AppendAudit(ctx context.Context, e store.AuditEntry) error {
	_, err := s.db.w.ExecContext(ctx, `INSERT INTO audit (time, tenant, actor, action, target, detail)
		VALUES (?,?,?,?,?,?)`, toNs(e.Time), e.Tenant, e.Actor, e.Action, e.Target, e.Detail)
	if err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	return nil
}

// ListAudit returns the newest limit entries of a tenant (all if limit <=
// 0) in append order, oldest first.
func (s *StateStore) ListAudit(ctx context.Context, tenant string, limit int) ([]store.AuditEntry, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := s.db.r.QueryContext(ctx, `SELECT time, tenant, actor, action, target, detail FROM (
		SELECT id, time, tenant, actor, action, target, detail FROM audit
		WHERE tenant = ? ORDER BY id DESC LIMIT ?) ORDER BY id`, tenant, limit)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []store.AuditEntry
	for rows.Next() {
		var e store.AuditEntry
		var t int64
		if err := rows.Scan(&t, &e.Tenant, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.Time = fromNs(t)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}
