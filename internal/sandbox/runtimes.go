package sandbox

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/timerslack"
)

// runtimes routes every sandbox to the driver that runs it. Most sandboxes
// run under the server's runtime (crun by default: the fastest start);
// sandboxes restored from a template snapshot run under the snapshot
// runtime (runsc: the only one here that checkpoints). The manager talks to
// runtimes as to one driver; each method finds the sandbox's owner.
//
// Every call that forks a sandbox's first process (Start, Restore) runs
// through timerslack.Default: the sandbox inherits the forking thread's
// timer slack, which must not be the Go runtime's sysmon's.
type runtimes struct {
	main runtime.Driver
	snap runtime.Driver // nil = no snapshots; may be main itself

	mu    sync.Mutex
	owner map[string]runtime.Driver // cache; State finds owners after a restart
}

var (
	_ runtime.Driver       = (*runtimes)(nil)
	_ runtime.Pauser       = (*runtimes)(nil)
	_ runtime.Checkpointer = (*runtimes)(nil)
	_ runtime.ExitWatcher  = (*runtimes)(nil)
	_ runtime.IDMapper     = (*runtimes)(nil)
)

func newRuntimes(main runtime.Driver) *runtimes {
	return &runtimes{main: main, owner: map[string]runtime.Driver{}}
}

// drivers lists each distinct driver once, the server's runtime first.
func (r *runtimes) drivers() []runtime.Driver {
	if r.snap == nil || r.snap == r.main {
		return []runtime.Driver{r.main}
	}
	return []runtime.Driver{r.main, r.snap}
}

// snapshotter is the snapshot runtime when it can checkpoint, else nil.
func (r *runtimes) snapshotter() runtime.Checkpointer {
	if r.snap == nil {
		return nil
	}
	c, ok := r.snap.(runtime.Checkpointer)
	if !ok || !c.CanCheckpoint() {
		return nil
	}
	return c
}

// of finds the driver that knows the sandbox; the server's runtime when
// none does (its ErrNotFound is then the answer).
func (r *runtimes) of(ctx context.Context, id string) runtime.Driver {
	r.mu.Lock()
	d, ok := r.owner[id]
	r.mu.Unlock()
	if ok {
		return d
	}
	ds := r.drivers()
	if len(ds) == 1 {
		return ds[0]
	}
	for _, d := range ds {
		if _, err := d.State(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
			r.remember(id, d)
			return d
		}
	}
	return r.main
}

func (r *runtimes) remember(id string, d runtime.Driver) {
	r.mu.Lock()
	r.owner[id] = d
	r.mu.Unlock()
}

func (r *runtimes) forget(id string) {
	r.mu.Lock()
	delete(r.owner, id)
	r.mu.Unlock()
}

// Name is the server's runtime: the one new sandboxes start under.
func (r *runtimes) Name() string { return r.main.Name() }

func (r *runtimes) Start(ctx context.Context, spec runtime.Spec) error {
	r.remember(spec.ID, r.main)
	return timerslack.Default(func() error { return r.main.Start(ctx, spec) })
}

// startOnSnapshotRuntime starts a sandbox under the snapshot runtime (the
// sandbox a template snapshot is taken from).
func (r *runtimes) startOnSnapshotRuntime(ctx context.Context, spec runtime.Spec) error {
	if r.snapshotter() == nil {
		return errdefs.Precondition("no snapshot runtime: start the server with --snapshot-runtime runsc")
	}
	r.remember(spec.ID, r.snap)
	return timerslack.Default(func() error { return r.snap.Start(ctx, spec) })
}

// clone restores a new sandbox from a template snapshot.
func (r *runtimes) clone(ctx context.Context, spec runtime.Spec, dir string) error {
	c := r.snapshotter()
	if c == nil {
		return errdefs.Precondition("no snapshot runtime: start the server with --snapshot-runtime runsc")
	}
	r.remember(spec.ID, r.snap)
	return timerslack.Default(func() error { return c.Restore(ctx, spec, dir) })
}

// stop ends every process of the sandbox at once when its driver can
// (runtime.Stopper), and says whether it did; Delete must still follow.
func (r *runtimes) stop(ctx context.Context, id string) bool {
	s, ok := r.of(ctx, id).(runtime.Stopper)
	return ok && s.Stop(ctx, id) == nil
}

// foreground gives a sandbox started in the background the normal CPU
// weight, when its driver starts any in the background.
func (r *runtimes) foreground(ctx context.Context, id string) error {
	if p, ok := r.of(ctx, id).(runtime.Prioritizer); ok {
		return p.Foreground(ctx, id)
	}
	return nil
}

func (r *runtimes) Delete(ctx context.Context, id string) error {
	err := r.of(ctx, id).Delete(ctx, id)
	if err == nil || errors.Is(err, runtime.ErrNotFound) {
		r.forget(id)
	}
	return err
}

func (r *runtimes) State(ctx context.Context, id string) (runtime.Status, error) {
	return r.of(ctx, id).State(ctx, id)
}

func (r *runtimes) List(ctx context.Context) ([]string, error) {
	var all []string
	for _, d := range r.drivers() {
		ids, err := d.List(ctx)
		if err != nil {
			return nil, err
		}
		all = append(all, ids...)
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

func (r *runtimes) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	return r.of(ctx, id).Stats(ctx, id)
}

func (r *runtimes) pauser(ctx context.Context, id string) (runtime.Pauser, error) {
	d := r.of(ctx, id)
	p, ok := d.(runtime.Pauser)
	if !ok {
		return nil, errdefs.Precondition("the %s runtime cannot pause sandboxes", d.Name())
	}
	return p, nil
}

func (r *runtimes) Pause(ctx context.Context, id string) error {
	p, err := r.pauser(ctx, id)
	if err != nil {
		return err
	}
	return p.Pause(ctx, id)
}

func (r *runtimes) Resume(ctx context.Context, id string) error {
	p, err := r.pauser(ctx, id)
	if err != nil {
		return err
	}
	return p.Resume(ctx, id)
}

// CanCheckpoint answers for the server's runtime: it decides whether the
// disk tier of pause is on.
func (r *runtimes) CanCheckpoint() bool {
	c, ok := r.main.(runtime.Checkpointer)
	return ok && c.CanCheckpoint()
}

func (r *runtimes) checkpointer(ctx context.Context, id string) (runtime.Checkpointer, error) {
	d := r.of(ctx, id)
	c, ok := d.(runtime.Checkpointer)
	if !ok || !c.CanCheckpoint() {
		return nil, errdefs.Precondition("the %s runtime cannot checkpoint sandboxes", d.Name())
	}
	return c, nil
}

func (r *runtimes) Checkpoint(ctx context.Context, id, dir string) error {
	c, err := r.checkpointer(ctx, id)
	if err != nil {
		return err
	}
	return c.Checkpoint(ctx, id, dir)
}

func (r *runtimes) Restore(ctx context.Context, spec runtime.Spec, dir string) error {
	c, err := r.checkpointer(ctx, spec.ID)
	if err != nil {
		return err
	}
	return timerslack.Default(func() error { return c.Restore(ctx, spec, dir) })
}

// Wait waits for the sandbox's init through its driver.
func (r *runtimes) Wait(ctx context.Context, id string) (runtime.Exit, error) {
	d := r.of(ctx, id)
	w, ok := d.(runtime.ExitWatcher)
	if !ok {
		return runtime.Exit{}, errdefs.Precondition("the %s runtime cannot report sandbox exits", d.Name())
	}
	return w.Wait(ctx, id)
}

// IDMap returns the sandbox's user namespace range, if its driver gave it one.
func (r *runtimes) IDMap(ctx context.Context, id string) (runtime.IDMap, bool, error) {
	m, ok := r.of(ctx, id).(runtime.IDMapper)
	if !ok {
		return runtime.IDMap{}, false, nil
	}
	return m.IDMap(ctx, id)
}
