package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mamori-edr/mamori/internal/store"
)

var actionSchema = []string{
	`CREATE TABLE IF NOT EXISTS actions (
		tenant     TEXT NOT NULL,
		id         TEXT NOT NULL,
		host_id    TEXT NOT NULL,
		type       TEXT NOT NULL,
		params     TEXT NOT NULL,
		reason     TEXT NOT NULL,
		actor      TEXT NOT NULL,
		state      TEXT NOT NULL,
		result     TEXT NOT NULL,
		error      TEXT NOT NULL,
		created    INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		delivered  INTEGER NOT NULL,
		finished   INTEGER NOT NULL,
		PRIMARY KEY (tenant, id)
	)`,
	`CREATE INDEX IF NOT EXISTS actions_host ON actions (tenant, host_id, state, created)`,
	`CREATE INDEX IF NOT EXISTS actions_queued ON actions (state, expires_at)`,
}

func init() { stateSchema = append(stateSchema, actionSchema...) }

const actionCols = `tenant, id, host_id, type, params, reason, actor, state, result, error, created, expires_at, delivered, finished`

func scanAction(r scanner) (store.Action, error) {
	var a store.Action
	var created, expires, delivered, finished int64
	err := r.Scan(&a.Tenant, &a.ID, &a.HostID, &a.Type, &a.Params, &a.Reason, &a.Actor, &a.State, &a.Result, &a.Error,
		&created, &expires, &delivered, &finished)
	a.Created, a.ExpiresAt, a.Delivered, a.Finished = fromNs(created), fromNs(expires), fromNs(delivered), fromNs(finished)
	return a, err
}

func scanActions(rows *sql.Rows) ([]store.Action, error) {
	defer rows.Close()
	var out []store.Action
	for rows.Next() {
		a, err := scanAction(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// EnqueueAction stores a queued action; ErrExists if the id is taken in the tenant.
func (s *StateStore) EnqueueAction(ctx context.Context, a store.Action) error {
	if a.Tenant == "" || a.ID == "" || a.HostID == "" || a.Type == "" {
		return errors.New("enqueue action: empty tenant, id, host id or type")
	}
	if a.State == "" {
		a.State = "queued"
	}
	_, err := s.db.w.ExecContext(ctx, `INSERT INTO actions (`+actionCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		a.Tenant, a.ID, a.HostID, a.Type, a.Params, a.Reason, a.Actor, a.State, a.Result, a.Error,
		toNs(a.Created), toNs(a.ExpiresAt), toNs(a.Delivered), toNs(a.Finished))
	if isUnique(err) {
		return fmt.Errorf("enqueue action %q: %w", a.ID, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("enqueue action %q: %w", a.ID, err)
	}
	return nil
}

// GetAction returns one action of a tenant or ErrNotFound.
func (s *StateStore) GetAction(ctx context.Context, tenant, id string) (store.Action, error) {
	a, err := scanAction(s.db.r.QueryRowContext(ctx, `SELECT `+actionCols+` FROM actions WHERE tenant = ? AND id = ?`, tenant, id))
	if err != nil {
		return store.Action{}, notFound(fmt.Sprintf("get action %q", id), err)
	}
	return a, nil
}

// ListActions returns the newest actions of a tenant or of one of its hosts.
func (s *StateStore) ListActions(ctx context.Context, tenant, hostID string, limit int) ([]store.Action, error) {
	if limit <= 0 {
		limit = -1
	}
	q := `SELECT ` + actionCols + ` FROM actions WHERE tenant = ?`
	args := []any{tenant}
	if hostID != "" {
		q += ` AND host_id = ?`
		args = append(args, hostID)
	}
	rows, err := s.db.r.QueryContext(ctx, q+` ORDER BY created DESC, rowid DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list actions: %w", err)
	}
	out, err := scanActions(rows)
	if err != nil {
		return nil, fmt.Errorf("list actions: %w", err)
	}
	return out, nil
}

// DeliverActions marks the host's queued, unexpired actions delivered.
func (s *StateStore) DeliverActions(ctx context.Context, tenant, hostID string, now time.Time, again bool) ([]store.Action, error) {
	tx, err := s.db.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("deliver actions: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT `+actionCols+` FROM actions
		WHERE tenant = ? AND host_id = ? AND (state = 'queued' AND (expires_at = 0 OR expires_at > ?) OR state = 'delivered' AND ?)
		ORDER BY created, rowid`, tenant, hostID, toNs(now), again)
	if err != nil {
		return nil, fmt.Errorf("deliver actions: %w", err)
	}
	out, err := scanActions(rows)
	if err != nil {
		return nil, fmt.Errorf("deliver actions: %w", err)
	}
	for i := range out {
		if _, err := tx.ExecContext(ctx, `UPDATE actions SET state = 'delivered', delivered = ? WHERE tenant = ? AND id = ?`,
			toNs(now), tenant, out[i].ID); err != nil {
			return nil, fmt.Errorf("deliver actions: %w", err)
		}
		out[i].State, out[i].Delivered = "delivered", now.UTC()
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("deliver actions: %w", err)
	}
	return out, nil
}

// FinishAction records the outcome of a delivered action.
func (s *StateStore) FinishAction(ctx context.Context, tenant, hostID, id, state, result, errText string, now time.Time) (store.Action, error) {
	if state != "done" && state != "failed" {
		return store.Action{}, fmt.Errorf("finish action %q: state %q: %w", id, state, store.ErrBadState)
	}
	tx, err := s.db.w.BeginTx(ctx, nil)
	if err != nil {
		return store.Action{}, fmt.Errorf("finish action: %w", err)
	}
	defer tx.Rollback()
	a, err := scanAction(tx.QueryRowContext(ctx, `SELECT `+actionCols+` FROM actions WHERE tenant = ? AND host_id = ? AND id = ?`, tenant, hostID, id))
	if err != nil {
		return store.Action{}, notFound(fmt.Sprintf("finish action %q", id), err)
	}
	if a.State != "delivered" {
		return store.Action{}, fmt.Errorf("finish action %q: it is %s: %w", id, a.State, store.ErrBadState)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE actions SET state = ?, result = ?, error = ?, finished = ? WHERE tenant = ? AND id = ?`,
		state, result, errText, toNs(now), tenant, id); err != nil {
		return store.Action{}, fmt.Errorf("finish action %q: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return store.Action{}, fmt.Errorf("finish action %q: %w", id, err)
	}
	a.State, a.Result, a.Error, a.Finished = state, result, errText, now.UTC()
	return a, nil
}

// ExpireActions marks queued actions past their expiry expired.
func (s *StateStore) ExpireActions(ctx context.Context, now time.Time) ([]store.Action, error) {
	tx, err := s.db.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("expire actions: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT `+actionCols+` FROM actions
		WHERE state = 'queued' AND expires_at != 0 AND expires_at <= ? ORDER BY created, rowid`, toNs(now))
	if err != nil {
		return nil, fmt.Errorf("expire actions: %w", err)
	}
	out, err := scanActions(rows)
	if err != nil {
		return nil, fmt.Errorf("expire actions: %w", err)
	}
	for i := range out {
		if _, err := tx.ExecContext(ctx, `UPDATE actions SET state = 'expired', finished = ? WHERE tenant = ? AND id = ?`,
			toNs(now), out[i].Tenant, out[i].ID); err != nil {
			return nil, fmt.Errorf("expire actions: %w", err)
		}
		out[i].State, out[i].Finished = "expired", now.UTC()
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("expire actions: %w", err)
	}
	return out, nil
}
