package builder

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
)

// Driver is the part of the runtime driver a build needs. Drivers that
// implement runtime.LayerCapturer save step layers (required with user
// namespaces: the sandbox wrote host ids, a layer holds the image's).
type Driver interface {
	Start(ctx context.Context, spec runtime.Spec) error
	Delete(ctx context.Context, id string) error
}

// Network gives build sandboxes internet access (RUN apt-get install ...).
type Network interface {
	Setup(ctx context.Context, id string, allowInternet bool) (nsPath string, err error)
	Teardown(ctx context.Context, id string) error
}

// Files finds the uploaded files of a COPY step by its files hash: a
// directory holding them at their paths relative to the build context.
type Files interface {
	Dir(ctx context.Context, hash string) (string, error)
}

// Config is the executor's part of the server configuration.
type Config struct {
	DataDir    string // layers live in <DataDir>/layers, scratch space in <DataDir>/build
	SandboxDir string // the runtime driver's sandbox dir: <SandboxDir>/<id>/upper/upper is a sandbox's writable layer
	DiskMB     int    // writable layer size of a build sandbox; 0 = 8192
	// StepTimeout bounds one RUN or COPY step; 0 = 30 minutes.
	StepTimeout time.Duration
	// ReadyTimeout bounds waiting for the ready command; 0 = 2 minutes.
	ReadyTimeout time.Duration
}

// Executor runs build plans.
type Executor struct {
	cfg Config
	log *slog.Logger
	drv Driver
	net Network
}

// NewExecutor returns an executor; it creates its directories lazily.
func NewExecutor(cfg Config, log *slog.Logger, drv Driver, netw Network) *Executor {
	if cfg.DiskMB == 0 {
		cfg.DiskMB = 8192
	}
	if cfg.StepTimeout == 0 {
		cfg.StepTimeout = 30 * time.Minute
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 2 * time.Minute
	}
	// Scratch dirs of builds a previous process was running are garbage
	// (their build sandboxes are removed by the manager's recovery).
	if err := os.RemoveAll(filepath.Join(cfg.DataDir, "build")); err != nil {
		log.Warn("remove stale build scratch space", "err", err)
	}
	return &Executor{cfg: cfg, log: log, drv: drv, net: netw}
}

// LayersDir is where cached layers live, one directory per cache key.
func (e *Executor) LayersDir() string { return filepath.Join(e.cfg.DataDir, "layers") }

// Base is what a build starts from.
type Base struct {
	Key     string   // identifies the base's content; part of every cache key
	Layers  []string // read-only layers, topmost first (the last is a full root filesystem)
	User    string   // default user of the base
	Workdir string
	Env     map[string]string
}

// Request is one build.
type Request struct {
	Base     Base
	Steps    []Step
	Files    Files
	Force    bool // rebuild every step (E2B's force / skipCache)
	StartCmd string
	ReadyCmd string
	// SkipStartCheck leaves the start and ready commands to the caller,
	// which checks them itself (the template snapshot starts them anyway).
	SkipStartCheck bool
	Progress       func(Progress) // may be nil
}

// Progress is one log line of a build.
type Progress struct {
	Step    int // 1-based step index; 0 for the base and finalize phases
	Total   int
	Message string
	Level   string // "info" or "error"
	Cached  bool
}

// Result is a finished build.
type Result struct {
	Layers  []string // topmost first, ending with the base's layers
	User    string
	Workdir string
	Env     map[string]string
	Keys    []string // cache key after every step
	Cached  int      // steps served from the cache
	Built   int      // steps executed
}

// StepError is a failed build step; Step is 1-based, 0 for finalize.
type StepError struct {
	Step     int
	What     string
	ExitCode int
	Output   string // last lines of the step's output
	Err      error
}

func (e *StepError) Error() string {
	where := "finalize"
	if e.Step > 0 {
		where = fmt.Sprintf("step %d", e.Step)
	}
	msg := fmt.Sprintf("%s (%s) failed", where, e.What)
	if e.ExitCode != 0 {
		msg += fmt.Sprintf(" with exit code %d", e.ExitCode)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Output != "" {
		msg += "\noutput:\n" + e.Output
	}
	return msg
}

func (e *StepError) Unwrap() error { return e.Err }

// state is the build's view of ENV, USER and WORKDIR as steps change them.
type state struct {
	user, workdir string
	env           map[string]string
	explicitUser  bool
	explicitDir   bool
}

func chainKey(parent string, parts ...string) string {
	h := sha256.New()
	h.Write([]byte(parent))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// Build runs the steps, reusing cached layers, and returns the layer stack.
func (e *Executor) Build(ctx context.Context, req Request) (*Result, error) {
	logf := func(p Progress) {
		if p.Level == "" {
			p.Level = "info"
		}
		p.Total = len(req.Steps)
		if req.Progress != nil {
			req.Progress(p)
		}
	}
	if len(req.Base.Layers) == 0 {
		return nil, errdefs.Invalid("build has no base layers")
	}
	if err := os.MkdirAll(e.LayersDir(), 0o755); err != nil {
		return nil, fmt.Errorf("create layers dir: %w", err)
	}
	st := state{user: req.Base.User, workdir: req.Base.Workdir, env: map[string]string{}}
	for k, v := range req.Base.Env {
		st.env[k] = v
	}
	if st.workdir == "" {
		st.workdir = "/"
	}
	res := &Result{}
	layers := append([]string(nil), req.Base.Layers...)
	key := chainKey("base", req.Base.Key)
	force := req.Force
	for i, s := range req.Steps {
		n := i + 1
		t0 := time.Now()
		desc, _ := json.Marshal(struct {
			T string   `json:"t"`
			A []string `json:"a"`
			H string   `json:"h,omitempty"`
		}{s.Type, s.Args, s.FilesHash})
		key = chainKey(key, string(desc))
		res.Keys = append(res.Keys, key)
		layerStep, err := e.apply(&st, s, n, isPrologue(req.Steps, i))
		if err != nil {
			return nil, err
		}
		if !layerStep {
			logf(Progress{Step: n, Message: fmt.Sprintf("[%d/%d] %s", n, len(req.Steps), s)})
			continue
		}
		force = force || s.Force
		if force {
			// A forced step gets a fresh key (and so does every later step),
			// so the layers running sandboxes use are never replaced.
			key = chainKey(key, "force", randHex(8))
			res.Keys[len(res.Keys)-1] = key
		}
		dir := filepath.Join(e.LayersDir(), key)
		if !force && layerComplete(dir) {
			// Mark the layer used: pruning removes only layers idle for long.
			now := time.Now()
			_ = os.Chtimes(filepath.Join(dir, "complete"), now, now)
			res.Cached++
			logf(Progress{Step: n, Cached: true, Message: fmt.Sprintf("[%d/%d] CACHED %s", n, len(req.Steps), s)})
		} else {
			logf(Progress{Step: n, Message: fmt.Sprintf("[%d/%d] %s", n, len(req.Steps), s)})
			if err := e.runStep(ctx, n, s, st, layers, dir, req.Files, func(line string) {
				logf(Progress{Step: n, Message: line})
			}); err != nil {
				return nil, err
			}
			res.Built++
			logf(Progress{Step: n, Message: fmt.Sprintf("[%d/%d] done in %s", n, len(req.Steps), time.Since(t0).Round(time.Millisecond))})
		}
		if !layerEmpty(dir) {
			layers = append([]string{filepath.Join(dir, "diff")}, layers...)
		}
	}
	res.Layers, res.User, res.Workdir, res.Env = layers, st.user, st.workdir, st.env
	if !st.explicitUser {
		res.User = req.Base.User
	}
	if !st.explicitDir {
		res.Workdir = req.Base.Workdir
	}
	if req.StartCmd != "" && !req.SkipStartCheck {
		if err := e.finalize(ctx, req, res, key, force, logf); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// apply updates the build state for a step and reports whether the step
// produces a layer (RUN, COPY, WORKDIR of a new directory).
func (e *Executor) apply(st *state, s Step, n int, prologue bool) (bool, error) {
	bad := func(format string, a ...any) error {
		return &StepError{Step: n, What: s.String(), Err: errdefs.Invalid(format, a...)}
	}
	switch s.Type {
	case StepEnv:
		if len(s.Args)%2 != 0 || len(s.Args) == 0 {
			return false, bad("ENV needs key/value pairs")
		}
		for i := 0; i < len(s.Args); i += 2 {
			if s.Args[i] == "" || strings.ContainsAny(s.Args[i], "=\x00") {
				return false, bad("invalid environment variable name %q", s.Args[i])
			}
			st.env[s.Args[i]] = s.Args[i+1]
		}
		return false, nil
	case StepUser:
		if len(s.Args) < 1 || s.Args[0] == "" {
			return false, bad("USER needs a user name")
		}
		st.user, st.explicitUser = s.Args[0], !prologue || st.explicitUser
		return false, nil
	case StepWorkdir:
		if len(s.Args) < 1 || s.Args[0] == "" {
			return false, bad("WORKDIR needs a path")
		}
		dir := s.Args[0]
		if !path.IsAbs(dir) {
			dir = path.Join(st.workdir, dir)
		}
		st.workdir, st.explicitDir = path.Clean(dir), !prologue || st.explicitDir
		return st.workdir != "/", nil
	case StepRun:
		if len(s.Args) < 1 || strings.TrimSpace(s.Args[0]) == "" {
			return false, bad("RUN needs a command")
		}
		return true, nil
	case StepCopy, StepAdd:
		if len(s.Args) < 2 || s.Args[0] == "" || s.Args[1] == "" {
			return false, bad("%s needs a source and a destination", s.Type)
		}
		if s.FilesHash == "" {
			return false, bad("%s step has no filesHash; upload its files first (GET /templates/{id}/files/{hash})", s.Type)
		}
		if err := checkContextPath(s.Args[0]); err != nil {
			return false, bad("%v", err)
		}
		return true, nil
	}
	return false, bad("unsupported step type %q; use RUN, COPY, ADD, ENV, WORKDIR or USER", s.Type)
}

// isPrologue reports whether step i is part of the "USER root, WORKDIR /"
// pair a Dockerfile import starts with (sbx's parser and the E2B SDK's both
// emit it). It sets Docker's build-time defaults; unlike USER and WORKDIR
// the Dockerfile itself says, it does not change the template's default
// user and directory, which stay the base's (user, /home/user).
func isPrologue(steps []Step, i int) bool {
	if len(steps) < 2 || i > 1 {
		return false
	}
	return steps[0].Type == StepUser && len(steps[0].Args) > 0 && steps[0].Args[0] == "root" &&
		steps[1].Type == StepWorkdir && len(steps[1].Args) > 0 && steps[1].Args[0] == "/"
}

func layerComplete(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "complete"))
	return err == nil
}

func layerEmpty(dir string) bool {
	ents, err := os.ReadDir(filepath.Join(dir, "diff"))
	return err == nil && len(ents) == 0
}

// stepUser returns the user a RUN/COPY runs as: the step's own or the state's.
func stepUser(st state, s Step, idx int) string {
	if len(s.Args) > idx && s.Args[idx] != "" {
		return s.Args[idx]
	}
	return st.user
}

// runStep executes one layer step in a build sandbox and stores its
// writable layer as the layer directory dir.
func (e *Executor) runStep(ctx context.Context, n int, s Step, st state, layers []string, dir string, files Files, line func(string)) error {
	scratch, err := os.MkdirTemp(filepath.Join(e.cfg.DataDir, "build"), "step-")
	if err != nil {
		if err := os.MkdirAll(filepath.Join(e.cfg.DataDir, "build"), 0o755); err != nil {
			return err
		}
		if scratch, err = os.MkdirTemp(filepath.Join(e.cfg.DataDir, "build"), "step-"); err != nil {
			return err
		}
	}
	defer os.RemoveAll(scratch)
	var user, cmd string
	switch s.Type {
	case StepRun:
		user, cmd = stepUser(st, s, 1), s.Args[0]
	case StepWorkdir:
		user = "root"
		cmd = `[ -d "$SBX_DIR" ] || { mkdir -p -- "$SBX_DIR" && { [ "$SBX_OWNER" = root ] || chown -- "$SBX_OWNER" "$SBX_DIR"; }; }`
		st.env = withEnv(st.env, "SBX_DIR", st.workdir, "SBX_OWNER", ownerSpec(st.user))
	case StepCopy, StepAdd:
		src, err := files.Dir(ctx, s.FilesHash)
		if err != nil {
			return &StepError{Step: n, What: s.String(), Err: err}
		}
		var lim *unpackLimits
		if s.Type == StepAdd {
			// Unpacked content lands in the build sandbox's writable
			// layer, which the disk limit bounds anyway: fail early and clearly.
			lim = &unpackLimits{maxBytes: int64(e.cfg.DiskMB) << 20, maxEntries: MaxUnpackEntries}
		}
		single, err := stage(src, s.Args[0], filepath.Join(scratch, "stage"), lim, line)
		if err != nil {
			return &StepError{Step: n, What: s.String(), Err: err}
		}
		mode := ""
		if len(s.Args) > 3 {
			mode = s.Args[3]
		}
		user, cmd = "root", copyScript
		st.env = withEnv(st.env, "SBX_DEST", s.Args[1], "SBX_OWNER", ownerSpec(stepUser(st, s, 2)),
			"SBX_MODE", mode, "SBX_SINGLE", single)
	}
	id := "build" + randHex(6)
	code, out, err := e.exec(ctx, id, scratch, layers, st, user, cmd, e.cfg.StepTimeout, line, func() error {
		return e.capture(ctx, id, dir, s)
	})
	if err != nil {
		return &StepError{Step: n, What: s.String(), Err: err, Output: out}
	}
	if code != 0 {
		return &StepError{Step: n, What: s.String(), ExitCode: code, Output: out}
	}
	return nil
}

func withEnv(env map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(env)+len(kv)/2)
	for k, v := range env {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// ownerSpec turns "user" or "user:group" into chown's argument; a bare
// user means its login group.
func ownerSpec(u string) string {
	if u == "" || u == "root" || u == "0" {
		return "root"
	}
	if strings.Contains(u, ":") {
		return u
	}
	return u + ":"
}

// copyScript merges the staged files into the destination inside the build
// sandbox, where user and group names resolve against the image's own
// /etc/passwd and symlinked directories (/bin -> usr/bin) behave as they do
// at run time.
const copyScript = `set -e
stage=/.sbx/build/stage
dest="$SBX_DEST"
case "$dest" in */) destdir="$dest" ;; *)
  if [ -n "$SBX_SINGLE" ] && [ ! -d "$dest" ]; then
    destdir=$(dirname -- "$dest"); name=$(basename -- "$dest")
    if [ "$SBX_SINGLE" != "$name" ]; then mv -- "$stage/$SBX_SINGLE" "$stage/$name"; fi
  else destdir="$dest"; fi ;;
esac
created=
[ -d "$destdir" ] || { mkdir -p -- "$destdir"; created=1; }
chown -R -h -- "$SBX_OWNER" "$stage"
if [ -n "$created" ] && [ "$SBX_OWNER" != root ]; then chown -- "$SBX_OWNER" "$destdir"; fi
if [ -n "$SBX_MODE" ]; then find "$stage" -mindepth 1 ! -type l -exec chmod "$SBX_MODE" {} +; fi
tar -C "$stage" -cf - . | tar -C "$destdir" -xpf - --no-overwrite-dir
n=$(find "$stage" -mindepth 1 | wc -l)
echo "copied $n entries to $destdir"
`

// stage copies what src (a path or glob relative to the context) matches
// from the upload dir into stageDir, the way Docker's COPY lays it out:
// a directory's contents, or files by their base name. It returns the base
// name when exactly one file matched (so the destination may rename it).
// With unpack (ADD), a matched file that is a tar archive is unpacked
// into stageDir instead.
func stage(root, src, stageDir string, unpack *unpackLimits, note func(string)) (single string, err error) {
	if err := os.MkdirAll(stageDir, 0o755); err != nil {
		return "", err
	}
	rel := strings.TrimPrefix(path.Clean("/"+src), "/")
	pattern := filepath.Join(root, filepath.FromSlash(rel))
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return "", errdefs.Invalid("bad source pattern %q: %v", src, err)
	}
	if rel == "" {
		matches = []string{root}
	}
	if len(matches) == 0 {
		return "", errdefs.Invalid("COPY source %q matches no file in the build context (check the path and .dockerignore)", src)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", err
	}
	for _, m := range matches {
		if r, err := filepath.EvalSymlinks(filepath.Dir(m)); err != nil || !within(realRoot, r) {
			return "", errdefs.Invalid("COPY source %q leaves the build context through a symlink", src)
		}
		fi, err := os.Lstat(m)
		if err != nil {
			return "", err
		}
		if unpack != nil && fi.Mode().IsRegular() {
			if done, err := unpackMatch(m, stageDir, *unpack, note); err != nil || done {
				if err != nil {
					return "", err
				}
				continue
			}
		}
		from, to := m, filepath.Join(stageDir, filepath.Base(m))
		if fi.IsDir() {
			from, to = m+"/.", stageDir
		} else if len(matches) == 1 {
			single = filepath.Base(m)
		}
		if out, err := exec.Command("cp", "-a", "--", from, to).CombinedOutput(); err != nil {
			return "", fmt.Errorf("stage %s: %w: %s", m, err, out)
		}
	}
	return single, nil
}

func within(root, p string) bool {
	return p == root || strings.HasPrefix(p, root+string(filepath.Separator))
}

// runScript is the init process of a build sandbox: it runs one command as
// a user in a directory, writes the exit code to /.sbx/build/exit, and then
// stays alive until the executor captured the writable layer and deletes
// the sandbox (an init that exits at once could race the runtime's start).
const runScript = `exec </dev/null >>/.sbx/build/log 2>&1
finish() { echo "$1" >/.sbx/build/exit.tmp && mv /.sbx/build/exit.tmp /.sbx/build/exit; while :; do sleep 3600; done; }
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

// exec starts a build sandbox over layers, runs cmd, streams its output,
// and calls capture (if the command succeeded) before deleting the sandbox.
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
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	keys := make([]string, 0, len(st.env))
	for k := range st.env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+st.env[k])
	}
	env = append(env, "SBX_USER="+user, "SBX_WORKDIR="+st.workdir, "SBX_CMD="+cmd, "DEBIAN_FRONTEND=noninteractive")
	spec := runtime.Spec{
		ID: id, Lower: layers, Hostname: "sbx-build",
		Args: []string{"/bin/sh", "-c", runScript}, Env: env, Cwd: "/",
		// Owned: root in the build sandbox writes its log and exit code
		// there, and chowns staged COPY files.
		Mounts:    []runtime.Mount{{Source: scratch, Target: "/.sbx/build", Owned: true}},
		Resources: runtime.Resources{PidsMax: 4096, DiskMB: e.cfg.DiskMB},
		NetNS:     nsPath,
	}
	if err := e.drv.Start(ctx, spec); err != nil {
		return 0, "", fmt.Errorf("start build sandbox: %w", err)
	}
	defer func() {
		if derr := e.drv.Delete(context.WithoutCancel(ctx), id); derr != nil {
			e.log.Warn("delete build sandbox", "sandbox.id", id, "err", derr)
		}
	}()
	tail := &tailer{path: filepath.Join(scratch, "log"), line: line}
	exitFile := filepath.Join(scratch, "exit")
	delay := 5 * time.Millisecond
	for {
		tail.poll()
		if b, err := os.ReadFile(exitFile); err == nil {
			tail.poll()
			tail.flush()
			code, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			break
		}
		select {
		case <-ctx.Done():
			tail.flush()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return 0, tail.last(), fmt.Errorf("timed out after %s", timeout)
			}
			return 0, tail.last(), ctx.Err()
		case <-time.After(delay):
		}
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
	if code == 0 && capture != nil {
		if err := capture(); err != nil {
			return 0, tail.last(), fmt.Errorf("store layer: %w", err)
		}
	}
	return code, tail.last(), nil
}

// capture copies the build sandbox's writable layer (overlay upper dir,
// whiteouts and opaque-dir xattrs included) into the layer directory.
func (e *Executor) capture(ctx context.Context, id, dir string, s Step) error {
	tmp := dir + ".tmp-" + randHex(4)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if c, ok := e.drv.(runtime.LayerCapturer); ok {
		// The driver copies the writable layer with the image's ids (user
		// namespaces shift them on the host).
		if err := c.CaptureLayer(ctx, id, filepath.Join(tmp, "diff")); err != nil {
			return err
		}
	} else {
		upper := filepath.Join(e.cfg.SandboxDir, id, "upper", "upper")
		// cp -a keeps owners, modes, hard links, device nodes (whiteouts are
		// 0/0 character devices) and trusted.* xattrs (opaque directories).
		if out, err := exec.Command("cp", "-a", "--", upper, filepath.Join(tmp, "diff")).CombinedOutput(); err != nil {
			return fmt.Errorf("copy %s: %w: %s", upper, err, out)
		}
	}
	// Mount points the runtime created for the build are not content.
	if err := os.RemoveAll(filepath.Join(tmp, "diff", ".sbx")); err != nil {
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

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
