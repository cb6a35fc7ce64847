package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sbxdev/sbx/internal/agentauth"
)

// Agent keys (internal/agentauth): every sandbox's envd holds a key that
// proves each /init, made by the manager when it creates the container and
// given only to the sandbox's init process (its OCI env). The host keeps
// the key each sandbox's envd holds now in <data-dir>/agent-keys/<id>
// (0600, dir 0700), so that a restarted server still can; a template
// snapshot keeps its sandbox's key in <snapshot>/agent-key, which its
// clones hold until their first /init gives them their own.

// agentKeyFile is the name of a template snapshot's key file.
const agentKeyFile = "agent-key"

func (m *Manager) agentKeyPath(id string) string {
	return m.cfg.Data.AgentKey(id)
}

// newAgentKey makes a sandbox's key and persists it before the container
// that will hold it exists.
func (m *Manager) newAgentKey(id string) (agentauth.Key, error) {
	key, err := agentauth.NewKey()
	if err != nil {
		return key, err
	}
	if err := os.MkdirAll(filepath.Dir(m.agentKeyPath(id)), 0o700); err != nil {
		return key, fmt.Errorf("save agent key of sandbox %s: %w", id, err)
	}
	if err := writeKey(m.agentKeyPath(id), key); err != nil {
		return key, fmt.Errorf("save agent key of sandbox %s: %w", id, err)
	}
	return key, nil
}

// agentKey reads a sandbox's persisted key; zero when it has none (started
// by an sbx without agent keys).
func (m *Manager) agentKey(id string) agentauth.Key {
	key, err := readKey(m.agentKeyPath(id))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("unreadable agent key; the sandbox cannot be initialised again", "sandbox.id", id, "err", err)
	}
	return key
}

// writeKey writes a key file, 0600, replacing what was there.
func writeKey(path string, key agentauth.Key) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := os.WriteFile(tmp, []byte(key.Hex()+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readKey(path string) (agentauth.Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return agentauth.Key{}, err
	}
	key, err := agentauth.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return key, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}
