package budget

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/usage"
)

// Register adds GET/PUT /teams/{id}/budget. {id} is the caller's team ID
// or "me"; another team's budget is not found (no data across teams).
func (b *Budgets) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /teams/{id}/budget", b.handleGet)
	mux.HandleFunc("PUT /teams/{id}/budget", b.handlePut)
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
	teamID, err := usage.TeamID(r)
	if err != nil {
		return "", err
	}
	if id := r.PathValue("id"); id != "me" && id != teamID {
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
	teamID, err := b.team(r)
	if err != nil {
		errdefs.WriteHTTP(w, b.log, err)
		return
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		errdefs.WriteHTTP(w, b.log, errdefs.Invalid("read request body: %v", err))
		return
	}
	var u Update
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&u); err != nil {
		errdefs.WriteHTTP(w, b.log, errdefs.Invalid("budget body: %v; fields: maxConcurrent, maxDailyCreates, maxDailySpendUsd, maxMonthlySpendUsd, warnAtPercent, action", err))
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
	b.write(w, r, teamID)
}
