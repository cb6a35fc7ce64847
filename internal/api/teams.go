package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/internal/store"
)

// Teams (sbx extension; E2B's GET /teams lists the caller's teams): the
// admin key creates, lists, changes and deletes teams; a team key sees its
// own team only.

// MaxTeamSandboxes bounds a team's cap override.
const MaxTeamSandboxes = 100_000

type teamJSON struct {
	TeamID    string    `json:"teamID"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
	// MaxSandboxes is the team's own cap on running and paused sandboxes;
	// null = the server's default (sbx serve --team-max-sandboxes), 0 = none.
	MaxSandboxes *int `json:"maxSandboxes"`
}

type createdTeamJSON struct {
	teamJSON
	APIKey string `json:"apiKey"` // the team's first key, shown once
}

func toTeamJSON(t store.Team) teamJSON {
	return teamJSON{TeamID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt, MaxSandboxes: t.MaxSandboxes}
}

// newTeam is the POST /teams body.
type newTeam struct {
	Name         string `json:"name"`
	MaxSandboxes *int   `json:"maxSandboxes"`
}

func (b newTeam) Validate() error {
	if err := checkName("name", b.Name); err != nil {
		return err
	}
	return checkMaxSandboxes(b.MaxSandboxes)
}

func checkMaxSandboxes(n *int) error {
	if n != nil && (*n < 0 || *n > MaxTeamSandboxes) {
		return errdefs.Invalid("maxSandboxes must be between 0 (no cap) and %d, or null for the server's default, got %d", MaxTeamSandboxes, *n)
	}
	return nil
}

// teamUpdate is the PATCH /teams/{teamID} body. maxSandboxes is kept raw
// to tell "absent" (keep) from null (back to the server's default).
type teamUpdate struct {
	MaxSandboxes json.RawMessage `json:"maxSandboxes"`
}

func (s *Server) listTeams(w http.ResponseWriter, r *http.Request) {
	caller := team(r)
	var teams []store.Team
	if everyTeam(caller) {
		var err error
		if teams, err = s.accounts.Teams(r.Context()); err != nil {
			s.fail(w, err)
			return
		}
	} else {
		t, err := s.accounts.Team(r.Context(), caller.ID)
		if err != nil {
			s.fail(w, err)
			return
		}
		teams = []store.Team{t}
	}
	out := make([]teamJSON, 0, len(teams))
	for _, t := range teams {
		out = append(out, toTeamJSON(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createTeam(w http.ResponseWriter, r *http.Request) {
	if err := auth.RequireAdmin(r.Context(), "creating a team"); err != nil {
		s.fail(w, err)
		return
	}
	var body newTeam
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	key := auth.NewAPIKey()
	t, err := s.accounts.CreateTeam(r.Context(), body.Name, key)
	if err != nil {
		s.fail(w, err)
		return
	}
	if body.MaxSandboxes != nil {
		if err := s.accounts.SetTeamMaxSandboxes(r.Context(), t.ID, body.MaxSandboxes); err != nil {
			s.fail(w, err)
			return
		}
		t.MaxSandboxes = body.MaxSandboxes
	}
	s.log.InfoContext(r.Context(), "team created", "team.id", t.ID, "team.name", t.Name)
	writeJSON(w, http.StatusCreated, createdTeamJSON{teamJSON: toTeamJSON(t), APIKey: key})
}

// pathTeam resolves {teamID} ("me" = the caller's team). A team key reaches
// only its own team; another team is reported as missing.
func (s *Server) pathTeam(r *http.Request) (store.Team, error) {
	id, caller := r.PathValue("teamID"), team(r)
	if id == "me" {
		if caller.ID == "" {
			return store.Team{}, auth.ErrAdminNeedsTeam
		}
		id = caller.ID
	}
	if !caller.Admin && id != caller.ID {
		return store.Team{}, errdefs.NotFound("team %s not found: use your own team ID or \"me\"", truncate(id, 64))
	}
	return s.accounts.Team(r.Context(), id)
}

func (s *Server) getTeam(w http.ResponseWriter, r *http.Request) {
	t, err := s.pathTeam(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toTeamJSON(t))
}

func (s *Server) updateTeam(w http.ResponseWriter, r *http.Request) {
	if err := auth.RequireAdmin(r.Context(), "changing a team's limits"); err != nil {
		s.fail(w, err)
		return
	}
	var body teamUpdate
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	t, err := s.pathTeam(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if body.MaxSandboxes != nil {
		var max *int
		if !bytes.Equal(bytes.TrimSpace(body.MaxSandboxes), []byte("null")) {
			var n int
			if err := json.Unmarshal(body.MaxSandboxes, &n); err != nil {
				s.fail(w, errdefs.Invalid("maxSandboxes must be an integer or null, got %s", truncate(string(body.MaxSandboxes), 32)))
				return
			}
			max = &n
		}
		if err := checkMaxSandboxes(max); err != nil {
			s.fail(w, err)
			return
		}
		if err := s.accounts.SetTeamMaxSandboxes(r.Context(), t.ID, max); err != nil {
			s.fail(w, err)
			return
		}
		t.MaxSandboxes = max
		s.log.InfoContext(r.Context(), "team cap changed", "team.id", t.ID, "max_sandboxes", max)
	}
	writeJSON(w, http.StatusOK, toTeamJSON(t))
}

// deleteTeam removes a team's data (secrets, volumes, webhooks, snapshots:
// OnTeamDeleted), revokes its keys, deletes it and kills its sandboxes.
// Its events, usage and templates stay (history; templates are removed
// with sbx template delete before, if wanted).
func (s *Server) deleteTeam(w http.ResponseWriter, r *http.Request) {
	if err := auth.RequireAdmin(r.Context(), "deleting a team"); err != nil {
		s.fail(w, err)
		return
	}
	t, err := s.pathTeam(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	// A client that hangs up does not stop the deletion half-way.
	ctx := context.WithoutCancel(r.Context())
	// The data goes first, while the team exists: if removing some fails,
	// the team stays and the same DELETE can be sent again.
	if what, err := s.removeTeamData(ctx, t.ID); err != nil {
		s.fail(w, errdefs.Wrap(errdefs.ErrUnavailable, err, "team %s was not deleted: removing its %s failed "+
			"(the server log says why); send the DELETE again", t.ID, what))
		return
	}
	if err := s.accounts.DeleteTeam(ctx, t.ID); err != nil {
		s.fail(w, err)
		return
	}
	s.keys.flush() // its keys stop now; then nothing new can start
	live, err := s.sandboxes.List(ctx, store.ListFilter{TeamID: t.ID,
		States: []store.SandboxState{store.StateRunning, store.StatePaused}})
	if err != nil {
		s.fail(w, err)
		return
	}
	for _, sb := range live {
		if err := s.sandboxes.Kill(ctx, t.ID, sb.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			s.log.WarnContext(ctx, "kill sandbox of deleted team", "team.id", t.ID, "sandbox.id", sb.ID, "err", err)
		}
	}
	// Once more for anything its keys made while the first pass ran.
	if what, err := s.removeTeamData(ctx, t.ID); err != nil {
		s.log.ErrorContext(ctx, "remove data of deleted team", "team.id", t.ID, "what", what, "err", err)
	}
	s.log.InfoContext(ctx, "team deleted", "team.id", t.ID, "team.name", t.Name, "sandboxes_killed", len(live))
	w.WriteHeader(http.StatusNoContent)
}

// removeTeamData runs every cleanup; what names those that failed.
func (s *Server) removeTeamData(ctx context.Context, teamID string) (what string, err error) {
	var failed []string
	var errs []error
	for _, c := range s.cleanups {
		if err := c.remove(ctx, teamID); err != nil {
			failed, errs = append(failed, c.what), append(errs, fmt.Errorf("%s: %w", c.what, err))
		}
	}
	return strings.Join(failed, " and "), errors.Join(errs...)
}

// teamCleanup removes one kind of a deleted team's data.
type teamCleanup struct {
	what   string
	remove func(ctx context.Context, teamID string) error
}

// OnTeamDeleted registers what removes one kind of a team's data (secrets,
// volumes, webhooks, snapshots) when the team is deleted. It runs before
// the team is deleted and once more after its sandboxes are killed, so it
// must be idempotent.
func (s *Server) OnTeamDeleted(what string, remove func(ctx context.Context, teamID string) error) {
	s.cleanups = append(s.cleanups, teamCleanup{what: what, remove: remove})
}
