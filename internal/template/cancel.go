package template

import (
	"context"
	"fmt"

	"github.com/sbxdev/sbx/internal/store"
)

// CancelTeamBuilds cancels a team's builds that have not finished.
// Waiting ones (no start call yet) end in error, saying so. Builds that
// are cluster jobs (SetJobs) are cancelled in the shared database: a
// queued one ends at once; for one a node has claimed, the node is told
// at its next renewal of the claim (every third of the lease, 10 s by
// default) and stops it there, recording it failed itself, so its outcome
// is written once, by the process that ran it. A build past its last step
// when the cancel lands may still end ready. A build running where it was
// started (one box) cannot be stopped halfway and is counted as failed to
// cancel; it finishes on its own within the build timeout.
func (s *Service) CancelTeamBuilds(ctx context.Context, teamID string) (cancelled, failed int, err error) {
	recs, err := s.store.Templates(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, rec := range recs {
		if rec.TeamID != teamID {
			continue
		}
		bs, err := s.store.Builds(ctx, rec.ID)
		if err != nil {
			return cancelled, failed, fmt.Errorf("builds of template %s: %w", rec.ID, err)
		}
		for _, b := range bs {
			switch b.Status {
			case StatusWaiting:
				b.Status, b.Reason, b.ReasonStep, b.FinishedAt = StatusError, store.CancelledReason, "", s.now().UTC()
				if err := s.store.UpdateBuild(ctx, b); err != nil {
					failed++
					continue
				}
				cancelled++
			case StatusBuilding:
				if s.cancelJob(ctx, rec, b) {
					cancelled++
				} else {
					failed++
				}
			}
		}
	}
	return cancelled, failed, nil
}

// cancelJob cancels a build that is a cluster job; false when it is not
// one or finished meanwhile.
func (s *Service) cancelJob(ctx context.Context, rec Record, b BuildRecord) bool {
	if s.jobs == nil {
		return false
	}
	at := s.now().UTC()
	ended, requested, err := s.jobs.Queue.CancelBuild(ctx, b.ID, store.CancelledReason, at)
	if err != nil {
		s.log.Warn("cancel a template build", "build.id", b.ID, "err", err)
		return false
	}
	if ended {
		b.Status, b.Reason, b.ReasonStep, b.FinishedAt = StatusError, store.CancelledReason, "", at
		s.event(ctx, EventBuildFailed, rec, b, map[string]any{"reason": b.Reason, "step": ""})
	}
	if requested {
		s.log.Info("template build cancelled; its node stops it at its next claim renewal", "build.id", b.ID, "node", b.NodeID)
	}
	return ended || requested
}

// markCancelled notes that the admin cancelled build id while this node
// ran it, so its failure is recorded as cancelled, not as what the
// interrupted step said.
func (s *Service) markCancelled(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancelled == nil {
		s.cancelled = map[string]bool{}
	}
	s.cancelled[id] = true
}

// takeCancelled reports (and forgets) whether build id was cancelled.
func (s *Service) takeCancelled(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cancelled[id]
	delete(s.cancelled, id)
	return c
}

// asCancelled makes the failure of a build the admin cancelled while it
// ran here say so (in its reason and its log), not what the interrupted
// step said.
func (s *Service) asCancelled(ctx context.Context, b *BuildRecord) {
	if !s.takeCancelled(b.ID) {
		return
	}
	b.Reason, b.ReasonStep = store.CancelledReason, ""
	_ = s.store.AppendBuildLog(ctx, b.ID, LogEntry{Timestamp: s.now().UTC(), Level: "error", Message: "build stopped: " + store.CancelledReason})
}
