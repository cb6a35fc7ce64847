package budget

import (
	"net/http"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/request"
)

// Register adds GET/PUT /teams/{id}/budget. {id} is a team ID or "me".
// A team reads its own budget (another team's is not found: no data
// across teams); only the admin key changes budgets, of any team: a
// budget is a limit set on a team, which the team must not lift itself.
func (b *Budgets) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /teams/{id}/budget", b.handleGet)
	mux.HandleFunc("PUT /teams/{id}/budget", b.handlePut)
}

// AdminPatterns are the routes the admin key may call for any team.
func (b *Budgets) AdminPatterns() []string {
	return []string{"GET /teams/{id}/budget", "PUT /teams/{id}/budget"}
}

// Body is the JSON of GET/PUT /teams/{id}/budget responses.
type Body struct {
	TeamID string `json:"teamId"`
	Limits
	Status Status `json:"status"`
}

// Update is a PUT body: fields left out keep their value.
type Update struct {
	MaxConcurrent   *int     `json:"maxConcurrent"`
	MaxDailyCreates *int     `json:"maxDailyCreates"`
	MaxDailySpend   *float64 `json:"maxDailySpendUsd"`
	MaxMonthlySpend *float64 `json:"maxMonthlySpendUsd"`
	WarnAtPercent   *float64 `json:"warnAtPercent"`
	Action          *string  `json:"action"`
}

// Apply merges u into l.
func (u Update) Apply(l Limits) Limits {
	if u.MaxConcurrent != nil {
		l.MaxConcurrent = *u.MaxConcurrent
	}
	if u.MaxDailyCreates != nil {
		l.MaxDailyCreates = *u.MaxDailyCreates
	}
	if u.MaxDailySpend != nil {
		l.MaxDailySpend = *u.MaxDailySpend
	}
	if u.MaxMonthlySpend != nil {
		l.MaxMonthlySpend = *u.MaxMonthlySpend
	}
	if u.WarnAtPercent != nil {
		l.WarnAtPercent = *u.WarnAtPercent
	}
	if u.Action != nil {
		l.Action = *u.Action
	}
	return l
}

func (b *Budgets) team(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if id == "me" {
		return auth.TeamID(r.Context())
	}
	if caller, _ := auth.TeamFrom(r.Context()); caller.Admin {
		if b.TeamExists != nil {
			if err := b.TeamExists(r.Context(), id); err != nil {
				return "", err
			}
		}
		return id, nil
	}
	teamID, err := auth.TeamID(r.Context())
	if err != nil {
		return "", err
	}
	if id != teamID {
		return "", errdefs.NotFound("team %s not found: use your own team ID or \"me\"", id)
	}
	return teamID, nil
}

func (b *Budgets) handleGet(w http.ResponseWriter, r *http.Request) {
	teamID, err := b.team(r)
	if err != nil {
		errdefs.WriteHTTP(w, b.log, err)
		return
	}
	b.write(w, r, teamID)
}

func (b *Budgets) write(w http.ResponseWriter, r *http.Request, teamID string) {
	l, err := b.Get(r.Context(), teamID)
	if err != nil {
		errdefs.WriteHTTP(w, b.log, err)
		return
	}
	st, err := b.Status(r.Context(), teamID)
	if err != nil {
		errdefs.WriteHTTP(w, b.log, err)
		return
	}
	errdefs.WriteJSON(w, http.StatusOK, Body{TeamID: teamID, Limits: l, Status: st})
}

func (b *Budgets) handlePut(w http.ResponseWriter, r *http.Request) {
	if err := auth.RequireAdmin(r.Context(), "changing a budget"); err != nil {
		errdefs.WriteHTTP(w, b.log, err)
		return
	}
	teamID, err := b.team(r)
	if err != nil {
		errdefs.WriteHTTP(w, b.log, err)
		return
	}
	var u Update
	if err := request.Decode(r, &u, request.SmallBody); err != nil {
		errdefs.WriteHTTP(w, b.log, err)
		return
	}
	cur, err := b.Get(r.Context(), teamID)
	if err != nil {
		errdefs.WriteHTTP(w, b.log, err)
		return
	}
	if err := b.Set(r.Context(), teamID, u.Apply(cur)); err != nil {
		errdefs.WriteHTTP(w, b.log, err)
		return
	}
	b.log.Info("budget changed", "team.id", teamID)
	b.write(w, r, teamID)
}
