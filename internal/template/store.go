package template

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/sbxdev/sbx/internal/store"
)

// Store persists user templates, builds, build logs and tags through the
// store's templates repository (store.Templates); it adds what depends on
// this package's build statuses.
type Store struct {
	templatesRepo
	changes atomic.Uint64 // writes that may change what Catalog lists
}

// templatesRepo names the embedded repository apart from its Templates
// method.
type templatesRepo = store.Templates

// NewStore returns a store over repo (sqlstore.New(db, nil) on the
// server's database).
func NewStore(repo store.Templates) *Store { return &Store{templatesRepo: repo} }

// Changes counts the writes through this store that may change which
// templates are ready, their names or their teams: Catalog reads the
// database again after one.
func (s *Store) Changes() uint64 { return s.changes.Load() }

// changed counts a write, done or not: a failed one may have happened.
func (s *Store) changed() { s.changes.Add(1) }

func (s *Store) CreateTemplate(ctx context.Context, r Record) error {
	defer s.changed()
	return s.templatesRepo.CreateTemplate(ctx, r)
}

func (s *Store) UpdateTemplate(ctx context.Context, r Record) error {
	defer s.changed()
	return s.templatesRepo.UpdateTemplate(ctx, r)
}

func (s *Store) DeleteTemplate(ctx context.Context, id string) error {
	defer s.changed()
	return s.templatesRepo.DeleteTemplate(ctx, id)
}

func (s *Store) UpdateBuild(ctx context.Context, b BuildRecord) error {
	defer s.changed()
	return s.templatesRepo.UpdateBuild(ctx, b)
}

func (s *Store) FailBuilds(ctx context.Context, node string, from []string, to, reason string, at time.Time) (int64, error) {
	defer s.changed()
	return s.templatesRepo.FailBuilds(ctx, node, from, to, reason, at)
}

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
