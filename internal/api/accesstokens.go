package api

import (
	"net/http"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
)

// E2B's access tokens (POST /access-tokens, DELETE
// /access-tokens/{accessTokenID}) are, in sbx, API keys of the caller's
// team in E2B's access-token format (sk_e2b_…): one implementation of
// keys, listed by GET /api-keys with that prefix in their mask, accepted
// in X-API-Key and as "Authorization: Bearer" as legacy clients send them.

// createdAccessTokenJSON is E2B's CreatedAccessToken.
type createdAccessTokenJSON struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Token     string      `json:"token"`
	Mask      keyMaskJSON `json:"mask"`
	CreatedAt time.Time   `json:"createdAt"`
}

func (s *Server) accessTokenRoutes() {
	s.mux.HandleFunc("POST /access-tokens", s.createAccessToken)
	s.mux.HandleFunc("DELETE /access-tokens/{accessTokenID}", s.deleteAccessToken)
}

func (s *Server) createAccessToken(w http.ResponseWriter, r *http.Request) {
	k, value, ok := s.newKey(w, r, auth.NewAccessToken, "access token")
	if !ok {
		return
	}
	j := toKeyJSON(k, team(r))
	writeJSON(w, http.StatusCreated, createdAccessTokenJSON{ID: k.ID, Name: k.Name, Token: value, Mask: j.Mask, CreatedAt: k.CreatedAt})
}

// deleteAccessToken revokes one of the team's access tokens; an ID that
// names an API key of the other format is not an access token (404):
// those are revoked with DELETE /api-keys/{id}.
func (s *Server) deleteAccessToken(w http.ResponseWriter, r *http.Request) {
	id, caller := r.PathValue("accessTokenID"), team(r)
	k, err := s.accounts.APIKey(r.Context(), id)
	if err == nil && ((!everyTeam(caller) && k.TeamID != caller.ID) || k.Mask.Prefix != auth.AccessTokenPrefix) {
		err = errdefs.NotFound("access token %s not found", truncate(id, 64))
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := s.accounts.DeleteAPIKey(r.Context(), k.ID, false); err != nil {
		s.fail(w, err)
		return
	}
	s.keys.flush()
	s.log.InfoContext(r.Context(), "access token revoked", "team.id", k.TeamID, "key.id", k.ID, "by", caller.KeyID)
	w.WriteHeader(http.StatusNoContent)
}
