package template

import (
	"context"
	"errors"

	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// fail records build b failed at step (its status, a client-safe reason,
// the event), unless this node is shutting down: the job then goes back
// in the queue for another node or the next start.
func (s *Service) fail(rec Record, b BuildRecord, step string, err error) {
	ctx := context.WithoutCancel(s.buildCtx)
	if s.releaseOnShutdown(ctx, b) {
		return
	}
	b.Status, b.Reason, b.ReasonStep, b.FinishedAt = StatusError, clientReason(err), step, s.now().UTC()
	s.asCancelled(ctx, &b)
	if uerr := s.record(ctx, b); uerr != nil {
		s.log.Error("record failed build", "build.id", b.ID, "err", uerr)
		if errors.Is(uerr, store.ErrClaimLost) {
			return // another node builds it now; its outcome counts
		}
	}
	s.log.Warn("template build failed", "template.id", rec.ID, "build.id", b.ID, "step", step, "err", err)
	s.event(ctx, EventBuildFailed, rec, b, map[string]any{"reason": b.Reason, "step": step})
}

// clientReason is what a tenant reads about a failed build (its status,
// log and events): the client-safe message errdefs keeps, never err's
// full text, which names host paths (the upload, data and cache
// directories). The server log keeps the full error.
func clientReason(err error) string {
	var se *builder.StepError
	if errors.As(err, &se) {
		return se.ClientMessage()
	}
	return errdefs.Message(err)
}
