package template

import (
	"context"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// What a team reads about its builds: a build's status and log, and a
// template's builds (E2B's TemplateBuildInfo and TemplateWithBuilds).

// Status is E2B's TemplateBuildInfo.
type Status struct {
	TemplateID string     `json:"templateID"`
	BuildID    string     `json:"buildID"`
	Status     string     `json:"status"`
	Logs       []string   `json:"logs"`
	LogEntries []LogEntry `json:"logEntries"`
	Reason     *Reason    `json:"reason,omitempty"`
}

// Reason explains a failed build.
type Reason struct {
	Message string `json:"message"`
	Step    string `json:"step,omitempty"`
}

// BuildStatus returns a build's status and its log lines from offset on.
func (s *Service) BuildStatus(ctx context.Context, teamID, templateID, buildID string, offset, limit int) (Status, error) {
	if _, err := s.owned(ctx, teamID, templateID); err != nil {
		return Status{}, err
	}
	b, err := s.store.Build(ctx, buildID)
	if err != nil || b.TemplateID != templateID {
		return Status{}, errdefs.NotFound("build %q of template %q not found", buildID, templateID)
	}
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	entries, err := s.store.BuildLogs(ctx, buildID, max(offset, 0), limit)
	if err != nil {
		return Status{}, err
	}
	// A build is over for its callers only once its template is free for the
	// next build and its tags are set: until the background run has finished
	// that bookkeeping, the build still reports building.
	s.mu.Lock()
	if s.running[templateID] == buildID && b.Status != StatusWaiting {
		b.Status = StatusBuilding
	}
	s.mu.Unlock()
	if b.Status == StatusReady {
		s.catalog.sawReady(s.store, b)
	}
	st := Status{TemplateID: templateID, BuildID: buildID, Status: b.Status, Logs: []string{}, LogEntries: entries}
	for _, e := range entries {
		st.Logs = append(st.Logs, e.Timestamp.Format(time.RFC3339)+" "+e.Message)
	}
	if b.Status == StatusError {
		st.Reason = &Reason{Message: b.Reason, Step: b.ReasonStep}
	}
	return st, nil
}

// BuildInfo is one entry of E2B's TemplateWithBuilds.builds.
type BuildInfo struct {
	BuildID    string     `json:"buildID"`
	Status     string     `json:"status"`
	CreatedAt  time.Time  `json:"createdAt"`
	UpdatedAt  time.Time  `json:"updatedAt"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	CPUCount   int        `json:"cpuCount"`
	MemoryMB   int        `json:"memoryMB"`
	DiskSizeMB int        `json:"diskSizeMB"`
}

// Builds returns a team's template and its builds, newest first.
func (s *Service) Builds(ctx context.Context, teamID, id string) (Record, []BuildInfo, error) {
	if t, ok := s.reg.Get(id); ok && t.TeamID != teamID && t.TeamID != "" {
		return Record{}, nil, errdefs.NotFound("template %q not found", id)
	} else if ok && t.TeamID == "" { // built-in: one build, its root filesystem
		return Record{ID: t.ID, Names: t.Names, Public: t.Public, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt},
			[]BuildInfo{{BuildID: t.BuildID, Status: t.Status, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt,
				CPUCount: t.CPUCount, MemoryMB: t.MemoryMB, DiskSizeMB: t.DiskMB}}, nil
	} else if ok {
		id = t.ID
	}
	rec, err := s.owned(ctx, teamID, id)
	if err != nil {
		return Record{}, nil, err
	}
	bs, err := s.store.Builds(ctx, rec.ID)
	if err != nil {
		return Record{}, nil, err
	}
	out := make([]BuildInfo, 0, len(bs))
	for _, b := range bs {
		bi := BuildInfo{BuildID: b.ID, Status: b.Status, CreatedAt: b.CreatedAt, UpdatedAt: b.CreatedAt,
			CPUCount: rec.CPUCount, MemoryMB: rec.MemoryMB, DiskSizeMB: rec.DiskMB}
		if !b.FinishedAt.IsZero() {
			f := b.FinishedAt
			bi.FinishedAt, bi.UpdatedAt = &f, f
		}
		out = append(out, bi)
	}
	return rec, out, nil
}
