package sandbox

// NodeID names this server among those sharing a database.
func (m *Manager) NodeID() string { return m.cfg.NodeID }

// SetDraining makes the node refuse new sandboxes (true) or take them
// again; running and paused sandboxes are untouched.
func (m *Manager) SetDraining(on bool) { m.draining.Store(on) }

// Draining reports whether the node refuses new sandboxes.
func (m *Manager) Draining() bool { return m.draining.Load() }
