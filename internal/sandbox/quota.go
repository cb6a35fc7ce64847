package sandbox

import (
	"context"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// DefaultTeamMaxSandboxes is the default cap on a team's running and
// paused sandboxes (sbx serve --team-max-sandboxes): E2B's Pro tier
// concurrency. Lower it on a small host; the admin sets a team's own cap.
const DefaultTeamMaxSandboxes = 100

// TeamCaps finds a team's own cap (the store: Team.MaxSandboxes).
type TeamCaps interface {
	Team(ctx context.Context, id string) (store.Team, error)
}

// quota caps the sandboxes each team holds: running and paused ones (a
// paused sandbox keeps its memory or disk and resumes at any moment),
// plus the creates in flight, which reserve their slot before any work so
// that concurrent creates cannot together pass the cap. A sandbox claimed
// from a warm pool counts from its claim, as any other create; pooled
// sandboxes belong to no team before that.
type quota struct {
	def   int // 0 = no cap
	teams TeamCaps
	slots SlotStore // nil: count this server's sandboxes in memory
	node  string

	mu       sync.Mutex
	live     map[string]int // team -> tracked sandboxes
	inflight map[string]int // team -> creates holding a reservation
}

// SlotStore keeps the sandbox slots of every server sharing the database
// (sqlstore.Store): ReserveSlot counts the team's sandboxes and creates in
// flight on all of them and takes a slot under a per-team lock, so two
// servers never both take a team's last slot.
type SlotStore interface {
	ReserveSlot(ctx context.Context, teamID, node string, limit int, ttl time.Duration) (id string, held int, ok bool, err error)
	ReleaseSlot(ctx context.Context, id string) error
}

// slotTTL bounds a reservation whose server died before releasing it; a
// create taking longer stops holding its slot.
const slotTTL = 15 * time.Minute

// reservation is a create's slot; release gives it back (once).
type reservation struct {
	q    *quota
	team string
	slot string // the database reservation (SlotStore), if any
	once sync.Once
}

func (r *reservation) release() {
	if r == nil {
		return
	}
	if r.q.slots != nil {
		r.once.Do(func() {
			if r.slot == "" {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = r.q.slots.ReleaseSlot(ctx, r.slot) // on failure it expires (slotTTL)
		})
		return
	}
	r.once.Do(func() {
		r.q.mu.Lock()
		r.q.inflight[r.team]--
		if r.q.inflight[r.team] <= 0 {
			delete(r.q.inflight, r.team)
		}
		r.q.mu.Unlock()
	})
}

// capReached is reserve's refusal: the team holds held sandboxes; budget
// says whether the budget's max-concurrent, not the team cap, was the
// limit reached.
type capReached struct {
	held   int
	budget bool
	err    error
}

func (c *capReached) Error() string { return c.err.Error() }
func (c *capReached) Unwrap() error { return c.err }

// reserve takes a slot for one more sandbox of team, or answers 429.
// budgetMax (0 = none) is a second cap, enforced in the same reservation
// when slots are kept in the database.
func (q *quota) reserve(ctx context.Context, team string, budgetMax int) (*reservation, error) {
	q.mu.Lock()
	def, teams := q.def, q.teams
	q.mu.Unlock()
	limit, source := def, "the server's default"
	if teams != nil {
		t, err := teams.Team(ctx, team)
		if err != nil {
			return nil, err
		}
		if t.MaxSandboxes != nil {
			limit, source = *t.MaxSandboxes, "the team's own limit"
		}
	}
	if q.slots != nil {
		eff := limit
		if budgetMax > 0 && (eff <= 0 || budgetMax < eff) {
			eff = budgetMax
		}
		if eff <= 0 {
			return &reservation{q: q, team: team}, nil
		}
		id, held, ok, err := q.slots.ReserveSlot(ctx, team, q.node, eff, slotTTL)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, &capReached{held: held, budget: eff == budgetMax && (limit <= 0 || budgetMax < limit), err: exhausted(held, limit, source)}
		}
		return &reservation{q: q, team: team, slot: id}, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.init()
	if n := q.live[team] + q.inflight[team]; limit > 0 && n >= limit {
		return nil, exhausted(n, limit, source)
	}
	q.inflight[team]++
	return &reservation{q: q, team: team}, nil
}

func exhausted(n, limit int, source string) error {
	return errdefs.Exhausted("team sandbox limit reached: the team has %d running or paused sandboxes (creates in flight included) and may have %d (%s); kill some (paused ones count too), or ask the server's admin to raise it: sbx team update TEAM --max-sandboxes N for this team, sbx serve --team-max-sandboxes N for every team",
		n, limit, source)
}

func (q *quota) init() {
	if q.live == nil {
		q.live, q.inflight = map[string]int{}, map[string]int{}
	}
}

// tracked and untracked follow the manager's live map (track, kill).
func (q *quota) tracked(team string) {
	q.mu.Lock()
	q.init()
	q.live[team]++
	q.mu.Unlock()
}

func (q *quota) untracked(team string) {
	q.mu.Lock()
	q.init()
	if q.live[team]--; q.live[team] <= 0 {
		delete(q.live, team)
	}
	q.mu.Unlock()
}
