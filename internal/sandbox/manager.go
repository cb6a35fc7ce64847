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
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/network"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/telemetry"
	"github.com/sbxdev/sbx/internal/template"
	"github.com/sbxdev/sbx/sdk"
)

// EnvdVersion is the envd protocol version sbx reports to SDKs.
const EnvdVersion = "0.6.13"

// Kill reasons carried in killed events.
const (
	ReasonRequest = "request"
	ReasonTimeout = "timeout"
	// ReasonLost: the sandbox's container was gone when the server
	// started (a host reboot, a wiped runtime state dir, a container
	// deleted behind the server's back).
	ReasonLost   = "lost_on_restart"
	ReasonFailed = "start_failed"
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

// networkBeginner is a Network that makes the namespace first and plugs
// the rest in (attach) while the runtime starts the sandbox in it: the
// link's setup then costs a create no wall-clock time (network.Manager).
// attach must be called once, and awaited before the sandbox is used.
type networkBeginner interface {
	Begin(ctx context.Context, id string, allowInternet bool) (nsPath string, attach func(context.Context) error, err error)
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
	// Data names every file the manager keeps in the data dir.
	Data     datadir.Layout
	AgentDir string // host dir mounted at /.sbx/bin (envd, codeinterp)
	// NodeID names this server among servers sharing a database: its
	// sandboxes carry it, and Recover touches only those.
	NodeID string
	// SoleServer says no other server shares the database (SQLite, in
	// this server's locked data dir): Recover then takes every row not
	// killed as this server's, also rows written under an earlier node
	// name (a restart on another --listen port).
	SoleServer bool
}

// Manager creates, tracks and destroys sandboxes.
type Manager struct {
	volumes   volumeMounts // extra mounts per sandbox (mounts.go)
	cfg       Config
	log       *slog.Logger
	store     store.Store
	driver    runtime.Driver // rt, as the plain driver contract
	rt        *runtimes
	logs      sandboxLogs // start command output, per sandbox
	draining  atomic.Bool // refuse new sandboxes (admin: POST /nodes/{id})
	network   Network
	templates Templates
	dial      agentDialer // dialAgent; a fake in tests
	now       func() time.Time

	// blobs publishes pauses without memory and takes over other nodes'
	// (blobs.go); nil: paused sandboxes resume on this server only.
	blobs *layer.Blobs

	mu       sync.Mutex
	live     map[string]*live
	pools    warmPools          // warm pools (pools.go)
	tplSnaps *TemplateSnapshots // template snapshots (snapshot.go)

	admission Admission // nil = no limits
	observer  Observer  // creates, pool hits and misses (observe.go)
	quota     quota     // per-team cap on live sandboxes (quota.go)
	disk      *diskTier // pause's disk tier (disk.go)
	exits     exitWatch // sandboxes whose init ends on its own (exits.go)
	reclaims  reclaimer // teardowns after kills (reclaim.go)

	wakes wakes     // auto-resumes in flight (lifecycle.go)
	snaps snapshots // sandbox snapshots (sandboxsnap.go)
}

// live is the in-memory side of a running sandbox.
type live struct {
	mu       sync.Mutex
	snapshot string // the template snapshot it was restored from, "" if started cold
	// background: a pooled sandbox started at the least CPU weight, until
	// its claim raises it (Pools.claimFrom).
	background bool
	sb         store.Sandbox
	agent      agentConn
	timer      *time.Timer
	cpu        cpuSample
	// lifecycle: auto-pause without memory, auto-resume (lifecycle.go).
	lifecycle Lifecycle
}

type cpuSample struct {
	at    time.Time
	usage time.Duration
}

// New returns a manager configured by opts. Call Recover before serving
// requests.
func New(cfg Config, log *slog.Logger, st store.Store, drv runtime.Driver, netw Network, tpl Templates, opts ...Option) *Manager {
	rt := newRuntimes(drv)
	m := &Manager{cfg: cfg, log: log, store: st, driver: rt, rt: rt, network: netw, templates: tpl, observer: noObserver{}, dial: dialAgent,
		now: time.Now, live: map[string]*live{}}
	m.quota.node = cfg.NodeID
	m.disk = &diskTier{host: m, driver: rt, data: cfg.Data, log: log}
	for _, o := range opts {
		o(m)
	}
	m.pools = newPools(m, tpl, log, m.obs(), m.now)
	m.tplSnaps = newTemplateSnapshots(m)
	if m.disk.after > 0 && !m.disk.canCheckpoint() {
		m.log.Warn("paused sandboxes stay in the memory tier: the runtime cannot checkpoint (use --runtime runsc)",
			"runtime", m.driver.Name())
	}
	return m
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
	// AutoPauseMemory false: an auto-pause keeps only the filesystem.
	// nil = true (E2B's default).
	AutoPauseMemory *bool
	// AutoResume: traffic through the proxy resumes the paused sandbox.
	AutoResume bool
	// restoreFrom is a memory image (memsnap.go) to restore the sandbox
	// from instead of booting it.
	restoreFrom string
	// Mounts are volumes bound into the sandbox (runtime.Mount.IDMapped).
	// A sandbox with mounts never comes from a warm pool: those started
	// without them.
	Mounts []runtime.Mount
	// Egress is the sandbox's egress policy, in force before anything runs
	// in it (applyEgress). A sandbox with one never comes from a warm
	// pool either: those ran without it.
	Egress network.Policy
}

// Validate checks a create request before any work is done (bounds in
// validate.go).
func (r *CreateRequest) Validate() error {
	if r.Timeout < 0 || r.Timeout > MaxTimeout {
		return errdefs.Invalid("timeout must be between 0 and %d seconds (%s)", int64(MaxTimeout/time.Second), MaxTimeout)
	}
	if r.AutoResume && r.AutoPauseMemory != nil && !*r.AutoPauseMemory {
		return errdefs.Invalid("autoResume cannot be combined with autoPauseMemory false: a sandbox paused without " +
			"its memory must be resumed explicitly (connect)")
	}
	return r.validateInputs()
}

// Create starts a sandbox and returns once its agent answered /init (and
// the template's start command is ready).
func (m *Manager) Create(ctx context.Context, req CreateRequest) (sb store.Sandbox, err error) {
	t0 := time.Now()
	defer func() { m.obs().CreateDone(sb, time.Since(t0), err) }()
	if err := req.Validate(); err != nil {
		return store.Sandbox{}, err
	}
	if req.Timeout == 0 {
		req.Timeout = DefaultTimeout
	}
	ctx, span := telemetry.Start(ctx, "sandbox.create", attribute.String("team.id", req.TeamID))
	defer func() { telemetry.End(span, err) }()
	if err := m.syncSnapshot(ctx, req.TeamID, req.Template); err != nil {
		return store.Sandbox{}, err
	}
	tpl, err := m.templates.ResolveFor(ctx, req.TeamID, req.Template)
	if err != nil {
		return store.Sandbox{}, err
	}
	if dir := m.snapshotDirOf(tpl.ID); dir != "" { // a memory snapshot is restored, not booted
		req.restoreFrom = memoryImage(dir)
	}
	return m.createWith(ctx, req, tpl, true)
}

// createWith creates a sandbox of a resolved template; usePool false keeps
// warm pools out (a fork's template carries the source's layers).
func (m *Manager) createWith(ctx context.Context, req CreateRequest, tpl template.Template, usePool bool) (_ store.Sandbox, err error) {
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(attribute.String("template.id", tpl.ID), attribute.String("template.name", firstName(tpl)))
	slot, err := m.admit(ctx, req.TeamID, tpl.ID)
	if err != nil {
		return store.Sandbox{}, err
	}
	defer slot.release() // after track: the sandbox holds the slot from then on
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
	var l *live
	if usePool && req.restoreFrom == "" && len(req.Mounts) == 0 && req.Egress.Empty() {
		l = m.pools.claim(ctx, tpl, &sb)
	}
	pooled := l != nil
	if l == nil {
		if sb.ID, err = newID(); err != nil {
			return store.Sandbox{}, err
		}
		how := m.launchFor(tpl)
		if req.restoreFrom != "" {
			how = launch{snapshot: req.restoreFrom}
		}
		how.egress = req.Egress
		m.setMounts(sb.ID, req.Mounts)
		done := m.pools.coldStart()
		l, err = m.startWith(ctx, &sb, tpl, how)
		done()
		if err != nil {
			m.setMounts(sb.ID, nil)
			m.forgetFiles(sb.ID)
			return store.Sandbox{}, err
		}
	}
	span.SetAttributes(attribute.String("sandbox.id", sb.ID), attribute.Bool("sandbox.pooled", pooled))
	change := &store.Change{Type: EventCreated, Sandbox: sb, Data: map[string]any{"sandbox_metadata": nonNil(sb.Metadata)}}
	// Not cancelled with the caller: a commit cut off midway may have
	// landed, and destroying the container then leaves a row without one.
	// A caller that left is noticed after Create (the API kills it).
	sctx, sspan := telemetry.Start(context.WithoutCancel(ctx), "sandbox.store")
	err = m.store.InsertSandbox(sctx, sb, change)
	telemetry.End(sspan, err)
	if err != nil {
		m.destroy(context.WithoutCancel(ctx), sb.ID)
		m.forgetFiles(sb.ID)
		return store.Sandbox{}, err
	}
	l.lifecycle = Lifecycle{DropMemory: req.AutoPauseMemory != nil && !*req.AutoPauseMemory, AutoResume: req.AutoResume}
	if l.lifecycle != (Lifecycle{}) {
		l.lifecycle.Timeout = req.Timeout
		if err := m.saveLifecycle(sb.ID, l.lifecycle); err != nil {
			m.log.WarnContext(ctx, "save sandbox lifecycle; it is lost at a restart", "sandbox.id", sb.ID, "err", err)
		}
	}
	m.track(l)
	m.log.InfoContext(ctx, "sandbox created", "sandbox.id", sb.ID, "template.id", sb.TemplateID, "team.id", sb.TeamID,
		"pooled", pooled, "elapsed", m.now().Sub(now).Round(time.Microsecond))
	return sb, nil
}

// admit takes a slot of the team's sandbox cap and asks the admission
// (budgets) whether the team may start one more.
func (m *Manager) admit(ctx context.Context, teamID, tplID string) (_ *reservation, err error) {
	ctx, span := telemetry.Start(ctx, "sandbox.admission")
	defer func() { telemetry.End(span, err) }()
	if m.draining.Load() {
		return nil, errdefs.Unavailable("this node (%s) is draining and starts no new sandboxes; the admin sets it ready with POST /nodes/{id}", m.cfg.NodeID)
	}
	var cl ConcurrencyLimiter
	var budgetMax int
	if c, ok := m.admission.(ConcurrencyLimiter); ok {
		if budgetMax, err = c.MaxConcurrent(ctx, teamID); err != nil {
			return nil, err
		}
		cl = c
	}
	s, err := m.quota.reserve(ctx, teamID, budgetMax)
	var full *capReached
	if errors.As(err, &full) && full.budget {
		return nil, cl.RefuseConcurrent(ctx, teamID, tplID, full.held, budgetMax)
	}
	if err != nil {
		return nil, err
	}
	if m.admission != nil {
		if err := m.admission.Admit(ctx, teamID, tplID); err != nil {
			s.release()
			return nil, err
		}
	}
	return s, nil
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
	// background starts it at the least CPU weight (a pooled sandbox
	// nobody waits for yet; runtime.Resources.Background).
	background bool
	egress     network.Policy // applied before the runtime starts (applyEgress)
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
	var tNet, tFiles, tStart, tReady, tNetWait time.Duration
	var ns *netStart
	defer func() {
		var tBegin time.Duration // off the path when late
		if ns != nil && ns.late {
			tBegin = ns.took
		}
		m.log.DebugContext(ctx, "sandbox start phases", "sandbox.id", sb.ID, "network", tNet, "network_begin", tBegin, "files", tFiles,
			"runtime", tStart, "agent_ready", tReady, "network_wait", tNetWait, "total", time.Since(t0), "from_snapshot", how.snapshot != "")
	}()
	if how.snapshot != "" || how.snapRT {
		sb.Runtime = m.rt.snap.Name()
	} else {
		sb.Runtime = m.rt.main.Name()
	}
	nctx, netSpan := telemetry.Start(ctx, "sandbox.network")
	// Only a cold boot under a runtime that uses the kernel's namespace as
	// it is overlaps: gVisor copies the namespace's interfaces into its own
	// stack when it starts, and a restore may bring back sockets bound to
	// the sandbox's address; both need the link in place before.
	// A policy must be in force before anything runs: no overlap then.
	overlap := how.snapshot == "" && !how.snapRT && sb.Runtime != "runsc" && how.egress.Empty()
	// With overlap the namespace itself is made concurrently too, while
	// the runtime prepares the root filesystem (runtime.Spec.NetNSWait):
	// on a free core the whole network step is then off the create's path.
	ns = m.beginNetwork(nctx, sb.ID, sb.AllowInternet, overlap)
	if !ns.late {
		if _, err := ns.nsPath(); err != nil {
			telemetry.End(netSpan, err)
			return nil, fmt.Errorf("set up network for sandbox %s: %w", sb.ID, err)
		}
		sb.NetNS = ns.path
	} else {
		// The path comes from NetNSWait; one an earlier start left (a
		// resume, a restart) names a thread of that server and is stale.
		sb.NetNS = ""
	}
	// Joined before anything is torn down or handed out.
	joinNet := sync.OnceValue(func() error {
		err := <-ns.attached
		telemetry.End(netSpan, err)
		return err
	})
	defer func() { // runs before the teardown above, on every path
		if jerr := joinNet(); jerr != nil && err == nil {
			l, err = nil, fmt.Errorf("set up network for sandbox %s: %w", sb.ID, jerr)
		}
	}()
	if !how.egress.Empty() {
		if err := joinNet(); err != nil {
			return nil, fmt.Errorf("set up network for sandbox %s: %w", sb.ID, err)
		}
		if err := m.applyEgress(ctx, sb.ID, how.egress); err != nil {
			return nil, err
		}
	}
	runDir := m.runDir(sb.ID)
	if err := mkdirIn(runDir, 0o755); err != nil {
		return nil, fmt.Errorf("create run dir: %w", err)
	}
	key, err := m.newAgentKey(sb.ID)
	if err != nil {
		return nil, err
	}
	tNet = time.Since(t0)
	if err := m.newBootID(sb.ID); err != nil {
		return nil, err
	}
	lower, err := m.adoptLayers(ctx, sb.ID, tpl.Lower())
	if err != nil {
		return nil, fmt.Errorf("start sandbox %s: %w", sb.ID, err)
	}
	tpl.Layers = lower
	spec := m.sandboxSpec(*sb, tpl.Lower(), key)
	if ns.late {
		spec.NetNSWait = ns.nsPath // the spec is saved once the path is known
	} else if err := m.saveSpec(spec); err != nil {
		return nil, err
	}
	tFiles = time.Since(t0) - tNet
	var snapKey agentauth.Key // what a clone's envd holds until its first /init
	rctx, span := telemetry.Start(ctx, "sandbox.runtime", attribute.String("runtime", m.driver.Name()),
		attribute.Bool("from_snapshot", how.snapshot != ""))
	if how.snapshot != "" {
		sb.Runtime = m.rt.snap.Name()
		snapKey, err = readKey(filepath.Join(how.snapshot, agentKeyFile))
		if err == nil {
			err = m.rt.clone(rctx, spec, filepath.Join(how.snapshot, "state"))
		}
		if err != nil {
			if ctx.Err() != nil { // shutting down or the caller left: nothing to fall back for
				return nil, fmt.Errorf("restore sandbox %s from template snapshot: %w", sb.ID, err)
			}
			m.log.WarnContext(ctx, "restore from template snapshot failed; starting cold", "sandbox.id", sb.ID,
				"template.id", tpl.ID, "snapshot", how.snapshot, "err", err)
			how.snapshot, sb.Runtime = "", m.rt.main.Name()
			spec = m.sandboxSpec(*sb, tpl.Lower(), key) // with the boot ID runsc does not need
			if err := m.saveSpec(spec); err != nil {
				return nil, err
			}
		} else {
			now := time.Now()
			_ = os.Chtimes(how.snapshot, now, now) // used: pruning keeps it
		}
	}
	switch {
	case how.snapshot != "":
	case how.snapRT:
		sb.Runtime = m.rt.snap.Name()
		err = m.rt.startOnSnapshotRuntime(rctx, spec)
	default:
		spec.Resources.Background = how.background // not in the saved spec: a restore starts in the foreground
		err = m.driver.Start(rctx, spec)
	}
	telemetry.End(span, err)
	if err != nil {
		return nil, fmt.Errorf("start sandbox %s: %w", sb.ID, err)
	}
	tStart = time.Since(t0) - tNet - tFiles
	if ns.late { // while envd starts in the sandbox
		if sb.NetNS, err = ns.nsPath(); err != nil { // the driver saw it already
			return nil, fmt.Errorf("set up network for sandbox %s: %w", sb.ID, err)
		}
		saved := spec
		saved.NetNS, saved.NetNSWait = sb.NetNS, nil
		saved.Resources.Background = false // as saved before a start: a restore starts in the foreground
		if err := m.saveSpec(saved); err != nil {
			return nil, err
		}
	}
	a := m.dial(sb.ID, runDir, key)
	l = &live{sb: *sb, agent: a, snapshot: how.snapshot}
	ectx, span := telemetry.Start(ctx, "sandbox.envd")
	defer func() { telemetry.End(span, err) }() // ready, /init and the start command
	if err := a.waitReady(ectx); err != nil {
		return nil, err
	}
	tReady = time.Since(t0) - tNet - tFiles - tStart
	if err := joinNet(); err != nil {
		return nil, fmt.Errorf("set up network for sandbox %s: %w", sb.ID, err)
	}
	tNetWait = time.Since(t0) - tNet - tFiles - tStart - tReady
	req := initRequest{EnvVars: initVars(*sb), AccessToken: sb.AccessToken, DefaultUser: tpl.User, DefaultWorkdir: tpl.Workdir}
	if how.snapshot != "" {
		err = a.rekey(ectx, req, snapKey)
	} else {
		err = a.init(ectx, req)
	}
	if err != nil {
		return nil, m.agentBroke(sb.ID, err)
	}
	if tpl.StartCmd != "" && how.snapshot == "" {
		var grace time.Duration
		if how.snapRT { // a build's check, not a user waiting for a sandbox
			grace = builder.DefaultStartGrace
		}
		if err := m.startCommand(ectx, a, sb.ID, sb.AccessToken, tpl, grace); err != nil {
			m.logs.sandbox(sb.ID).system(m.now(), "error", "start command failed: "+errdefs.Message(err))
			return nil, m.agentBroke(sb.ID, err)
		}
		m.logs.sandbox(sb.ID).system(m.now(), "info", "start command ready")
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
// so the ready check goes on. With grace > 0 (a template build taking its
// snapshot), the command must also keep running until grace after its
// start, or have exited 0 with a ready check vouching for what it started:
// otherwise a typo such as "nosuchcommand" would snapshot a template whose
// sandboxes run nothing.
func (m *Manager) startCommand(ctx context.Context, a agentConn, id, token string, tpl template.Template, grace time.Duration) error {
	t0 := time.Now()
	out := m.logs.sandbox(id)
	out.system(m.now(), "info", "start command started: "+tpl.StartCmd)
	cmd, err := a.start(ctx, token, tpl.StartAs(), tpl.Workdir, tpl.StartCmd, func(stream, chunk string) { out.output(m.now(), stream, chunk) })
	if err != nil {
		return err
	}
	defer cmd.disconnect() // after ready: the command keeps running
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ended := make(chan startEnd, 1)
	go func() {
		end := cmd.end(rctx)
		switch {
		case end.err == nil && end.code != 0:
			cancel(errdefs.Invalid("start command %q exited with code %d before it was ready; its last output:\n%s",
				tpl.StartCmd, end.code, strings.TrimSpace(end.tail)))
		case errors.Is(end.err, sdk.ErrMessageTooLarge):
			cancel(fmt.Errorf("start command %q: %w", tpl.StartCmd, end.err))
		}
		ended <- end
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
	if grace <= 0 {
		return nil
	}
	timer := time.NewTimer(time.Until(t0.Add(grace)))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-rctx.Done():
		return failed(rctx.Err())
	case end := <-ended:
		switch {
		case end.err != nil || end.code != 0:
			return failed(fmt.Errorf("start command %q: %w", tpl.StartCmd, end.err))
		case tpl.ReadyCmd == "" && tpl.ReadyPort == 0:
			msg := fmt.Sprintf("start command %q exited (code 0) right after it started, so nothing would run in "+
				"the template's sandboxes; if it starts a daemon, pass a ready command that checks it", tpl.StartCmd)
			if out := strings.TrimSpace(end.tail); out != "" {
				msg += "; its last output:\n" + out
			}
			return errdefs.Invalid("%s", msg)
		}
		return nil
	}
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
	return m.cfg.Data.SandboxRun(id)
}

// mkdirIn makes dir, or finds it made, with one mkdir once its parent
// exists (MkdirAll stats the path and its parent first, at every start).
func mkdirIn(dir string, mode os.FileMode) error {
	err := os.Mkdir(dir, mode)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, mode)
	}
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	return err
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
	dropMemory := l.lifecycle.DropMemory
	l.mu.Unlock()
	if paused {
		return
	}
	if m.now().Before(endAt) { // moved by SetTimeout after the timer fired
		m.arm(l)
		return
	}
	if autoPause {
		if err := m.pauseWith(ctx, id, "", !dropMemory); err != nil {
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
	m.logs.forget(id)
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
	m.setMounts(id, nil)
	if err := os.RemoveAll(m.disk.dir(id)); err != nil {
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
