package rootfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// DefaultCacheDir is the machine-wide cache of built trees, shared by every
// data dir (architecture.md). CacheDirEnv overrides it.
const (
	DefaultCacheDir = "/var/cache/sbx/rootfs"
	CacheDirEnv     = "SBX_ROOTFS_CACHE"
)

// completeMarker marks a finished tree. It is written before the build
// directory is renamed into place, so a visible directory is complete.
const completeMarker = ".complete"

// Builder builds recipes into the cache and hands out their trees.
// Safe for concurrent use, also across processes (flock per recipe).
type Builder struct {
	cacheDir string
	log      *slog.Logger
	lookup   func(name string) (Recipe, bool) // Lookup; tests add recipes
	sources  func() (aptSources, error)       // hostSources(Suite)
	pruned   sync.Map                         // recipe name → old trees checked
	// keepUsed spares old trees some process used this recently: during
	// an upgrade, or with several sbx versions on one machine, each would
	// otherwise delete the others' trees and rebuild its own.
	keepUsed time.Duration
}

// NewBuilder returns a Builder caching under cacheDir; "" means $SBX_ROOTFS_CACHE,
// else DefaultCacheDir.
func NewBuilder(cacheDir string, log *slog.Logger) *Builder {
	if cacheDir == "" {
		cacheDir = os.Getenv(CacheDirEnv)
	}
	if cacheDir == "" {
		cacheDir = DefaultCacheDir
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Builder{
		cacheDir: cacheDir,
		log:      log,
		lookup:   Lookup,
		sources:  func() (aptSources, error) { return hostSources(Suite) },
		keepUsed: time.Hour,
	}
}

// CacheDir returns the directory the builder caches trees in.
func (b *Builder) CacheDir() string { return b.cacheDir }

// step is one recipe of a chain with its cache key.
type step struct {
	Recipe
	hash string
}

func (s step) dirName() string { return s.Name + "-" + s.hash[:12] }

// resolve returns the chain of recipes name depends on, root first.
func (b *Builder) resolve(name string) ([]step, error) {
	var rev []Recipe
	seen := map[string]bool{}
	for n := name; n != ""; {
		if seen[n] {
			return nil, errdefs.Invalid("rootfs recipe %q: parent cycle through %q", name, n)
		}
		seen[n] = true
		r, ok := b.lookup(n)
		if !ok {
			if n == name {
				return nil, errdefs.NotFound("rootfs recipe %q not found; built-in recipes: %s", name, builtinNames())
			}
			return nil, errdefs.NotFound("rootfs recipe %q: parent %q not found", name, n)
		}
		if !validName(r.Name) {
			return nil, errdefs.Invalid("rootfs recipe name %q: use lowercase letters, digits and dashes", r.Name)
		}
		for _, p := range append(append([]string(nil), r.Packages...), r.Omit...) {
			if !validPackage(p) {
				return nil, errdefs.Invalid("rootfs recipe %q: %q is not a Debian package name (lowercase letters, digits, '+', '-', '.')", r.Name, p)
			}
		}
		rev = append(rev, r)
		n = r.Parent
	}
	chain := make([]step, 0, len(rev))
	parentHash := ""
	for i := len(rev) - 1; i >= 0; i-- {
		h := Hash(rev[i], parentHash)
		chain = append(chain, step{Recipe: rev[i], hash: h})
		parentHash = h
	}
	return chain, nil
}

func builtinNames() string {
	var names []string
	for _, r := range Builtins() {
		names = append(names, r.Name)
	}
	return strings.Join(names, ", ")
}

// Path returns where the tree of recipe name lives once built, and whether
// it is complete, without building anything.
func (b *Builder) Path(name string) (rootfsDir string, complete bool, err error) {
	chain, err := b.resolve(name)
	if err != nil {
		return "", false, err
	}
	dir := filepath.Join(b.cacheDir, chain[len(chain)-1].dirName())
	return filepath.Join(dir, "rootfs"), isComplete(dir), nil
}

// Ensure returns the root filesystem of recipe name, building it (and its
// parents) first when the cache has no complete tree for its current hash.
// progress, if not nil, receives human-readable build lines.
func (b *Builder) Ensure(ctx context.Context, name string, progress func(line string)) (string, error) {
	if progress == nil {
		progress = func(string) {}
	}
	chain, err := b.resolve(name)
	if err != nil {
		return "", err
	}
	parentRoot := ""
	for _, s := range chain {
		root, err := b.ensureStep(ctx, s, parentRoot, progress)
		if err != nil {
			return "", err
		}
		parentRoot = root
	}
	return parentRoot, nil
}

func isComplete(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, completeMarker))
	return err == nil
}

func (b *Builder) ensureStep(ctx context.Context, s step, parentRoot string, progress func(string)) (string, error) {
	final := filepath.Join(b.cacheDir, s.dirName())
	if isComplete(final) {
		markUsed(final)
		b.pruneOnce(s)
		return filepath.Join(final, "rootfs"), nil
	}
	if err := b.preflight(s); err != nil {
		return "", err
	}
	if err := os.MkdirAll(b.cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("create rootfs cache %s: %w", b.cacheDir, err)
	}
	unlock, err := b.lock(ctx, s.Name, progress)
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have built it while we waited for the lock.
	if isComplete(final) {
		return filepath.Join(final, "rootfs"), nil
	}
	if err := b.build(ctx, s, parentRoot, final, progress); err != nil {
		// Free the space now; a crash instead leaves the scratch tree for
		// the next build of this recipe to discard.
		if rerr := b.discard(b.scratchDir(s)); rerr != nil {
			b.log.Warn("keep failed rootfs build", "rootfs.recipe", s.Name, "reason", rerr)
		}
		return "", fmt.Errorf("build rootfs %q: %w", s.Name, err)
	}
	b.prune(s)
	return filepath.Join(final, "rootfs"), nil
}

// preflight says clearly what is missing before a build starts.
func (b *Builder) preflight(s step) error {
	if os.Geteuid() != 0 {
		return errdefs.Precondition("building rootfs %q needs root (chroot, mounts): run sbx as root or use a machine where %s is already built", s.Name, b.cacheDir)
	}
	if s.Parent == "" {
		if _, err := debootstrapPath(); err != nil {
			return errdefs.Precondition("building rootfs %q needs debootstrap, which is not installed: run `make deps` or `apt-get install debootstrap`", s.Name)
		}
	}
	return nil
}

// debootstrapFallback is where Debian installs debootstrap: non-login root
// shells and test runners often lack /usr/sbin in PATH. A variable so tests
// can simulate a machine without it.
var debootstrapFallback = "/usr/sbin/debootstrap"

func debootstrapPath() (string, error) {
	if p, err := exec.LookPath("debootstrap"); err == nil {
		return p, nil
	}
	if _, err := os.Stat(debootstrapFallback); err != nil {
		return "", err
	}
	return debootstrapFallback, nil
}

// lock takes the machine-wide lock of one recipe, waiting (cancellably)
// while another process builds it. The lock dies with the process.
func (b *Builder) lock(ctx context.Context, name string, progress func(string)) (func(), error) {
	return flockWait(ctx, filepath.Join(b.cacheDir, name+".lock"), func() {
		b.logPhase(name, progress, "waiting for another process building %s", name)
	})
}

func flockWait(ctx context.Context, path string, onWait func()) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	waited := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // close releases the flock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !waited && onWait != nil {
			onWait()
		}
		waited = true
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// elapsedPrefix prefixes every line with the time since start ("[1m05s]").
func elapsedPrefix(start time.Time, progress func(string)) func(string) {
	return func(line string) {
		progress(fmt.Sprintf("[%s] %s", time.Since(start).Round(time.Second), line))
	}
}

// scratchDir is where s is built before it is renamed into place.
func (b *Builder) scratchDir(s step) string {
	return filepath.Join(b.cacheDir, ".build-"+s.dirName())
}

// buildInfo is the content of the completion marker, for humans.
type buildInfo struct {
	Recipe  string    `json:"recipe"`
	Hash    string    `json:"hash"`
	Parent  string    `json:"parent,omitempty"`
	Suite   string    `json:"suite"`
	Mirror  string    `json:"mirror,omitempty"`
	Built   time.Time `json:"built"`
	Seconds float64   `json:"seconds"`
}

// build creates the tree in a scratch directory, marks it complete and
// renames it to final. Called with the recipe lock held.
func (b *Builder) build(ctx context.Context, s step, parentRoot, final string, progress func(string)) error {
	start := time.Now()
	// Phase lines carry the elapsed time, so a slow step stands out in logs.
	progress = elapsedPrefix(start, progress)
	scratch := b.scratchDir(s)
	// Leftovers of a crashed build, or a final dir missing its marker.
	for _, dir := range []string{scratch, final} {
		if err := b.discard(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", scratch, err)
	}
	root := filepath.Join(scratch, "rootfs")
	info := buildInfo{Recipe: s.Name, Hash: s.hash, Parent: s.Parent, Suite: Suite}

	if s.Parent == "" {
		src, err := b.sources()
		if err != nil {
			return err
		}
		info.Mirror = src.Mirror
		if err := b.debootstrap(ctx, s, root, src.Mirror, progress); err != nil {
			return err
		}
		if err := writeAptSources(root, src); err != nil {
			return err
		}
	} else {
		b.logPhase(s.Name, progress, "copying %s from %s", s.Name, s.Parent)
		if err := b.isolated(ctx, s.Name, progress, "cp", "-a", "--reflink=auto", parentRoot, root); err != nil {
			return fmt.Errorf("copy parent %s: %w", s.Parent, err)
		}
	}
	if err := b.install(ctx, s, root, progress); err != nil {
		return err
	}
	if strings.TrimSpace(s.Script) != "" {
		b.logPhase(s.Name, progress, "running the %s recipe script", s.Name)
		if err := b.inChroot(ctx, s.Name, root, s.Script, false, progress); err != nil {
			return fmt.Errorf("recipe script: %w", err)
		}
	}
	b.logPhase(s.Name, progress, "cleaning apt caches and docs")
	if err := b.inChroot(ctx, s.Name, root, cleanupScript, false, progress); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}

	// Done here, not in the chroot: there the host's file is bound over it.
	if err := normaliseResolvConf(root); err != nil {
		return err
	}

	info.Built = time.Now().UTC()
	info.Seconds = time.Since(start).Seconds()
	if err := writeMarker(scratch, info); err != nil {
		return err
	}
	if err := os.Rename(scratch, final); err != nil {
		return fmt.Errorf("move built tree into place: %w", err)
	}
	b.logPhase(s.Name, progress, "built %s in %s", s.Name, time.Since(start).Round(time.Second))
	return nil
}

func (b *Builder) debootstrap(ctx context.Context, s step, root, mirror string, progress func(string)) error {
	bin, err := debootstrapPath()
	if err != nil {
		return err
	}
	cache := filepath.Join(b.cacheDir, ".debootstrap-cache")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", cache, err)
	}
	b.logPhase(s.Name, progress, "debootstrap --variant=minbase %s from %s", Suite, mirror)
	// debootstrap mounts /proc and /sys in the target itself; the private
	// mount namespace of isolated makes sure none of it outlives the run.
	err = b.isolated(ctx, s.Name, progress, "/bin/sh", "-c", `mount --make-rprivate / && exec "$@"`, "sbx-debootstrap",
		bin, "--variant=minbase", "--cache-dir="+cache, Suite, root, mirror)
	if err != nil {
		return fmt.Errorf("debootstrap: %w", err)
	}
	return nil
}

// install runs apt-get in the chroot with the shared download caches bound
// in, so the second recipe (and every rebuild) downloads little.
func (b *Builder) install(ctx context.Context, s step, root string, progress func(string)) error {
	if len(s.Packages) == 0 {
		return nil
	}
	for _, dir := range []string{b.aptArchivesDir(), filepath.Join(b.aptArchivesDir(), "partial"), filepath.Join(b.aptListsDir(), "partial")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	// The caches are shared by every recipe; apt's own lock there fails
	// instead of waiting, so serialise on ours.
	unlock, err := flockWait(ctx, filepath.Join(b.cacheDir, ".apt.lock"), func() {
		b.logPhase(s.Name, progress, "waiting for another build using the apt cache")
	})
	if err != nil {
		return err
	}
	defer unlock()
	b.logPhase(s.Name, progress, "installing %d packages: %s", len(s.Packages), strings.Join(s.Packages, " "))
	script := installScript + " " + strings.Join(s.Packages, " ")
	if len(s.Omit) > 0 {
		b.logPhase(s.Name, progress, "leaving out %s (a placeholder package provides them)", strings.Join(s.Omit, " "))
		script = omitScript(s.Name, s.Omit) + script
	}
	if err := b.inChroot(ctx, s.Name, root, script, true, progress); err != nil {
		return fmt.Errorf("install packages: %w", err)
	}
	return nil
}

func validPackage(p string) bool {
	if p == "" || len(p) > 100 {
		return false
	}
	for i, c := range p {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && strings.ContainsRune("+-.", c)
		if !ok {
			return false
		}
	}
	return true
}

// installScript sets up dpkg to skip docs and translations (sandboxes run
// with LANG=C.UTF-8), as Debian's slim images do, applies pending updates
// (debootstrap installs the release as first published, and a parent may
// be older than today's fixes) and installs the packages appended to it,
// without recommends.
const installScript = `set -eu
cat > /etc/dpkg/dpkg.cfg.d/90sbx-nodoc <<'EOF'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
apt-get -q update
apt-get -q -y -o Dpkg::Progress-Fancy=0 -o Dpkg::Use-Pty=0 upgrade
apt-get -q -y --no-install-recommends -o Dpkg::Progress-Fancy=0 -o Dpkg::Use-Pty=0 install`

// omitScript installs an empty package that provides omitted, so apt
// treats dependencies on them as met and installs neither them nor their
// own dependencies, while dpkg's database stays consistent: later
// `apt-get install` runs in a sandbox work as usual, and installing one of
// the omitted packages for real still works. Names were checked by
// validPackage, so they need no quoting.
func omitScript(recipe string, omitted []string) string {
	return fmt.Sprintf(`set -eu
d=$(mktemp -d)
mkdir "$d/DEBIAN"
cat > "$d/DEBIAN/control" <<'EOF'
Package: sbx-omitted
Version: 1
Architecture: all
Maintainer: sbx
Priority: optional
Section: misc
Provides: %s
Description: placeholder for packages the sbx %s template leaves out
 sbx installs this empty package so that packages depending on the ones
 it provides can be installed without them.
EOF
dpkg-deb --root-owner-group --build "$d" /tmp/sbx-omitted.deb >/dev/null
dpkg -i /tmp/sbx-omitted.deb >/dev/null
rm -rf "$d" /tmp/sbx-omitted.deb
`, strings.Join(omitted, ", "), recipe)
}

// cleanupScript runs without the cache binds, so it only empties the tree.
const cleanupScript = `set -eu
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old \
	/var/lib/dpkg/*-old /var/log/apt/* /var/log/dpkg.log /var/log/alternatives.log \
	/usr/share/doc/* /usr/share/man/* /usr/share/info/* /tmp/* /var/tmp/* \
	/root/.npm /root/.cache/pip
mkdir -p /var/lib/apt/lists/partial
# Translations debootstrap unpacked before dpkg was told to skip them.
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
`

func writeMarker(dir string, info buildInfo) error {
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(dir, completeMarker)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		// The tree's files must be on disk before a marker says so.
		err = unix.Syncfs(int(f.Fd()))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// writeAptSources replaces debootstrap's one-line sources.list with the
// suite, its updates and its security pocket, so packages are installed
// with their fixes and apt inside a sandbox sees the same archives.
func writeAptSources(root string, src aptSources) error {
	dir := filepath.Join(root, "etc/apt/sources.list.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	p := filepath.Join(dir, "debian.sources")
	if err := os.WriteFile(p, []byte(src.sourcesFile(Suite)), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := os.Remove(filepath.Join(root, "etc/apt/sources.list")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove debootstrap's sources.list: %w", err)
	}
	return nil
}

// normaliseResolvConf leaves /etc/resolv.conf a world-readable regular
// file (debootstrap copies the host's, mode and all) for the runtime to
// bind over or rewrite.
func normaliseResolvConf(root string) error {
	p := filepath.Join(root, "etc/resolv.conf")
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: want a regular file (got %v)", p, err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	return nil
}

func (b *Builder) aptArchivesDir() string { return filepath.Join(b.cacheDir, ".apt-archives") }
func (b *Builder) aptListsDir() string    { return filepath.Join(b.cacheDir, ".apt-lists") }

// pruneOnce retries, once per Builder and recipe, the removal of old trees
// a build had to keep because sandboxes still used them. It skips when
// another process holds the recipe's lock (it may be building).
func (b *Builder) pruneOnce(s step) {
	if _, done := b.pruned.LoadOrStore(s.Name, true); done {
		return
	}
	f, err := os.OpenFile(filepath.Join(b.cacheDir, s.Name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return
	}
	b.prune(s)
}

// prune moves trees of older hashes of s.Name that nothing has mounted and
// no process used within keepUsed (and scratch trees of failed or crashed
// builds: prune runs under the recipe lock, so none is in progress) to the
// trash, then empties
// the trash in the background: the move is instant and atomic, so a
// half-deleted tree never sits under a name that looks complete, and the
// caller does not wait for gigabytes to be unlinked. Best effort: a
// failure only costs disk space.
func (b *Builder) prune(s step) {
	entries, err := os.ReadDir(b.cacheDir)
	if err != nil {
		return
	}
	trash := false
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), trashPrefix) {
			trash = true // left by a process that died while emptying it
			continue
		}
		n := strings.TrimPrefix(e.Name(), ".build-")
		rest, ok := strings.CutPrefix(n, s.Name+"-")
		if !ok || !isHex12(rest) || n == s.dirName() {
			continue
		}
		dir := filepath.Join(b.cacheDir, e.Name())
		if !strings.HasPrefix(e.Name(), ".build-") && usedWithin(dir, b.keepUsed) {
			b.log.Debug("keeping recently used old rootfs", "rootfs.recipe", s.Name, "dir", dir)
			continue
		}
		if err := b.moveToTrash(dir); err != nil {
			b.log.Info("keeping old rootfs", "rootfs.recipe", s.Name, "dir", dir, "reason", err)
			continue
		}
		trash = true
		b.log.Info("removing old rootfs", "rootfs.recipe", s.Name, "dir", dir)
	}
	if trash {
		go b.emptyTrash()
	}
}

// markUsed records that a tree was handed out (the marker's mtime), so
// prune in another process spares it. Best effort.
func markUsed(dir string) {
	now := time.Now()
	_ = os.Chtimes(filepath.Join(dir, completeMarker), now, now)
}

// usedWithin reports whether dir is a complete tree handed out less than d ago.
func usedWithin(dir string, d time.Duration) bool {
	fi, err := os.Stat(filepath.Join(dir, completeMarker))
	return err == nil && time.Since(fi.ModTime()) < d
}

// discard removes dir (if present and unused) without waiting for it.
func (b *Builder) discard(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := b.moveToTrash(dir); err != nil {
		return err
	}
	go b.emptyTrash()
	return nil
}

// moveToTrash renames an unused cache entry into the trash.
func (b *Builder) moveToTrash(dir string) error {
	if err := checkUnused(dir); err != nil {
		return err
	}
	to := filepath.Join(b.cacheDir, fmt.Sprintf("%s%s-%d", trashPrefix, strings.TrimPrefix(filepath.Base(dir), "."), time.Now().UnixNano()))
	if err := os.Rename(dir, to); err != nil {
		return fmt.Errorf("move %s to the trash: %w", dir, err)
	}
	return nil
}

// trashPrefix names cache entries being deleted; nothing reads them.
const trashPrefix = ".trash-"

// emptyTrash deletes every trash entry. Several processes may run it at
// once; RemoveAll tolerates entries vanishing underneath it.
func (b *Builder) emptyTrash() {
	entries, err := os.ReadDir(b.cacheDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), trashPrefix) {
			continue
		}
		if err := removeTree(filepath.Join(b.cacheDir, e.Name())); err != nil {
			b.log.Warn("empty rootfs trash", "dir", e.Name(), "err", err)
		}
	}
}

func isHex12(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// checkUnused fails when something is mounted in dir or uses a tree in it
// as an overlay layer (mountinfo lists lowerdir= paths).
func checkUnused(dir string) error {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	if strings.Contains(string(mi), dir+"/") || strings.Contains(string(mi), dir+" ") {
		return errdefs.Precondition("%s is in use (mounted, or an overlay layer of a running sandbox); stop what uses it and retry", dir)
	}
	return nil
}

// removeTree deletes dir unless something is mounted in it or uses it as
// an overlay layer: deleting through a bind mount of /dev would empty the
// host's /dev, and deleting a sandbox's lower layer would break it.
func removeTree(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := checkUnused(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// AddRecipes makes b know rs besides the built-in recipes: trees sbx
// builds for itself rather than as templates (the server image's root
// filesystem, `make image`). Call it before b is used.
func (b *Builder) AddRecipes(rs ...Recipe) {
	prev := b.lookup
	extra := map[string]Recipe{}
	for _, r := range rs {
		extra[r.Name] = r
	}
	b.lookup = func(name string) (Recipe, bool) {
		if r, ok := extra[name]; ok {
			return r, true
		}
		return prev(name)
	}
}
