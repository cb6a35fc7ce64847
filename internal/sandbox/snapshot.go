package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

// Template snapshots: a template with a start command is started once, at
// the end of its build, under the snapshot runtime (runsc); when its ready
// command passes, the sandbox is checkpointed. Every sandbox of the template
// is then restored from that checkpoint with its own ID, hostname, network
// and writable layer, so its start command is already running and whatever
// it loaded is already in memory. Snapshots are keyed by everything the
// started state depends on, so an unchanged rebuild reuses the snapshot and
// a restarted server finds it again.

// TemplateSnapshots takes, finds and prunes the node's template snapshots.
// It starts the sandbox to checkpoint and removes it through the manager
// (snapshotHost), and has the warm pools replace sandboxes pooled without
// the snapshot once it exists.
type TemplateSnapshots struct {
	host  snapshotHost
	pools interface {
		refresh(ctx context.Context, tplID string)
	}
	rt       *runtimes
	data     datadir.Layout
	agentDir string
	nodeID   string
	log      *slog.Logger

	mu    sync.Mutex
	locks map[string]*sync.Mutex // one snapshot at a time per key
	retry map[string]time.Time   // next background attempt per key
	// serving bounds snapshots retaken in the background (nil: not
	// serving, none is); wg waits for them.
	serving context.Context
	wg      sync.WaitGroup
}

// snapshotHost is what template snapshots need of the manager: a sandbox
// started as launched (under the snapshot runtime), and its teardown.
type snapshotHost interface {
	startWith(ctx context.Context, sb *store.Sandbox, tpl template.Template, how launch) (*live, error)
	destroy(ctx context.Context, id string)
}

func newTemplateSnapshots(m *Manager) *TemplateSnapshots {
	return &TemplateSnapshots{host: m, pools: m.pools, rt: m.rt, data: m.cfg.Data, agentDir: m.cfg.AgentDir,
		nodeID: m.cfg.NodeID, log: m.log, locks: map[string]*sync.Mutex{}, retry: map[string]time.Time{}}
}

// TemplateSnapshots are the manager's template snapshots (the template
// service's Snapshotter and snapshot pruner).
func (m *Manager) TemplateSnapshots() *TemplateSnapshots { return m.tplSnaps }

// launchFor restores sandboxes of a template from its snapshot when one is
// complete; otherwise they start cold and run the start command.
func (m *Manager) launchFor(tpl template.Template) launch { return m.tplSnaps.launchFor(tpl) }

// serve lets snapshots be retaken in the background until ctx ends.
func (s *TemplateSnapshots) serve(ctx context.Context) {
	s.mu.Lock()
	s.serving = ctx
	s.mu.Unlock()
}

// SnapshotsAvailable reports whether template snapshots can be taken and,
// when not, why (for the build log).
func (s *TemplateSnapshots) SnapshotsAvailable() (bool, string) {
	if s.rt.snap == nil {
		return false, "no snapshot runtime is configured (--snapshot-runtime none, or runsc is not installed)"
	}
	if s.rt.snapshotter() == nil {
		return false, fmt.Sprintf("the snapshot runtime %s cannot checkpoint (only runsc can here)", s.rt.snap.Name())
	}
	return true, ""
}

// snapshotKey identifies a template's started state: its filesystem
// content, how the start command runs, the agent binaries inside (their
// code is in the snapshot's memory) and the runtime taking it. "" when the
// template has no start command, no content key (built-in templates) or
// keeps its start command out of snapshots (NoSnapshot).
func (s *TemplateSnapshots) key(tpl template.Template) string {
	if tpl.StartCmd == "" || tpl.ContentKey == "" || tpl.NoSnapshot || s.rt.snap == nil {
		return ""
	}
	env := make([]string, 0, len(tpl.Env))
	for k, v := range tpl.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	b, _ := json.Marshal(struct {
		V                      int
		Content, Start, Ready  string
		Port                   int
		User, Workdir, Runtime string
		Env                    []string
		Agent                  map[string]string
	}{1, tpl.ContentKey, tpl.StartCmd, tpl.ReadyCmd, tpl.ReadyPort, tpl.StartAs(), tpl.Workdir, runtimeIdentity(s.rt.snap),
		env, agentStamps(s.agentDir)})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// runtimeIdentity is the runtime's build and flags when it tells them.
func runtimeIdentity(d runtime.Driver) string {
	if i, ok := d.(interface{ Identity() string }); ok {
		return i.Identity()
	}
	return d.Name()
}

func (s *TemplateSnapshots) dir(key string) string {
	return s.data.TemplateSnapshot(key)
}

// snapshotComplete reports whether dir holds a usable snapshot: a
// complete checkpoint and the agent key its envd holds (without which its
// clones could not be initialised).
func snapshotComplete(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, "state", "complete")); err != nil {
		return false
	}
	_, err := os.Stat(filepath.Join(dir, agentKeyFile))
	return err == nil
}

// launchFor restores sandboxes of a template from its snapshot when one is
// complete; otherwise they start cold and run the start command.
func (s *TemplateSnapshots) launchFor(tpl template.Template) launch {
	key := s.key(tpl)
	if key == "" || s.rt.snapshotter() == nil {
		return launch{}
	}
	if dir := s.dir(key); snapshotComplete(dir) {
		return launch{snapshot: dir}
	}
	s.resnapshot(tpl, key)
	return launch{}
}

// resnapshotRetry spaces background attempts at one snapshot key.
const resnapshotRetry = 10 * time.Minute

// resnapshot takes a template's missing snapshot in the background: its
// key changed under a built template (sbx upgraded its agent binaries, the
// snapshot runtime's flags changed, snapshots were turned on, or pruning
// removed it). Sandboxes start cold until it is there.
func (s *TemplateSnapshots) resnapshot(tpl template.Template, key string) {
	s.mu.Lock()
	ctx := s.serving
	s.mu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return // not serving (tests, shutdown)
	}
	now := time.Now()
	s.mu.Lock()
	if s.retry[key].After(now) {
		s.mu.Unlock()
		return
	}
	s.retry[key] = now.Add(resnapshotRetry)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		s.log.Info("taking the template's missing snapshot; its sandboxes start cold meanwhile",
			"template.id", tpl.ID, "build.id", tpl.BuildID, "key", key)
		_, err := s.Snapshot(ctx, tpl, false, func(l string) { s.log.Debug(l, "template.id", tpl.ID) })
		if err != nil {
			s.log.Warn("template snapshot failed; its sandboxes run the start command when they start",
				"template.id", tpl.ID, "err", err, "retry_in", resnapshotRetry)
			return
		}
		// Sandboxes pooled meanwhile started cold: replace them with
		// restored ones, so every sandbox of the build shares one state.
		s.pools.refresh(ctx, tpl.ID)
	}()
}

func (s *TemplateSnapshots) lock(key string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.locks[key]
	if !ok {
		l = &sync.Mutex{}
		s.locks[key] = l
	}
	return l
}

// Snapshot takes tpl's snapshot (start command started, ready command
// passed, sandbox checkpointed) unless an identical one exists and force is
// false. progress receives lines for the build log. It reports whether an
// existing snapshot was reused. A failing start or ready command is an
// errdefs.ErrInvalidArgument error with the command's last output.
func (s *TemplateSnapshots) Snapshot(ctx context.Context, tpl template.Template, force bool, progress func(string)) (cached bool, err error) {
	if ok, why := s.SnapshotsAvailable(); !ok {
		return false, errdefs.Precondition("template snapshots are unavailable: %s", why)
	}
	key := s.key(tpl)
	if key == "" {
		return false, errdefs.Invalid("template %s has no start command or no content key: nothing to snapshot", tpl.ID)
	}
	lk := s.lock(key)
	lk.Lock()
	defer lk.Unlock()
	dir := s.dir(key)
	if !force && snapshotComplete(dir) {
		return true, noteSnapshotUse(dir, tpl.BuildID)
	}
	t0 := time.Now()
	id, err := newID()
	if err != nil {
		return false, err
	}
	sb := store.Sandbox{ID: id, TemplateID: tpl.ID, BuildID: tpl.BuildID, Alias: firstName(tpl),
		State: store.StateRunning, EnvVars: tpl.Env, CPUCount: tpl.CPUCount, MemoryMB: tpl.MemoryMB,
		DiskMB: tpl.DiskMB, AllowInternet: true, NodeID: s.nodeID}
	progress(fmt.Sprintf("snapshot: starting the start command under %s", s.rt.snap.Name()))
	l, err := s.host.startWith(ctx, &sb, tpl, launch{snapRT: true})
	switch {
	case errors.Is(err, errdefs.ErrInvalidArgument):
		// The start command's own failure: its message says it all, once
		// (the progress line before it named the runtime).
		return false, errdefs.Invalid("%s", errdefs.Message(err))
	case err != nil:
		return false, errdefs.Invalid("start command %q did not become ready under %s: %v",
			tpl.StartCmd, s.rt.snap.Name(), err)
	}
	defer s.host.destroy(context.WithoutCancel(ctx), id)
	tReady := time.Since(t0)
	progress(fmt.Sprintf("snapshot: start command ready in %s; saving the started state", tReady.Round(time.Millisecond)))
	l.agent.close() // no host connection may be open across a checkpoint
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return false, fmt.Errorf("snapshot template %s: %w", tpl.ID, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+key+"-")
	if err != nil {
		return false, fmt.Errorf("snapshot template %s: %w", tpl.ID, err)
	}
	defer os.RemoveAll(tmp)
	t1 := time.Now()
	if err := s.rt.Checkpoint(ctx, id, filepath.Join(tmp, "state")); err != nil {
		return false, fmt.Errorf("snapshot template %s: checkpoint: %w", tpl.ID, err)
	}
	// Its envd's key is in the checkpoint's memory: clones prove their
	// first /init with it (host-only, like the checkpoint).
	if err := writeKey(filepath.Join(tmp, agentKeyFile), l.agent.currentKey()); err != nil {
		return false, fmt.Errorf("snapshot template %s: save agent key: %w", tpl.ID, err)
	}
	// A forced rebuild replaces the old snapshot. A restored sandbox no
	// longer needs the files it came from; one being restored right now
	// falls back to a cold start if they go.
	if err := os.RemoveAll(dir); err != nil {
		return false, fmt.Errorf("snapshot template %s: replace old snapshot: %w", tpl.ID, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return false, fmt.Errorf("snapshot template %s: %w", tpl.ID, err)
	}
	if err := noteSnapshotUse(dir, tpl.BuildID); err != nil {
		return false, fmt.Errorf("snapshot template %s: %w", tpl.ID, err)
	}
	progress(fmt.Sprintf("snapshot: saved in %s (%d MB); sandboxes start with the start command already running",
		time.Since(t1).Round(time.Millisecond), dirSize(dir)>>20))
	s.log.Info("template snapshot taken", "template.id", tpl.ID, "build.id", tpl.BuildID, "key", key,
		"ready", tReady.Round(time.Millisecond), "total", time.Since(t0).Round(time.Millisecond))
	return false, nil
}

// snapshotBuilds is the file in a snapshot dir listing the template builds
// it serves, one ID per line: pruning keeps a snapshot while one of them
// is kept (current, tagged or in use).
const snapshotBuilds = "builds"

// noteSnapshotUse records that buildID uses the snapshot in dir and marks
// it used now (its mtime).
func noteSnapshotUse(dir, buildID string) error {
	p := filepath.Join(dir, snapshotBuilds)
	b, _ := os.ReadFile(p)
	if !slices.Contains(strings.Fields(string(b)), buildID) {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(f, buildID)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	now := time.Now()
	return os.Chtimes(dir, now, now)
}

// PruneSnapshots removes the snapshots that serve none of keepBuilds and
// were last used before the given time. A snapshot that is still being
// restored from has been used just now, so it stays.
func (s *TemplateSnapshots) PruneSnapshots(keepBuilds map[string]bool, before time.Time) (int, error) {
	root := s.data.TemplateSnapshots()
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		fi, err := os.Stat(dir)
		if err != nil || !fi.ModTime().Before(before) {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, snapshotBuilds))
		if slices.ContainsFunc(strings.Fields(string(b)), func(id string) bool { return keepBuilds[id] }) {
			continue
		}
		lk := s.lock(e.Name())
		lk.Lock()
		err = os.RemoveAll(dir)
		lk.Unlock()
		if err != nil {
			return n, err
		}
		s.log.Info("pruned template snapshot", "key", e.Name(), "builds", strings.Fields(string(b)))
		n++
	}
	return n, nil
}
