package sqldb

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"golang.org/x/sys/unix"
)

//go:embed migrations
var migrationFS embed.FS

// Migration is one applied migration, as sbx migrate reports it.
type Migration struct {
	Version  int64         `json:"version"`
	Name     string        `json:"name"`
	Duration time.Duration `json:"durationNs"`
}

func (d *DB) provider() (*goose.Provider, error) {
	sub, err := fs.Sub(migrationFS, "migrations/"+string(d.dialect))
	if err != nil {
		return nil, err
	}
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	dialect := goose.DialectSQLite3
	switch d.dialect {
	case Postgres:
		dialect = goose.DialectPostgres
		// A session advisory lock: servers starting together on one
		// database migrate one after the other; the later ones find
		// nothing to do.
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
		if err != nil {
			return nil, err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	case SQLite:
		opts = append(opts, goose.WithGoMigrations(
			goose.NewGoMigration(1, &goose.GoFunc{RunTx: sqliteBaseline}, nil)))
	}
	return goose.NewProvider(dialect, d.db, sub, opts...)
}

// Migrate brings the schema to the current version under a lock (an
// advisory lock on PostgreSQL, a lock file next to a SQLite database) and
// returns the migrations it applied. A database whose schema is newer than
// this binary knows is refused: an older sbx would misread it.
func (d *DB) Migrate(ctx context.Context) ([]Migration, error) {
	if d.dialect == SQLite {
		unlock, err := lockFile(ctx, d.path+".migrate-lock")
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	p, err := d.provider()
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	if err := d.checkVersions(ctx, p); err != nil {
		return nil, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate %s database: %w", d.dialect, err)
	}
	var out []Migration
	for _, r := range results {
		m := Migration{Version: r.Source.Version, Name: r.Source.Path, Duration: r.Duration}
		if m.Name == "" {
			m.Name = "baseline (Go)"
		}
		out = append(out, m)
		d.log.Info("migrated database", "dialect", d.dialect, "version", m.Version, "name", m.Name, "duration", m.Duration)
	}
	return out, nil
}

// Version returns the schema version of the database and the latest
// version this binary knows.
func (d *DB) Version(ctx context.Context) (current, latest int64, err error) {
	p, err := d.provider()
	if err != nil {
		return 0, 0, err
	}
	return p.GetVersions(ctx)
}

func (d *DB) checkNotNewer(ctx context.Context) error {
	p, err := d.provider()
	if err != nil {
		return err
	}
	return d.checkVersions(ctx, p)
}

func (d *DB) checkVersions(ctx context.Context, p *goose.Provider) error {
	current, latest, err := p.GetVersions(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > latest {
		return fmt.Errorf("the database's schema is version %d but this sbx knows only up to %d: it was migrated by a newer sbx; run that version (or newer)", current, latest)
	}
	return nil
}

// lockFile holds an exclusive flock on path until the returned function
// is called: SQLite has no advisory locks, and two processes starting on one
// file must not both run a migration.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open migration lock %s: %w", path, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for migration lock %s: %w", path, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
