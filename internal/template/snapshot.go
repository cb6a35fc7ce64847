package template

import (
	"context"
	"errors"
	"fmt"

	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/errdefs"
)

// Snapshotter saves a template's started state (the sandbox manager): its
// start command running, ready command passed. Sandboxes of the template
// are then restored from the snapshot instead of starting the command.
type Snapshotter interface {
	SnapshotsAvailable() (ok bool, why string)
	Snapshot(ctx context.Context, t Template, force bool, progress func(string)) (cached bool, err error)
}

// SetSnapshotter turns on template snapshots. Call before serving.
func (s *Service) SetSnapshotter(sn Snapshotter) { s.snap = sn }

// snapshotsOn reports whether builds end with a snapshot, which starts
// the start command and waits for the ready command itself: the builder's
// own check of both would only double the wait.
func (s *Service) snapshotsOn() bool {
	if s.snap == nil {
		return false
	}
	ok, _ := s.snap.SnapshotsAvailable()
	return ok
}

// snapshot is the last phase of a build with a start command. A start or
// ready command that fails fails the build (E2B's finalize step); any other
// failure leaves the template usable without a snapshot, and the log says
// that sandboxes run the start command when they start.
func (s *Service) snapshot(ctx context.Context, t Template, req StartRequest, logLine func(step, level, msg string)) error {
	if t.StartCmd == "" {
		return nil
	}
	fallback := "sandboxes from this template run the start command when they start"
	switch {
	case req.NoSnapshot:
		logLine("finalize", "info", "snapshots are off for this template (noSnapshot): "+fallback+", under the server's runtime")
		return nil
	case t.NoSnapshot:
		logLine("finalize", "info", "the start command comes from the base template and is not snapshotted: "+fallback+
			" (it is ready in under a second, and answers faster outside a restored runsc sandbox); warm pools keep sandboxes ready")
		return nil
	}
	if s.snap == nil {
		logLine("finalize", "info", "snapshots are off on this server: "+fallback)
		return nil
	}
	if ok, why := s.snap.SnapshotsAvailable(); !ok {
		logLine("finalize", "warn", fmt.Sprintf("snapshots are unavailable (%s): %s", why, fallback))
		return nil
	}
	progress := func(l string) { logLine("finalize", "info", l) }
	cached, err := s.snap.Snapshot(ctx, t, req.Force, progress)
	switch {
	case err == nil && cached:
		logLine("finalize", "info", "CACHED snapshot of the started state: sandboxes start with the start command already running")
	case errors.Is(err, errdefs.ErrInvalidArgument):
		return err
	case err != nil:
		logLine("finalize", "warn", fmt.Sprintf("snapshot failed (%s): %s", errdefs.Message(err), fallback))
	}
	return nil
}

// contentKey identifies a build's filesystem: the cache key after its last
// step, or its base's key when it has no steps.
func contentKey(base builder.Base, res *builder.Result) string {
	if n := len(res.Keys); n > 0 {
		return res.Keys[n-1]
	}
	return base.Key
}
