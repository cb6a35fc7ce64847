package sandbox

import (
	"context"
	"time"

	"github.com/sbxdev/sbx/internal/store"
)

// spawnRecorder is the store's count of sandboxes created per template
// (E2B's spawnCount/lastSpawnedAt); an optional capability of the store.
type spawnRecorder interface {
	RecordSpawn(ctx context.Context, templateID string, at time.Time) error
}

// recordSpawn counts a created sandbox against its template. A failure is
// logged, not returned: the sandbox exists and the count is a statistic.
func (m *Manager) recordSpawn(ctx context.Context, sb store.Sandbox) {
	r, ok := m.store.(spawnRecorder)
	if !ok {
		return
	}
	if err := r.RecordSpawn(context.WithoutCancel(ctx), sb.TemplateID, sb.StartedAt); err != nil {
		m.log.WarnContext(ctx, "count template spawn", "template.id", sb.TemplateID, "err", err)
	}
}
