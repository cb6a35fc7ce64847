// Package periodic runs the server's background chores (refreshing the
// node view, heartbeats, sweeps, budget checks): one step every interval
// until the context ends, a failed step logged and tried again at the next
// tick rather than ending the chore.
package periodic

import (
	"context"
	"log/slog"
	"time"
)

// Run calls step every interval until ctx ends; the first call is one
// interval after the start. An error from step is logged at Warn as msg
// (with attrs and "err"), unless ctx ended meanwhile, which makes any
// step fail and is no news. Steps never overlap: a slow one delays the
// next tick rather than queueing several.
func Run(ctx context.Context, interval time.Duration, step func(context.Context) error, log *slog.Logger, msg string, attrs ...any) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := step(ctx); err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, msg, append(attrs, "err", err)...)
			}
		}
	}
}
