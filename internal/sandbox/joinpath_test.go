package sandbox

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

// goneNetwork is a Network that moves its namespaces' paths
// (network.Manager) and whose namespace of every sandbox is gone.
type goneNetwork struct{ nopNetwork }

func (goneNetwork) JoinPath(id string) (string, error) {
	return "", errdefs.NotFound("network namespace of sandbox %s", id)
}

// TestSpecForNeverHandsOutAStaleNetnsPath: a spec saved by an earlier
// server process names its namespace through that process's pins thread,
// /proc/<pid>/task/<tid>/root/n/<id>. Once the namespace is gone (a host
// reboot, a lost pin) and the pid was reused by a sandbox's process, that
// path resolves inside the sandbox's root, where its owner can put a
// symlink to any namespace. Here the "reused pid" is a directory whose
// n/<id> links to the test's own (the host's) network namespace: neither a
// restore nor a snapshot may be handed that path.
func TestSpecForNeverHandsOutAStaleNetnsPath(t *testing.T) {
	t.Parallel()
	const id = "stalens1"
	root := t.TempDir()
	m := New(Config{Data: datadir.Layout{Root: root}, AgentDir: t.TempDir()}, slog.New(slog.DiscardHandler), nil, newExitDriver(), goneNetwork{}, nil)

	planted := filepath.Join(t.TempDir(), "proc", "4242", "task", "4243", "root")
	if err := os.MkdirAll(filepath.Join(planted, "n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/proc/self/ns/net", filepath.Join(planted, "n", id)); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(planted, "n", id)
	b, _ := json.Marshal(savedSpec{Spec: runtime.Spec{ID: id, NetNS: stale}})
	if err := os.MkdirAll(filepath.Dir(m.specPath(id)), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.specPath(id), b, 0o600); err != nil {
		t.Fatal(err)
	}

	spec, err := m.specFor(t.Context(), store.Sandbox{ID: id})
	if spec.NetNS == stale {
		t.Fatalf("specFor handed out the stale namespace path %s (err %v)", stale, err)
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("specFor with the namespace gone: err = %v, want not found", err)
	}
	if p, err := m.joinPath(id, stale); p == stale || err == nil {
		t.Errorf("joinPath = %q, %v; want no path and an error", p, err)
	}
}
