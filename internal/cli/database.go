package cli

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/app"
	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// newMigrateCmd runs the database migrations alone: before upgrading a
// fleet of servers sharing one PostgreSQL database, or to check a database.
func newMigrateCmd() *cobra.Command {
	var dataDir, database string
	var status, asJSON bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Bring the database schema to this sbx's version (sbx serve also does at start)",
		Long: `Runs the numbered schema migrations built into sbx on the server's database, under
the same lock 'sbx serve' takes, and reports what it applied. 'sbx serve' migrates at
start anyway; run this alone to upgrade a shared PostgreSQL database once before
restarting its servers, or with --status to see the database's version.`,
		Example: `  sudo sbx migrate                                  # the data dir's SQLite database
  sbx migrate --database postgres://sbx:secret@db.internal/sbx
  sbx migrate --status --json --database postgres://sbx:secret@db.internal/sbx`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dsn := database
			if dsn == "" {
				dsn = datadir.Layout{Root: dataDir}.DB()
			}
			db, err := sqldb.Open(cmd.Context(), dsn, sqldb.Options{NoMigrate: true, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				return err
			}
			defer db.Close()
			var applied []sqldb.Migration
			if !status {
				if applied, err = db.Migrate(cmd.Context()); err != nil {
					return err
				}
			}
			current, latest, err := db.Version(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if applied == nil {
					applied = []sqldb.Migration{}
				}
				return json.NewEncoder(out).Encode(map[string]any{
					"dialect": db.Dialect(), "version": current, "latest": latest, "applied": applied})
			}
			for _, m := range applied {
				fmt.Fprintf(out, "applied %d %s (%v)\n", m.Version, m.Name, m.Duration)
			}
			fmt.Fprintf(out, "%s database at schema version %d (this sbx knows up to %d)\n", db.Dialect(), current, latest)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", app.DefaultDataDir, "the server's data dir (its SQLite database)")
	f.StringVar(&database, "database", "", "postgres:// URL of a shared database (instead of the data dir's SQLite)")
	f.BoolVar(&status, "status", false, "only report the schema version; change nothing")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// newBackupCmd copies a SQLite database while the server runs.
func newBackupCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Copy the server's SQLite database to FILE, consistently, while it runs",
		Long: `Writes a consistent copy of the data dir's SQLite database (VACUUM INTO: one snapshot,
compacted, mode 0600) to FILE, which must not exist. The server keeps running. To
restore, stop the server and put the copy in place of <data-dir>/sbx.db (removing
sbx.db-wal and sbx.db-shm). A PostgreSQL database is backed up with pg_dump; see
docs/operations.md.`,
		Example: `  sudo sbx backup /var/backups/sbx-$(date +%F).db
  sudo sbx backup --data-dir /srv/sbx /tmp/sbx.db`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := datadir.Layout{Root: dataDir}.DB()
			if _, err := os.Stat(src); err != nil {
				return fmt.Errorf("no database to back up: %w (is --data-dir the server's?)", err)
			}
			db, err := sqldb.Open(cmd.Context(), src,
				sqldb.Options{NoMigrate: true, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				return err
			}
			defer db.Close()
			if err := db.Backup(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backed up %s to %s\n", db.Path(), args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", app.DefaultDataDir, "the server's data dir")
	return cmd
}
