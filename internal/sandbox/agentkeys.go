package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sbxdev/sbx/internal/agentauth"
)

// Agent keys (internal/agentauth): every sandbox's envd holds a key that
// proves each /init, made by the manager when it creates the container and
// given only to the sandbox's init process (its OCI env). The host keeps
// the key each sandbox's envd holds now in the sandbox's saved runtime
// spec (<data-dir>/specs/<id>.json, 0600, dir 0700: the init's env), so
// that a restarted server still can; sandboxes started by an sbx before
// that have it in <data-dir>/agent-keys/<id> (0600, dir 0700) as well. A
// template snapshot keeps its sandbox's key in <snapshot>/agent-key, which
// its clones hold until their first /init gives them their own.

// agentKeyFile is the name of a template snapshot's key file.
const agentKeyFile = "agent-key"

// agentKeyPath is where sandboxes started by an earlier sbx kept their
// key: read when the saved spec has none, removed at teardown.
func (m *Manager) agentKeyPath(id string) string {
	return m.cfg.Data.AgentKey(id)
}

// newAgentKey makes a sandbox's key. It is persisted with the runtime
// spec (saveSpec), before the container that will hold it exists: one
// file fewer to make and remove at every start.
func (m *Manager) newAgentKey(id string) (agentauth.Key, error) {
	key, err := agentauth.NewKey()
	if err != nil {
		return key, fmt.Errorf("agent key of sandbox %s: %w", id, err)
	}
	return key, nil
}

// agentKey reads a sandbox's persisted key; zero when it has none (started
// by an sbx without agent keys).
func (m *Manager) agentKey(id string) agentauth.Key {
	key, err := m.savedAgentKey(id)
	if errors.Is(err, os.ErrNotExist) {
		key, err = readKey(m.agentKeyPath(id))
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("unreadable agent key; the sandbox cannot be initialised again", "sandbox.id", id, "err", err)
	}
	return key
}

// savedAgentKey is the key in the init's env of the sandbox's saved spec;
// os.ErrNotExist when there is no spec or no key in it.
func (m *Manager) savedAgentKey(id string) (agentauth.Key, error) {
	b, err := os.ReadFile(m.specPath(id))
	if err != nil {
		return agentauth.Key{}, err
	}
	var saved savedSpec
	if err := json.Unmarshal(b, &saved); err != nil {
		return agentauth.Key{}, fmt.Errorf("parse %s: %w", m.specPath(id), err)
	}
	for _, kv := range saved.Spec.Env {
		if v, ok := strings.CutPrefix(kv, agentauth.EnvVar+"="); ok {
			key, err := agentauth.ParseKey(v)
			if err != nil {
				return key, fmt.Errorf("%s: %w", m.specPath(id), err)
			}
			return key, nil
		}
	}
	return agentauth.Key{}, os.ErrNotExist
}

// writeKey writes a key file, 0600, replacing what was there.
func writeKey(path string, key agentauth.Key) error {
	return replaceFile(path, []byte(key.Hex()+"\n"), 0o600)
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
