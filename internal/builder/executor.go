package builder

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
	"github.com/sbxdev/sbx/internal/runtime"
)

// Driver is the part of the runtime driver a build needs: a build reads
// the step's output from the driver (runtime.Output), never from a file in
// a directory the step can write, and reads the cgroup counters to say
// which limit a failed step hit.
type Driver interface {
	Start(ctx context.Context, spec runtime.Spec) error
	Delete(ctx context.Context, id string) error
	State(ctx context.Context, id string) (runtime.Status, error)
	Stats(ctx context.Context, id string) (runtime.Stats, error)
	runtime.Output
	runtime.Pauser
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
	Limits     Limits
	// ReadyTimeout bounds waiting for the ready command; 0 = 2 minutes.
	ReadyTimeout time.Duration
	// StartGrace is how long a start command must keep running after it
	// started for the build to pass; 0 = DefaultStartGrace.
	StartGrace time.Duration
}

// DefaultStartGrace is the default Config.StartGrace: long enough for a
// missing program, a bad flag or a crash at import time to show, short
// enough not to slow every build down.
const DefaultStartGrace = 2 * time.Second

// Limits bound every build sandbox, so no team's build can exhaust the
// host. Each is a `sbx serve` flag, which a step that hits it names.
type Limits struct {
	// MemoryMB caps memory, the step's writable layer included (it is a
	// tmpfs, charged to the step's memory cgroup): --build-memory.
	MemoryMB int
	CPUs     float64 // --build-cpus
	PidsMax  int     // --build-pids
	// DiskMB sizes the writable layer of one step: --build-disk.
	DiskMB int
	// StepTimeout bounds one RUN, COPY or ADD step: --build-step-timeout.
	StepTimeout time.Duration
}

// DefaultLimits are the limits of a build sandbox unless configured.
var DefaultLimits = Limits{MemoryMB: 4096, CPUs: 2, PidsMax: 4096, DiskMB: 4096, StepTimeout: 30 * time.Minute}

// withDefaults fills unset limits from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MemoryMB == 0 {
		l.MemoryMB = d.MemoryMB
	}
	if l.CPUs == 0 {
		l.CPUs = d.CPUs
	}
	if l.PidsMax == 0 {
		l.PidsMax = d.PidsMax
	}
	if l.DiskMB == 0 {
		l.DiskMB = d.DiskMB
	}
	if l.StepTimeout == 0 {
		l.StepTimeout = d.StepTimeout
	}
	return l
}

// Validate checks limits given on the command line.
func (l Limits) Validate() error {
	switch {
	case l.MemoryMB < 0 || (l.MemoryMB > 0 && l.MemoryMB < 64):
		return fmt.Errorf("--build-memory %d: want at least 64 (MiB)", l.MemoryMB)
	case l.CPUs < 0:
		return fmt.Errorf("--build-cpus %g: want a positive number of CPUs", l.CPUs)
	case l.PidsMax < 0 || (l.PidsMax > 0 && l.PidsMax < 32):
		return fmt.Errorf("--build-pids %d: want at least 32", l.PidsMax)
	case l.DiskMB < 0 || (l.DiskMB > 0 && l.DiskMB < 64):
		return fmt.Errorf("--build-disk %d: want at least 64 (MiB)", l.DiskMB)
	case l.StepTimeout < 0:
		return fmt.Errorf("--build-step-timeout %v: want a positive duration", l.StepTimeout)
	}
	return nil
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
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 2 * time.Minute
	}
	if cfg.StartGrace == 0 {
		cfg.StartGrace = DefaultStartGrace
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

// Summary is the client's message without the step's output, for a log
// that showed the output as it came.
func (e *StepError) Summary() string {
	c := *e
	c.Output = ""
	return c.ClientMessage()
}

// StepError is a failed build step; Step is 1-based, 0 for finalize.
type StepError struct {
	Step     int
	Line     int // the step's Dockerfile line when the build names steps by line
	What     string
	ExitCode int
	Output   string // last lines of the step's output
	Err      error
}

// Error is the full text, for the server log: Err's host paths included.
func (e *StepError) Error() string {
	cause := ""
	if e.Err != nil {
		cause = e.Err.Error()
	}
	return e.text(cause)
}

// ClientMessage is the text a tenant reads in the build's status and log:
// Err as errdefs lets a client see it (its message, or a pointer to the
// server log for an internal error), never the host paths in its chain
// (the upload, scratch and layer directories). The step's output is the
// tenant's own, so it stays.
func (e *StepError) ClientMessage() string {
	cause := ""
	if e.Err != nil {
		cause = errdefs.Message(e.Err)
	}
	return e.text(cause)
}

func (e *StepError) text(cause string) string {
	where := "finalize"
	switch {
	case e.Line > 0:
		where = fmt.Sprintf("Dockerfile line %d", e.Line)
	case e.Step > 0:
		where = fmt.Sprintf("step %d", e.Step)
	}
	msg := fmt.Sprintf("%s (%s) failed", where, e.What)
	if e.ExitCode != 0 {
		msg += fmt.Sprintf(" with exit code %d", e.ExitCode)
	}
	if cause != "" {
		msg += ": " + cause
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
	byLine := stepsHaveLines(req.Steps)
	label := func(n int, s Step) string {
		if byLine {
			return fmt.Sprintf("[line %d]", s.Line)
		}
		return fmt.Sprintf("[%d/%d]", n, len(req.Steps))
	}
	for i, s := range req.Steps {
		n := i + 1
		t0 := time.Now()
		onLine := func(err error) error {
			var se *StepError
			if byLine && errors.As(err, &se) && se.Step == n {
				se.Line = s.Line
			}
			return err
		}
		desc, _ := json.Marshal(struct {
			T string   `json:"t"`
			A []string `json:"a"`
			H string   `json:"h,omitempty"`
		}{s.Type, s.Args, s.FilesHash})
		key = chainKey(key, string(desc))
		res.Keys = append(res.Keys, key)
		prologue := isPrologue(req.Steps, i)
		layerStep, err := e.apply(&st, s, n, prologue)
		if err != nil {
			return nil, onLine(err)
		}
		if !layerStep {
			// A Dockerfile's FROM implies the prologue (USER root, WORKDIR
			// /): the user did not write it, so it is not listed.
			if !byLine || !prologue {
				logf(Progress{Step: n, Message: label(n, s) + " " + s.String()})
			}
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
			logf(Progress{Step: n, Cached: true, Message: label(n, s) + " CACHED " + s.String()})
		} else {
			logf(Progress{Step: n, Message: label(n, s) + " " + s.String()})
			if err := e.runStep(ctx, n, s, st, layers, dir, req.Files, func(line string) {
				logf(Progress{Step: n, Message: line})
			}); err != nil {
				return nil, onLine(err)
			}
			res.Built++
			logf(Progress{Step: n, Message: fmt.Sprintf("%s done in %s", label(n, s), time.Since(t0).Round(time.Millisecond))})
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
// stepsHaveLines reports whether every step names its Dockerfile line,
// as the steps of sbx's own Dockerfile import do.
func stepsHaveLines(steps []Step) bool {
	for _, s := range steps {
		if s.Line <= 0 {
			return false
		}
	}
	return len(steps) > 0
}

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

// layerEmpty tells whether a step's layer holds nothing. The layer is what
// the tenant's RUN wrote, so only its first name is read: os.ReadDir would
// read (and stat) a million of them to count to one.
func layerEmpty(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "diff"))
	if err != nil {
		return false
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	return errors.Is(err, io.EOF)
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
	scratch, err := e.scratchDir("step-")
	if err != nil {
		return err
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
		single, err := e.stageFiles(ctx, s, files, scratch, line)
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
	code, out, err := e.exec(ctx, id, scratch, layers, st, user, cmd, e.cfg.Limits.StepTimeout, line, func() error {
		return e.capture(ctx, id, dir, s)
	})
	if err != nil {
		return &StepError{Step: n, What: s.String(), ExitCode: code, Err: err, Output: out}
	}
	if code != 0 {
		return &StepError{Step: n, What: s.String(), ExitCode: code, Output: out}
	}
	return nil
}

// scratchDir makes a fresh directory under <DataDir>/build, mounted
// read-only into one build sandbox at /.sbx/build.
func (e *Executor) scratchDir(prefix string) (string, error) {
	base := filepath.Join(e.cfg.DataDir, "build")
	// Searchable, not listable: under user namespaces root in the build
	// sandbox is an unprivileged host user that must reach its own scratch
	// dir (which the driver gives it, Mount.Owned); the names of other
	// builds' dirs stay unlisted.
	if err := os.MkdirAll(base, 0o711); err != nil {
		return "", err
	}
	if err := os.Chmod(base, 0o711); err != nil { // made 0700 by an earlier version
		return "", err
	}
	return os.MkdirTemp(base, prefix)
}

// stageFiles copies a COPY or ADD step's sources from its upload into
// <scratch>/stage (ADD unpacks archives there), all through descriptors.
func (e *Executor) stageFiles(ctx context.Context, s Step, files Files, scratch string, line func(string)) (string, error) {
	src, err := files.Dir(ctx, s.FilesHash)
	if err != nil {
		return "", err
	}
	root, err := hostfs.OpenDir(src)
	if err != nil {
		return "", fmt.Errorf("open the files of %s: %w", s.FilesHash, err)
	}
	defer root.Close()
	if err := os.Mkdir(filepath.Join(scratch, "stage"), 0o755); err != nil {
		return "", err
	}
	stageDir, err := hostfs.OpenDir(filepath.Join(scratch, "stage"))
	if err != nil {
		return "", err
	}
	defer stageDir.Close()
	var lim *unpackLimits
	if s.Type == StepAdd {
		// Unpacked content lands in the build sandbox's writable
		// layer, which the disk limit bounds anyway: fail early and clearly.
		lim = &unpackLimits{maxBytes: int64(e.cfg.Limits.DiskMB) << 20, maxEntries: MaxUnpackEntries}
	}
	return stage(root, s.Args[0], stageDir, lim, line)
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
// at run time. The stage is a read-only mount: owners and modes are set
// while copying (tar --owner/--group/--mode), never on the stage.
const copyScript = `set -e
stage=/.sbx/build/stage
dest="$SBX_DEST"
u="${SBX_OWNER%%:*}"; g=""; case "$SBX_OWNER" in *:*) g="${SBX_OWNER#*:}" ;; esac
if [ -z "$g" ]; then if [ "$u" = root ]; then g=root; else g=$(id -g -- "$u"); fi; fi
rename=
case "$dest" in */) destdir="$dest" ;; *)
  if [ -n "$SBX_SINGLE" ] && [ ! -d "$dest" ]; then
    destdir=$(dirname -- "$dest"); rename=$(basename -- "$dest")
  else destdir="$dest"; fi ;;
esac
created=
[ -d "$destdir" ] || { mkdir -p -- "$destdir"; created=1; }
if [ -n "$created" ] && [ "$u" != root ]; then chown -- "$u:$g" "$destdir"; fi
if [ -n "$rename" ]; then
  target="$destdir/$rename"
  rm -f -- "$target"
  cp -P --preserve=mode,timestamps -- "$stage/$SBX_SINGLE" "$target"
  chown -h -- "$u:$g" "$target"
  if [ -n "$SBX_MODE" ] && [ ! -L "$target" ]; then chmod -- "$SBX_MODE" "$target"; fi
  n=1
else
  tar -C "$stage" -cf - --owner="$u" --group="$g" ${SBX_MODE:+--mode="$SBX_MODE"} . | tar -C "$destdir" -xpf - --no-overwrite-dir
  n=$(find "$stage" -mindepth 1 | wc -l)
fi
echo "copied $n entries to $destdir"
`

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
