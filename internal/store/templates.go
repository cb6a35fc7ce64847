package store

import (
	"context"
	"encoding/json"
	"time"
)

// TemplateRecord is a user template (package template's Record).
type TemplateRecord struct {
	ID           string
	TeamID       string
	Names        []string
	Public       bool
	CPUCount     int
	MemoryMB     int
	DiskMB       int
	CurrentBuild string // "" until the first build succeeded
	BuildCount   int
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// BuildRecord is one build of a template.
type BuildRecord struct {
	ID         string
	TemplateID string
	Status     string
	Reason     string
	ReasonStep string
	Request    json.RawMessage // the start request as received
	Result     BuildResult
	Tags       []string // tags it gets when it becomes ready
	CreatedAt  time.Time
	FinishedAt time.Time
	// NodeID names the server running the build ("" in rows from before
	// nodes).
	NodeID string
}

// BuildResult is what a finished build needs to be registered again after
// a restart.
type BuildResult struct {
	Layers   []string          `json:"layers,omitempty"`
	User     string            `json:"user,omitempty"`
	Workdir  string            `json:"workdir,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	StartCmd string            `json:"startCmd,omitempty"`
	ReadyCmd string            `json:"readyCmd,omitempty"`
	// ContentKey is the builder's cache key of the final filesystem.
	ContentKey string `json:"contentKey,omitempty"`
}

// BuildLogEntry is one build log line.
type BuildLogEntry struct {
	Timestamp time.Time `json:"timestamp"`
	Message   string    `json:"message"`
	Level     string    `json:"level"`
	Step      string    `json:"step,omitempty"`
}

// TemplateTag is one tag of a template: a name for one of its builds.
type TemplateTag struct {
	TemplateID string
	Tag        string
	BuildID    string
	CreatedAt  time.Time
}

// Templates is the repository of user templates, their builds, build logs
// and tags (package template). Templates belong to teams through
// TemplateRecord.TeamID; the template service checks who may see what.
// Methods fail with errdefs.ErrNotFound for a missing row where they say so.
type Templates interface {
	// CreateTemplate inserts a template (errdefs.ErrAlreadyExists for a taken ID).
	CreateTemplate(ctx context.Context, r TemplateRecord) error
	// UpdateTemplate stores a template's names, visibility, resources,
	// current build and build count.
	UpdateTemplate(ctx context.Context, r TemplateRecord) error
	// DeleteTemplate removes a template, its tags and its build logs in
	// one transaction. Its builds stay: sandboxes may still use their
	// layers, and pruning needs to know which layers those are.
	DeleteTemplate(ctx context.Context, id string) error
	// Template returns a template by ID (ErrNotFound).
	Template(ctx context.Context, id string) (TemplateRecord, error)
	// Templates returns every template of every team, oldest first.
	Templates(ctx context.Context) ([]TemplateRecord, error)

	// CreateBuild inserts a build with its status, tags, node and creation
	// time.
	CreateBuild(ctx context.Context, b BuildRecord) error
	// UpdateBuild stores a build's status, reason, request, result and
	// finish time.
	UpdateBuild(ctx context.Context, b BuildRecord) error
	// Build returns a build by ID (ErrNotFound).
	Build(ctx context.Context, id string) (BuildRecord, error)
	// Builds returns a template's builds, newest first.
	Builds(ctx context.Context, templateID string) ([]BuildRecord, error)
	// BuildsWithStatus returns the builds in status, of existing and
	// deleted templates.
	BuildsWithStatus(ctx context.Context, status string) ([]BuildRecord, error)
	// FailBuilds moves every build of node (and of no node) in one of the
	// statuses from to status to with reason, finished at, and returns
	// how many it moved. Other nodes' builds are left alone, and so are
	// builds that are jobs (BuildJobs): a restarting node releases those.
	FailBuilds(ctx context.Context, node string, from []string, to, reason string, at time.Time) (int64, error)

	// AppendBuildLog adds log lines after a build's last one.
	AppendBuildLog(ctx context.Context, buildID string, entries ...BuildLogEntry) error
	// BuildLogs returns up to limit log lines of a build from line offset
	// (an empty, non-nil slice when there are none).
	BuildLogs(ctx context.Context, buildID string, offset, limit int) ([]BuildLogEntry, error)

	// SetTemplateTags points tags of a template at a build, moving tags
	// that pointed elsewhere, in one transaction.
	SetTemplateTags(ctx context.Context, templateID, buildID string, tags []string, at time.Time) error
	// RemoveTemplateTags deletes tags of a template. When one of them does
	// not exist it removes none and returns the missing ones.
	RemoveTemplateTags(ctx context.Context, templateID string, tags []string) (missing []string, err error)
	// TemplateTag returns one tag of a template (ErrNotFound).
	TemplateTag(ctx context.Context, templateID, tag string) (TemplateTag, error)
	// TemplateTags returns a template's tags sorted by tag, or every
	// template's (by template, then tag) when templateID is "".
	TemplateTags(ctx context.Context, templateID string) ([]TemplateTag, error)
}
