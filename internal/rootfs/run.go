package rootfs

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// buildEnv is the whole environment of every build command: nothing from
// the caller leaks into the tree (locale, proxies, HOME).
var buildEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
	"DEBIAN_FRONTEND=noninteractive",
	"DEBCONF_NONINTERACTIVE_SEEN=true",
}

// isolated runs argv in a new mount and PID namespace. Mounts made there
// (debootstrap's /proc, our /dev and apt cache binds) exist only in that
// namespace, so they vanish when it ends — on success, error, cancel or a
// crash of sbx — and no host path is ever left mounted inside a tree we
// later delete. The PID namespace takes every process of the build down
// with its first one when ctx is cancelled.
//
// Every output line goes to progress and to the log (debug); the last lines
// are kept for the error message.
func (b *Builder) isolated(ctx context.Context, recipe string, progress func(string), argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = buildEnv
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		Pdeathsig:  syscall.SIGKILL,
	}
	// Killing PID 1 of the namespace kills the rest of the build.

	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	cmd.Stdin = nil
	cmd.Stdout = pw
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	pw.Close()

	tail := newTail(15)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.forwardLines(pr, recipe, progress, tail)
	}()
	werr := cmd.Wait()
	// Drain before closing: the last lines (often the error) may still be
	// in the pipe. The PID namespace died with its first process, so every
	// writer is gone and EOF comes promptly; the timeout is a safety net.
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.log.Warn("rootfs build output still open after exit", "rootfs.recipe", recipe)
	}
	pr.Close()
	<-done
	if werr != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", argv[0], ctx.Err())
		}
		return fmt.Errorf("%s: %w; last output:\n%s", argv[0], werr, tail)
	}
	return nil
}

func (b *Builder) forwardLines(r io.Reader, recipe string, progress func(string), tail *tail) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			continue
		}
		tail.add(line)
		progress(line)
		b.log.Debug("rootfs build output", "rootfs.recipe", recipe, "line", line)
	}
}

// tail keeps the last n lines of a command's output.
type tail struct {
	n     int
	lines []string
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) add(line string) {
	t.lines = append(t.lines, line)
	if len(t.lines) > t.n {
		t.lines = t.lines[len(t.lines)-t.n:]
	}
}

func (t *tail) String() string { return strings.Join(t.lines, "\n") }

// chrootWrapper is run by the host's /bin/sh inside the new namespaces:
// it mounts what package scripts expect, then replaces itself with the
// chroot. $1 = root, $2 = script, $3 = apt archives dir or "", $4 = apt
// lists dir or "". The mounts need no unmount: see isolated.
const chrootWrapper = `set -eu
R=$1
mount --make-rprivate /
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount -t sysfs sysfs "$R/sys" 2>/dev/null || mount --rbind /sys "$R/sys"
# The host's DNS during the build, over a regular file (created if absent).
if [ ! -e "$R/etc/resolv.conf" ] && [ ! -L "$R/etc/resolv.conf" ]; then
	: > "$R/etc/resolv.conf"
fi
if [ -f /etc/resolv.conf ] && [ -f "$R/etc/resolv.conf" ] && [ ! -L "$R/etc/resolv.conf" ]; then
	mount --bind /etc/resolv.conf "$R/etc/resolv.conf"
fi
if [ -n "$3" ]; then
	mkdir -p "$R/var/cache/apt/archives"
	mount --bind "$3" "$R/var/cache/apt/archives"
fi
if [ -n "$4" ]; then
	mkdir -p "$R/var/lib/apt/lists"
	mount --bind "$4" "$R/var/lib/apt/lists"
fi
exec chroot "$R" /bin/sh -c "$2"
`

// inChroot runs script with /bin/sh in a chroot at root, with /proc, /dev
// and /sys mounted, and the shared apt caches bound in when withApt.
func (b *Builder) inChroot(ctx context.Context, recipe, root, script string, withApt bool, progress func(string)) error {
	archives, lists := "", ""
	if withApt {
		archives, lists = b.aptArchivesDir(), b.aptListsDir()
	}
	return b.isolated(ctx, recipe, progress,
		"/bin/sh", "-c", chrootWrapper, "sbx-chroot", root, script, archives, lists)
}

// logPhase reports one build phase to the callback and the log.
func (b *Builder) logPhase(recipe string, progress func(string), format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	progress(msg)
	b.log.Info("rootfs build", slog.String("rootfs.recipe", recipe), slog.String("phase", msg))
}
