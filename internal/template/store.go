package template

import (
	"context"
	"time"

	"github.com/sbxdev/sbx/internal/store"
)

// Store persists user templates, builds, build logs and tags through the
// store's templates repository (store.Templates); it adds what depends on
// this package's build statuses.
type Store struct{ templatesRepo }

// templatesRepo names the embedded repository apart from its Templates
// method.
type templatesRepo = store.Templates

// NewStore returns a store over repo (sqlstore.New(db, nil) on the
// server's database).
func NewStore(repo store.Templates) *Store { return &Store{repo} }

// The stored shapes are the store's.
type (
	// Record is a user template row.
	Record = store.TemplateRecord
	// BuildRecord is one build of a template.
	BuildRecord = store.BuildRecord
	// BuildResult is what a finished build needs to be registered again
	// after a restart.
	BuildResult = store.BuildResult
	// LogEntry is one build log line.
	LogEntry = store.BuildLogEntry
	// TagRecord is one tag of a template: a name for one of its builds.
	TagRecord = store.TemplateTag
)

// FailUnfinished marks the builds a previous process of this node left
// running as failed: their build sandboxes are gone. Builds other servers
// sharing the database run are theirs.
func (s *Store) FailUnfinished(ctx context.Context, node string, now time.Time) (int64, error) {
	return s.FailBuilds(ctx, node, []string{StatusBuilding, StatusWaiting}, StatusError,
		"the sbx server restarted during the build; start the build again", now)
}

// ReadyBuilds returns every successful build, of existing and deleted templates.
func (s *Store) ReadyBuilds(ctx context.Context) ([]BuildRecord, error) {
	return s.BuildsWithStatus(ctx, StatusReady)
}
