package sqldb

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// Backup writes a consistent copy of a SQLite database to dst (which must
// not exist) while the server keeps running: VACUUM INTO reads one snapshot
// and writes a compact, self-contained file. The copy is created 0600 like
// the database. PostgreSQL is backed up with its own tools (pg_dump).
func (d *DB) Backup(ctx context.Context, dst string) error {
	if d.dialect != SQLite {
		return errors.New("sbx backup copies SQLite databases; back up PostgreSQL with pg_dump (see docs/operations.md)")
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("backup %s: the file exists; pick a new name", dst)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	f.Close()
	// VACUUM INTO refuses a non-empty file but accepts an empty one, so the
	// 0600 file made above is the one it fills.
	if _, err := d.db.ExecContext(ctx, `VACUUM INTO ?`, dst); err != nil {
		os.Remove(dst)
		return fmt.Errorf("backup to %s: %w", dst, err)
	}
	return nil
}
