package template

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/keylock"
	"github.com/sbxdev/sbx/internal/store"
)

// maxLogLines bounds the stored log of one build.
const maxLogLines = 20000

// Build event types.
const (
	EventBuildStarted   = "template.build.started"
	EventBuildSucceeded = "template.build.succeeded"
	EventBuildFailed    = "template.build.failed"
)

// Executor runs a build plan (internal/builder.Executor).
type Executor interface {
	Build(ctx context.Context, req builder.Request) (*builder.Result, error)
}

// Images pulls OCI images as build bases (internal/builder.Images).
type Images interface {
	Pull(ctx context.Context, ref string, progress func(string)) (builder.Base, error)
}

// Events records template build events.
type Events interface {
	Append(ctx context.Context, ev *events.Event) error
}

// ServiceConfig is the template service's part of the server configuration.
type ServiceConfig struct {
	DataDir        string // templates/<buildID>/ and uploads/ live here
	MaxUploadBytes int64  // per COPY step, compressed and extracted; 0 = 2 GiB
	MaxBuilds      int    // concurrent builds; 0 = 2
	// MaxBuildsPerTeam caps one team's concurrent builds; 0 = MaxBuilds.
	MaxBuildsPerTeam int
	// PruneEvery is how often unused layers are pruned; 0 = hourly, < 0 = never.
	PruneEvery time.Duration
	// NodeID names this server among servers sharing a database: its
	// builds are recorded as its own, and only those are failed when it
	// restarts.
	NodeID string
}

// Service builds user templates from E2B build requests, persists them and
// registers ready builds in the registry sandboxes start from.
type Service struct {
	cfg     ServiceConfig
	log     *slog.Logger
	store   *Store
	reg     *Registry
	exec    Executor
	images  Images        // nil: FROM accepts templates only
	snap    Snapshotter   // nil: start commands run when sandboxes start (snapshot.go)
	live    LiveSandboxes // nil: pruning keeps every successful build's layers
	events  Events
	uploads *uploads
	now     func() time.Time
	slots   *buildSlots
	// observer feeds build metrics from the build events (observe.go).
	observer buildObserver
	// snapshots are sandbox snapshots, which E2B's SDK deletes as
	// templates (DELETE /templates/{id}); nil: none.
	snapshots SnapshotDeleter
	// blobs publishes builds' layers and pulls other servers' (blobs.go);
	// nil: layers stay local.
	blobs *layer.Blobs
	loads keylock.Locks // one load from the database per template at a time
	// catalog is Catalog's last reading of the database (catalog.go).
	catalog catalogCache
	// jobs queues builds for the nodes of a cluster (jobs.go); nil: builds
	// run here.
	jobs *Jobs

	mu        sync.Mutex
	running   map[string]string // template ID -> build ID in progress
	cancelled map[string]bool   // build jobs the admin cancelled while they ran here
	wg        sync.WaitGroup
	// Builds outlive the request that started them; stop cancels them at shutdown.
	stop     context.CancelFunc
	buildCtx context.Context
}

// NewService returns a service; call Load before serving requests.
func NewService(cfg ServiceConfig, log *slog.Logger, st *Store, reg *Registry, ex Executor, ev Events) *Service {
	if cfg.MaxUploadBytes == 0 {
		cfg.MaxUploadBytes = 2 << 30
	}
	if cfg.MaxBuilds == 0 {
		cfg.MaxBuilds = 2
	}
	if cfg.PruneEvery == 0 {
		cfg.PruneEvery = time.Hour
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{cfg: cfg, log: log, store: st, reg: reg, exec: ex, events: ev, now: time.Now,
		uploads: &uploads{dir: filepath.Join(cfg.DataDir, "uploads"), secret: secret, max: cfg.MaxUploadBytes},
		slots:   newBuildSlots(cfg.MaxBuilds, cfg.MaxBuildsPerTeam), running: map[string]string{}, stop: cancel, buildCtx: ctx}
	reg.SetTagged(s) // name:tag resolves through the tags this service stores
	if err := removeLegacyUploads(s.uploads.dir); err != nil {
		log.Warn("remove uploads shared by all teams (the layout before uploads were per team)", "err", err)
	}
	return s
}

// SetImages lets builds start FROM OCI images pulled from registries.
func (s *Service) SetImages(im Images) { s.images = im }

// Close cancels running builds and waits for them to stop.
func (s *Service) Close() {
	s.stop()
	s.wg.Wait()
}

// Load marks builds interrupted by a restart as failed and registers every
// template's current build again (re-mounting its layers).
func (s *Service) Load(ctx context.Context) error {
	if n, err := s.store.FailUnfinished(ctx, s.cfg.NodeID, s.now()); err != nil {
		return err
	} else if n > 0 {
		s.log.Warn("builds interrupted by a restart marked failed", "count", n)
	}
	recs, err := s.store.Templates(ctx)
	if err != nil {
		return err
	}
	if s.cfg.PruneEvery >= 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.PruneLoop(s.buildCtx)
		}()
	}
	if s.blobs != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.refreshLoop(s.buildCtx)
		}()
	}
	if s.jobs != nil && s.jobs.Node != "" {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.runJobs(s.buildCtx)
		}()
	}
	// Builds that live sandboxes (running, or paused to disk) started from
	// must be mounted again too, for resume after a host reboot.
	if s.live != nil {
		sbs, err := s.live.LiveSandboxes(ctx)
		if err != nil {
			return err
		}
		for _, sb := range sbs {
			if b, err := s.store.Build(ctx, sb.BuildID); err == nil && b.Status == StatusReady && len(b.Result.Layers) > 1 {
				layers, err := s.localLayers(ctx, Record{ID: b.TemplateID}, b, false)
				if errors.Is(err, errNotLocal) {
					continue // another node's sandbox: its node mounts it
				}
				if err == nil {
					err = mountLayers(s.rootfsDir(b.ID), layers)
				}
				if err != nil {
					s.log.Error("mount build of a live sandbox", "sandbox.id", sb.ID, "build.id", b.ID, "err", err)
				}
			}
		}
	}
	for _, r := range recs {
		if r.CurrentBuild == "" {
			continue
		}
		b, err := s.store.Build(ctx, r.CurrentBuild)
		if err != nil {
			s.log.Error("template build missing", "template.id", r.ID, "build.id", r.CurrentBuild, "err", err)
			continue
		}
		if err := s.register(ctx, r, b); errors.Is(err, errNotLocal) {
			s.log.Info("template built elsewhere; its layers are pulled from the blob store on first use", "template.id", r.ID, "build.id", b.ID)
		} else if err != nil {
			s.log.Error("cannot register template", "template.id", r.ID, "err", err)
		}
	}
	return nil
}

func (s *Service) rootfsDir(buildID string) string {
	return filepath.Join(s.cfg.DataDir, "templates", buildID, "rootfs")
}

// register mounts a ready build's layers and puts it in the registry.
func (s *Service) register(ctx context.Context, r Record, b BuildRecord) error {
	t, err := s.templateOf(ctx, r, b, false)
	if err != nil {
		return err
	}
	s.reg.Put(t)
	return nil
}

// templateOf mounts a ready build's layers and describes the template as
// that build: the current build (register) or a tagged one (name:tag).
// Layers this server lacks are pulled from the blob store first, unless
// pull is false (errNotLocal).
func (s *Service) templateOf(ctx context.Context, r Record, b BuildRecord, pull bool) (Template, error) {
	if len(b.Result.Layers) == 0 {
		return Template{}, fmt.Errorf("build %s has no layers", b.ID)
	}
	layers, err := s.localLayers(ctx, r, b, pull)
	if err != nil {
		return Template{}, err
	}
	root := layers[0]
	if len(layers) > 1 {
		root = s.rootfsDir(b.ID)
		if err := mountLayers(root, layers); err != nil {
			return Template{}, err
		}
	}
	var req StartRequest
	_ = json.Unmarshal(b.Request, &req)
	startCmd, readyCmd, readyPort, noSnapshot := b.Result.StartCmd, b.Result.ReadyCmd, 0, req.NoSnapshot
	startUser := ""
	if startCmd == "" { // inherit the base's start command (code-interpreter's kernel server)
		if base, ok := s.reg.Get(req.base()); ok {
			startCmd, readyCmd, readyPort, startUser = base.StartCmd, base.ReadyCmd, base.ReadyPort, base.StartUser
			noSnapshot = noSnapshot || base.NoSnapshot
		}
	}
	return Template{ID: r.ID, BuildID: b.ID, Names: r.Names, Public: r.Public, TeamID: r.TeamID,
		Rootfs: root, Layers: layers, CPUCount: r.CPUCount, MemoryMB: r.MemoryMB, DiskMB: r.DiskMB,
		User: b.Result.User, Workdir: b.Result.Workdir, Env: b.Result.Env,
		StartCmd: startCmd, StartUser: startUser, ReadyCmd: readyCmd, ReadyPort: readyPort, ContentKey: b.Result.ContentKey, NoSnapshot: noSnapshot,
		CreatedAt: r.CreatedAt, UpdatedAt: b.FinishedAt}, nil
}

// RequestV3 is E2B's TemplateBuildRequestV3.
type RequestV3 struct {
	Name     string   `json:"name"`
	Alias    string   `json:"alias"` // deprecated spelling of name
	Tags     []string `json:"tags"`
	CPUCount int      `json:"cpuCount"`
	MemoryMB int      `json:"memoryMB"`
	// MinFreeDiskMb is the free disk the template's sandboxes need: their
	// writable layer gets at least that much (DiskMB).
	MinFreeDiskMb int `json:"minFreeDiskMb"`
	// TeamID may name the caller's own team (E2B's SDKs send it).
	TeamID string `json:"teamID"`
}

// reservedNames are template names E2B's SDKs use by default that sbx
// does not ship: Sandbox.create({mcp}) starts "mcp-gateway" and runs its
// mcp-gateway binary with the MCP servers' keys; the desktop SDK starts
// "desktop". Names are one namespace across teams and a published template
// is usable by all, so whichever team took such a name would receive every
// other team's sandboxes (and secrets) created that way.
var reservedNames = map[string]bool{"mcp-gateway": true, "desktop": true, "code-interpreter-beta": true}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

// Request registers a template (or finds the team's template of that name)
// and creates a new build of it in the waiting state.
func (s *Service) Request(ctx context.Context, teamID string, req RequestV3) (Record, string, error) {
	name := req.Name
	if name == "" {
		name = req.Alias
	}
	if i := strings.LastIndex(name, "/"); i >= 0 { // namespace/name: sbx has one namespace per server
		name = name[i+1:]
	}
	name, tag, _ := strings.Cut(name, ":") // name:tag: one more tag of the new build
	name = strings.ToLower(name)
	if !nameRE.MatchString(name) {
		return Record{}, "", errdefs.Invalid("template name %q is invalid: use 1-128 characters a-z, 0-9, '.', '_' and '-', starting with a letter or digit", req.Name)
	}
	tags, err := buildTags(tag, req.Tags)
	if err != nil {
		return Record{}, "", err
	}
	if req.CPUCount == 0 {
		req.CPUCount = 2
	}
	if req.MemoryMB == 0 {
		req.MemoryMB = 1024
	}
	if req.CPUCount < 1 || req.CPUCount > 64 {
		return Record{}, "", errdefs.Invalid("cpuCount %d is out of range 1-64", req.CPUCount)
	}
	if req.MemoryMB < 128 || req.MemoryMB > 256<<10 {
		return Record{}, "", errdefs.Invalid("memoryMB %d is out of range 128-262144", req.MemoryMB)
	}
	if req.TeamID != "" && req.TeamID != teamID {
		return Record{}, "", errdefs.Denied("teamID %q is not your team: a team's key builds only its own templates", req.TeamID)
	}
	if req.MinFreeDiskMb < 0 || req.MinFreeDiskMb > maxDiskMB {
		return Record{}, "", errdefs.Invalid("minFreeDiskMb %d is out of range 0-%d", req.MinFreeDiskMb, maxDiskMB)
	}
	now := s.now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	var rec Record
	existing, ok := s.findByName(ctx, name)
	switch {
	case ok && existing.TeamID != teamID:
		return Record{}, "", errdefs.Conflict("template name %q is taken by another team; choose another name", name)
	case ok:
		rec = existing
		rec.CPUCount, rec.MemoryMB, rec.UpdatedAt = req.CPUCount, req.MemoryMB, now
		rec.DiskMB = max(defaultDiskMB, req.MinFreeDiskMb)
	default:
		if t, builtin := s.reg.Get(name); builtin && t.TeamID == "" {
			return Record{}, "", errdefs.Conflict("template name %q is a built-in template; choose another name", name)
		}
		if reservedNames[name] {
			return Record{}, "", errdefs.Conflict("template name %q is reserved: E2B's SDKs create sandboxes from it by default, "+
				"so another team's template of that name would receive their configuration and secrets; choose another name", name)
		}
		// A name equal to another template's ID would shadow that ID
		// wherever the template is not registered (its first build still
		// running, or deleted): the owner's creates by ID would start this
		// template, with the owner's env vars and secrets. IDs are random,
		// so refusing one reveals nothing a caller could not guess.
		if _, err := s.store.Template(ctx, name); err == nil {
			return Record{}, "", errdefs.Conflict("template name %q is the ID of an existing template; choose another name", name)
		} else if !errors.Is(err, errdefs.ErrNotFound) {
			return Record{}, "", err
		}
		rec = Record{ID: newTemplateID(), TeamID: teamID, Names: []string{name}, CPUCount: req.CPUCount,
			MemoryMB: req.MemoryMB, DiskMB: max(defaultDiskMB, req.MinFreeDiskMb), CreatedAt: now, UpdatedAt: now}
		if err := s.store.CreateTemplate(ctx, rec); err != nil {
			return Record{}, "", err
		}
	}
	b := BuildRecord{ID: uuid.NewString(), TemplateID: rec.ID, Status: StatusWaiting, Tags: tags, CreatedAt: now,
		NodeID: s.cfg.NodeID}
	if err := s.store.CreateBuild(ctx, b); err != nil {
		return Record{}, "", err
	}
	rec.BuildCount++
	if err := s.store.UpdateTemplate(ctx, rec); err != nil {
		return Record{}, "", err
	}
	return rec, b.ID, nil
}

func (s *Service) findByName(ctx context.Context, name string) (Record, bool) {
	recs, err := s.store.Templates(ctx)
	if err != nil {
		return Record{}, false
	}
	for _, r := range recs {
		for _, n := range r.Names {
			if n == name {
				return r, true
			}
		}
	}
	return Record{}, false
}

// newTemplateID returns an E2B-style template ID: 20 characters a-z0-9.
func newTemplateID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// owned returns the team's template record or not-found (for other teams too,
// so IDs of other teams' templates are not revealed).
func (s *Service) owned(ctx context.Context, teamID, id string) (Record, error) {
	r, err := s.store.Template(ctx, id)
	if err == nil && r.TeamID != teamID {
		err = errdefs.NotFound("template %q not found", id)
	}
	return r, err
}

// FileStatus reports whether a COPY step's files were uploaded already; if
// not, the caller hands out an upload URL.
func (s *Service) FileStatus(ctx context.Context, teamID, templateID, hash string) (bool, error) {
	if _, err := s.owned(ctx, teamID, templateID); err != nil {
		return false, err
	}
	if !hashRE.MatchString(hash) {
		return false, errdefs.Invalid("files hash %q must be 64 lowercase hex characters (SHA-256)", hash)
	}
	return s.uploadPresent(ctx, teamID, hash)
}

// StartRequest is E2B's TemplateBuildStartV2 (unknown fields are ignored).
type StartRequest struct {
	FromImage    string         `json:"fromImage,omitempty"`
	FromTemplate string         `json:"fromTemplate,omitempty"`
	Force        bool           `json:"force,omitempty"`
	Steps        []builder.Step `json:"steps"`
	StartCmd     string         `json:"startCmd,omitempty"`
	ReadyCmd     string         `json:"readyCmd,omitempty"`
	// NoSnapshot (sbx extension) keeps the start command out of a
	// snapshot: it runs when each sandbox starts, under the server's
	// runtime (crun), where commands and requests are cheaper than in a
	// sandbox restored under runsc.
	NoSnapshot bool `json:"noSnapshot,omitempty"`
	// FromImageRegistry carries credentials for a private registry; sbx
	// pulls public images only and refuses it (Validate) rather than
	// failing later on a pull without them.
	FromImageRegistry json.RawMessage `json:"fromImageRegistry,omitempty"`
}

// Validate refuses the options sbx does not implement, naming them.
func (r StartRequest) Validate() error {
	if len(r.FromImageRegistry) > 0 && string(r.FromImageRegistry) != "null" {
		return errdefs.Invalid("fromImageRegistry (private registry credentials) is not supported: sbx pulls public images only; " +
			"pull the image elsewhere and base the template on a public copy, or build it from a Dockerfile")
	}
	return nil
}

// Disk sizes of a template's sandboxes (their writable layer), in MiB.
const (
	defaultDiskMB = 2048
	maxDiskMB     = 1 << 20
)

func (r StartRequest) base() string {
	switch {
	case r.FromTemplate != "":
		return r.FromTemplate
	case r.FromImage != "":
		return r.FromImage
	}
	return "e2bdev/base"
}

// Start begins a waiting build in the background.
func (s *Service) Start(ctx context.Context, teamID, templateID, buildID string, req StartRequest) error {
	rec, err := s.owned(ctx, teamID, templateID)
	if err != nil {
		return err
	}
	b, err := s.store.Build(ctx, buildID)
	if err != nil || b.TemplateID != templateID {
		return errdefs.NotFound("build %q of template %q not found", buildID, templateID)
	}
	if b.Status != StatusWaiting {
		return errdefs.Conflict("build %s was started already (status %s); request a new build with POST /v3/templates", buildID, b.Status)
	}
	if s.jobs != nil { // a node of the cluster claims it
		return s.queue(ctx, teamID, rec, b, req)
	}
	base, err := s.validateStart(ctx, teamID, templateID, req)
	if err != nil {
		// The build is over before it began: record why, so its status says so.
		b.Status, b.Reason, b.ReasonStep, b.FinishedAt = StatusError, errdefs.Message(err), "base", s.now().UTC()
		if uerr := s.store.UpdateBuild(ctx, b); uerr != nil {
			s.log.Error("record rejected build", "build.id", b.ID, "err", uerr)
		}
		return err
	}
	s.mu.Lock()
	if other, busy := s.running[templateID]; busy {
		s.mu.Unlock()
		return errdefs.Conflict("template %s is being built already (build %s); wait for it to finish", templateID, other)
	}
	s.running[templateID] = buildID
	s.mu.Unlock()
	b.Status, b.Request = StatusBuilding, mustJSON(req)
	if err := s.store.UpdateBuild(ctx, b); err != nil {
		s.done(templateID)
		return err
	}
	s.event(ctx, EventBuildStarted, rec, b, nil)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.done(templateID)
		s.run(s.buildCtx, rec, b, req, base)
	}()
	return nil
}

func (s *Service) validateStart(ctx context.Context, teamID, templateID string, req StartRequest) (builder.Base, error) {
	if len(req.Steps) > 200 {
		return builder.Base{}, errdefs.Invalid("%d steps are too many (at most 200); combine RUN steps", len(req.Steps))
	}
	for i, st := range req.Steps {
		if st.HasFiles() && !s.uploads.present(teamID, st.FilesHash) {
			return builder.Base{}, errdefs.Invalid("files of step %d (%s) were not uploaded; upload them via GET /templates/%s/files/%s first",
				i+1, st, templateID, st.FilesHash)
		}
	}
	return s.resolveBase(ctx, teamID, req)
}

func (s *Service) done(templateID string) {
	s.mu.Lock()
	delete(s.running, templateID)
	s.mu.Unlock()
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// resolveBase finds the template a build starts from.
func (s *Service) resolveBase(ctx context.Context, teamID string, req StartRequest) (builder.Base, error) {
	ref := req.base()
	name := builder.TemplateBase(ref)
	if name == "" {
		name = ref // one of the team's own templates, by name or ID
	}
	t, ok := s.reg.Get(name)
	if !ok && s.blobs != nil { // built by another server sharing the database
		var err error
		if t, ok, err = s.loadFromStore(ctx, teamID, name); err != nil {
			return builder.Base{}, err
		}
	}
	if !ok || (t.TeamID != "" && t.TeamID != teamID) {
		if req.FromTemplate == "" && s.images != nil {
			return builder.Base{}, nil // pulled when the build runs
		}
		if req.FromTemplate == "" {
			return builder.Base{}, errdefs.Invalid("unknown base %q: sbx builds on templates (FROM base, FROM e2bdev/code-interpreter or one of your templates from `sbx template list`); pulling images from a registry is not supported yet", ref)
		}
		return builder.Base{}, errdefs.Invalid("base template %q not found; use base, code-interpreter or a template listed by `sbx template list`", ref)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	t, err := s.reg.Resolve(rctx, t.ID)
	if err != nil {
		return builder.Base{}, err
	}
	return builder.Base{Key: t.ID + "@" + strings.Join(t.Lower(), ":"), Layers: t.Lower(),
		User: t.User, Workdir: t.Workdir, Env: t.Env}, nil
}

// run executes a build and records its outcome.
func (s *Service) run(ctx context.Context, rec Record, b BuildRecord, req StartRequest, base builder.Base) {
	t0 := s.now()
	lines := 0
	logLine := func(step, level, msg string) {
		// A step printing without end must not fill the database: keep the
		// first maxLogLines lines and every error.
		if lines++; lines > maxLogLines && level != "error" {
			if lines == maxLogLines+1 {
				msg, level = fmt.Sprintf("build log truncated after %d lines", maxLogLines), "warn"
			} else {
				return
			}
		}
		if err := s.store.AppendBuildLog(context.WithoutCancel(ctx), b.ID, LogEntry{Timestamp: s.now().UTC(), Level: level, Step: step, Message: msg}); err != nil {
			s.log.Error("append build log", "build.id", b.ID, "err", err)
		}
	}
	release, err := s.slots.acquire(ctx, rec.TeamID, func(why string) { logLine("base", "info", why) })
	if err != nil {
		s.fail(rec, b, "", err)
		return
	}
	defer release()
	logLine("base", "info", fmt.Sprintf("building template %s (build %s) from %s", rec.ID, b.ID, req.base()))
	if len(base.Layers) == 0 { // an image: pull it now, not in the request
		var err error
		base, err = s.images.Pull(ctx, req.base(), func(l string) { logLine("base", "info", l) })
		if err != nil {
			// The message only: what a registry answered stays out of the
			// build log and status (Pull logs it for the operator).
			err = errdefs.Invalid("unknown base %q: it is not a template (base, code-interpreter or one of yours) and pulling it as an image failed: %s",
				req.base(), errdefs.Message(err))
			logLine("base", "error", err.Error())
			s.fail(rec, b, "base", err)
			return
		}
	}
	res, err := s.exec.Build(ctx, builder.Request{Base: base, Steps: req.Steps, Files: uploadFiles{s, rec.TeamID},
		Force: req.Force, StartCmd: req.StartCmd, ReadyCmd: req.ReadyCmd, SkipStartCheck: s.snapshotsOn() && !req.NoSnapshot,
		Progress: func(p builder.Progress) {
			step := ""
			if p.Step > 0 {
				step = strconv.Itoa(p.Step)
			}
			logLine(step, p.Level, p.Message)
		}})
	if err != nil {
		step, msg := "", clientReason(err)
		var se *builder.StepError
		if errors.As(err, &se) {
			step = "finalize"
			if se.Step > 0 {
				step = strconv.Itoa(se.Step)
			}
			// The log showed the step's output as it came (unless it was
			// truncated): repeating it would print it twice. The status's
			// reason keeps it.
			if lines < maxLogLines {
				msg = se.Summary()
			}
		}
		logLine(step, "error", msg)
		s.fail(rec, b, step, err)
		return
	}
	layers, err := s.envLayer(b.ID, res.Env)
	if err != nil {
		s.fail(rec, b, "finalize", err)
		return
	}
	b.Result = BuildResult{Layers: append(layers, res.Layers...), User: res.User, Workdir: res.Workdir, Env: res.Env,
		StartCmd: req.StartCmd, ReadyCmd: req.ReadyCmd, ContentKey: contentKey(base, res)}
	b.Status, b.FinishedAt = StatusReady, s.now().UTC()
	if err := s.publish(ctx, b, logLine); err != nil {
		logLine("finalize", "error", errdefs.Message(err))
		s.fail(rec, b, "finalize", err)
		return
	}
	t, err := s.templateOf(ctx, rec, b, true)
	if err != nil {
		s.fail(rec, b, "finalize", err)
		return
	}
	if err := s.snapshot(ctx, t, req, logLine); err != nil {
		logLine("finalize", "error", clientReason(err))
		s.fail(rec, b, "finalize", err)
		return
	}
	s.reg.Put(t)
	if s.jobs != nil {
		// A job's status is read by other replicas: it says ready only
		// once the template names the build, so a create right after
		// starts this build; and only while this node holds the claim.
		if err := s.claimHeld(ctx, b.ID); errors.Is(err, store.ErrBuildCancelled) {
			s.markCancelled(b.ID)
			s.fail(rec, b, "", err)
			return
		} else if err != nil {
			s.log.Warn("build claimed by another node before it finished here; dropping this run", "build.id", b.ID, "err", err)
			return
		}
		s.setCurrent(ctx, rec, b, logLine)
		if err := s.record(context.WithoutCancel(ctx), b); err != nil {
			s.log.Error("record build", "build.id", b.ID, "err", err)
		}
	} else {
		if err := s.store.UpdateBuild(context.WithoutCancel(ctx), b); err != nil {
			s.log.Error("record build", "build.id", b.ID, "err", err)
		}
		s.setCurrent(ctx, rec, b, logLine)
	}
	msg := fmt.Sprintf("build ready in %s: %d steps cached, %d built", s.now().Sub(t0).Round(time.Millisecond), res.Cached, res.Built)
	logLine("finalize", "info", msg)
	s.log.Info("template built", "template.id", rec.ID, "build.id", b.ID, "cached", res.Cached, "built", res.Built,
		"elapsed", s.now().Sub(t0).Round(time.Millisecond))
	s.event(context.WithoutCancel(ctx), EventBuildSucceeded, rec, b, map[string]any{"cached_steps": res.Cached, "built_steps": res.Built})
}

// setCurrent makes b the template's current build and gives it its tags.
// The previous build stays mounted: sandboxes paused to disk resume onto
// its path. Pruning unmounts builds nothing uses any more.
func (s *Service) setCurrent(ctx context.Context, rec Record, b BuildRecord, logLine func(step, level, msg string)) {
	rec.CurrentBuild, rec.UpdatedAt = b.ID, b.FinishedAt
	if err := s.store.UpdateTemplate(context.WithoutCancel(ctx), rec); err != nil {
		s.log.Error("record template build", "template.id", rec.ID, "err", err)
	}
	s.tagReadyBuild(context.WithoutCancel(ctx), rec, b, logLine)
}

// envLayer writes the template's ENV into /etc/profile.d, which the login
// shells that run commands and start commands read. It is a layer of its own
// so the cached step layers stay independent of it.
func (s *Service) envLayer(buildID string, env map[string]string) ([]string, error) {
	if len(env) == 0 {
		return nil, nil
	}
	dir := filepath.Join(s.cfg.DataDir, "templates", buildID, "env")
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	sb.WriteString("# Written by sbx from the template's ENV instructions.\n")
	for _, k := range keys {
		if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(k) {
			continue // not expressible in sh
		}
		fmt.Fprintf(&sb, "export %s='%s'\n", k, strings.ReplaceAll(env[k], "'", `'\''`))
	}
	p := filepath.Join(dir, "etc", "profile.d")
	if err := os.MkdirAll(p, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(p, "zz-sbx-template-env.sh"), []byte(sb.String()), 0o644); err != nil {
		return nil, err
	}
	return []string{dir}, nil
}

func (s *Service) event(ctx context.Context, typ string, rec Record, b BuildRecord, data map[string]any) {
	s.observer.event(typ, rec, b, s.now())
	if s.events == nil {
		return
	}
	if data == nil {
		data = map[string]any{}
	}
	data["template_id"], data["build_id"], data["names"] = rec.ID, b.ID, rec.Names
	if err := s.events.Append(ctx, &events.Event{Type: typ, TeamID: rec.TeamID, SandboxTemplateID: rec.ID,
		SandboxBuildID: b.ID, EventData: data}); err != nil {
		s.log.Error("record template event", "type", typ, "err", err)
	}
}

// uploadFiles are one team's uploads: a build sees only its team's.
type uploadFiles struct {
	s    *Service
	team string
}

func (f uploadFiles) Dir(ctx context.Context, hash string) (string, error) {
	return f.s.uploadDir(ctx, f.team, hash)
}

// Delete removes a team's template. Running sandboxes keep their layers.
func (s *Service) Delete(ctx context.Context, teamID, id string) error {
	// By ID or by name (E2B deletes by either).
	id, err := s.idOf(teamID, id)
	if err != nil {
		return err
	}
	rec, err := s.owned(ctx, teamID, id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, busy := s.running[id]
	s.mu.Unlock()
	if !busy && s.jobs != nil {
		busy = s.templateBusy(ctx, id, "") != nil
	}
	if busy {
		return errdefs.Conflict("template %s is being built; delete it when the build finished", id)
	}
	if err := s.store.DeleteTemplate(ctx, rec.ID); err != nil {
		return err
	}
	s.reg.Remove(rec.ID)
	// Its builds stay mounted until pruning finds no sandbox using them.
	return nil
}
