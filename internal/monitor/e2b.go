package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/usage"
)

// e2bSandboxes is sbx monitor's view of a team's sandboxes on E2B's cloud:
// the live list comes from the stored lifecycle events; kill and pause go
// to E2B's API when an API key is configured.
type e2bSandboxes struct {
	evlog  *events.Log
	usage  *usage.Service
	apiURL string
	apiKey string
	http   *http.Client
	log    *slog.Logger

	mu   sync.Mutex
	gone map[string]bool // killed through the API, before E2B's killed event arrives
}

// Live returns sandboxes whose last lifecycle event is not a kill.
func (v *e2bSandboxes) Live() []store.Sandbox {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sbs, err := v.usage.Sandboxes(ctx, "", time.Time{})
	if err != nil {
		v.log.Warn("read sandboxes from events", "err", err)
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []store.Sandbox
	for _, s := range sbs {
		if !s.Alive() || v.gone[s.ID] {
			continue
		}
		state := store.StateRunning
		if s.Paused {
			state = store.StatePaused
		}
		out = append(out, store.Sandbox{ID: s.ID, TeamID: s.TeamID, TemplateID: s.TemplateID, State: state,
			Metadata: s.Metadata, CPUCount: s.VCPU, MemoryMB: s.MemoryMB, StartedAt: s.CreatedAt})
	}
	return out
}

func (v *e2bSandboxes) call(ctx context.Context, method, id, suffix string) error {
	if v.apiKey == "" {
		return errdefs.Precondition("sbx monitor has no E2B API key (--e2b-api-key): it can alert but not act on sandbox %s", id)
	}
	req, err := http.NewRequestWithContext(ctx, method, v.apiURL+"/sandboxes/"+url.PathEscape(id)+suffix, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", v.apiKey)
	resp, err := v.http.Do(req)
	if err != nil {
		return errdefs.Wrap(errdefs.ErrUnavailable, err, "E2B API unreachable at %s", v.apiURL)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		v.forget(id)
		return errdefs.NotFound("sandbox %s not found on E2B", id)
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("E2B %s /sandboxes/%s%s: HTTP %d: %s", method, id, suffix, resp.StatusCode, b)
	}
	return nil
}

func (v *e2bSandboxes) forget(id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.gone == nil {
		v.gone = map[string]bool{}
	}
	v.gone[id] = true
}

// KillWithReason kills through E2B's DELETE /sandboxes/{id}. E2B's own
// killed event follows; the reason is in the runaway/budget event before it.
func (v *e2bSandboxes) KillWithReason(ctx context.Context, id, reason string) error {
	if err := v.call(ctx, http.MethodDelete, id, ""); err != nil {
		return err
	}
	v.forget(id)
	v.log.Info("killed sandbox on E2B", "sandbox.id", id, "reason", reason)
	return nil
}

// PauseWithReason pauses through E2B's POST /sandboxes/{id}/pause.
func (v *e2bSandboxes) PauseWithReason(ctx context.Context, id, reason string) error {
	if err := v.call(ctx, http.MethodPost, id, "/pause"); err != nil {
		return err
	}
	v.log.Info("paused sandbox on E2B", "sandbox.id", id, "reason", reason)
	return nil
}

// Register adds the sandbox routes the dashboard uses.
func (v *e2bSandboxes) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v2/sandboxes", v.list)
	mux.HandleFunc("GET /sandboxes", v.list)
	mux.HandleFunc("GET /sandboxes/{id}", v.get)
	mux.HandleFunc("DELETE /sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		v.act(w, r, func(id string) error { return v.KillWithReason(r.Context(), id, "request") })
	})
	mux.HandleFunc("POST /sandboxes/{id}/pause", func(w http.ResponseWriter, r *http.Request) {
		v.act(w, r, func(id string) error { return v.PauseWithReason(r.Context(), id, "request") })
	})
}

type listed struct {
	SandboxID  string            `json:"sandboxID"`
	TemplateID string            `json:"templateID"`
	ClientID   string            `json:"clientID"`
	StartedAt  time.Time         `json:"startedAt"`
	CPUCount   int               `json:"cpuCount"`
	MemoryMB   int               `json:"memoryMB"`
	Metadata   map[string]string `json:"metadata"`
	State      string            `json:"state"`
}

func (v *e2bSandboxes) team(r *http.Request) []store.Sandbox {
	teamID, _ := usageTeam(r)
	var out []store.Sandbox
	for _, s := range v.Live() {
		if s.TeamID == teamID {
			out = append(out, s)
		}
	}
	return out
}

func toListed(s store.Sandbox) listed {
	md := s.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return listed{SandboxID: s.ID, TemplateID: s.TemplateID, ClientID: "e2b", StartedAt: s.StartedAt,
		CPUCount: s.CPUCount, MemoryMB: s.MemoryMB, Metadata: md, State: string(s.State)}
}

func (v *e2bSandboxes) list(w http.ResponseWriter, r *http.Request) {
	out := []listed{}
	for _, s := range v.team(r) {
		out = append(out, toListed(s))
	}
	writeJSON(w, out)
}

func (v *e2bSandboxes) find(r *http.Request) (store.Sandbox, error) {
	id := r.PathValue("id")
	for _, s := range v.team(r) {
		if s.ID == id {
			return s, nil
		}
	}
	return store.Sandbox{}, errdefs.NotFound("sandbox %s not found (no live sandbox with that ID in the received events)", id)
}

func (v *e2bSandboxes) get(w http.ResponseWriter, r *http.Request) {
	s, err := v.find(r)
	if err != nil {
		errdefs.WriteHTTP(w, v.log, err)
		return
	}
	writeJSON(w, toListed(s))
}

func (v *e2bSandboxes) act(w http.ResponseWriter, r *http.Request, fn func(id string) error) {
	s, err := v.find(r)
	if err == nil {
		err = fn(s.ID)
	}
	if err != nil {
		errdefs.WriteHTTP(w, v.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func usageTeam(r *http.Request) (string, error) { return usage.TeamID(r) }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
