package builder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// finalize checks the start command the way E2B does at the end of a build:
// start it, then poll the ready command until it exits 0, in a build
// sandbox of the build's own runtime. The snapshot of the started state is
// the template service's next phase (internal/template/snapshot.go). A
// successful check is cached by the final key plus both commands, so an
// unchanged rebuild does not wait for the ready command again.
func (e *Executor) finalize(ctx context.Context, req Request, res *Result, key string, force bool, logf func(Progress)) error {
	// "grace": checks cached before the start command had to survive its
	// start passed commands that exit at once; they are checked again.
	fkey := chainKey(key, "finalize", "grace", req.StartCmd, req.ReadyCmd, res.User, res.Workdir)
	marker := filepath.Join(e.LayersDir(), fkey)
	if !force && layerComplete(marker) {
		now := time.Now()
		_ = os.Chtimes(filepath.Join(marker, "complete"), now, now)
		logf(Progress{Cached: true, Message: "CACHED start command check: " + req.StartCmd})
	} else {
		t0 := time.Now()
		ready := req.ReadyCmd
		if ready == "" {
			ready = "true"
		}
		if req.ReadyCmd == "" {
			logf(Progress{Message: fmt.Sprintf("starting %q and checking that it keeps running for %s", req.StartCmd, e.cfg.StartGrace)})
		} else {
			logf(Progress{Message: fmt.Sprintf("starting %q and waiting for ready command %q", req.StartCmd, ready)})
		}
		scratch, err := e.scratchDir("final-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(scratch)
		// The start command runs in the background as the template's user;
		// the ready command is polled as that user too. A start command
		// that exits non-zero (or is killed) before it is ready, or within
		// StartGrace of starting, fails at once with its output: otherwise
		// a typo such as "nosuchcommand" would build a template whose
		// sandboxes run nothing. One that exits 0 may have started a
		// daemon, which only a ready command can vouch for.
		hasReady := "1"
		if req.ReadyCmd == "" {
			hasReady = ""
		}
		script := fmt.Sprintf(`(%s) >/tmp/.sbx-start.log 2>&1 &
pid=$!; live=1; code=0
check() { if [ $live = 1 ] && ! kill -0 $pid 2>/dev/null; then live=0; wait $pid; code=$?; fi; }
failed() { echo "start command exited with code $code $1; its last output:"; tail -n 20 /tmp/.sbx-start.log; exit 1; }
i=0; until /bin/sh -c %s; do
  check; if [ $live = 0 ] && [ $code -ne 0 ]; then failed "before it was ready"; fi
  i=$((i+1)); if [ $i -ge %d ]; then echo "ready command never exited 0"; tail -n 20 /tmp/.sbx-start.log; exit 1; fi; sleep 0.2
done
echo "ready after ${i} polls"
while [ $live = 1 ] && [ $i -lt %d ]; do sleep 0.2; i=$((i+1)); check; done
check
if [ $live = 0 ] && [ $code -ne 0 ]; then failed "right after it started"; fi
if [ $live = 0 ] && [ -z "%s" ]; then failed "right after it started, so nothing would run in the template's sandboxes (if it starts a daemon, pass a ready command that checks it)"; fi`,
			req.StartCmd, shellQuote(ready), int(e.cfg.ReadyTimeout/(200*time.Millisecond)), int(e.cfg.StartGrace/(200*time.Millisecond)), hasReady)
		st := state{user: res.User, workdir: res.Workdir, env: res.Env}
		code, out, err := e.exec(ctx, "build"+randHex(6), scratch, res.Layers, st, res.User, script,
			e.cfg.ReadyTimeout+time.Minute, func(l string) { logf(Progress{Message: l}) }, nil)
		if err != nil || code != 0 {
			return &StepError{What: "start command " + req.StartCmd, ExitCode: code, Output: out, Err: err}
		}
		if err := os.MkdirAll(marker, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(marker, "complete"), []byte(req.StartCmd+"\n"), 0o644); err != nil {
			return err
		}
		logf(Progress{Message: fmt.Sprintf("start command ready in %s", time.Since(t0).Round(time.Millisecond))})
	}
	return nil
}
