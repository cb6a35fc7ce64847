package api

import (
	"context"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/internal/store"
)

// API keys, in E2B's shape (GET/POST /api-keys, PATCH/DELETE
// /api-keys/{apiKeyID}): a team key manages its own team's keys; the admin
// key manages every team's (X-Team-ID picks the team for a new key and
// narrows the list). Keys are stored hashed: only their creation answer
// carries the value, listings carry a mask.

type keyMaskJSON struct {
	Prefix            string `json:"prefix"`
	ValueLength       int    `json:"valueLength"`
	MaskedValuePrefix string `json:"maskedValuePrefix"`
	MaskedValueSuffix string `json:"maskedValueSuffix"`
}

// apiKeyJSON is E2B's TeamAPIKey, plus teamID and current (sbx extensions:
// whose key it is, and whether it authenticated this request).
type apiKeyJSON struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Mask      keyMaskJSON `json:"mask"`
	CreatedAt time.Time   `json:"createdAt"`
	CreatedBy *struct{}   `json:"createdBy"`
	LastUsed  *time.Time  `json:"lastUsed"`
	TeamID    string      `json:"teamID"`
	Current   bool        `json:"current,omitempty"`
}

// createdKeyJSON is E2B's CreatedTeamAPIKey: the only answer with the key.
type createdKeyJSON struct {
	apiKeyJSON
	Key string `json:"key"`
}

func toKeyJSON(k store.APIKey, caller auth.Team) apiKeyJSON {
	out := apiKeyJSON{ID: k.ID, Name: k.Name, CreatedAt: k.CreatedAt, TeamID: k.TeamID, Current: k.ID == caller.KeyID,
		Mask: keyMaskJSON{Prefix: k.Mask.Prefix, ValueLength: k.Mask.ValueLength,
			MaskedValuePrefix: k.Mask.MaskedPrefix, MaskedValueSuffix: k.Mask.MaskedSuffix}}
	if !k.LastUsed.IsZero() {
		used := k.LastUsed
		out.LastUsed = &used
	}
	return out
}

// keyName is E2B's NewTeamAPIKey / UpdateTeamAPIKey body.
type keyName struct {
	Name string `json:"name"`
}

func (b keyName) Validate() error { return checkName("name", b.Name) }

// checkName bounds the names people give keys and teams.
func checkName(field, name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return errdefs.Invalid("%s is required", field)
	case len(name) > 64:
		return errdefs.Invalid("%s is %d bytes, more than the limit of 64", field, len(name))
	case strings.TrimSpace(name) != name:
		return errdefs.Invalid("%s must not start or end with spaces", field)
	case strings.ContainsFunc(name, unicode.IsControl):
		return errdefs.Invalid("%s must not contain control characters", field)
	}
	return nil
}

// accountRoutes registers /api-keys and /teams (teams.go).
func (s *Server) accountRoutes() {
	m := s.mux
	m.HandleFunc("GET /api-keys", s.listKeys)
	m.HandleFunc("POST /api-keys", s.createKey)
	m.HandleFunc("PATCH /api-keys/{apiKeyID}", s.renameKey)
	m.HandleFunc("DELETE /api-keys/{apiKeyID}", s.deleteKey)
	m.HandleFunc("GET /teams", s.listTeams)
	m.HandleFunc("POST /teams", s.createTeam)
	m.HandleFunc("GET /teams/{teamID}", s.getTeam)
	m.HandleFunc("PATCH /teams/{teamID}", s.updateTeam)
	m.HandleFunc("DELETE /teams/{teamID}", s.deleteTeam)
	for _, p := range []string{"GET /api-keys", "POST /api-keys", "PATCH /api-keys/{apiKeyID}", "DELETE /api-keys/{apiKeyID}",
		"GET /teams", "POST /teams", "GET /teams/{teamID}", "PATCH /teams/{teamID}", "DELETE /teams/{teamID}"} {
		s.admin[p] = true
	}
}

// everyTeam reports whether the caller is the admin without X-Team-ID.
func everyTeam(t auth.Team) bool { return t.Admin && t.ID == "" }

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	caller := team(r)
	keys, err := s.accounts.APIKeys(r.Context(), caller.ID) // "" = all, for the admin
	if err != nil {
		s.fail(w, err)
		return
	}
	out := make([]apiKeyJSON, 0, len(keys))
	for _, k := range keys {
		out = append(out, toKeyJSON(k, caller))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	k, value, ok := s.newKey(w, r, auth.NewAPIKey, "API key")
	if ok {
		writeJSON(w, http.StatusCreated, createdKeyJSON{apiKeyJSON: toKeyJSON(k, team(r)), Key: value})
	}
}

// newKey creates a key of the caller's team from a {"name"} body with a
// value from mint (API keys and access tokens share the store and its
// per-team bound); on failure it has answered and ok is false.
func (s *Server) newKey(w http.ResponseWriter, r *http.Request, mint func() string, what string) (_ store.APIKey, value string, ok bool) {
	teamID, err := auth.TeamID(r.Context())
	if err != nil {
		s.fail(w, err)
		return store.APIKey{}, "", false
	}
	var body keyName
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return store.APIKey{}, "", false
	}
	if err := s.roomForKey(r.Context(), teamID); err != nil {
		s.fail(w, err)
		return store.APIKey{}, "", false
	}
	value = mint()
	k, err := s.accounts.CreateAPIKey(r.Context(), teamID, body.Name, value)
	if err != nil {
		s.fail(w, err)
		return store.APIKey{}, "", false
	}
	s.log.InfoContext(r.Context(), what+" created", "team.id", teamID, "key.id", k.ID, "by", team(r).KeyID)
	return k, value, true
}

// maxTeamKeys bounds a team's API keys and access tokens together: every
// key is a database row, listed whole by GET /api-keys, and a team
// creating them in a loop must not grow either without end.
const maxTeamKeys = 500

// roomForKey refuses a new key to a team that has maxTeamKeys already.
// Concurrent creates may pass the count together; the bound is still
// there, a few keys higher.
func (s *Server) roomForKey(ctx context.Context, teamID string) error {
	keys, err := s.accounts.APIKeys(ctx, teamID)
	if err != nil {
		return err
	}
	if len(keys) >= maxTeamKeys {
		return errdefs.Exhausted("the team has %d API keys and access tokens, the most it may have: revoke unused ones "+
			"(DELETE /api-keys/{id}, DELETE /access-tokens/{id}, `sbx key revoke`)", len(keys))
	}
	return nil
}

// ownKey finds a key the caller may manage: its own team's, or any for the
// admin. Another team's key is reported as missing.
func (s *Server) ownKey(r *http.Request) (store.APIKey, error) {
	id, caller := r.PathValue("apiKeyID"), team(r)
	k, err := s.accounts.APIKey(r.Context(), id)
	if err == nil && !everyTeam(caller) && k.TeamID != caller.ID {
		err = errdefs.NotFound("API key %s not found", truncate(id, 64))
	}
	return k, err
}

func (s *Server) renameKey(w http.ResponseWriter, r *http.Request) {
	var body keyName
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	k, err := s.ownKey(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := s.accounts.RenameAPIKey(r.Context(), k.ID, body.Name); err != nil {
		s.fail(w, err)
		return
	}
	k.Name = body.Name
	writeJSON(w, http.StatusOK, toKeyJSON(k, team(r)))
}

func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request) {
	force, err := boolQuery(r, "force")
	if err != nil {
		s.fail(w, err)
		return
	}
	k, err := s.ownKey(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := s.accounts.DeleteAPIKey(r.Context(), k.ID, force); err != nil {
		s.fail(w, err)
		return
	}
	s.keys.flush()
	s.log.InfoContext(r.Context(), "API key revoked", "team.id", k.TeamID, "key.id", k.ID, "by", team(r).KeyID)
	w.WriteHeader(http.StatusNoContent)
}

func boolQuery(r *http.Request, name string) (bool, error) {
	switch v := r.URL.Query().Get(name); v {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	default:
		return false, errdefs.Invalid("query parameter %s must be true or false, got %q", name, truncate(v, 32))
	}
}
