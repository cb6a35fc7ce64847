package sandbox

import (
	"sync"

	"github.com/sbxdev/sbx/internal/runtime"
)

// volumeMounts keeps each sandbox's extra mounts (volumes) from its create
// until it is destroyed, for every spec built for it (start, restore).
type volumeMounts struct {
	mu   sync.Mutex
	byID map[string][]runtime.Mount
}

func (m *Manager) setMounts(id string, ms []runtime.Mount) {
	m.volumes.mu.Lock()
	defer m.volumes.mu.Unlock()
	if len(ms) == 0 {
		delete(m.volumes.byID, id)
		return
	}
	if m.volumes.byID == nil {
		m.volumes.byID = map[string][]runtime.Mount{}
	}
	m.volumes.byID[id] = ms
}

func (m *Manager) mountsOf(id string) []runtime.Mount {
	m.volumes.mu.Lock()
	defer m.volumes.mu.Unlock()
	return m.volumes.byID[id]
}
