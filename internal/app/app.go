package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlite"
)

// NewAPIKey returns a fresh key in E2B's format: e2b_ + 40 lowercase hex.
func NewAPIKey() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return "e2b_" + hex.EncodeToString(b)
}

// OpenStore opens the data dir's database with the events recorder wired in.
func OpenStore(ctx context.Context, dataDir string, log *slog.Logger) (*sqlite.Store, *events.Log, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create data dir: %w", err)
	}
	st, err := sqlite.Open(ctx, DBFile(dataDir), nil)
	if err != nil {
		return nil, nil, err
	}
	if err := events.Migrate(ctx, st.DB()); err != nil {
		st.Close()
		return nil, nil, err
	}
	evlog := events.NewLog(st.DB(), log)
	st.SetRecorder(recorder{evlog})
	return st, evlog, nil
}

// recorder turns store changes into events in the same transaction.
type recorder struct{ log *events.Log }

func (r recorder) RecordTx(ctx context.Context, tx any, c store.Change) error {
	t, ok := tx.(*sql.Tx)
	if !ok {
		return fmt.Errorf("events recorder needs a *sql.Tx, got %T", tx)
	}
	return r.log.AppendTx(ctx, t, &events.Event{
		Type: c.Type, TeamID: c.Sandbox.TeamID, SandboxID: c.Sandbox.ID,
		SandboxTemplateID: c.Sandbox.TemplateID, SandboxBuildID: c.Sandbox.BuildID,
		SandboxExecutionID: c.Sandbox.ExecutionID, EventData: c.Data,
	})
}

func (r recorder) Committed() { r.log.Notify() }

// EnsureFirstTeam creates the first team and its key file on first start.
func EnsureFirstTeam(ctx context.Context, st store.Store, dataDir string, log *slog.Logger) error {
	teams, err := st.Teams(ctx)
	if err != nil {
		return err
	}
	if len(teams) > 0 {
		return nil
	}
	key := NewAPIKey()
	if _, err := st.CreateTeam(ctx, "default", key); err != nil {
		return err
	}
	if err := os.WriteFile(APIKeyFile(dataDir), []byte(key+"\n"), 0o600); err != nil {
		return fmt.Errorf("write API key file: %w", err)
	}
	log.Info("created team \"default\" and its API key", "file", APIKeyFile(dataDir))
	return nil
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
	dst := filepath.Join(cfg.DataDir, "agent")
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
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst) // atomic: running sandboxes keep the old inode
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
