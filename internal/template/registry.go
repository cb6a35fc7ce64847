// Package template keeps the templates sandboxes start from: their root
// filesystems, resources, default user and start command, and whether they
// are ready. Built-in templates are prepared from Debian packages in the
// background while the server already answers requests.
package template

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Build status values, as E2B reports them.
const (
	StatusBuilding = "building"
	StatusWaiting  = "waiting"
	StatusReady    = "ready"
	StatusError    = "error"
)

// Template is one template and its current build.
type Template struct {
	ID      string
	BuildID string
	Names   []string // names and aliases it is reachable by (first = canonical)
	Public  bool
	TeamID  string // "" for built-in templates
	Status  string
	Error   string
	Rootfs  string // read-only root filesystem of the ready build
	// Layers is the read-only layer stack of a built template, topmost
	// first, ending with its base's root filesystem. Rootfs is then a
	// read-only overlay mount of exactly these layers.
	Layers   []string
	ReadyCmd string // polled until exit 0 after StartCmd ("" = none)
	CPUCount int
	MemoryMB int
	DiskMB   int
	User     string // default user for commands
	Workdir  string // default working directory
	StartCmd string // started after /init; "" = none
	// StartUser runs StartCmd ("" = User). The code interpreter's server
	// runs as root, as E2B's does, so its kernels run as root by default
	// and as any user a context asks for.
	StartUser string
	ReadyPort int // when > 0, ready once GET /health on this port answers 200
	// ContentKey identifies the build's filesystem content (the builder's
	// last cache key); "" for built-in templates. Snapshots are keyed by it.
	ContentKey string
	// NoSnapshot keeps the start command out of snapshots: it runs when
	// each sandbox starts, under the server's runtime. The code
	// interpreter's kernel server (and templates inheriting it) is one: it
	// is ready in under half a second under crun, and runCode answers
	// several times faster there than in a runsc sandbox restored from a
	// snapshot; warm pools hide its start.
	NoSnapshot bool
	Env        map[string]string
	CreatedAt  time.Time
	UpdatedAt  time.Time

	ready chan struct{} // closed when Status leaves building
}

// Registry holds templates by ID and name.
type Registry struct {
	log    *slog.Logger
	mu     sync.RWMutex
	byID   map[string]*Template
	tagged Tagged // nil: only the current build of each template resolves
	// loader finds a template the registry does not hold (built by
	// another server sharing the database); nil: none.
	loader Loader
}

// Loader finds a template the registry does not hold. teamID, when not
// "", is the team asking: another team's private template is not loaded
// for it (ok false), so neither its existence nor a failure to load it is
// revealed.
type Loader func(ctx context.Context, teamID, ref string) (t Template, ok bool, err error)

// SetLoader makes Resolve ask load for templates it does not hold.
func (r *Registry) SetLoader(load Loader) {
	r.mu.Lock()
	r.loader = load
	r.mu.Unlock()
}

// Tagged finds the build a tag (or build ID) of a template designates
// (the Service, over the builds and tags in SQLite).
type Tagged interface {
	TaggedBuild(ctx context.Context, t Template, tag string) (Template, error)
}

// SetTagged lets "name:tag" references resolve to tagged builds.
func (r *Registry) SetTagged(t Tagged) {
	r.mu.Lock()
	r.tagged = t
	r.mu.Unlock()
}

// NewRegistry returns an empty registry.
func NewRegistry(log *slog.Logger) *Registry {
	return &Registry{log: log, byID: map[string]*Template{}}
}

// Add registers a template in the building state and returns a function
// that marks it ready (rootfs set) or failed (err != nil).
func (r *Registry) Add(t Template) (finish func(rootfs string, err error)) {
	now := time.Now().UTC()
	t.Status, t.CreatedAt, t.UpdatedAt = StatusBuilding, now, now
	t.ready = make(chan struct{})
	r.mu.Lock()
	r.byID[t.ID] = &t
	r.mu.Unlock()
	var once sync.Once
	return func(rootfs string, err error) {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			t := r.byID[t.ID]
			t.UpdatedAt = time.Now().UTC()
			if err != nil {
				t.Status, t.Error = StatusError, err.Error()
			} else {
				t.Status, t.Rootfs = StatusReady, rootfs
			}
			close(t.ready)
		})
	}
}

// SplitRef splits a template reference "[namespace/]name[:tag]" into the
// part naming the template and the tag ("" when there is none).
func SplitRef(ref string) (name, tag string) {
	if i := strings.LastIndex(ref, ":"); i >= 0 && !strings.Contains(ref[i:], "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}

func (r *Registry) find(ref string) *Template {
	full, _ := SplitRef(ref)
	name := full
	if i := strings.LastIndex(name, "/"); i >= 0 && !strings.HasPrefix(name, "e2bdev/") {
		name = name[i+1:]
	}
	if t, ok := r.byID[name]; ok {
		return t
	}
	for _, t := range r.byID {
		for _, n := range t.Names {
			if n == name || n == full {
				return t
			}
		}
	}
	return nil
}

// Resolve finds a template by ID, name or alias and waits until it is ready,
// bounded by ctx. A template still being prepared makes the caller wait.
// "name:tag" resolves to the build the tag designates; no tag, "default"
// and "latest" (unless assigned as a tag) mean the current build.
func (r *Registry) Resolve(ctx context.Context, ref string) (Template, error) {
	return r.resolve(ctx, "", ref)
}

func (r *Registry) resolve(ctx context.Context, teamID, ref string) (Template, error) {
	t, err := r.resolveCurrent(ctx, teamID, ref)
	if err != nil {
		return t, err
	}
	_, tag := SplitRef(ref)
	if tag == "" || tag == DefaultTag || tag == t.BuildID {
		return t, nil
	}
	r.mu.RLock()
	tagged := r.tagged
	r.mu.RUnlock()
	if tagged == nil {
		if tag == "latest" {
			return t, nil
		}
		return Template{}, errdefs.NotFound("template %q has no tag %q; it has only the tag %q (its latest build)", t.ID, tag, DefaultTag)
	}
	return tagged.TaggedBuild(ctx, t, tag)
}

func (r *Registry) resolveCurrent(ctx context.Context, teamID, ref string) (Template, error) {
	r.mu.RLock()
	t, load := r.find(ref), r.loader
	r.mu.RUnlock()
	if t == nil && load != nil {
		lt, ok, err := load(ctx, teamID, ref)
		if err != nil {
			return Template{}, err
		}
		if ok {
			return lt, nil
		}
	}
	if t == nil {
		return Template{}, errdefs.NotFound("template %q not found; list templates with `sbx template list` or GET /templates", ref)
	}
	select {
	case <-t.ready:
	case <-ctx.Done():
		return Template{}, errdefs.Wrap(errdefs.ErrUnavailable, ctx.Err(),
			"template %q is still being prepared; retry in a moment (progress is in the sbx serve log)", ref)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if t.Status != StatusReady {
		return Template{}, errdefs.Precondition("template %q failed to build: %s", ref, t.Error)
	}
	return *t, nil
}

// ResolveFor is Resolve limited to the templates a team may start from:
// built-in and public ones and its own. Another team's private template is
// reported as not found, so its existence is not revealed.
func (r *Registry) ResolveFor(ctx context.Context, teamID, ref string) (Template, error) {
	if t, ok := r.Get(ref); ok && t.TeamID != "" && t.TeamID != teamID && !t.Public {
		return Template{}, errdefs.NotFound("template %q not found; list templates with `sbx template list` or GET /templates", ref)
	}
	t, err := r.resolve(ctx, teamID, ref)
	if err == nil && t.TeamID != "" && t.TeamID != teamID && !t.Public { // loaded by a concurrent Resolve
		return Template{}, errdefs.NotFound("template %q not found; list templates with `sbx template list` or GET /templates", ref)
	}
	return t, err
}

// Get returns a template by ID or name without waiting.
func (r *Registry) Get(ref string) (Template, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t := r.find(ref)
	if t == nil {
		return Template{}, false
	}
	return *t, true
}

// List returns the templates visible to a team (built-in ones and its own).
func (r *Registry) List(teamID string) []Template {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Template
	for _, t := range r.byID {
		if t.TeamID == "" || t.TeamID == teamID {
			out = append(out, *t)
		}
	}
	sortTemplates(out)
	return out
}

// sortTemplates orders ts oldest first (ID breaks ties): the order of
// GET /v2/templates' pages.
func sortTemplates(ts []Template) {
	sort.Slice(ts, func(i, j int) bool {
		return ts[i].CreatedAt.Before(ts[j].CreatedAt) || (ts[i].CreatedAt.Equal(ts[j].CreatedAt) && ts[i].ID < ts[j].ID)
	})
}

// Put registers a ready template, replacing any template with the same ID
// (a rebuild): sandboxes already running keep the build they started from,
// new ones get this one.
func (r *Registry) Put(t Template) {
	now := time.Now().UTC()
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now
	}
	if t.UpdatedAt.IsZero() {
		t.UpdatedAt = now
	}
	t.Status = StatusReady
	t.ready = make(chan struct{})
	close(t.ready)
	r.mu.Lock()
	r.byID[t.ID] = &t
	r.mu.Unlock()
}

// Remove forgets a template; it reports whether it was registered.
func (r *Registry) Remove(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.byID[id]
	delete(r.byID, id)
	return ok
}

// Lower is the layer stack a sandbox from t mounts, topmost first.
func (t Template) Lower() []string {
	if len(t.Layers) > 0 {
		return t.Layers
	}
	return []string{t.Rootfs}
}

// StartAs is the user the start command runs as.
func (t Template) StartAs() string {
	if t.StartUser != "" {
		return t.StartUser
	}
	return t.User
}

// Builder prepares a built-in root filesystem by recipe name.
type Builder interface {
	Ensure(ctx context.Context, name string, progress func(line string)) (string, error)
}

// Builtin describes a built-in template and the rootfs recipe it comes from.
type Builtin struct {
	Template
	Recipe string
}

// Builtins are the templates every sbx server offers.
func Builtins() []Builtin {
	return []Builtin{
		{Recipe: "base", Template: Template{ID: "base", BuildID: "base", Names: []string{"base", "e2bdev/base"},
			Public: true, CPUCount: 2, MemoryMB: 512, DiskMB: 2048, User: "user", Workdir: "/home/user"}},
		{Recipe: "code-interpreter", Template: Template{ID: "code-interpreter", BuildID: "code-interpreter",
			Names: []string{"code-interpreter", "code-interpreter-v1", "e2bdev/code-interpreter"}, Public: true,
			CPUCount: 2, MemoryMB: 1024, DiskMB: 2048, User: "user", Workdir: "/home/user",
			StartCmd: "/.sbx/bin/codeinterp --port 49999", StartUser: "root", ReadyPort: 49999, NoSnapshot: true}},
	}
}

// PrepareBuiltins registers the built-in templates and builds their root
// filesystems one after another in the background. It returns at once.
func (r *Registry) PrepareBuiltins(ctx context.Context, b Builder) {
	type job struct {
		recipe string
		id     string
		finish func(string, error)
	}
	var jobs []job
	for _, bi := range Builtins() {
		jobs = append(jobs, job{bi.Recipe, bi.ID, r.Add(bi.Template)})
	}
	go func() {
		for _, j := range jobs {
			start := time.Now()
			r.log.Info("preparing built-in template", "template.id", j.id)
			dir, err := b.Ensure(ctx, j.recipe, func(line string) {
				r.log.Info("template build", "template.id", j.id, "line", line)
			})
			if err != nil {
				err = fmt.Errorf("prepare template %s: %w", j.id, err)
				r.log.Error("built-in template failed", "template.id", j.id, "err", err)
			} else {
				r.log.Info("template ready", "template.id", j.id, "rootfs", dir, "elapsed", time.Since(start).Round(time.Millisecond))
			}
			j.finish(dir, err)
		}
	}()
}

// HeldBuilds names the builds of the team templates registered here, whose
// layers this server holds: the most recently updated max of them,
// space-separated (a node's heartbeat, store.NodeLoad.Builds).
func (r *Registry) HeldBuilds(max int) string {
	r.mu.RLock()
	held := make([]*Template, 0, len(r.byID))
	for _, t := range r.byID {
		if t.TeamID != "" && t.BuildID != "" {
			held = append(held, t)
		}
	}
	sort.Slice(held, func(i, j int) bool { return held[i].UpdatedAt.After(held[j].UpdatedAt) })
	ids := make([]string, 0, min(len(held), max))
	for _, t := range held[:min(len(held), max)] {
		ids = append(ids, t.BuildID)
	}
	r.mu.RUnlock()
	return strings.Join(ids, " ")
}
