package template

import (
	"context"
	"fmt"
)

// CancelTeamBuilds cancels a team's builds that have not started (waiting
// for their start call): they end in error, saying so. A build already
// running cannot be stopped halfway and is counted as failed to cancel;
// it finishes on its own within the build timeout.
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
				b.Status, b.Reason, b.ReasonStep, b.FinishedAt = StatusError, "cancelled by the admin", "", s.now().UTC()
				if err := s.store.UpdateBuild(ctx, b); err != nil {
					failed++
					continue
				}
				cancelled++
			case StatusBuilding:
				failed++
			}
		}
	}
	return cancelled, failed, nil
}
