package api

import (
	"context"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/secret"
)

// Secrets is the team secrets service (secret.Service).
type Secrets interface {
	Create(ctx context.Context, teamID, name, value string, metadata map[string]string) (secret.Secret, error)
	Update(ctx context.Context, teamID, ref, value string, metadata map[string]string) (secret.Secret, error)
	Get(ctx context.Context, teamID, ref string) (secret.Secret, error)
	List(ctx context.Context, teamID, after string, limit int) ([]secret.Secret, error)
	Delete(ctx context.Context, teamID, ref string) error
	Resolve(ctx context.Context, teamID string, env map[string]string) (map[string]string, error)
}

// SetSecrets serves /secrets and resolves ${e2b.secrets.<name>} in the
// envVars of new sandboxes.
func (s *Server) SetSecrets(sv Secrets) {
	s.secrets = sv
	s.mux.HandleFunc("GET /secrets", s.listSecrets)
	s.mux.HandleFunc("POST /secrets", s.createSecret)
	s.mux.HandleFunc("GET /secrets/{id}", s.getSecret)
	s.mux.HandleFunc("POST /secrets/{id}", s.updateSecret)
	s.mux.HandleFunc("DELETE /secrets/{id}", s.deleteSecret)
}

// secretJSON is E2B's Secret: metadata only, never the value.
type secretJSON struct {
	SecretID       string            `json:"secretID"`
	Name           string            `json:"name"`
	CurrentVersion int64             `json:"currentVersion"`
	Metadata       map[string]string `json:"metadata"`
	CreatedAt      time.Time         `json:"createdAt"`
	UpdatedAt      time.Time         `json:"updatedAt"`
}

func toSecretJSON(x secret.Secret) secretJSON {
	return secretJSON{SecretID: x.ID, Name: x.Name, CurrentVersion: x.Version, Metadata: x.Metadata,
		CreatedAt: x.CreatedAt, UpdatedAt: x.UpdatedAt}
}

type newSecretBody struct {
	Name     string            `json:"name"`
	Value    string            `json:"value"`
	Metadata map[string]string `json:"metadata"`
}

type secretUpdateBody struct {
	Value    *string           `json:"value"`
	Metadata map[string]string `json:"metadata"`
}

const maxSecretBody = secret.MaxValueBytes + 128<<10

func (s *Server) createSecret(w http.ResponseWriter, r *http.Request) {
	var b newSecretBody
	if err := decode(r, &b, maxSecretBody); err != nil {
		s.fail(w, err)
		return
	}
	x, err := s.secrets.Create(r.Context(), team(r).ID, b.Name, b.Value, b.Metadata)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, toSecretJSON(x))
}

func (s *Server) updateSecret(w http.ResponseWriter, r *http.Request) {
	var b secretUpdateBody
	if err := decode(r, &b, maxSecretBody); err != nil {
		s.fail(w, err)
		return
	}
	if b.Value == nil {
		s.fail(w, errdefs.Invalid("value is required: an update stores the secret's new value as its next version"))
		return
	}
	x, err := s.secrets.Update(r.Context(), team(r).ID, r.PathValue("id"), *b.Value, b.Metadata)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toSecretJSON(x))
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request) {
	x, err := s.secrets.Get(r.Context(), team(r).ID, r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toSecretJSON(x))
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request) {
	if err := s.secrets.Delete(r.Context(), team(r).ID, r.PathValue("id")); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// listSecrets pages by name: nextToken is the last name of the page
// (base64), and only a page followed by more secrets carries one.
func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.fail(w, errdefs.Invalid("limit %q: want a number from 1 to 1000", v))
			return
		}
		limit = n
	}
	after := ""
	if tok := q.Get("nextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			s.fail(w, errdefs.Invalid("nextToken %q: not a token this server gave out", truncate(tok, 64)))
			return
		}
		after = string(b)
	}
	list, err := s.secrets.List(r.Context(), team(r).ID, after, limit+1)
	if err != nil {
		s.fail(w, err)
		return
	}
	if len(list) > limit {
		list = list[:limit]
		w.Header().Set("X-Next-Token", base64.RawURLEncoding.EncodeToString([]byte(list[limit-1].Name)))
	}
	out := make([]secretJSON, 0, len(list))
	for _, x := range list {
		out = append(out, toSecretJSON(x))
	}
	writeJSON(w, http.StatusOK, out)
}
