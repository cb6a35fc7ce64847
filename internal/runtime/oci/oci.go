// Package oci drives OCI runtimes (crun, runc, runsc) to run sandboxes: it
// prepares each sandbox's overlay root filesystem on a size-limited tmpfs,
// writes the OCI bundle, and calls the runtime binary. Pause, resume, state
// and stats go straight to the cgroup files, which is two orders of
// magnitude faster than an exec of the runtime.
package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/resolvconf"
	"github.com/sbxdev/sbx/internal/runtime"
)

var (
	_ runtime.Driver = (*Driver)(nil)
	_ runtime.Pauser = (*Driver)(nil)
)

// Config selects the runtime and where its files live.
type Config struct {
	Runtime    string   // "crun", "runc" or "runsc"
	Binary     string   // path of the runtime; default: Runtime looked up in PATH
	StateDir   string   // the runtime's --root, e.g. <data-dir>/runtime/crun
	SandboxDir string   // <data-dir>/sandboxes
	ExtraArgs  []string // extra global flags, e.g. runsc --platform=systrap
	// UserNS runs crun and runc sandboxes in user namespaces of their own:
	// root inside is an unprivileged host user (see idrange.go). runsc
	// ignores it: gVisor is the sandbox's kernel, and root inside is not
	// root of the host kernel anyway.
	UserNS bool
	// IDLeaseDir holds the machine-wide leases of uid ranges; "" =
	// DefaultIDLeaseDir.
	IDLeaseDir string
}

// DefaultDiskMB is the writable layer's size when Resources.DiskMB is 0.
const DefaultDiskMB = 2048

// Driver implements runtime.Driver and runtime.Pauser with one OCI runtime.
type Driver struct {
	name    string
	bin     string
	version string
	global  []string // global flags put before every runtime command
	cfg     Config
	cg      cgroupLayout
	limits  hostLimits
	log     *slog.Logger

	userns bool // sandboxes get user namespaces
	ranges *idRanges
	nsc    usernsCache
	// detachedLayers: overlayfs takes idmapped layers as detached mounts
	// (found out by checkUserNS).
	detachedLayers bool
	// traversable caches directories found searchable by others (o+x):
	// sandbox roots in user namespaces must reach their bind-mount sources.
	traversable sync.Map
	bpf         bpfCache // crun's compiled seccomp filter (seccompcache.go)
	// sealed holds crun's binary in a sealed memfd that bin runs it from
	// (sealedbin.go); nil when bin is the file.
	sealed *os.File
}

// New checks the host (see PrepareHost) and the runtime binary.
func New(cfg Config, log *slog.Logger) (*Driver, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch cfg.Runtime {
	case "crun", "runc", "runsc":
	default:
		return nil, errdefs.Invalid("unknown OCI runtime %q: use crun, runc or runsc", cfg.Runtime)
	}
	if cfg.StateDir == "" || cfg.SandboxDir == "" {
		return nil, errdefs.Invalid("oci driver: StateDir and SandboxDir must both be set")
	}
	if strings.ContainsAny(cfg.SandboxDir, ",:") {
		// The overlay mount options are a comma-separated list.
		return nil, errdefs.Invalid("oci driver: SandboxDir %q must not contain ',' or ':'", cfg.SandboxDir)
	}
	bin := cfg.Binary
	if bin == "" {
		bin = cfg.Runtime
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrFailedPrecondition, err,
			"OCI runtime %q not found: install it (apt-get install %s) or set its path", bin, cfg.Runtime)
	}
	if err := PrepareHost(log); err != nil {
		return nil, errdefs.Wrap(errdefs.ErrFailedPrecondition, err, "prepare host for %s", cfg.Runtime)
	}
	cg, _ := detectCgroups() // PrepareHost already reported errors
	for _, dir := range []string{cfg.StateDir, cfg.SandboxDir} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("oci driver: create %s: %w", dir, err)
		}
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("oci driver: %s --version: %w: %s", path, err, bytes.TrimSpace(out))
	}
	profile, err := seccompProfile(defaultCaps, cfg.Runtime == "runsc")
	if err != nil {
		return nil, err
	}
	d := &Driver{
		name:    cfg.Runtime,
		bin:     path,
		version: firstLine(out),
		cfg:     cfg,
		cg:      cg,
		limits:  hostLimits{memsw: cg.memsw, nofile: nofileLimit(log), seccomp: profile},
		log:     log.With("runtime", cfg.Runtime),
		userns:  cfg.UserNS && cfg.Runtime != "runsc",
	}
	d.nsc.log = d.log
	if d.userns {
		// Sandbox roots (unprivileged host users) must reach their sandbox
		// dirs, whatever the umask made of it.
		if err := os.Chmod(cfg.SandboxDir, 0o711); err != nil {
			return nil, fmt.Errorf("oci driver: %w", err)
		}
		leaseDir := cfg.IDLeaseDir
		if leaseDir == "" {
			leaseDir = DefaultIDLeaseDir
		}
		d.ranges = &idRanges{dir: leaseDir}
		if err := d.checkUserNS(); err != nil {
			return nil, errdefs.Wrap(errdefs.ErrFailedPrecondition, err,
				"user namespaces for %s sandboxes do not work on this host", cfg.Runtime)
		}
	}
	if d.name == "crun" {
		if f, exe, err := sealedBinary(path, out); err == nil {
			d.bin, d.sealed = exe, f
		} else {
			d.log.Info("crun runs from its file: every crun command copies itself first", "err", err)
		}
	}
	d.global = globalFlags(cfg)
	d.log.Debug("oci driver ready", "binary", path, "sealed_copy", d.sealed != nil, "version", d.version, "memsw", cg.memsw, "cgroup2", cg.unified,
		"nofile", d.limits.nofile, "userns", d.userns)
	return d, nil
}

func globalFlags(cfg Config) []string {
	g := []string{"--root", cfg.StateDir}
	switch cfg.Runtime {
	case "crun":
		g = append(g, "--cgroup-manager=cgroupfs")
	case "runc":
		g = append(g, "--systemd-cgroup=false")
	case "runsc":
		g = append(g, "--systemd-cgroup=false")
		for _, def := range runscDefaults {
			flag, _, _ := strings.Cut(def, "=")
			if !slices.ContainsFunc(cfg.ExtraArgs, func(a string) bool { return a == flag || strings.HasPrefix(a, flag+"=") }) {
				g = append(g, def)
			}
		}
	}
	return append(g, cfg.ExtraArgs...)
}

// runscDefaults are added unless ExtraArgs sets the same flag.
var runscDefaults = []string{
	// Apply the config's seccomp profile inside the sandbox (ignored otherwise).
	"--oci-seccomp",
	// Root filesystem writes go to our overlay on the sandbox's tmpfs, so the
	// disk limit and Stats.DiskBytes hold (runsc's default keeps them in
	// sandbox memory).
	"--overlay2=none",
	// envd creates its unix socket in a bind mount for the host to dial.
	"--host-uds=create",
	// The KVM platform hangs on PVM hosts; systrap works everywhere.
	"--platform=systrap",
	// Honour set-user-ID bits inside (gVisor ignores them by default):
	// sudo, su and passwd are how the default user becomes root, as in an
	// E2B sandbox. Root inside gVisor is root of gVisor's kernel only.
	"--allow-suid",
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(s)
}

// Name is the runtime's name.
func (d *Driver) Name() string { return d.name }

// Identity names the runtime build and flags: a checkpoint restores only
// under the runtime that took it, so snapshots are keyed by it.
func (d *Driver) Identity() string {
	return d.name + " " + d.version + " " + strings.Join(d.global[2:], " ") // without --root DIR
}

var idRE = regexp.MustCompile(`^[a-z0-9]{1,64}$`)

func validateID(id string) error {
	if !idRE.MatchString(id) {
		return errdefs.Invalid("invalid sandbox id %q: use 1-64 characters a-z and 0-9", id)
	}
	return nil
}

func notFound(id string) error {
	return fmt.Errorf("sandbox %s: %w (%w)", id, runtime.ErrNotFound, errdefs.ErrNotFound)
}

// layout of one sandbox's host directory (see docs/architecture.md).
type sandboxPaths struct{ dir string }

func (p sandboxPaths) upperMount() string { return filepath.Join(p.dir, "upper") }
func (p sandboxPaths) upper() string      { return filepath.Join(p.dir, "upper", "upper") }
func (p sandboxPaths) work() string       { return filepath.Join(p.dir, "upper", "work") }

// rootfs is the overlay root's mount point: on the sandbox's tmpfs (not
// reachable from inside, see pidFile), so that making and removing it
// costs no inode on the data dir's disk. Sandboxes started before have it
// at legacyRootfs (unmountLayers still looks there).
func (p sandboxPaths) rootfs() string       { return filepath.Join(p.dir, "upper", "rootfs") }
func (p sandboxPaths) legacyRootfs() string { return filepath.Join(p.dir, "rootfs") }

// The sandbox dir is the OCI bundle: config.json beside the rest, not in
// a bundle/ dir of its own (one directory fewer to make and remove on the
// data dir's disk at every start). Sandboxes started before kept theirs
// in bundle/ (legacyConfig); nothing runs them from it again.
func (p sandboxPaths) bundle() string       { return p.dir }
func (p sandboxPaths) config() string       { return filepath.Join(p.dir, "config.json") }
func (p sandboxPaths) legacyConfig() string { return filepath.Join(p.dir, "bundle", "config.json") }

// etc holds the /etc/hosts and /etc/resolv.conf the host writes and binds
// into the sandbox, writable there: on the sandbox's tmpfs (outside the
// overlay's upper dir), so what the sandbox writes into them counts
// against its own disk limit and not the host's disk, and making them
// costs no inode on the host's disk at each start.
func (p sandboxPaths) etc() string        { return filepath.Join(p.dir, "upper", "etc") }
func (p sandboxPaths) handle() string     { return filepath.Join(p.dir, "handle.json") }
func (p sandboxPaths) lowerDir() string   { return filepath.Join(p.dir, "lower") }
func (p sandboxPaths) lower(i int) string { return filepath.Join(p.dir, "lower", strconv.Itoa(i)) }

// The runtime's pid file and the mount point of the sandbox's sysfs
// (prepareNetNS) are on the sandbox's tmpfs too, beside its writable
// layer, where nothing in the sandbox reaches them: no inode on the data
// dir's disk for either. The pid is read once, right after the runtime
// starts the sandbox, and kept in handle.json. Sandboxes started before
// mounted their sysfs at legacySysfs (unmountLayers still looks there).
func (p sandboxPaths) pidFile() string     { return filepath.Join(p.dir, "upper", "init.pid") }
func (p sandboxPaths) sysfs() string       { return filepath.Join(p.dir, "upper", "sys") }
func (p sandboxPaths) legacySysfs() string { return filepath.Join(p.dir, "sys") }

// initLog lives on the sandbox's tmpfs (outside the overlay's upper dir), so
// a sandbox writing endlessly to its init's stdout fills its own disk quota,
// not the host's disk.
func (p sandboxPaths) initLog() string { return filepath.Join(p.dir, "upper", "init.log") }

func (d *Driver) paths(id string) sandboxPaths {
	return sandboxPaths{dir: filepath.Join(d.cfg.SandboxDir, id)}
}

// handle is the persisted record of a started sandbox: enough to find it
// again after a restart of the server and to tell its init from a reused PID.
type handle struct {
	Runtime   string    `json:"runtime"`
	Version   string    `json:"version"`
	Pid       int       `json:"pid"`
	StartTime uint64    `json:"startTime"` // /proc/<pid>/stat field 22
	Created   time.Time `json:"created"`
	// IDs is the sandbox's user namespace range (nil: none). It is written
	// before anything else of the sandbox, so cleanup after a crash or a
	// restart releases the range.
	IDs *idRange `json:"ids,omitempty"`
}

func writeHandle(p sandboxPaths, h handle) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return os.WriteFile(p.handle(), b, 0o600)
}

func readHandle(p sandboxPaths) (handle, error) {
	var h handle
	b, err := os.ReadFile(p.handle())
	if err != nil {
		return h, err
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("parse %s: %w", p.handle(), err)
	}
	return h, nil
}

func validateSpec(s runtime.Spec) error {
	if err := validateID(s.ID); err != nil {
		return err
	}
	if len(s.Lower) == 0 {
		return errdefs.Invalid("sandbox %s: no root filesystem layer given (Spec.Lower is empty)", s.ID)
	}
	for _, l := range s.Lower {
		if !filepath.IsAbs(l) || strings.ContainsAny(l, ",:") {
			return errdefs.Invalid("sandbox %s: root filesystem layer %q must be an absolute path without ',' or ':'", s.ID, l)
		}
		if fi, err := os.Stat(l); err != nil || !fi.IsDir() {
			return errdefs.Invalid("sandbox %s: root filesystem layer %q is not a directory", s.ID, l)
		}
	}
	if len(s.Args) == 0 {
		return errdefs.Invalid("sandbox %s: no init process given (Spec.Args is empty)", s.ID)
	}
	if s.HostSocket != "" && !filepath.IsAbs(s.HostSocket) {
		return errdefs.Invalid("sandbox %s: host socket %q must be an absolute path", s.ID, s.HostSocket)
	}
	for _, kv := range s.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return errdefs.Invalid("sandbox %s: environment entry %q is not KEY=VALUE", s.ID, kv)
		}
	}
	if len(s.Hostname) > 64 {
		return errdefs.Invalid("sandbox %s: hostname %q is longer than 64 bytes", s.ID, s.Hostname)
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Target) {
			return errdefs.Invalid("sandbox %s: mount %q -> %q: both paths must be absolute", s.ID, m.Source, m.Target)
		}
		if filepath.Clean(m.Target) == "/" {
			return errdefs.Invalid("sandbox %s: mount %q cannot replace the root filesystem", s.ID, m.Source)
		}
		if _, err := os.Stat(m.Source); err != nil {
			return errdefs.Invalid("sandbox %s: mount source %q does not exist", s.ID, m.Source)
		}
	}
	r := s.Resources
	if r.CPUs < 0 || r.MemoryMB < 0 || r.PidsMax < 0 || r.DiskMB < 0 {
		return errdefs.Invalid("sandbox %s: resource limits must not be negative", s.ID)
	}
	if s.NetNS != "" && s.NetNSWait != nil {
		// Which would be joined? A caller that sets both carries a path
		// from an earlier start: it names a thread of an older server.
		return errdefs.Invalid("sandbox %s: both a network namespace path (%q) and a wait for one; give one", s.ID, s.NetNS)
	}
	if s.NetNS != "" {
		if _, err := os.Stat(s.NetNS); err != nil {
			return errdefs.Invalid("sandbox %s: network namespace %q does not exist", s.ID, s.NetNS)
		}
	}
	return nil
}

// exec prepares a runtime command. From the sealed copy, argv[0] is
// still the runtime's name (what ps shows and crun's messages say).
func (d *Driver) exec(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.bin, args...)
	if d.sealed != nil {
		cmd.Args[0] = d.name
	}
	return cmd
}

// command runs one short runtime command and returns its combined output.
func (d *Driver) command(ctx context.Context, args ...string) ([]byte, error) {
	cmd := d.exec(ctx, append(slices.Clip(d.global), args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", d.name, args[0], err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Start prepares the root filesystem, writes the bundle and runs the
// sandbox detached. On any failure it removes what it created.
func (d *Driver) Start(ctx context.Context, s runtime.Spec) (err error) {
	if err := validateSpec(s); err != nil {
		return err
	}
	p := d.paths(s.ID)
	if _, err := os.Stat(p.config()); err == nil {
		return errdefs.Exists("sandbox %s already exists", s.ID)
	}
	l := layers{lower: s.Lower, diskMB: s.Resources.DiskMB, detached: d.detachedLayers}
	defer func() {
		if err != nil {
			cctx := context.WithoutCancel(ctx)
			if _, derr := d.command(cctx, "delete", "--force", s.ID); derr != nil {
				d.log.Debug("delete after failed start", "sandbox.id", s.ID, "err", derr)
			}
			if cerr := d.removeDir(s.ID, p); cerr != nil {
				d.log.Warn("clean up after failed start", "sandbox.id", s.ID, "err", cerr)
			} else if l.ids != nil {
				// Not in a handle yet (written once the sandbox runs).
				d.ranges.release(l.ids.Slot, p.dir)
			}
		}
	}()
	tr := newPhaseTrace()
	defer func() { d.log.Debug("oci start phases", append([]any{"sandbox.id", s.ID}, tr.attrs()...)...) }()
	if d.userns {
		if l.ids, l.userns, err = d.leaseIDs(p); err != nil {
			return fmt.Errorf("start sandbox %s: %w", s.ID, err)
		}
	}
	tr.mark("userns")
	if err := mountLayers(ctx, p, l); err != nil {
		return fmt.Errorf("start sandbox %s: %w", s.ID, err)
	}
	tr.mark("mounts")
	bp, err := writeEtc(p, s, l.ids)
	if err != nil {
		return fmt.Errorf("start sandbox %s: %w", s.ID, err)
	}
	if s.Mounts, err = attachIDMapped(s.Mounts, p, l.userns); err != nil {
		return fmt.Errorf("start sandbox %s: %w", s.ID, err)
	}
	if s.NetNSWait != nil { // made until now alongside the steps above
		tr.mark("etc")
		if s.NetNS, err = s.NetNSWait(); err != nil {
			return fmt.Errorf("start sandbox %s: %w", s.ID, err)
		}
		tr.mark("netns_wait")
	}
	if bp.sysfs, err = d.prepareMounts(s, p, l.ids); err != nil {
		return fmt.Errorf("start sandbox %s: %w", s.ID, err)
	}
	tr.mark("prepare")
	spec := buildSpec(s, bp, d.limits, l.ids)
	if d.name == "crun" {
		d.bpf.annotate(spec)
	}
	if err := writeConfig(p, spec); err != nil {
		return fmt.Errorf("start sandbox %s: %w", s.ID, err)
	}
	tr.mark("config")
	if err := d.runDetached(ctx, s.ID, p, l.ids); err != nil {
		return fmt.Errorf("start sandbox %s: %w", s.ID, err)
	}
	tr.mark("run")
	if d.name == "crun" {
		d.bpf.learn(filepath.Join(d.cfg.StateDir, s.ID))
	}
	if bp.sysfs != "" {
		go dropHostSysfs(d.log, s.ID, bp.sysfs)
	}
	return nil
}

// dropHostSysfs unmounts the host's copy of a started sandbox's sysfs:
// the sandbox holds its own bind of it from then on. Every mount left in
// the host's table is copied into each new sandbox's mount namespace and
// read by crun at each start (at 250-380 sandboxes, 30% of crun's CPU
// grew with the number of host mounts, four per sandbox before this).
// Dropping a mount waits for an RCU grace period: off the start's path.
func dropHostSysfs(log *slog.Logger, id, dir string) {
	if err := unmountAll(dir); err != nil {
		log.Debug("unmount the host's copy of a sandbox's sysfs", "sandbox.id", id, "err", err)
	}
}

// leaseIDs makes the sandbox dir and leases a uid range for it. The range
// is recorded in handle.json once the sandbox runs (runDetached), not
// before: the lease file names the sandbox dir, so a range whose start a
// crash cut short is free again once that dir is gone, which the
// restarted server's cleanup of a sandbox it does not know (or the
// cleanup of a failed start) makes sure of (idRanges.lease).
func (d *Driver) leaseIDs(p sandboxPaths) (*idRange, *os.File, error) {
	if err := os.Mkdir(p.dir, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, nil, err
	}
	if err := os.Chmod(p.dir, 0o711); err != nil { // whatever the umask made of it
		return nil, nil, err
	}
	ids, err := d.ranges.take(p.dir)
	if err != nil {
		return nil, nil, err
	}
	ns, err := d.nsc.get(ids)
	if err != nil {
		return nil, nil, err
	}
	return &ids, ns, nil
}

// prepareMounts makes the bind-mount sources usable by the sandbox's root:
// Owned ones become its own, and in a user namespace every source must be
// reachable by an unprivileged host user. It readies the network namespace
// too (prepareNetNS) and returns where it mounted the sandbox's sysfs, if
// it did.
func (d *Driver) prepareMounts(s runtime.Spec, p sandboxPaths, ids *idRange) (sysfs string, err error) {
	if s.NetNS != "" {
		if ids != nil {
			sysfs = p.sysfs()
		}
		if err := prepareNetNS(s.NetNS, sysfs); err != nil {
			return "", err
		}
	}
	if ids == nil {
		return sysfs, nil
	}
	for _, m := range s.Mounts {
		if m.Owned {
			if err := chownTree(m.Source, int(ids.UID), int(ids.GID)); err != nil {
				return "", fmt.Errorf("give mount source %s to the sandbox's root: %w", m.Source, err)
			}
		}
		if err := d.checkTraversable(m.Source, ids); err != nil {
			return "", err
		}
	}
	return sysfs, d.checkTraversable(p.rootfs(), ids)
}

// writeEtc writes the sandbox's /etc/hosts and /etc/resolv.conf, bind
// mounted over the template's. They belong to the sandbox's root, which may
// edit them as it could in a VM.
func writeEtc(p sandboxPaths, s runtime.Spec, ids *idRange) (bp bundlePaths, err error) {
	bp = bundlePaths{rootfs: p.rootfs(), hosts: filepath.Join(p.etc(), "hosts")}
	if err := os.MkdirAll(p.etc(), 0o755); err != nil {
		return bp, err
	}
	hostname := s.Hostname
	if hostname == "" {
		hostname = s.ID
	}
	if err := os.WriteFile(bp.hosts, hostsFile(hostname), 0o644); err != nil {
		return bp, err
	}
	// The sandbox firewall opens DNS to exactly these servers (internal/network).
	if rc, _ := resolvconf.Load(); rc != nil {
		bp.resolvConf = filepath.Join(p.etc(), "resolv.conf")
		if err := os.WriteFile(bp.resolvConf, rc, 0o644); err != nil {
			return bp, err
		}
	}
	if ids != nil {
		return bp, chownTree(p.etc(), int(ids.UID), int(ids.GID))
	}
	return bp, nil
}

func writeConfig(p sandboxPaths, spec any) error {
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode config.json: %w", err)
	}
	return os.WriteFile(p.config(), b, 0o600)
}

// runDetached runs `<runtime> run --detach`: one exec instead of create +
// start. The runtime's (and then the init's) stdio goes to a file: with
// pipes the caller would block until the sandbox exits.
func (d *Driver) runDetached(ctx context.Context, id string, p sandboxPaths, ids *idRange) error {
	logf, err := os.OpenFile(p.initLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := append(slices.Clip(d.global), "run", "--detach", "--bundle", p.bundle(), "--pid-file", p.pidFile(), id)
	cmd := d.exec(ctx, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s run: %w: %s", d.name, err, tail(p.initLog(), 2048))
	}
	pid, err := readPid(p.pidFile())
	if err != nil {
		return err
	}
	st, err := procStartTime(pid)
	if err != nil {
		return fmt.Errorf("init process %d exited right after start: %s", pid, tail(p.initLog(), 2048))
	}
	return writeHandle(p, handle{Runtime: d.name, Version: d.version, Pid: pid, StartTime: st, Created: time.Now().UTC(), IDs: ids})
}

// OpenOutput opens the init's stdout and stderr (runDetached's log): a file
// on the sandbox's tmpfs beside, not in, its writable layer, so nothing in
// the sandbox can replace it.
func (d *Driver) OpenOutput(id string) (*os.File, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(d.paths(id).initLog(), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, notFound(id)
	}
	return f, err
}

var _ runtime.Output = (*Driver)(nil)

func tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no runtime output)"
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(bytes.TrimSpace(b))
}

// Delete kills the sandbox, removes it from the runtime and removes its
// directory. It also cleans up leftovers the runtime no longer knows about
// (a crash between start and delete, a lost --root after a reboot).
func (d *Driver) Delete(ctx context.Context, id string) error {
	if err := validateID(id); err != nil {
		return err
	}
	p := d.paths(id)
	_, dirErr := os.Stat(p.dir)
	known := d.runtimeKnows(id)
	if dirErr != nil && !known {
		return notFound(id)
	}
	// Frozen tasks cannot die; thaw first (a no-op when not paused).
	_ = d.writeFreezer(id, "THAWED")
	// forgetCrun has just killed and removed the cgroups: a second pass
	// would only look up a dozen missing dirs.
	forgot := known && d.forgetCrun(id)
	if known && !forgot {
		if _, err := d.command(ctx, "delete", "--force", id); err != nil && d.runtimeKnows(id) {
			return fmt.Errorf("delete sandbox %s: %w", id, err)
		}
	}
	if !forgot {
		if err := d.killCgroup(id); err != nil {
			return fmt.Errorf("delete sandbox %s: %w", id, err)
		}
	}
	if err := d.removeDir(id, p); err != nil {
		return fmt.Errorf("delete sandbox %s: %w", id, err)
	}
	return nil
}

// forgetCrun does what `crun delete --force` does for our containers,
// without the exec (crun linking itself and its libraries, on every
// teardown): kill whatever is left in the sandbox's cgroups, remove them,
// and remove crun's state dir (<root>/<id>: status, config.json,
// seccomp.bpf), which is all crun keeps of a container. Our specs have
// no hooks to run. It reports false, leaving the rest to crun, for other
// runtimes or when a step fails.
func (d *Driver) forgetCrun(id string) bool {
	if d.name != "crun" {
		return false
	}
	if err := d.killCgroup(id); err != nil {
		d.log.Debug("delete without crun: cgroups", "sandbox.id", id, "err", err)
		return false
	}
	if err := os.RemoveAll(filepath.Join(d.cfg.StateDir, id)); err != nil {
		d.log.Debug("delete without crun: state dir", "sandbox.id", id, "err", err)
		return false
	}
	return true
}

// runtimeKnows reports whether the runtime has state for id. crun and runc
// keep a directory per container under --root; runsc keeps files named
// after the container.
func (d *Driver) runtimeKnows(id string) bool {
	if d.name != "runsc" {
		_, err := os.Stat(filepath.Join(d.cfg.StateDir, id))
		return err == nil
	}
	matches, _ := filepath.Glob(filepath.Join(d.cfg.StateDir, "*"+id+"*"))
	return len(matches) > 0
}

func (d *Driver) removeDir(id string, p sandboxPaths) error {
	h, _ := readHandle(p)
	if err := unmountLayers(p); err != nil {
		return err
	}
	if err := os.RemoveAll(p.dir); err != nil {
		return fmt.Errorf("remove %s: %w", p.dir, err)
	}
	if h.IDs != nil && d.ranges != nil {
		d.ranges.release(h.IDs.Slot, p.dir)
	}
	return nil
}

// State reports the sandbox's status from its init PID and its freezer
// (runsc: its pause marker), without an exec of the runtime.
func (d *Driver) State(ctx context.Context, id string) (runtime.Status, error) {
	if err := validateID(id); err != nil {
		return "", err
	}
	p := d.paths(id)
	if d.checkpointed(p) {
		return runtime.StatusCheckpointed, nil
	}
	h, err := readHandle(p)
	if err != nil {
		if _, serr := os.Stat(p.dir); serr != nil && !d.runtimeKnows(id) {
			return "", notFound(id)
		}
		if errors.Is(err, os.ErrNotExist) {
			return runtime.StatusStopped, nil // starting, or a failed start's leftovers
		}
		return "", err
	}
	if st, err := procStartTime(h.Pid); err != nil || st != h.StartTime {
		return runtime.StatusStopped, nil
	}
	if d.paused(p, id) {
		return runtime.StatusPaused, nil
	}
	return runtime.StatusRunning, nil
}

// List returns the sandboxes in SandboxDir that belong to this runtime (or
// whose start never got far enough to say), so a restarted server can
// reattach to them or clean them up.
func (d *Driver) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(d.cfg.SandboxDir)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	ids := []string{}
	for _, e := range entries {
		if !e.IsDir() || validateID(e.Name()) != nil {
			continue
		}
		h, err := readHandle(d.paths(e.Name()))
		if err == nil && h.Runtime != d.name {
			continue
		}
		ids = append(ids, e.Name())
	}
	return ids, nil
}
