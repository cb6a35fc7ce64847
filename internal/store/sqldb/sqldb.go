// Package sqldb is sbx's one database handle: it opens the database a DSN
// names (an embedded SQLite file, or a shared PostgreSQL server), brings its
// schema to the current version with the embedded, numbered migrations
// (pressly/goose) under a lock, and hands out a *DB whose queries are written
// once, with "?" placeholders, for both dialects.
//
// Every table of the control plane is defined in migrations/<dialect>/: no
// package creates or alters tables of its own.
package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
)

// Dialect names the SQL dialect of a database.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is an open, migrated database. It is safe for concurrent use.
type DB struct {
	db      *sql.DB
	dialect Dialect
	path    string // SQLite: the database file
	dsn     string // PostgreSQL: for the listening connection
	log     *slog.Logger
	stmts   stmtCache // SQLite (stmtcache.go)
}

// Options tune Open.
type Options struct {
	Log *slog.Logger
	// NoMigrate opens the database without migrating it (sbx migrate
	// --status); Open refuses a database newer than this binary either way.
	NoMigrate bool
}

// IsPostgres reports whether dsn names a PostgreSQL database.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// SQLiteDSN is the one connection string sbx uses for a SQLite file: WAL so
// readers never wait for the writer, a busy timeout instead of SQLITE_BUSY
// errors, foreign keys on, and BEGIN IMMEDIATE so a transaction that reads
// then writes cannot fail half-way on a lock upgrade.
func SQLiteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
}

// Open opens the database dsn names and migrates it to the current schema:
// "postgres://..." (or "postgresql://...") is a PostgreSQL server; anything
// else is the path of a SQLite file ("sqlite:" or "file:" prefixes allowed),
// created 0600 if missing.
func Open(ctx context.Context, dsn string, opts Options) (*DB, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var d *DB
	var err error
	if IsPostgres(dsn) {
		d, err = openPostgres(ctx, dsn, log)
	} else {
		d, err = openSQLite(dsn, log)
	}
	if err != nil {
		return nil, err
	}
	if !opts.NoMigrate {
		if _, err := d.Migrate(ctx); err != nil {
			d.db.Close()
			return nil, err
		}
	} else if err := d.checkNotNewer(ctx); err != nil {
		d.db.Close()
		return nil, err
	}
	return d, nil
}

func openSQLite(dsn string, log *slog.Logger) (*DB, error) {
	path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		return nil, fmt.Errorf("database %q: give a SQLite database as a plain file path; sbx sets its own connection options", dsn)
	}
	if path == "" {
		return nil, errors.New("database: empty path; give a SQLite file path or a postgres:// URL")
	}
	// SQLite creates the database 0644 and its -wal and -shm files with the
	// database's mode: create it 0600 first, so all three hold secrets
	// (key hashes, sandbox env vars, webhook secrets) from the start.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	f.Close()
	db, err := sql.Open("sqlite", SQLiteDSN(path))
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return &DB{db: db, dialect: SQLite, path: path, log: log}, nil
}

func openPostgres(ctx context.Context, dsn string, log *slog.Logger) (*DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", redact(dsn), err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to postgres %s: %w", redact(dsn), err)
	}
	// database/sql keeps 2 idle connections by default: under concurrent
	// requests every other query would then open a connection (a process
	// fork on the server, milliseconds). Keep a working set instead, and
	// let idle ones go after a while.
	db.SetMaxIdleConns(32)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return &DB{db: db, dialect: Postgres, dsn: dsn, log: log}, nil
}

// redact drops the password from a URL for messages and logs.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// Dialect returns the database's SQL dialect.
func (d *DB) Dialect() Dialect { return d.dialect }

// Path returns the SQLite file ("" for PostgreSQL).
func (d *DB) Path() string { return d.path }

// Close closes the database.
func (d *DB) Close() error {
	d.closeStmts()
	return d.db.Close()
}

// PingContext checks that the database answers.
func (d *DB) PingContext(ctx context.Context) error { return d.db.PingContext(ctx) }

// ExecContext runs a statement written with "?" placeholders.
func (d *DB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	q = d.rebind(q)
	if cs := d.stmt(ctx, q); cs != nil {
		defer d.release(cs)
		return cs.s.ExecContext(ctx, d.args(args)...)
	}
	return d.db.ExecContext(ctx, q, d.args(args)...)
}

// QueryContext runs a query written with "?" placeholders.
func (d *DB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	q = d.rebind(q)
	if cs := d.stmt(ctx, q); cs != nil {
		defer d.release(cs)
		return cs.s.QueryContext(ctx, d.args(args)...)
	}
	return d.db.QueryContext(ctx, q, d.args(args)...)
}

// QueryRowContext runs a one-row query written with "?" placeholders.
func (d *DB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	q = d.rebind(q)
	if cs := d.stmt(ctx, q); cs != nil {
		defer d.release(cs)
		return cs.s.QueryRowContext(ctx, d.args(args)...)
	}
	return d.db.QueryRowContext(ctx, q, d.args(args)...)
}

// BeginTx starts a transaction. On SQLite it takes the write lock at once
// (BEGIN IMMEDIATE) unless opts is read-only. A read-only transaction reads
// one snapshot on both dialects (on PostgreSQL it runs REPEATABLE READ: its
// default, READ COMMITTED, takes a new snapshot per statement, so two
// queries could see a writer's commit between them).
func (d *DB) BeginTx(ctx context.Context, opts *sql.TxOptions) (*Tx, error) {
	if d.dialect == Postgres && opts != nil && opts.ReadOnly && opts.Isolation == sql.LevelDefault {
		o := *opts
		o.Isolation = sql.LevelRepeatableRead
		opts = &o
	}
	tx, err := d.db.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Tx{tx: tx, d: d}, nil
}

// InTx runs fn in a transaction, committing when it returns nil and rolling
// back otherwise.
func (d *DB) InTx(ctx context.Context, fn func(*Tx) error) error {
	tx, err := d.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Tx is a transaction of a DB; its queries use "?" placeholders too.
type Tx struct {
	tx *sql.Tx
	d  *DB
}

// Dialect returns the dialect of the transaction's database.
func (t *Tx) Dialect() Dialect { return t.d.dialect }

// ExecContext runs a statement in the transaction.
func (t *Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	q = t.d.rebind(q)
	if cs := t.d.stmt(ctx, q); cs != nil {
		defer t.d.release(cs)
		return t.tx.StmtContext(ctx, cs.s).ExecContext(ctx, t.d.args(args)...)
	}
	return t.tx.ExecContext(ctx, q, t.d.args(args)...)
}

// QueryContext runs a query in the transaction.
func (t *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	q = t.d.rebind(q)
	if cs := t.d.stmt(ctx, q); cs != nil {
		defer t.d.release(cs)
		return t.tx.StmtContext(ctx, cs.s).QueryContext(ctx, t.d.args(args)...)
	}
	return t.tx.QueryContext(ctx, q, t.d.args(args)...)
}

// QueryRowContext runs a one-row query in the transaction.
func (t *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	q = t.d.rebind(q)
	if cs := t.d.stmt(ctx, q); cs != nil {
		defer t.d.release(cs)
		return t.tx.StmtContext(ctx, cs.s).QueryRowContext(ctx, t.d.args(args)...)
	}
	return t.tx.QueryRowContext(ctx, q, t.d.args(args)...)
}

// PrepareContext prepares a statement for repeated use in the transaction.
func (t *Tx) PrepareContext(ctx context.Context, q string) (*Stmt, error) {
	s, err := t.tx.PrepareContext(ctx, t.d.rebind(q))
	if err != nil {
		return nil, err
	}
	return &Stmt{s: s, d: t.d}, nil
}

// Commit commits the transaction.
func (t *Tx) Commit() error { return t.tx.Commit() }

// Rollback aborts the transaction (a no-op after Commit).
func (t *Tx) Rollback() error { return t.tx.Rollback() }

// Stmt is a prepared statement of a Tx.
type Stmt struct {
	s *sql.Stmt
	d *DB
}

// ExecContext runs the statement.
func (s *Stmt) ExecContext(ctx context.Context, args ...any) (sql.Result, error) {
	return s.s.ExecContext(ctx, s.d.args(args)...)
}

// Close releases the statement.
func (s *Stmt) Close() error { return s.s.Close() }
