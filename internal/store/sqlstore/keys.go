package sqlstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// HashKey is how API keys are stored: never in clear. The keys are 160
// random bits, so a plain SHA-256 is enough (nothing to brute-force).
func HashKey(apiKey string) string {
	sum := sha256.Sum256([]byte(apiKey))
	return hex.EncodeToString(sum[:])
}

// Mask returns the parts of a key that may be shown: its type prefix (up to
// the last "_"), its length, and its first two and last four characters
// when the key is long enough for that to leave most of it hidden.
func Mask(apiKey string) store.KeyMask {
	prefix, rest := "", apiKey
	if i := strings.LastIndexByte(apiKey, '_'); i >= 0 {
		prefix, rest = apiKey[:i+1], apiKey[i+1:]
	}
	m := store.KeyMask{Prefix: prefix, ValueLength: len(rest)}
	if len(rest) >= 16 {
		m.MaskedPrefix, m.MaskedSuffix = rest[:2], rest[len(rest)-4:]
	}
	return m
}

func encodeMask(m store.KeyMask) string {
	b, _ := json.Marshal(m)
	return string(b)
}

// decodeMask reads a stored mask: JSON, or the "e2b_12...abcd" text of
// keys created before masks had structure (all of them e2b_ + 40 hex).
func decodeMask(s string) store.KeyMask {
	var m store.KeyMask
	if json.Unmarshal([]byte(s), &m) == nil {
		return m
	}
	head, tail, ok := strings.Cut(s, "...")
	if !ok {
		return store.KeyMask{}
	}
	m = Mask(head + strings.Repeat("x", 40-len(head)+4))
	m.MaskedSuffix = tail
	return m
}

const keyColumns = `id, team_id, name, mask, created_at, last_used`

func insertKey(ctx context.Context, tx *sqldb.Tx, teamID, name, apiKey string, now time.Time) (store.APIKey, error) {
	k := store.APIKey{ID: uuid.NewString(), TeamID: teamID, Name: name, Mask: Mask(apiKey), CreatedAt: now}
	_, err := tx.ExecContext(ctx, `INSERT INTO api_keys(hash, team_id, mask, created_at, id, name) VALUES(?,?,?,?,?,?)`,
		HashKey(apiKey), teamID, encodeMask(k.Mask), now.UnixNano(), k.ID, name)
	if err != nil {
		if sqldb.IsUniqueViolation(err) {
			return store.APIKey{}, errdefs.Exists("this API key already exists")
		}
		if sqldb.IsForeignKeyViolation(err) {
			return store.APIKey{}, errdefs.NotFound("team %s not found", teamID)
		}
		return store.APIKey{}, err
	}
	return k, nil
}

// CreateAPIKey adds a key to a team.
func (s *Store) CreateAPIKey(ctx context.Context, teamID, name, apiKey string) (store.APIKey, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return store.APIKey{}, fmt.Errorf("create api key: %w", err)
	}
	defer tx.Rollback()
	k, err := insertKey(ctx, tx, teamID, name, apiKey, s.now().UTC())
	if err != nil {
		return store.APIKey{}, fmt.Errorf("create api key for team %s: %w", teamID, err)
	}
	return k, tx.Commit()
}

// APIKeys lists a team's keys, or every team's for teamID "".
func (s *Store) APIKeys(ctx context.Context, teamID string) ([]store.APIKey, error) {
	q, args := `SELECT `+keyColumns+` FROM api_keys ORDER BY created_at, id`, []any{}
	if teamID != "" {
		q, args = `SELECT `+keyColumns+` FROM api_keys WHERE team_id = ? ORDER BY created_at, id`, []any{teamID}
	}
	return queryAll(ctx, s.db, "list api keys", func(r scanner) (store.APIKey, error) { return scanKey(r, "API key") }, q, args...)
}

// APIKey returns one team key by ID.
func (s *Store) APIKey(ctx context.Context, id string) (store.APIKey, error) {
	return scanKey(s.db.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ?`, id), "API key "+id)
}

// RenameAPIKey changes a key's name.
func (s *Store) RenameAPIKey(ctx context.Context, id, name string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE api_keys SET name = ? WHERE id = ?`, name, id)
	if err != nil {
		return fmt.Errorf("rename api key %s: %w", id, err)
	}
	return oneRow(res, "API key "+id)
}

// DeleteAPIKey revokes a key; a team's last key only with force.
func (s *Store) DeleteAPIKey(ctx context.Context, id string, force bool) error {
	// _txlock=immediate: the count and the delete see no concurrent
	// delete, so two revocations cannot together remove the last two keys.
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete api key: %w", err)
	}
	defer tx.Rollback()
	var teamID string
	if err := tx.QueryRowContext(ctx, `SELECT team_id FROM api_keys WHERE id = ?`, id).Scan(&teamID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return errdefs.NotFound("API key %s not found", id)
		}
		return fmt.Errorf("delete api key %s: %w", id, err)
	}
	if !force {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys WHERE team_id = ?`, teamID).Scan(&n); err != nil {
			return fmt.Errorf("delete api key %s: %w", id, err)
		}
		if n <= 1 {
			return errdefs.Conflict("API key %s is the team's last key: deleting it locks the team out; create another key first, or delete it anyway with force (sbx key revoke --force, DELETE /api-keys/{id}?force=true)", id)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM api_keys WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete api key %s: %w", id, err)
	}
	if err := tx.Notify(ctx, store.KeysChannel); err != nil {
		return fmt.Errorf("delete api key %s: %w", id, err)
	}
	return tx.Commit()
}

// ResolveAPIKey finds the owner of a key: a team, or the admin.
func (s *Store) ResolveAPIKey(ctx context.Context, apiKey string) (store.APIKey, store.Team, bool, error) {
	h := HashKey(apiKey)
	row := s.db.QueryRowContext(ctx, `SELECT k.id, k.team_id, k.name, k.mask, k.created_at, k.last_used,
		t.id, t.name, t.created_at, t.max_sandboxes
		FROM api_keys k JOIN teams t ON t.id = k.team_id WHERE k.hash = ?`, h)
	var k store.APIKey
	var t store.Team
	var mask string
	var created, used, tCreated int64
	var max sql.NullInt64
	err := row.Scan(&k.ID, &k.TeamID, &k.Name, &mask, &created, &used, &t.ID, &t.Name, &tCreated, &max)
	switch {
	case err == nil:
		k.Mask, k.CreatedAt, k.LastUsed = decodeMask(mask), time.Unix(0, created).UTC(), fromUnixNano(used)
		t.CreatedAt = time.Unix(0, tCreated).UTC()
		if max.Valid {
			n := int(max.Int64)
			t.MaxSandboxes = &n
		}
		return k, t, false, nil
	case !errors.Is(err, sql.ErrNoRows):
		return store.APIKey{}, store.Team{}, false, fmt.Errorf("resolve api key: %w", err)
	}
	row = s.db.QueryRowContext(ctx, `SELECT id, '', 'admin', mask, created_at, last_used FROM admin_keys WHERE hash = ?`, h)
	k, err = scanKey(row, "API key")
	if err != nil {
		return store.APIKey{}, store.Team{}, false, err
	}
	return k, store.Team{}, true, nil
}

// TouchAPIKey records a key's last use (team or admin key).
func (s *Store) TouchAPIKey(ctx context.Context, id string, t time.Time) error {
	for _, table := range []string{"api_keys", "admin_keys"} {
		res, err := s.db.ExecContext(ctx, `UPDATE `+table+` SET last_used = ? WHERE id = ?`, t.UnixNano(), id)
		if err != nil {
			return fmt.Errorf("touch api key %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
	}
	return errdefs.NotFound("API key %s not found", id)
}

// SetAdminKey replaces the admin key: the previous one stops working.
func (s *Store) SetAdminKey(ctx context.Context, apiKey string) (store.APIKey, error) {
	k := store.APIKey{ID: uuid.NewString(), Name: "admin", Mask: Mask(apiKey), CreatedAt: s.now().UTC()}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return store.APIKey{}, fmt.Errorf("set admin key: %w", err)
	}
	defer tx.Rollback()
	var existing string
	err = tx.QueryRowContext(ctx, `SELECT id FROM admin_keys WHERE hash = ?`, HashKey(apiKey)).Scan(&existing)
	if err == nil { // already the admin key: keep its ID and history
		if _, err := tx.ExecContext(ctx, `DELETE FROM admin_keys WHERE id <> ?`, existing); err != nil {
			return store.APIKey{}, fmt.Errorf("set admin key: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return store.APIKey{}, err
		}
		return scanKey(s.db.QueryRowContext(ctx, `SELECT id, '', 'admin', mask, created_at, last_used FROM admin_keys WHERE id = ?`, existing), "admin key")
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return store.APIKey{}, fmt.Errorf("set admin key: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM admin_keys`); err != nil {
		return store.APIKey{}, fmt.Errorf("set admin key: %w", err)
	}
	if err := tx.Notify(ctx, store.KeysChannel); err != nil {
		return store.APIKey{}, fmt.Errorf("set admin key: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO admin_keys(id, hash, mask, created_at) VALUES(?,?,?,?)`,
		k.ID, HashKey(apiKey), encodeMask(k.Mask), k.CreatedAt.UnixNano())
	if err != nil {
		return store.APIKey{}, fmt.Errorf("set admin key: %w", err)
	}
	return k, tx.Commit()
}

func scanKey(row scanner, what string) (store.APIKey, error) {
	var k store.APIKey
	var mask string
	var created, used int64
	if err := row.Scan(&k.ID, &k.TeamID, &k.Name, &mask, &created, &used); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return store.APIKey{}, errdefs.NotFound("%s not found", what)
		}
		return store.APIKey{}, fmt.Errorf("read %s: %w", what, err)
	}
	k.Mask, k.CreatedAt, k.LastUsed = decodeMask(mask), time.Unix(0, created).UTC(), fromUnixNano(used)
	return k, nil
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
