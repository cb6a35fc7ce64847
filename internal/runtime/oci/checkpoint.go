package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
	"github.com/sbxdev/sbx/internal/runtime"
	"golang.org/x/sys/unix"
)

// Only runsc checkpoints here: Debian's crun has no checkpoint command and
// runc needs a CRIU that works on the host kernel (runtime notes), so the
// driver answers CanCheckpoint() == false for them.
var _ runtime.Checkpointer = (*Driver)(nil)

// Layout of a checkpoint directory.
const (
	ckptImage    = "image"     // runsc --image-path
	ckptUpper    = "upper"     // copy of the overlay's writable layer
	ckptComplete = "complete"  // written last: the checkpoint is usable
	ckptMarker   = "ckpt-path" // in the sandbox dir: where its checkpoint is
)

// CanCheckpoint reports whether the runtime can save sandboxes to disk.
func (d *Driver) CanCheckpoint() bool { return d.name == "runsc" }

func (d *Driver) requireCheckpoint() error {
	if !d.CanCheckpoint() {
		return errdefs.Precondition("the %s runtime cannot checkpoint sandboxes (only runsc can here; start the server with --runtime runsc)", d.name)
	}
	return nil
}

// Checkpoint saves the sandbox's processes with `runsc checkpoint` (which
// stops it) and copies its writable layer, which lives on a tmpfs, to dir.
// Then it removes the container and unmounts the layers, freeing the
// memory of both. The bundle, the sandbox dir and the network namespace
// stay, and State reports StatusCheckpointed until Restore or Delete.
func (d *Driver) Checkpoint(ctx context.Context, id, dir string) (err error) {
	if err := d.requireCheckpoint(); err != nil {
		return err
	}
	if err := validateID(id); err != nil {
		return err
	}
	if !filepath.IsAbs(dir) {
		return errdefs.Invalid("checkpoint dir %q must be an absolute path", dir)
	}
	st, err := d.State(ctx, id)
	if err != nil {
		return err
	}
	if st != runtime.StatusRunning && st != runtime.StatusPaused {
		return errdefs.Precondition("sandbox %s is %s, not running: nothing to checkpoint", id, st)
	}
	// A listener a process of the sandbox bound in its filesystem is a
	// socket on the host, which gVisor cannot save: the save would fail
	// and runsc kill the sandbox. Refuse first (the sandbox is frozen
	// when the manager asks, so nothing binds meanwhile).
	if sock, err := socketIn(d.paths(id).upper()); err != nil {
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	} else if sock != "" {
		return errdefs.Precondition("sandbox %s cannot be saved to disk: it has a unix socket at /%s in its filesystem "+
			"(a listener, or one left behind), which gVisor cannot save; remove it or put it under /tmp, "+
			"or keep the sandbox paused in memory", id, sock)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	// The sentry runs inside the sandbox's cgroup: a frozen one could not
	// answer the checkpoint request.
	if st == runtime.StatusPaused {
		if err := d.Resume(ctx, id); err != nil {
			return fmt.Errorf("checkpoint sandbox %s: thaw: %w", id, err)
		}
	}
	// A save that meets the host socket kills the sandbox, so the socket
	// must be gone first. (runsc's --save-restore-exec-argv would do this
	// with a process started in the sandbox, but a restored kernel skips it
	// on its next save, and systrap sometimes crashes the sentry starting a
	// process in a restored sandbox; a signal starts nothing.)
	if sock := d.hostSocket(id); sock != "" {
		if err := d.releaseHostSocket(ctx, id, sock); err != nil {
			return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
		}
	}
	if err := d.saveImage(ctx, id, filepath.Join(dir, ckptImage)); err != nil {
		if sock := d.hostSocket(id); sock != "" {
			// A sandbox that outlived the failed save must be reachable
			// again once thawed: its init listens on the socket anew.
			if st, serr := d.State(ctx, id); serr == nil && (st == runtime.StatusRunning || st == runtime.StatusPaused) {
				if _, kerr := d.command(context.WithoutCancel(ctx), "kill", id, "USR2"); kerr != nil {
					d.log.Warn("ask init to bind its host socket again after a failed checkpoint", "sandbox.id", id, "err", kerr)
				}
			}
		}
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	// From here the processes are gone; losing the upper dir now would lose
	// the sandbox's files, so the copy comes before any unmount.
	p := d.paths(id)
	if err := copyTree(ctx, p.upper(), filepath.Join(dir, ckptUpper)); err != nil {
		return fmt.Errorf("checkpoint sandbox %s: save writable layer: %w", id, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ckptComplete), nil, 0o600); err != nil {
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, ckptMarker), []byte(dir), 0o600); err != nil {
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	d.release(ctx, id, p)
	return nil
}

// release frees what a stopped (checkpointed) sandbox still holds: its
// runtime state and its mounted layers. Errors are logged: the checkpoint
// is complete at this point and Delete cleans up what is left.
func (d *Driver) release(ctx context.Context, id string, p sandboxPaths) {
	if _, err := d.command(context.WithoutCancel(ctx), "delete", "--force", id); err != nil && d.runtimeKnows(id) {
		d.log.Warn("delete checkpointed container", "sandbox.id", id, "err", err)
	}
	if err := d.killCgroup(id); err != nil {
		d.log.Warn("empty cgroup of checkpointed sandbox", "sandbox.id", id, "err", err)
	}
	if err := unmountLayers(p); err != nil {
		d.log.Warn("unmount layers of checkpointed sandbox", "sandbox.id", id, "err", err)
	}
	_ = os.Remove(p.handle())
	_ = os.Remove(p.pidFile())
}

// Restore mounts a fresh writable layer filled from the checkpoint's copy
// and runs `runsc restore`. On failure the sandbox is left as it was
// before (checkpointed, or absent) and dir is untouched.
func (d *Driver) Restore(ctx context.Context, s runtime.Spec, dir string) (err error) {
	if err := d.requireCheckpoint(); err != nil {
		return err
	}
	if err := validateSpec(s); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, ckptComplete)); err != nil {
		return errdefs.Invalid("restore sandbox %s: %s is not a complete checkpoint", s.ID, dir)
	}
	p := d.paths(s.ID)
	if st, err := d.State(ctx, s.ID); err == nil && (st == runtime.StatusRunning || st == runtime.StatusPaused) {
		return errdefs.Exists("restore sandbox %s: it is already running", s.ID)
	}
	if d.runtimeKnows(s.ID) { // a stopped leftover would block the ID
		if _, err := d.command(ctx, "delete", "--force", s.ID); err != nil {
			return fmt.Errorf("restore sandbox %s: %w", s.ID, err)
		}
	}
	if err := unmountLayers(p); err != nil { // a failed earlier restore
		return fmt.Errorf("restore sandbox %s: %w", s.ID, err)
	}
	defer func() {
		if err != nil {
			cctx := context.WithoutCancel(ctx)
			if _, derr := d.command(cctx, "delete", "--force", s.ID); derr != nil && d.runtimeKnows(s.ID) {
				d.log.Debug("delete after failed restore", "sandbox.id", s.ID, "err", derr)
			}
			_ = d.killCgroup(s.ID)
			if uerr := unmountLayers(p); uerr != nil {
				d.log.Warn("clean up after failed restore", "sandbox.id", s.ID, "err", uerr)
			}
			_ = os.Remove(p.handle())
		}
	}()
	t0 := time.Now()
	// No user namespace: only runsc checkpoints, and gVisor runs none on
	// the host. The saved writable layer thus holds the image's own ids.
	if err := mountLayers(ctx, p, layers{lower: s.Lower, diskMB: s.Resources.DiskMB, upperFrom: filepath.Join(dir, ckptUpper)}); err != nil {
		return fmt.Errorf("restore sandbox %s: %w", s.ID, err)
	}
	bp, err := writeEtc(p, s, nil)
	if err != nil {
		return fmt.Errorf("restore sandbox %s: %w", s.ID, err)
	}
	if _, err := d.prepareMounts(s, p, nil); err != nil {
		return fmt.Errorf("restore sandbox %s: %w", s.ID, err)
	}
	if err := writeConfig(p, buildSpec(s, bp, d.limits, nil)); err != nil {
		return fmt.Errorf("restore sandbox %s: %w", s.ID, err)
	}
	tLayers := time.Since(t0)
	if err := d.runRestore(ctx, s.ID, p, filepath.Join(dir, ckptImage)); err != nil {
		return fmt.Errorf("restore sandbox %s: %w", s.ID, err)
	}
	d.log.Debug("sandbox restored", "sandbox.id", s.ID, "layers", tLayers, "total", time.Since(t0))
	_ = os.Remove(filepath.Join(p.dir, ckptMarker))
	if s.HostSocket != "" {
		// The caller waits for the socket to answer.
		if _, err := d.command(ctx, "kill", s.ID, "USR2"); err != nil {
			return fmt.Errorf("restore sandbox %s: ask init to bind its socket again: %w", s.ID, err)
		}
	}
	return nil
}

// runRestore is runDetached for `runsc restore`.
func (d *Driver) runRestore(ctx context.Context, id string, p sandboxPaths, image string) error {
	logf, err := os.OpenFile(p.initLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := append(slices.Clip(d.global), "restore", "--detach", "--image-path", image,
		"--bundle", p.bundle(), "--pid-file", p.pidFile(), id)
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s restore: %w: %s", d.name, err, tail(p.initLog(), 2048))
	}
	pid, err := readPid(p.pidFile())
	if err != nil {
		return err
	}
	st, err := procStartTime(pid)
	if err != nil {
		return fmt.Errorf("init process %d exited right after restore: %s", pid, tail(p.initLog(), 2048))
	}
	return writeHandle(p, handle{Runtime: d.name, Version: d.version, Pid: pid, StartTime: st, Created: time.Now().UTC()})
}

// annotationHostSocket carries Spec.HostSocket in config.json, so that a
// restarted server still knows it.
const annotationHostSocket = "dev.sbx.host-socket"

func (d *Driver) hostSocket(id string) string {
	b, err := os.ReadFile(d.paths(id).config())
	if errors.Is(err, os.ErrNotExist) { // started by an sbx that kept it in bundle/
		b, err = os.ReadFile(d.paths(id).legacyConfig())
	}
	if err != nil {
		return ""
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(b, &spec) != nil {
		return ""
	}
	return spec.Annotations[annotationHostSocket]
}

// hostSocketWait bounds the wait for init to close its host socket.
const hostSocketWait = 10 * time.Second

// releaseHostSocket asks the sandbox's init to close its host socket
// (SIGUSR1) and waits until the socket file is gone. If it is not, the
// request is undone (SIGUSR2) and the checkpoint must not proceed.
func (d *Driver) releaseHostSocket(ctx context.Context, id, sock string) error {
	// The socket's directory is the sandbox's to write: look at the name
	// only through hostfs, which follows nothing planted there.
	dir, err := hostfs.OpenDir(filepath.Dir(sock))
	if err != nil {
		return fmt.Errorf("host socket directory: %w", err)
	}
	defer dir.Close()
	if _, err := d.command(ctx, "kill", id, "USR1"); err != nil {
		return fmt.Errorf("ask init to close its host socket: %w", err)
	}
	deadline := time.Now().Add(hostSocketWait)
	for {
		if _, err := dir.Stat(filepath.Base(sock)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_, _ = d.command(context.WithoutCancel(ctx), "kill", id, "USR2")
			return fmt.Errorf("init did not close its host socket %s within %v (does it handle SIGUSR1?)", sock, hostSocketWait)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkpointed reports whether the sandbox was checkpointed and not
// restored: its marker names a complete checkpoint.
func (d *Driver) checkpointed(p sandboxPaths) bool {
	b, err := os.ReadFile(filepath.Join(p.dir, ckptMarker))
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join(string(b), ckptComplete))
	return err == nil
}

// copyTree copies a directory tree with owners, modes, timestamps and
// extended attributes, which the overlay's whiteouts and opaque dirs need
// (trusted.overlay.*). cp does all of that and sparse files in one exec.
func copyTree(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("copy %s: %s already exists", src, dst)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	out, err := exec.CommandContext(ctx, "cp", "-a", "--no-target-directory", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp -a %s %s: %w: %s", src, dst, err, out)
	}
	return nil
}

// saveImage runs runsc checkpoint. On a loaded host runsc sometimes finds
// the sandbox's control socket not (or no longer) accepting for a moment
// and fails with "connection refused" before anything is saved; while the
// sandbox still runs, that is retried a few times rather than failing the
// pause or snapshot.
func (d *Driver) saveImage(ctx context.Context, id, image string) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if _, err = d.command(ctx, "checkpoint", "--image-path", image, id); err == nil ||
			!strings.Contains(err.Error(), "connection refused") {
			return err
		}
		if st, serr := d.State(ctx, id); serr != nil || (st != runtime.StatusRunning && st != runtime.StatusPaused) {
			return err
		}
		d.log.Warn("runsc checkpoint: control server refused the connection; retrying", "sandbox.id", id, "attempt", attempt+1)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
	return err
}

// socketIn finds a unix socket file in a writable layer (gVisor cannot
// save a sandbox listening on one) and returns its path in the sandbox.
// The layer is the sandbox's own, so it is walked by directory descriptors
// (internal/hostfs), never by path: a directory swapped for a symlink
// meanwhile is not followed onto the host. The walk stops after
// maxSocketScan entries (a layer lives on a capped tmpfs; a huge tree
// gets no verdict rather than an unbounded walk, and runsc's own check
// then decides).
func socketIn(upper string) (string, error) {
	root, err := hostfs.OpenDir(upper)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer root.Close()
	budget := maxSocketScan
	return socketUnder(root, "", 0, &budget)
}

// Bounds of the scan, which walks a tree the sandbox made: at most
// maxSocketScan entries, and maxSocketDepth directories deep. Each level
// holds two fds (the directory and its reader) and a path string as long
// as the level's, so a chain of nested directories 100,000 deep (a loop
// of mkdir and cd in the sandbox) would otherwise hold 200,000 of the
// server's fds and about 10 GB of path strings at once. A socket beyond either bound goes
// unseen: its save fails and runsc kills that one sandbox, nothing else.
const (
	maxSocketScan  = 200_000
	maxSocketDepth = 256
)

func socketUnder(d *hostfs.Dir, rel string, depth int, budget *int) (string, error) {
	if depth >= maxSocketDepth {
		return "", nil
	}
	// Read a batch at a time, never more than the budget left: a directory
	// of millions of names on the sandbox's tmpfs is cut after the budget,
	// not read whole first. The reader stays open below, so a level holds
	// two fds: 2*maxSocketDepth at the deepest.
	r, err := d.Reader()
	if err != nil {
		return "", err
	}
	defer r.Close()
	for *budget > 0 {
		entries, err := r.Next(min(*budget, socketBatch))
		if errors.Is(err, io.EOF) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		for _, e := range entries {
			if *budget--; *budget < 0 {
				return "", nil
			}
			p := path.Join(rel, e.Name)
			switch {
			case e.Mode&unix.S_IFMT == unix.S_IFSOCK:
				return p, nil
			case e.IsDir():
				sub, err := d.Sub(e.Name)
				if err != nil {
					if errors.Is(err, hostfs.ErrSymlink) || errors.Is(err, hostfs.ErrNotDir) || errors.Is(err, fs.ErrNotExist) {
						continue // replaced meanwhile: not followed
					}
					return "", err
				}
				found, err := socketUnder(sub, p, depth+1, budget)
				sub.Close()
				if found != "" || err != nil {
					return found, err
				}
			}
		}
	}
	return "", nil
}

// socketBatch is how many entries of one directory the scan holds at once.
const socketBatch = 256
