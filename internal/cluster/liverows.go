package cluster

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// LiveRows is the cluster's live sandboxes (running or paused, on any
// node) as an api replica reads them from the shared database, for the
// usage, analytics and budget routes it serves: what a single box reads
// from its manager. Read at most once per MaxAge.
type LiveRows struct {
	st     NodeSandboxStore
	log    *slog.Logger
	maxAge time.Duration

	mu   sync.Mutex
	at   time.Time
	rows []store.Sandbox
}

// NewLiveRows returns the live sandboxes of st, cached for maxAge.
func NewLiveRows(st NodeSandboxStore, maxAge time.Duration, log *slog.Logger) *LiveRows {
	return &LiveRows{st: st, log: log, maxAge: maxAge}
}

// liveReadTimeout bounds one read of the live rows.
const liveReadTimeout = 5 * time.Second

// Live lists the sandboxes not killed (the last read when the database
// cannot be read: usage figures a second old beat none).
func (l *LiveRows) Live() []store.Sandbox {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.at) < l.maxAge {
		return l.rows
	}
	ctx, cancel := context.WithTimeout(context.Background(), liveReadTimeout)
	defer cancel()
	rows, err := l.st.LiveSandboxes(ctx)
	if err != nil {
		l.log.Warn("read the cluster's live sandboxes", "err", err)
		return l.rows
	}
	out := rows[:0]
	for _, sb := range rows {
		if sb.State != store.StateKilled {
			out = append(out, sb)
		}
	}
	l.rows, l.at = out, time.Now()
	return out
}

// errBudgetActionOnNode: budget actions (pause or kill on a spend breach)
// run on the nodes, which enforce budgets on their own sandboxes; an api
// replica only reads and sets budgets.
var errBudgetActionOnNode = errdefs.Precondition("budget actions run on the nodes, not on an api replica")

// KillWithReason is not done on an api replica (budget.Sandboxes; it runs
// no budget enforcement loop, so nothing calls it).
func (l *LiveRows) KillWithReason(context.Context, string, string) error {
	return errBudgetActionOnNode
}

// PauseWithReason: as KillWithReason.
func (l *LiveRows) PauseWithReason(context.Context, string, string) error {
	return errBudgetActionOnNode
}
