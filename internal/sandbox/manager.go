// Package sandbox owns the lifecycle of sandboxes: create from a template,
// run until their end time, kill, and reattach after a server restart. It
// ties together the template registry, the runtime driver, the network and
// the store; the REST API and the proxy are thin layers above it.
package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
	"github.com/sbxdev/sbx/sdk"
)

// EnvdVersion is the envd protocol version sbx reports to SDKs.
const EnvdVersion = "0.6.13"

// Kill reasons carried in killed events.
const (
	ReasonRequest  = "request"
	ReasonTimeout  = "timeout"
	ReasonOrphaned = "orphaned"
	ReasonFailed   = "start_failed"
)

// Event types the manager records.
const (
	EventCreated = "sandbox.lifecycle.created"
	EventKilled  = "sandbox.lifecycle.killed"
	EventUpdated = "sandbox.lifecycle.updated"
	EventPaused  = "sandbox.lifecycle.paused"
	EventResumed = "sandbox.lifecycle.resumed"
)

// Limits applied to sandbox requests.
const (
	DefaultTimeout = 300 * time.Second
	MaxTimeout     = 24 * time.Hour
	DefaultPidsMax = 1024
	startTimeout   = 60 * time.Second
)

var idPattern = regexp.MustCompile(`^[a-z0-9]{1,64}$`)

// Network gives each sandbox its own network namespace.
type Network interface {
	Setup(ctx context.Context, id string, allowInternet bool) (nsPath string, err error)
	Teardown(ctx context.Context, id string) error
}

// Templates resolves template references, waiting for ones being prepared.
type Templates interface {
	// Resolve finds a template by ID or name (any team: warm pools).
	Resolve(ctx context.Context, ref string) (template.Template, error)
	// ResolveFor finds a template the team may use: built-in or its own.
	ResolveFor(ctx context.Context, teamID, ref string) (template.Template, error)
}

// Config is the manager's part of the server configuration.
type Config struct {
	DataDir  string // sandboxes/<id>/run lives here
	AgentDir string // host dir mounted at /.sbx/bin (envd, codeinterp)
	// NodeID names this server among servers sharing a database: its
	// sandboxes carry it, and Recover touches only those.
	NodeID string
}

// Manager creates, tracks and destroys sandboxes.
type Manager struct {
	cfg       Config
	log       *slog.Logger
	store     store.Store
	driver    runtime.Driver // rt, as the plain driver contract
	rt        *runtimes
	network   Network
	templates Templates
	now       func() time.Time

	mu     sync.Mutex
	live   map[string]*live
	pools  map[string]*pool // by template ID (and the ref it was configured by)
	poolWG sync.WaitGroup
	// poolCtx bounds every pool's fill loop; autoPool sizes the pools of
	// templates that got none explicitly (AnyTemplate).
	poolCtx  context.Context
	autoPool PoolSize

	admission Admission // nil = no limits
	quota     quota     // per-team cap on live sandboxes (quota.go)
	disk      diskTier  // pause's disk tier (checkpoint.go)
	exits     exitWatch // sandboxes whose init ends on its own (exits.go)

	snapMu    sync.Mutex
	snapLocks map[string]*sync.Mutex // one snapshot at a time per key (snapshot.go)
	snapRetry map[string]time.Time   // next background attempt per key
}

// live is the in-memory side of a running sandbox.
type live struct {
	mu       sync.Mutex
	snapshot string // the template snapshot it was restored from, "" if started cold
	sb       store.Sandbox
	agent    *agent
	timer    *time.Timer
	cpu      cpuSample
}

type cpuSample struct {
	at    time.Time
	usage time.Duration
}

// New returns a manager. Call Recover before serving requests.
func New(cfg Config, log *slog.Logger, st store.Store, drv runtime.Driver, netw Network, tpl Templates) *Manager {
	rt := newRuntimes(drv)
	return &Manager{cfg: cfg, log: log, store: st, driver: rt, rt: rt, network: netw, templates: tpl,
		now: time.Now, live: map[string]*live{}, snapLocks: map[string]*sync.Mutex{}, snapRetry: map[string]time.Time{}}
}

// CreateRequest is what a client asks for.
type CreateRequest struct {
	TeamID        string
	Template      string
	Timeout       time.Duration // 0 = DefaultTimeout
	Metadata      map[string]string
	EnvVars       map[string]string
	AllowInternet bool
	AutoPause     bool
	Secure        bool
}

// Validate checks a create request before any work is done (bounds in
// validate.go).
func (r *CreateRequest) Validate() error {
	if r.Timeout < 0 || r.Timeout > MaxTimeout {
		return errdefs.Invalid("timeout must be between 0 and %d seconds (%s)", int64(MaxTimeout/time.Second), MaxTimeout)
	}
	return r.validateInputs()
}

// Create starts a sandbox and returns once its agent answered /init (and
// the template's start command is ready).
func (m *Manager) Create(ctx context.Context, req CreateRequest) (store.Sandbox, error) {
	if err := req.Validate(); err != nil {
		return store.Sandbox{}, err
	}
	if req.Timeout == 0 {
		req.Timeout = DefaultTimeout
	}
	tpl, err := m.templates.ResolveFor(ctx, req.TeamID, req.Template)
	if err != nil {
		return store.Sandbox{}, err
	}
	slot, err := m.quota.reserve(ctx, req.TeamID)
	if err != nil {
		return store.Sandbox{}, err
	}
	defer slot.release() // after track: the sandbox holds the slot from then on
	if m.admission != nil {
		if err := m.admission.Admit(ctx, req.TeamID, tpl.ID); err != nil {
			return store.Sandbox{}, err
		}
	}
	token := ""
	if req.Secure {
		token = randomHex(32)
	}
	now := m.now().UTC()
	sb := store.Sandbox{
		TeamID: req.TeamID, TemplateID: tpl.ID, BuildID: tpl.BuildID, Alias: firstName(tpl),
		State: store.StateRunning, Metadata: req.Metadata, EnvVars: mergeEnv(tpl.Env, req.EnvVars),
		CPUCount: tpl.CPUCount, MemoryMB: tpl.MemoryMB, DiskMB: tpl.DiskMB,
		StartedAt: now, EndAt: now.Add(req.Timeout), AccessToken: token,
		AllowInternet: req.AllowInternet, AutoPause: req.AutoPause,
		ExecutionID: uuid.NewString(), Runtime: m.driver.Name(), NodeID: m.cfg.NodeID,
	}
	l := m.claim(ctx, tpl, &sb)
	pooled := l != nil
	if l == nil {
		if sb.ID, err = newID(); err != nil {
			return store.Sandbox{}, err
		}
		if l, err = m.start(ctx, &sb, tpl); err != nil {
			return store.Sandbox{}, err
		}
	}
	change := &store.Change{Type: EventCreated, Sandbox: sb, Data: map[string]any{"sandbox_metadata": nonNil(sb.Metadata)}}
	if err := m.store.InsertSandbox(ctx, sb, change); err != nil {
		m.destroy(context.WithoutCancel(ctx), sb.ID)
		return store.Sandbox{}, err
	}
	m.track(l)
	m.log.Info("sandbox created", "sandbox.id", sb.ID, "template.id", sb.TemplateID, "team.id", sb.TeamID,
		"pooled", pooled, "elapsed", m.now().Sub(now).Round(time.Microsecond))
	return sb, nil
}

func firstName(t template.Template) string {
	if len(t.Names) > 0 {
		return t.Names[0]
	}
	return t.ID
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// start brings a sandbox up: network, container, agent init, start command.
// A template with a snapshot is restored from it (its start command is
// already running there) unless the restore fails, then it starts cold.
// On failure everything it made is torn down.
func (m *Manager) start(ctx context.Context, sb *store.Sandbox, tpl template.Template) (*live, error) {
	return m.startWith(ctx, sb, tpl, m.launchFor(tpl))
}

// launch says how a sandbox's processes come to life.
type launch struct {
	snapshot string // restore from this template snapshot dir; "" = start cold
	snapRT   bool   // start cold under the snapshot runtime (to take a snapshot)
}

func (m *Manager) startWith(ctx context.Context, sb *store.Sandbox, tpl template.Template, how launch) (l *live, err error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	defer func() {
		if err != nil {
			m.destroy(context.WithoutCancel(ctx), sb.ID)
		}
	}()
	t0 := time.Now()
	var tNet, tStart, tReady time.Duration
	defer func() {
		m.log.Debug("sandbox start phases", "sandbox.id", sb.ID, "network", tNet, "runtime", tStart,
			"agent_ready", tReady, "total", time.Since(t0), "from_snapshot", how.snapshot != "")
	}()
	runDir := m.runDir(sb.ID)
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, fmt.Errorf("create run dir: %w", err)
	}
	key, err := m.newAgentKey(sb.ID)
	if err != nil {
		return nil, err
	}
	nsPath, err := m.network.Setup(ctx, sb.ID, sb.AllowInternet)
	if err != nil {
		return nil, fmt.Errorf("set up network for sandbox %s: %w", sb.ID, err)
	}
	sb.NetNS = nsPath
	tNet = time.Since(t0)
	spec := m.sandboxSpec(*sb, tpl.Lower(), key)
	if err := m.saveSpec(spec); err != nil {
		return nil, err
	}
	var snapKey agentauth.Key // what a clone's envd holds until its first /init
	if how.snapshot != "" {
		sb.Runtime = m.rt.snap.Name()
		snapKey, err = readKey(filepath.Join(how.snapshot, agentKeyFile))
		if err == nil {
			err = m.rt.clone(ctx, spec, filepath.Join(how.snapshot, "state"))
		}
		if err != nil {
			if ctx.Err() != nil { // shutting down or the caller left: nothing to fall back for
				return nil, fmt.Errorf("restore sandbox %s from template snapshot: %w", sb.ID, err)
			}
			m.log.Warn("restore from template snapshot failed; starting cold", "sandbox.id", sb.ID,
				"template.id", tpl.ID, "snapshot", how.snapshot, "err", err)
			how.snapshot, sb.Runtime = "", m.rt.main.Name()
		} else {
			now := time.Now()
			_ = os.Chtimes(how.snapshot, now, now) // used: pruning keeps it
		}
	}
	switch {
	case how.snapshot != "":
	case how.snapRT:
		sb.Runtime = m.rt.snap.Name()
		err = m.rt.startOnSnapshotRuntime(ctx, spec)
	default:
		err = m.driver.Start(ctx, spec)
	}
	if err != nil {
		return nil, fmt.Errorf("start sandbox %s: %w", sb.ID, err)
	}
	tStart = time.Since(t0) - tNet
	a := newAgent(sb.ID, runDir, key)
	l = &live{sb: *sb, agent: a, snapshot: how.snapshot}
	if err := a.waitReady(ctx); err != nil {
		return nil, err
	}
	tReady = time.Since(t0) - tNet - tStart
	req := initRequest{EnvVars: initVars(*sb), AccessToken: sb.AccessToken, DefaultUser: tpl.User, DefaultWorkdir: tpl.Workdir}
	if how.snapshot != "" {
		err = a.rekey(ctx, req, snapKey)
	} else {
		err = a.init(ctx, req)
	}
	if err != nil {
		return nil, m.agentBroke(sb.ID, err)
	}
	if tpl.StartCmd != "" && how.snapshot == "" {
		if err := m.startCommand(ctx, a, sb.AccessToken, tpl); err != nil {
			return nil, m.agentBroke(sb.ID, err)
		}
	}
	return l, nil
}

// agentBroke gives the errors which mean that what answers on the
// sandbox's socket is not the envd sbx started (no proof of the key, a
// message over the host's limit) a message the client can act on; the
// detail goes to the log. Other errors pass unchanged.
func (m *Manager) agentBroke(id string, err error) error {
	if errors.Is(err, ErrAgentUnproven) || errors.Is(err, sdk.ErrMessageTooLarge) {
		m.log.Warn("the sandbox's agent broke the protocol; removing the sandbox", "sandbox.id", id, "err", err)
		return errdefs.Wrap(errdefs.ErrFailedPrecondition, err, "sandbox %s was removed: its agent broke the protocol "+
			"with the host (did something in it, such as the start command, replace /.sbx/run/envd.sock?)", id)
	}
	return err
}

// startCommand starts the template's start command and waits until it is
// ready (port answering, ready command exiting 0). A start command that
// fails (exits non-zero) before it is ready ends the wait at once with its
// exit code and last output; one that exits 0 may have started a daemon,
// so the ready check goes on.
func (m *Manager) startCommand(ctx context.Context, a *agent, token string, tpl template.Template) error {
	cmd, err := a.start(ctx, token, tpl.StartAs(), tpl.Workdir, tpl.StartCmd)
	if err != nil {
		return err
	}
	defer cmd.disconnect() // after ready: the command keeps running
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		end := cmd.end(rctx)
		switch {
		case end.err == nil && end.code != 0:
			cancel(errdefs.Invalid("start command %q exited with code %d before it was ready; its last output:\n%s",
				tpl.StartCmd, end.code, strings.TrimSpace(end.tail)))
		case errors.Is(end.err, sdk.ErrMessageTooLarge):
			cancel(fmt.Errorf("start command %q: %w", tpl.StartCmd, end.err))
		}
	}()
	failed := func(err error) error {
		if cause := context.Cause(rctx); cause != nil && ctx.Err() == nil && !errors.Is(cause, context.Canceled) {
			return cause
		}
		return err
	}
	if tpl.ReadyPort > 0 {
		if err := a.waitPort(rctx, token, tpl.ReadyPort); err != nil {
			return failed(err)
		}
	}
	if tpl.ReadyCmd != "" {
		if err := a.waitCommand(rctx, token, tpl.User, tpl.Workdir, tpl.ReadyCmd); err != nil {
			return failed(err)
		}
	}
	return nil
}

// initVars are the env vars /init sends: the sandbox's own plus its ID,
// which a sandbox restored from a snapshot would otherwise inherit from the
// sandbox the snapshot was taken in.
func initVars(sb store.Sandbox) map[string]string {
	vars := make(map[string]string, len(sb.EnvVars)+1)
	for k, v := range sb.EnvVars {
		vars[k] = v
	}
	vars["E2B_SANDBOX_ID"] = sb.ID
	return vars
}

func (m *Manager) runDir(id string) string {
	return filepath.Join(m.cfg.DataDir, "run", id)
}

// track makes a started sandbox reachable and arms its timeout.
func (m *Manager) track(l *live) {
	m.mu.Lock()
	m.live[l.sb.ID] = l
	m.mu.Unlock()
	m.quota.tracked(l.sb.TeamID)
	m.arm(l)
	m.watchExit(l)
}

// arm (re)schedules the sandbox's end-of-life timer.
func (m *Manager) arm(l *live) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
	}
	id := l.sb.ID
	l.timer = time.AfterFunc(time.Until(l.sb.EndAt), func() { m.expire(id) })
}

func (m *Manager) expire(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := m.lookup(id)
	if l == nil {
		return
	}
	l.mu.Lock()
	endAt, autoPause, paused := l.sb.EndAt, l.sb.AutoPause, l.sb.State == store.StatePaused
	l.mu.Unlock()
	if paused {
		return
	}
	if m.now().Before(endAt) { // moved by SetTimeout after the timer fired
		m.arm(l)
		return
	}
	if autoPause {
		if err := m.pause(ctx, id); err != nil {
			m.log.Error("auto-pause expired sandbox", "sandbox.id", id, "err", err)
		}
		return
	}
	if err := m.kill(ctx, id, ReasonTimeout); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		m.log.Error("kill expired sandbox", "sandbox.id", id, "err", err)
	}
}

func (m *Manager) lookup(id string) *live {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live[id]
}

// destroy removes the container, network and run dir of a sandbox. It is
// idempotent and logs instead of failing: it runs on error paths.
func (m *Manager) destroy(ctx context.Context, id string) {
	if err := m.driver.Delete(ctx, id); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		m.log.Warn("delete sandbox container", "sandbox.id", id, "err", err)
	}
	if err := m.network.Teardown(ctx, id); err != nil {
		m.log.Warn("tear down sandbox network", "sandbox.id", id, "err", err)
	}
	if err := os.RemoveAll(m.runDir(id)); err != nil {
		m.log.Warn("remove sandbox run dir", "sandbox.id", id, "err", err)
	}
	if err := os.Remove(m.agentKeyPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("remove sandbox agent key", "sandbox.id", id, "err", err)
	}
	_ = os.Remove(m.specPath(id))
	if err := os.RemoveAll(m.checkpointDir(id)); err != nil {
		m.log.Warn("remove sandbox checkpoint", "sandbox.id", id, "err", err)
	}
}

func newID() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate sandbox id: %w", err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func durationSeconds(s int64) time.Duration {
	if s <= 0 {
		return DefaultTimeout
	}
	return time.Duration(s) * time.Second
}

// mergeEnv lays the caller's env vars over the template's (ENV lines).
func mergeEnv(tpl, req map[string]string) map[string]string {
	if len(tpl) == 0 {
		return req
	}
	out := make(map[string]string, len(tpl)+len(req))
	for k, v := range tpl {
		out[k] = v
	}
	for k, v := range req {
		out[k] = v
	}
	return out
}
