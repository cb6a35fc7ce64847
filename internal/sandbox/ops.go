package sandbox

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

// Get returns a sandbox of the team. Sandboxes of other teams are reported
// as not found, so a team cannot learn another team's IDs.
func (m *Manager) Get(ctx context.Context, teamID, id string) (store.Sandbox, error) {
	if !idPattern.MatchString(id) {
		return store.Sandbox{}, errdefs.NotFound("sandbox %q not found", id)
	}
	if l := m.lookup(id); l != nil {
		l.mu.Lock()
		sb := l.sb
		l.mu.Unlock()
		if sb.TeamID == teamID {
			return sb, nil
		}
		return store.Sandbox{}, errdefs.NotFound("sandbox %s not found", id)
	}
	sb, err := m.store.Sandbox(ctx, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	if sb.TeamID != teamID {
		return store.Sandbox{}, errdefs.NotFound("sandbox %s not found", id)
	}
	return sb, nil
}

// List lists a team's sandboxes.
func (m *Manager) List(ctx context.Context, f store.ListFilter) ([]store.Sandbox, error) {
	return m.store.ListSandboxes(ctx, f)
}

// Kill kills a team's sandbox at the client's request.
func (m *Manager) Kill(ctx context.Context, teamID, id string) error {
	sb, err := m.Get(ctx, teamID, id)
	if err != nil {
		return err
	}
	if sb.State == store.StateKilled {
		return errdefs.NotFound("sandbox %s not found (it was already killed)", id)
	}
	return m.kill(ctx, id, ReasonRequest)
}

// KillWithReason kills any sandbox (server-side policies: runaway, budget).
func (m *Manager) KillWithReason(ctx context.Context, id, reason string) error {
	return m.kill(ctx, id, reason)
}

func (m *Manager) kill(ctx context.Context, id, reason string) error {
	return m.killWith(ctx, id, reason, nil)
}

// killWith kills a sandbox and records why; data is added to the killed
// event's data (e.g. the init's exit code).
func (m *Manager) killWith(ctx context.Context, id, reason string, data map[string]any) error {
	m.mu.Lock()
	l := m.live[id]
	delete(m.live, id) // unreachable from now on: the proxy answers 502
	m.logs.forget(id)
	m.mu.Unlock()
	if l == nil {
		return errdefs.NotFound("sandbox %s not found", id)
	}
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
	}
	sb := l.sb
	l.mu.Unlock()
	m.quota.untracked(sb.TeamID)
	m.disk.unschedule(id)
	// Record the kill first: the sandbox is already unreachable, and lists
	// must not show it running during the tens of milliseconds teardown takes.
	killed, change := KilledChange(sb, reason, m.now().UTC())
	for k, v := range data {
		change.Data[k] = v
	}
	recordErr := m.store.UpdateSandbox(context.WithoutCancel(ctx), killed, change)
	if p, ok := m.driver.(runtime.Pauser); ok && sb.State == store.StatePaused {
		// A frozen cgroup holds its signals until thawed: thaw, then kill.
		_ = p.Resume(ctx, id)
	}
	if !m.rt.stop(ctx, id) {
		m.destroy(ctx, id) // nothing can end it at once: the whole teardown it is
	} else {
		m.reclaim(id)
	}
	m.forgetFiles(id)
	if recordErr == nil {
		m.forgetPublished(context.WithoutCancel(ctx), id)
	}
	l.agent.close()
	if recordErr != nil {
		return fmt.Errorf("record kill of sandbox %s: %w", id, recordErr)
	}
	m.log.InfoContext(ctx, "sandbox killed", "sandbox.id", id, "reason", reason)
	return nil
}

// KilledChange is sb recorded killed at now for reason, with the
// sandbox.lifecycle.killed event that goes with it.
func KilledChange(sb store.Sandbox, reason string, now time.Time) (store.Sandbox, *store.Change) {
	killed := sb
	killed.State, killed.KilledAt, killed.KillReason = store.StateKilled, now, reason
	return killed, &store.Change{Type: EventKilled, Sandbox: killed, Data: map[string]any{
		"sandbox_metadata": nonNil(sb.Metadata),
		"kill_reason":      reason,
		"execution":        execution(sb, now),
	}}
}

func execution(sb store.Sandbox, now time.Time) map[string]any {
	return map[string]any{
		"started_at":     sb.StartedAt.Format(time.RFC3339),
		"vcpu_count":     sb.CPUCount,
		"memory_mb":      sb.MemoryMB,
		"execution_time": now.Sub(sb.StartedAt).Milliseconds(),
	}
}

// SetTimeout moves a sandbox's end time to now + timeout (it may shorten it).
func (m *Manager) SetTimeout(ctx context.Context, teamID, id string, timeout time.Duration) error {
	if timeout < 0 || timeout > MaxTimeout {
		return errdefs.Invalid("timeout must be between 0 and %d seconds", int(MaxTimeout.Seconds()))
	}
	if _, err := m.Get(ctx, teamID, id); err != nil {
		return err
	}
	l := m.lookup(id)
	if l == nil {
		return errdefs.NotFound("sandbox %s not found (it is not running)", id)
	}
	return m.extend(ctx, l, timeout, false)
}

// extend sets the end time; with onlyLonger it never shortens it (connect).
func (m *Manager) extend(ctx context.Context, l *live, timeout time.Duration, onlyLonger bool) error {
	l.mu.Lock()
	end := m.now().UTC().Add(timeout)
	if onlyLonger && end.Before(l.sb.EndAt) {
		l.mu.Unlock()
		return nil
	}
	sb := l.sb
	sb.EndAt = end
	l.mu.Unlock()
	change := &store.Change{Type: EventUpdated, Sandbox: sb, Data: map[string]any{
		"sandbox_metadata": nonNil(sb.Metadata),
		"set_timeout":      end.Format(time.RFC3339),
	}}
	if err := m.store.UpdateSandbox(ctx, sb, change); err != nil {
		return err
	}
	l.mu.Lock()
	l.sb.EndAt = end
	l.mu.Unlock()
	m.arm(l)
	return nil
}

// Connect returns a running sandbox and extends its timeout (never shortens).
// resumed reports whether the sandbox had to be resumed.
func (m *Manager) Connect(ctx context.Context, teamID, id string, timeout time.Duration) (sb store.Sandbox, resumed bool, err error) {
	return m.ConnectMemory(ctx, teamID, id, timeout, true)
}

// ConnectMemory is Connect; memory false resumes a paused sandbox from its
// filesystem alone (E2B's connect {"memory": false}: a cold boot).
func (m *Manager) ConnectMemory(ctx context.Context, teamID, id string, timeout time.Duration, memory bool) (sb store.Sandbox, resumed bool, err error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if timeout > MaxTimeout {
		return sb, false, errdefs.Invalid("timeout %s exceeds the maximum of %s", timeout, MaxTimeout)
	}
	sb, err = m.Get(ctx, teamID, id)
	if err != nil {
		return sb, false, err
	}
	l := m.lookup(id)
	if l != nil && m.movedAway(ctx, l) { // resumed on another node since
		l = nil
	}
	if l == nil && sb.State != store.StateKilled && m.blobs != nil {
		// Paused to the blob store by another node: resume it here.
		if l, err = m.adopt(ctx, teamID, id); err != nil {
			return sb, false, err
		}
		l.mu.Lock()
		sb = l.sb
		l.mu.Unlock()
	}
	if l == nil || sb.State == store.StateKilled {
		return sb, false, errdefs.NotFound("sandbox %s not found (it was killed or reached its end of life)", id)
	}
	if sb.State == store.StatePaused {
		if err := m.resume(ctx, l, int64(timeout/time.Second), memory); err != nil {
			return sb, false, err
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.sb, true, nil
	}
	if err := m.extend(ctx, l, timeout, true); err != nil {
		return sb, false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sb, false, nil
}

// Metric is one sample of a sandbox's resource use.
type Metric struct {
	Timestamp  time.Time
	CPUCount   int
	CPUUsedPct float64
	MemUsed    uint64
	MemTotal   uint64
	DiskUsed   uint64
	DiskTotal  uint64
}

// Metrics samples a running sandbox's cgroup counters.
func (m *Manager) Metrics(ctx context.Context, teamID, id string) ([]Metric, error) {
	sb, err := m.Get(ctx, teamID, id)
	if err != nil {
		return nil, err
	}
	l := m.lookup(id)
	if l == nil {
		return []Metric{}, nil // killed: no live metrics
	}
	if _, fsOnly := m.fsPausedState(id); fsOnly {
		return []Metric{}, nil // paused without memory: nothing runs
	}
	st, err := m.driver.Stats(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read metrics of sandbox %s: %w", id, err)
	}
	now := m.now()
	l.mu.Lock()
	prev := l.cpu
	if prev.at.IsZero() {
		prev = cpuSample{at: sb.StartedAt}
	}
	l.cpu = cpuSample{at: now, usage: st.CPUUsage}
	l.mu.Unlock()
	pct := 0.0
	if wall := now.Sub(prev.at); wall > 0 && sb.CPUCount > 0 {
		pct = 100 * float64(st.CPUUsage-prev.usage) / float64(wall) / float64(sb.CPUCount)
	}
	memTotal := uint64(sb.MemoryMB) << 20
	return []Metric{{Timestamp: now.UTC(), CPUCount: sb.CPUCount, CPUUsedPct: max(pct, 0),
		MemUsed: st.MemoryBytes, MemTotal: memTotal, DiskUsed: st.DiskBytes, DiskTotal: uint64(sb.DiskMB) << 20}}, nil
}

// Route returns the transport to a running sandbox's agent, for the proxy.
func (m *Manager) Route(id string) (http.RoundTripper, bool) {
	l := m.lookup(id)
	if l == nil {
		return nil, false
	}
	l.mu.Lock()
	paused := l.sb.State == store.StatePaused
	l.mu.Unlock()
	if paused {
		return nil, false
	}
	return l.agent.roundTripper(), true
}

// Running reports the number of live sandboxes.
func (m *Manager) Running() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.live)
}

// Admission decides whether a team may create one more sandbox now (budgets,
// quotas). It returns an errdefs.ErrResourceExhausted error naming the limit.
type Admission interface {
	Admit(ctx context.Context, teamID, templateID string) error
}

// ConcurrencyLimiter is an Admission that also caps a team's concurrent
// sandboxes (a budget's max-concurrent). The cap is enforced with the team
// cap's slot reservation (SlotStore), so it holds across every server
// sharing the database, not only on the one that admits.
type ConcurrencyLimiter interface {
	// MaxConcurrent returns the team's cap (0 = none).
	MaxConcurrent(ctx context.Context, teamID string) (int, error)
	// RefuseConcurrent records that a create was refused at held of max and
	// returns the error to answer with.
	RefuseConcurrent(ctx context.Context, teamID, templateID string, held, max int) error
}

// Live returns a snapshot of every running or paused sandbox (all teams).
func (m *Manager) Live() []store.Sandbox {
	m.mu.Lock()
	ls := make([]*live, 0, len(m.live))
	for _, l := range m.live {
		ls = append(ls, l)
	}
	m.mu.Unlock()
	out := make([]store.Sandbox, 0, len(ls))
	for _, l := range ls {
		l.mu.Lock()
		out = append(out, l.sb)
		l.mu.Unlock()
	}
	return out
}

// Stats reads a live sandbox's cgroup counters (runaway detection, metrics).
func (m *Manager) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	if m.lookup(id) == nil {
		return runtime.Stats{}, errdefs.NotFound("sandbox %s not found", id)
	}
	if _, fsOnly := m.fsPausedState(id); fsOnly {
		return runtime.Stats{}, nil // paused without memory: nothing runs, nothing held
	}
	return m.driver.Stats(ctx, id)
}

// PauseWithReason pauses any sandbox for a server-side policy (runaway,
// budget); the reason is recorded in the paused event as pause_reason.
func (m *Manager) PauseWithReason(ctx context.Context, id, reason string) error {
	return m.pauseReason(ctx, id, reason)
}

// SignedBy finds the running sandbox whose access token signed a file URL.
// It is linear in the number of running sandboxes, which is fine for one
// node (a hash per sandbox); signed URLs are rare next to API traffic.
func (m *Manager) SignedBy(signature string, sign func(token string) string) (string, bool) {
	for _, sb := range m.Live() {
		if sb.AccessToken != "" && sb.State == store.StateRunning &&
			subtle.ConstantTimeCompare([]byte(sign(sb.AccessToken)), []byte(signature)) == 1 {
			return sb.ID, true
		}
	}
	return "", false
}

// DirectPath returns a running sandbox's address and the host interface
// that leads only to it, for the proxy's direct path to ports other than
// the agent's. Sandboxes without outbound network have none.
func (m *Manager) DirectPath(id string) (netip.Addr, string, bool) {
	dp, ok := m.network.(interface {
		DirectPath(id string) (netip.Addr, string, bool)
	})
	if !ok || m.lookup(id) == nil {
		return netip.Addr{}, "", false
	}
	return dp.DirectPath(id)
}
