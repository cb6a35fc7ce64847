package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/timerslack"
)

// runScript is the init process of a build sandbox: it runs one command as
// a user in a directory, prints "<mark> <exit code>" on a line of its own,
// and then stays alive until the executor captured the writable layer and
// deletes the sandbox (an init that exits at once could race the runtime's
// start). Its output is the driver's (runtime.Output), a file outside the
// sandbox's reach; /.sbx/build is a read-only mount holding only the
// staged files of a COPY or ADD. The output shares the disk limit with the
// writable layer: when a full disk keeps the end line from being written,
// init exits, and the executor sees the sandbox stop.
const runScript = `exec </dev/null
mark="$SBX_MARK"; unset SBX_MARK
finish() { printf '\n%s %s\n' "$mark" "$1" || exit 1; while :; do sleep 3600; done; }
u="${SBX_USER%%:*}"; g=""; case "$SBX_USER" in *:*) g="${SBX_USER#*:}" ;; esac
[ -d "$SBX_WORKDIR" ] || mkdir -p -- "$SBX_WORKDIR"
cd -- "$SBX_WORKDIR" || { echo "sbx: cannot enter WORKDIR $SBX_WORKDIR"; finish 125; }
unset SBX_USER SBX_WORKDIR
if [ -z "$u" ] || [ "$u" = root ] || [ "$u" = 0 ]; then /bin/sh -c "$SBX_CMD"; finish $?; fi
command -v setpriv >/dev/null || { echo "sbx: running as $u needs setpriv (util-linux) in the image"; finish 126; }
pw=$(getent passwd "$u") || { echo "sbx: user $u does not exist in the image; add it first, e.g. RUN useradd -m $u"; finish 126; }
home=$(echo "$pw" | cut -d: -f6); [ -n "$g" ] || g=$(echo "$pw" | cut -d: -f4)
export HOME="$home" USER="$u" LOGNAME="$u"
setpriv --reuid="$u" --regid="$g" --init-groups /bin/sh -c "$SBX_CMD"
finish $?
`

// stateEvery is how often a running step's sandbox is checked for having
// died (its init killed, e.g. by the OOM killer) without printing its end.
const stateEvery = 500 * time.Millisecond

// exec starts a build sandbox over layers, runs cmd, streams its output,
// and calls capture (if the command succeeded) before deleting the sandbox.
// A step that hit a build limit fails with an error naming the limit and
// its flag, whatever its exit code.
func (e *Executor) exec(ctx context.Context, id, scratch string, layers []string, st state, user, cmd string,
	timeout time.Duration, line func(string), capture func() error) (code int, out string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nsPath, err := e.net.Setup(ctx, id, true)
	if err != nil {
		return 0, "", fmt.Errorf("set up build network: %w", err)
	}
	defer func() {
		if terr := e.net.Teardown(context.WithoutCancel(ctx), id); terr != nil {
			e.log.Warn("tear down build network", "sandbox.id", id, "err", terr)
		}
	}()
	mark := "sbx-step-end-" + randHex(16)
	spec := runtime.Spec{
		ID: id, Lower: layers, Hostname: "sbx-build",
		Args: []string{"/bin/sh", "-c", runScript}, Env: stepEnv(st, user, cmd, mark), Cwd: "/",
		// Read-only: the step reads its staged files there and writes
		// nothing the host reads back. Owned: under user namespaces the
		// sandbox's root must be able to read the (0700) scratch tree.
		Mounts: []runtime.Mount{{Source: scratch, Target: "/.sbx/build", ReadOnly: true, Owned: true}},
		Resources: runtime.Resources{CPUs: e.cfg.Limits.CPUs, MemoryMB: e.cfg.Limits.MemoryMB,
			PidsMax: e.cfg.Limits.PidsMax, DiskMB: e.cfg.Limits.DiskMB},
		NetNS: nsPath,
	}
	// From a thread with the default timer slack, as sandboxes start: a
	// step's sleeps must not end up to 1 ms late (timerslack.RelaxSysmon).
	if err := timerslack.Default(func() error { return e.drv.Start(ctx, spec) }); err != nil {
		return 0, "", fmt.Errorf("start build sandbox: %w", err)
	}
	defer func() {
		if derr := e.drv.Delete(context.WithoutCancel(ctx), id); derr != nil {
			e.log.Warn("delete build sandbox", "sandbox.id", id, "err", derr)
		}
	}()
	output, err := e.drv.OpenOutput(id)
	if err != nil {
		return 0, "", fmt.Errorf("read build sandbox output: %w", err)
	}
	defer output.Close()
	tail := &tailer{r: output, line: line, mark: []byte(mark)}
	if err := e.wait(ctx, id, tail, timeout); err != nil {
		tail.flush()
		return 0, tail.last(), err
	}
	if err := e.limitHit(ctx, id); err != nil {
		return tail.code, tail.last(), err
	}
	code = tail.code
	if code == 0 && capture != nil {
		if err := capture(); err != nil {
			return 0, tail.last(), fmt.Errorf("store layer: %w", err)
		}
	}
	return code, tail.last(), nil
}

// wait follows the step's output until its end mark, the sandbox dying or
// the timeout.
func (e *Executor) wait(ctx context.Context, id string, tail *tailer, timeout time.Duration) error {
	delay := 5 * time.Millisecond
	checked := time.Now()
	for {
		tail.poll()
		if tail.done {
			return nil
		}
		if time.Since(checked) >= stateEvery {
			checked = time.Now()
			if st, err := e.drv.State(ctx, id); err == nil && st != runtime.StatusRunning {
				tail.poll()
				if tail.done {
					return nil
				}
				if err := e.limitHit(ctx, id); err != nil {
					return err
				}
				return errors.New("the build sandbox stopped before the step finished")
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				if err := e.limitHit(context.WithoutCancel(ctx), id); err != nil {
					return err
				}
				return errdefs.Exhausted("timed out after %s; raise the limit with sbx serve --build-step-timeout", timeout)
			}
			return ctx.Err()
		case <-time.After(delay):
		}
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

// limitHit reports the build limit a step went over, if any: the memory
// limit counts even when the step's script survived the kill of one of its
// processes (its layer would be whatever the killed process left).
func (e *Executor) limitHit(ctx context.Context, id string) error {
	st, err := e.drv.Stats(ctx, id)
	if err != nil {
		return nil // the limits cannot be read: the exit code speaks
	}
	l := e.cfg.Limits
	switch {
	case st.OOMKills > 0:
		return errdefs.Exhausted("ran out of memory: build steps may use %d MiB, the files they write included; raise the limit with sbx serve --build-memory", l.MemoryMB)
	case st.PidsLimitHits > 0:
		return errdefs.Exhausted("hit the limit of %d processes; raise it with sbx serve --build-pids", l.PidsMax)
	case l.DiskMB > 0 && st.DiskBytes >= uint64(l.DiskMB)<<20-uint64(l.DiskMB)<<20/50:
		return errdefs.Exhausted("filled its writable layer: build steps may write %d MiB; raise the limit with sbx serve --build-disk", l.DiskMB)
	}
	return nil
}

// stepEnv is the environment of a build sandbox's init.
func stepEnv(st state, user, cmd, mark string) []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	keys := make([]string, 0, len(st.env))
	for k := range st.env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+st.env[k])
	}
	return append(env, "SBX_USER="+user, "SBX_WORKDIR="+st.workdir, "SBX_CMD="+cmd, "SBX_MARK="+mark,
		"DEBIAN_FRONTEND=noninteractive")
}

// capture copies the build sandbox's writable layer (overlay upper dir,
// whiteouts and opaque-dir xattrs included) into the layer directory. The
// sandbox is frozen first: a process the step left running must not
// change the tree (e.g. swap a directory for a symlink) while it is copied.
func (e *Executor) capture(ctx context.Context, id, dir string, s Step) error {
	if err := e.drv.Pause(ctx, id); err != nil {
		return fmt.Errorf("freeze build sandbox: %w", err)
	}
	tmp := dir + ".tmp-" + randHex(4)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	diff := filepath.Join(tmp, "diff")
	if c, ok := e.drv.(runtime.LayerCapturer); ok {
		// The driver copies the writable layer with the image's ids: under
		// user namespaces the sandbox wrote host ids of its own range, and
		// the next step's sandbox gets another range.
		if err := c.CaptureLayer(ctx, id, diff); err != nil {
			return fmt.Errorf("capture the step's layer: %w", err)
		}
	} else {
		upper := filepath.Join(e.cfg.SandboxDir, id, "upper", "upper")
		// cp -a keeps owners, modes, hard links, device nodes (whiteouts are
		// 0/0 character devices) and trusted.* xattrs (opaque directories),
		// and follows no symlink.
		if out, err := exec.Command("cp", "-a", "--", upper, diff).CombinedOutput(); err != nil {
			return fmt.Errorf("copy %s: %w: %s", upper, err, out)
		}
	}
	// Mount points the runtime created for the build are not content.
	if err := os.RemoveAll(filepath.Join(diff, ".sbx")); err != nil {
		return err
	}
	meta, _ := json.Marshal(map[string]any{"step": s.String(), "created": time.Now().UTC()})
	if err := os.WriteFile(filepath.Join(tmp, "complete"), append(meta, '\n'), 0o644); err != nil {
		return err
	}
	if layerComplete(dir) { // another build made the same layer meanwhile
		return nil
	}
	_ = os.RemoveAll(dir) // leftovers of an interrupted capture
	return os.Rename(tmp, dir)
}
