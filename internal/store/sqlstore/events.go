package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// The event log's repository (store.Events).

var _ store.Events = (*Store)(nil)

// appendLock is the advisory lock key that serializes appends on
// PostgreSQL ("sbxevent" in ASCII).
const appendLock int64 = 0x7362786576656e74

// AppendEvent inserts ev in tx (or a transaction of its own when tx is nil)
// and fills ev.Seq.
func (s *Store) AppendEvent(ctx context.Context, tx *sqldb.Tx, ev *store.Event) error {
	if tx == nil {
		return s.db.InTx(ctx, func(tx *sqldb.Tx) error { return s.AppendEvent(ctx, tx, ev) })
	}
	var data any // NULL when empty, so eventData is JSON null
	if len(ev.EventData) > 0 {
		b, err := json.Marshal(ev.EventData)
		if err != nil {
			return fmt.Errorf("append event %s: encode eventData: %w", ev.Type, err)
		}
		data = string(b)
	}
	if tx.Dialect() == sqldb.Postgres {
		// Readers follow the log by seq (SSE Last-Event-ID, the webhook
		// cursor), so seq order must be commit order. A sequence alone does
		// not give that: a transaction that drew seq 10 can commit after one
		// that drew 11, and a reader already past 11 would skip 10 for good.
		// This lock, held to commit, makes event-writing transactions draw
		// and commit one after the other from their first append (appends
		// come last in their transactions, so the section is short). On
		// SQLite the database lock already does this.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, appendLock); err != nil {
			return fmt.Errorf("append event %s: lock: %w", ev.Type, err)
		}
		if err := tx.Notify(ctx, store.EventsChannel); err != nil {
			return fmt.Errorf("append event %s: notify: %w", ev.Type, err)
		}
	}
	err := tx.QueryRowContext(ctx, `INSERT INTO events
		(id, version, type, team_id, sandbox_id, template_id, build_id, execution_id, event_data, ts)
		VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING seq`,
		ev.ID, ev.Version, ev.Type, ev.TeamID, ev.SandboxID, ev.SandboxTemplateID,
		ev.SandboxBuildID, ev.SandboxExecutionID, data, ev.Timestamp.UnixNano()).Scan(&ev.Seq)
	if err != nil {
		return fmt.Errorf("append event %s: %w", ev.Type, err)
	}
	return nil
}

func eventWhere(f store.EventFilter, args []any) (string, []any) {
	var conds []string
	if f.TeamID != "" {
		conds = append(conds, "team_id = ?")
		args = append(args, f.TeamID)
	}
	if f.SandboxID != "" {
		conds = append(conds, "sandbox_id = ?")
		args = append(args, f.SandboxID)
	}
	if len(f.Types) > 0 {
		conds = append(conds, "type IN (?"+strings.Repeat(",?", len(f.Types)-1)+")")
		for _, t := range f.Types {
			args = append(args, t)
		}
	}
	if len(conds) == 0 {
		return "", args
	}
	return " AND " + strings.Join(conds, " AND "), args
}

const eventCols = `seq, id, version, type, team_id, sandbox_id, template_id, build_id, execution_id, event_data, ts`

// ListEvents returns events matching f, newest first unless f.OrderAsc.
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	where, args := eventWhere(f, nil)
	order := "DESC"
	if f.OrderAsc {
		order = "ASC"
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	return queryAll(ctx, s.db, "read events", scanEvent, `SELECT `+eventCols+` FROM events WHERE 1=1`+where+
		` ORDER BY seq `+order+` LIMIT ? OFFSET ?`, append(args, f.Limit, f.Offset)...)
}

// EventsAfter returns up to limit events with Seq > after, oldest first.
func (s *Store) EventsAfter(ctx context.Context, tx *sqldb.Tx, after int64, limit int, f store.EventFilter) ([]store.Event, error) {
	where, args := eventWhere(f, []any{after})
	if limit <= 0 {
		limit = 100
	}
	q := `SELECT ` + eventCols + ` FROM events WHERE seq > ?` + where + ` ORDER BY seq ASC LIMIT ?`
	args = append(args, limit)
	var on queryer = s.db
	if tx != nil {
		on = tx
	}
	return queryAll(ctx, on, "read events", scanEvent, q, args...)
}

func scanEvent(r scanner) (store.Event, error) {
	var ev store.Event
	var data sql.NullString
	var ts int64
	if err := r.Scan(&ev.Seq, &ev.ID, &ev.Version, &ev.Type, &ev.TeamID, &ev.SandboxID,
		&ev.SandboxTemplateID, &ev.SandboxBuildID, &ev.SandboxExecutionID, &data, &ts); err != nil {
		return ev, err
	}
	if data.Valid {
		if err := json.Unmarshal([]byte(data.String), &ev.EventData); err != nil {
			return ev, fmt.Errorf("event %s: decode eventData: %w", ev.ID, err)
		}
	}
	ev.Timestamp = time.Unix(0, ts).UTC()
	return ev, nil
}

// LastEventSeq returns the highest sequence number in the log (0 when empty).
func (s *Store) LastEventSeq(ctx context.Context) (int64, error) {
	var seq sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(seq) FROM events`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("last event seq: %w", err)
	}
	return seq.Int64, nil
}

// HasEvent reports whether an event with id is stored.
func (s *Store) HasEvent(ctx context.Context, id string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM events WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up event %s: %w", id, err)
	}
	return true, nil
}

// LatestEventTeam returns the team of the newest event naming one.
func (s *Store) LatestEventTeam(ctx context.Context) (string, error) {
	var team string
	err := s.db.QueryRowContext(ctx, `SELECT team_id FROM events WHERE team_id != '' ORDER BY seq DESC LIMIT 1`).Scan(&team)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("latest event team: %w", err)
	}
	return team, nil
}

// FollowEvents calls fn after every append by any server sharing the
// database (PostgreSQL LISTEN); on SQLite it returns at once.
func (s *Store) FollowEvents(ctx context.Context, fn func()) error {
	return s.db.Listen(ctx, store.EventsChannel, fn)
}
