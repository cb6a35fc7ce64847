package sandbox

import (
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/store"
)

// The host keeps a sandbox's agent key in its saved spec; a sandbox an
// earlier sbx started has it in agent-keys/<id> too, and only there when
// its spec predates keys. A restarted server must find both.
func TestAgentKeyKeptWithSpec(t *testing.T) {
	t.Parallel()
	newKey := func() agentauth.Key {
		k, err := agentauth.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	data := datadir.Layout{Root: t.TempDir()}
	m := New(Config{Data: data, AgentDir: t.TempDir()}, slog.New(slog.DiscardHandler), nil, nil, nil, nil)
	inSpec, err := m.newAgentKey("fresh")
	if err != nil {
		t.Fatal(err)
	}
	legacy := newKey()
	save := func(id string, key agentauth.Key) {
		t.Helper()
		sb := store.Sandbox{ID: id, TemplateID: "base"}
		if err := m.saveSpec(m.sandboxSpec(sb, []string{"/l"}, key)); err != nil {
			t.Fatal(err)
		}
	}
	writeLegacy := func(id string, key agentauth.Key) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(data.AgentKey(id)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := writeKey(data.AgentKey(id), key); err != nil {
			t.Fatal(err)
		}
	}
	save("fresh", inSpec)
	save("upgraded", inSpec) // an earlier sbx wrote both, the same key
	writeLegacy("upgraded", inSpec)
	save("oldspec", agentauth.Key{}) // a spec saved before keys were in it
	writeLegacy("oldspec", legacy)
	tests := []struct {
		id   string
		want agentauth.Key
	}{
		{"fresh", inSpec},
		{"upgraded", inSpec},
		{"oldspec", legacy},
		{"nokey", agentauth.Key{}},
	}
	for _, tt := range tests {
		if got := m.agentKey(tt.id); got != tt.want {
			t.Errorf("agentKey(%s) = %s; want %s", tt.id, got.Hex(), tt.want.Hex())
		}
	}
	if _, err := os.Stat(data.AgentKey("fresh")); !os.IsNotExist(err) {
		t.Errorf("a new sandbox's key went to agent-keys/ too: %v", err)
	}
	fi, err := os.Stat(m.specPath("fresh"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("spec holding the key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
}

// The first boot ID is written in place; a later one (a boot after a pause
// without memory) replaces the file, so a running boot keeps the inode it
// mounted. Both are readable by an unprivileged sandbox root.
func TestBootIDWrittenThenReplaced(t *testing.T) {
	t.Parallel()
	data := datadir.Layout{Root: t.TempDir()}
	m := New(Config{Data: data, AgentDir: t.TempDir()}, slog.New(slog.DiscardHandler), nil, nil, nil, nil)
	var inos []uint64
	var ids []string
	for range 2 {
		if err := m.newBootID("sb1"); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(data.BootID("sb1"), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o777 != 0o444 {
			t.Errorf("boot id mode %o; want 444", st.Mode&0o777)
		}
		b, _ := os.ReadFile(data.BootID("sb1"))
		if len(b) != 37 {
			t.Errorf("boot id %q: want a UUID and a newline", b)
		}
		inos, ids = append(inos, st.Ino), append(ids, string(b))
	}
	if inos[0] == inos[1] || ids[0] == ids[1] {
		t.Errorf("second boot id rewrote the first in place (inodes %v, ids %q)", inos, ids)
	}
	if left, _ := filepath.Glob(data.BootID("sb1") + ".*"); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
