package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/sbxdev/sbx/internal/atomicfile"
	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// Data is the server's one database and the stores over it. Closing it
// closes the database.
type Data struct {
	DB     *sqldb.DB
	Store  *sqlstore.Store
	Events *events.Log
}

// Close closes the database.
func (d *Data) Close() error { return d.DB.Close() }

// OpenData opens the server's database, migrated, with the events recorder
// wired in: database is a postgres:// URL, or "" for the SQLite file of the
// data dir. The data dir is created or its modes tightened first
// (datadir.Prepare): every command that opens a data dir leaves it safe.
func OpenData(ctx context.Context, dataDir, database string, log *slog.Logger) (*Data, error) {
	if err := datadir.Prepare(dataDir, log); err != nil {
		return nil, err
	}
	if database == "" {
		database = DBFile(dataDir)
	}
	db, err := sqldb.Open(ctx, database, sqldb.Options{Log: log})
	if err != nil {
		return nil, err
	}
	// One store: the events log is one of its repositories, and it
	// records sandbox changes into that log in the same transaction.
	st := sqlstore.New(db, nil)
	d := &Data{DB: db, Store: st, Events: events.New(st, log)}
	st.SetRecorder(recorder{d.Events})
	return d, nil
}

// OpenStore is OpenData on the data dir's SQLite file, for the commands
// that work on a local server's data dir.
func OpenStore(ctx context.Context, dataDir string, log *slog.Logger) (*sqlstore.Store, *events.Log, error) {
	d, err := OpenData(ctx, dataDir, "", log)
	if err != nil {
		return nil, nil, err
	}
	return d.Store, d.Events, nil
}

// recorder turns store changes into events in the same transaction.
type recorder struct{ log *events.Log }

func (r recorder) RecordTx(ctx context.Context, tx *sqldb.Tx, c store.Change) error {
	return r.log.AppendTx(ctx, tx, &events.Event{
		Type: c.Type, TeamID: c.Sandbox.TeamID, SandboxID: c.Sandbox.ID,
		SandboxTemplateID: c.Sandbox.TemplateID, SandboxBuildID: c.Sandbox.BuildID,
		SandboxExecutionID: c.Sandbox.ExecutionID, EventData: c.Data,
	})
}

func (r recorder) Committed() { r.log.Notify() }

// EnsureKeys creates the first team and its key file on first start, and
// makes the admin key file and the database agree at every start: the file
// is the truth (an operator may delete it to have a new key made, or put
// back a key from a backup).
func EnsureKeys(ctx context.Context, st store.Store, dataDir string, log *slog.Logger) error {
	teams, err := st.Teams(ctx)
	if err != nil {
		return err
	}
	if len(teams) == 0 {
		key := auth.NewAPIKey()
		_, err := st.CreateTeam(ctx, "default", key)
		switch {
		case errors.Is(err, errdefs.ErrAlreadyExists):
			// Another server on the database (an api replica starting
			// with this one) made it first: its data dir has the key.
			log.Info("team \"default\" was created by another server sharing the database; its API key is in that server's data dir")
		case err != nil:
			return err
		default:
			if err := writeSecret(APIKeyFile(dataDir), key); err != nil {
				return fmt.Errorf("write API key file: %w", err)
			}
			log.Info("created team \"default\" and its API key", "file", APIKeyFile(dataDir))
		}
	}
	path := AdminKeyFile(dataDir)
	key, err := ReadKeyFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		key = auth.NewAdminKey()
		if err := writeSecret(path, key); err != nil {
			return fmt.Errorf("write admin key file: %w", err)
		}
		log.Info("created the admin key (teams, keys, budgets, cluster metrics)", "file", path, "print", "sbx env --admin")
	case err != nil:
		return err
	case !strings.HasPrefix(key, auth.AdminKeyPrefix) || len(key) < len(auth.AdminKeyPrefix)+32:
		return fmt.Errorf("%s does not hold an admin key (%s + 40 hex digits): delete it to have a new one made at the next start", path, auth.AdminKeyPrefix)
	}
	if _, err := st.SetAdminKey(ctx, key); err != nil {
		return err
	}
	return nil
}

// ReadKeyFile reads a key file of the data dir (api-key, admin-key).
func ReadKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// RotateAdminKey makes a new admin key, in the database and its file
// (sbx key rotate --admin, on the server's host): the old key stops
// working within a second, also for a running server.
func RotateAdminKey(ctx context.Context, st store.Store, dataDir string) (string, error) {
	key := auth.NewAdminKey()
	if _, err := st.SetAdminKey(ctx, key); err != nil {
		return "", err
	}
	if err := writeSecret(AdminKeyFile(dataDir), key); err != nil {
		return "", fmt.Errorf("write admin key file (the database already has the new key; `sbx env --admin` cannot print it until %s is fixed): %w", AdminKeyFile(dataDir), err)
	}
	return key, nil
}

// writeSecret replaces path with a 0600 file holding value, atomically:
// a reader sees the old key or the new one, never a partial file.
func writeSecret(path, value string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing to remove
	if err := tmp.Chmod(datadir.SecretFile); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(value + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteServerURL records where the server listens (http://host:port or
// https://...), for the CLI's commands run on the same host (sbx env, sbx
// team ...). An unspecified host (0.0.0.0, ::) is reached on loopback.
func WriteServerURL(dataDir, baseURL string) error {
	scheme, addr, ok := strings.Cut(baseURL, "://")
	if !ok {
		scheme, addr = "http", baseURL
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if ip != nil && ip.To4() == nil {
			host = "::1"
		} else {
			host = "127.0.0.1"
		}
	}
	return writeSecret(ServerURLFile(dataDir), scheme+"://"+net.JoinHostPort(host, port))
}

// starting answers while the server wires itself: health is fine, the rest waits.
type starting struct{}

func (starting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" && r.Header.Get("E2b-Sandbox-Id") == "" {
		io.WriteString(w, "Health check successful (starting)\n")
		return
	}
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	io.WriteString(w, `{"code":503,"message":"sbx is starting; retry in a moment"}`+"\n")
}

// installAgent copies envd and codeinterp into <data-dir>/agent, which is
// bind-mounted read-only into every sandbox. Copying (instead of mounting
// the build output) means rebuilding bin/ never changes running sandboxes.
func installAgent(cfg Config) (string, error) {
	dst := datadir.Layout{Root: cfg.DataDir}.Agent()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", fmt.Errorf("create agent dir: %w", err)
	}
	for _, name := range []string{"envd", "codeinterp"} {
		src := filepath.Join(cfg.AgentDir, name)
		if _, err := os.Stat(src); err != nil {
			if name == "envd" {
				return "", fmt.Errorf("envd binary not found at %s: run `make build` (or pass --agent-dir)", src)
			}
			continue
		}
		if err := copyFile(src, filepath.Join(dst, name)); err != nil {
			return "", err
		}
	}
	return dst, nil
}

func copyFile(src, dst string) error {
	// An identical file stays: replacing it would invalidate the open file
	// of every running gVisor sandbox, which then cannot be checkpointed
	// ("invalidated dentries can't be saved").
	if a, err := os.ReadFile(src); err == nil {
		if b, err := os.ReadFile(dst); err == nil && bytes.Equal(a, b) {
			return nil
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	// A rename: running sandboxes keep the old inode.
	return atomicfile.WriteFunc(dst, 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

type closerList []struct {
	name string
	fn   func() error
}

func (c *closerList) add(name string, fn func() error) {
	*c = append(*c, struct {
		name string
		fn   func() error
	}{name, fn})
}

func (c closerList) run(log *slog.Logger) {
	for i := len(c) - 1; i >= 0; i-- {
		if err := c[i].fn(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("close", "component", c[i].name, "err", err)
		}
	}
}
