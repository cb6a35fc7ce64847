package sandbox

import (
	"time"

	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/runtime"
)

// Option configures a Manager at construction. The wiring (internal/app)
// passes every hook and tier the manager runs with here, once, so none is
// swapped while sandboxes are being created and no other package reaches
// into a built manager to install one.
type Option func(*Manager)

// WithAdmission installs the check Create runs before any work (budgets;
// a ConcurrencyLimiter also caps concurrent sandboxes). Without it, only
// the team cap limits creates.
func WithAdmission(a Admission) Option { return func(m *Manager) { m.admission = a } }

// WithObserver installs o, told of creates and warm pools (metrics).
func WithObserver(o Observer) Option { return func(m *Manager) { m.observer = o } }

// WithTeamCap sets the default per-team cap on live sandboxes (0 = none)
// and where a team's own cap is found (nil = the default for every team).
func WithTeamCap(def int, teams TeamCaps) Option {
	return func(m *Manager) { m.quota.def, m.quota.teams = def, teams }
}

// WithSlotStore makes the team cap count every server's sandboxes, through
// the shared database.
func WithSlotStore(s SlotStore) Option {
	return func(m *Manager) { m.quota.slots = s }
}

// WithPauseDiskAfter makes a sandbox that stays paused for d move from the
// memory tier to the disk tier (0 = never by time). With d > 0, paused
// sandboxes also move to disk when the server shuts down. It only takes
// effect with a runtime that can checkpoint (runsc).
func WithPauseDiskAfter(d time.Duration) Option {
	return func(m *Manager) { m.disk.after = max(d, 0) }
}

// WithSnapshotRuntime installs the runtime that takes and restores template
// snapshots; it must be able to checkpoint (runsc).
func WithSnapshotRuntime(d runtime.Driver) Option { return func(m *Manager) { m.rt.snap = d } }

// WithBlobs makes pauses without memory publish the sandbox's filesystem,
// and lets this server resume sandboxes other servers paused so. Without
// it, paused sandboxes resume on this server only.
func WithBlobs(b *layer.Blobs) Option { return func(m *Manager) { m.blobs = b } }
