package refine

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/llm"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/sdk"
)

// Bounds of the server-side API.
const (
	maxRequestBody = 1 << 20
	// maxRunTime caps one server-side refinement; it runs detached from
	// the request so GET /refinements/{id} can follow it after a disconnect.
	maxRunTime = 30 * time.Minute
	// keepFinished is how many finished refinements stay queryable.
	keepFinished = 1000
	// envTTL is how long a template probe is trusted; templates can be rebuilt.
	envTTL = 10 * time.Minute
)

// Handler serves POST /refinements (runs a refinement, streaming attempts
// as NDJSON) and GET /refinements/{id}. The loop runs in the server; its
// sandboxes are created through the server's own API with the caller's
// API key, so they belong to the caller's team and obey its limits.
type Handler struct {
	apiURL string
	log    *slog.Logger
	// hc reaches the server's own API (nil = the SDK's default); over TLS
	// it must trust the server's certificate (SetHTTPClient).
	hc *http.Client
	// newGenerator builds the LLM client for a request; tests replace it.
	newGenerator func(model string) (Generator, error)

	// db persists refinements; nil keeps them in memory only.
	db *store
	// envs caches template probes per team (custom templates are a
	// team's own), so only a team's first refinement on a template probes.
	envs sync.Map // team ID -> *Environments

	mu   sync.Mutex
	runs map[string]*run
	done []string // finished IDs, oldest first, for eviction
}

type run struct {
	teamID string
	mu     sync.Mutex
	res    *Result
}

func (r *run) snapshot() Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := *r.res
	c.Attempts = append([]*Attempt(nil), r.res.Attempts...)
	return c
}

// NewHandler returns the refinements API. apiURL is the server's own base
// URL (http://listen-addr); the LLM is configured by SBX_LLM_* in the
// server's environment, read per request so a fix needs no restart.
// With repo (the server's database) refinements are also kept and
// survive restarts; if they cannot be read
// the handler logs why and keeps them in memory only, since refinement is
// not worth refusing to serve sandboxes for.
func NewHandler(apiURL string, repo Repository, log *slog.Logger) *Handler {
	h := &Handler{apiURL: strings.TrimRight(apiURL, "/"), log: log, runs: map[string]*run{}}
	if repo != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := openStore(ctx, repo)
		if err != nil {
			log.Error("refinements are kept in memory only", "err", err)
		} else {
			h.db = st
		}
	}
	h.newGenerator = func(model string) (Generator, error) {
		cfg, err := llm.ConfigFromEnv()
		if err != nil {
			return nil, err
		}
		if model != "" {
			cfg.Model = model
		}
		return llm.New(cfg, log)
	}
	return h
}

// Register adds the routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /refinements", h.create)
	mux.HandleFunc("GET /refinements/{id}", h.get)
}

// CreateRequest is the body of POST /refinements.
type CreateRequest struct {
	Options
	// RunTimeoutSeconds bounds one execution (default 60).
	RunTimeoutSeconds int `json:"run_timeout,omitempty"`
	// Model overrides SBX_LLM_MODEL for this refinement.
	Model string `json:"model,omitempty"`
}

// StreamLine is one NDJSON line of POST /refinements: type "started"
// (Refinement without attempts), "attempt", then "result" (the whole
// Refinement) or "error".
type StreamLine struct {
	Type       string   `json:"type"`
	Refinement *Result  `json:"refinement,omitempty"`
	Attempt    *Attempt `json:"attempt,omitempty"`
	Error      string   `json:"error,omitempty"`
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	teamID, err := auth.TeamID(r.Context())
	if err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	var req CreateRequest
	if err := request.Decode(r, &req, maxRequestBody); err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	if req.RunTimeoutSeconds < 0 {
		errdefs.WriteHTTP(w, h.log, errdefs.Invalid("run_timeout must be >= 0 seconds, got %d", req.RunTimeoutSeconds))
		return
	}
	opts := req.Options
	opts.RunTimeout = time.Duration(req.RunTimeoutSeconds) * time.Second
	if err := opts.Validate(); err != nil {
		errdefs.WriteHTTP(w, h.log, errdefs.Invalid("%v", err))
		return
	}
	gen, err := h.newGenerator(req.Model)
	if err != nil {
		errdefs.WriteHTTP(w, h.log, errdefs.Precondition("the server cannot reach an LLM: %v (set SBX_LLM_BASE_URL, SBX_LLM_MODEL and SBX_LLM_API_KEY in the environment of sbx serve, or run `sbx refine` locally)", err))
		return
	}
	client, err := sdk.NewClient(sdk.Config{APIURL: h.apiURL, SandboxURL: h.apiURL, APIKey: apiKey(r), HTTPClient: h.hc})
	if err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	// Probe the template before answering 200, so a missing template or
	// an exhausted budget is a plain HTTP error, not a stream line.
	exec := NewExecutor(client, h.log)
	envs, _ := h.envs.LoadOrStore(teamID, NewEnvironments(envTTL))
	exec.ShareEnvironments(envs.(*Environments))
	lang, _ := LookupLanguage(opts.Language)
	if _, err := exec.Environment(r.Context(), opts, lang); err != nil {
		errdefs.WriteHTTP(w, h.log, sandboxError(err))
		return
	}
	h.mu.Lock()
	if _, dup := h.runs[opts.ID]; dup {
		h.mu.Unlock()
		errdefs.WriteHTTP(w, h.log, errdefs.Exists("refinement %q already exists; omit id to get a fresh one", opts.ID))
		return
	}
	rn := &run{teamID: teamID, res: &Result{ID: opts.ID, Status: StatusRunning, Requirement: opts.Requirement,
		Template: opts.Template, MaxAttempts: opts.MaxAttempts, StartedAt: time.Now().UTC(), Attempts: []*Attempt{}}}
	h.runs[opts.ID] = rn
	h.mu.Unlock()
	if h.db != nil {
		if err := h.db.insert(r.Context(), teamID, rn.res); err != nil {
			h.mu.Lock()
			delete(h.runs, opts.ID)
			h.mu.Unlock()
			if errors.Is(err, errDuplicate) {
				err = errdefs.Exists("refinement %q already exists; omit id to get a fresh one", opts.ID)
			}
			errdefs.WriteHTTP(w, h.log, err)
			return
		}
	}

	lines := make(chan StreamLine, 64)
	obs := Observer{
		// The refiner's Result is live; keep our own copy for GET.
		OnStart: func(res *Result) {
			c := *res
			c.Attempts = []*Attempt{}
			rn.mu.Lock()
			rn.res = &c
			rn.mu.Unlock()
			c2 := c
			send(lines, StreamLine{Type: "started", Refinement: &c2})
		},
		OnAttempt: func(a *Attempt) {
			rn.mu.Lock()
			rn.res.Attempts = append(rn.res.Attempts, a)
			rn.res.Tokens = rn.res.Tokens.Add(a.Tokens)
			rn.res.SandboxCostUSD += a.SandboxCostUSD
			rn.mu.Unlock()
			send(lines, StreamLine{Type: "attempt", Attempt: a})
		},
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), maxRunTime)
	go func() {
		defer cancel()
		defer close(lines)
		ref := New(gen, exec, h.log)
		res, err := ref.Run(ctx, opts, obs)
		if res == nil {
			res = &Result{ID: opts.ID, Status: StatusFailed, Attempts: []*Attempt{}, Error: err.Error()}
		}
		rn.mu.Lock()
		rn.res = res
		rn.mu.Unlock()
		if h.db != nil {
			if err := h.db.save(context.WithoutCancel(ctx), teamID, res); err != nil {
				h.log.Error("save refinement", "refinement.id", opts.ID, "err", err)
			}
		}
		h.finished(opts.ID)
		c := rn.snapshot()
		if err != nil {
			send(lines, StreamLine{Type: "error", Refinement: &c, Error: err.Error()})
			return
		}
		send(lines, StreamLine{Type: "result", Refinement: &c})
	}()

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Refinement-Id", opts.ID)
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	for line := range lines {
		if r.Context().Err() != nil {
			continue // client gone: drain, the run goes on
		}
		if err := enc.Encode(line); err != nil {
			continue
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// send never blocks the loop on a slow client: lines beyond the buffer
// are dropped from the stream (GET has the full record).
func send(ch chan<- StreamLine, l StreamLine) {
	if l.Type != "attempt" {
		ch <- l // start and end lines always get through
		return
	}
	select {
	case ch <- l:
	default:
	}
}

func (h *Handler) finished(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = append(h.done, id)
	for len(h.done) > keepFinished {
		delete(h.runs, h.done[0])
		h.done = h.done[1:]
	}
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	teamID, err := auth.TeamID(r.Context())
	if err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	id := r.PathValue("id")
	h.mu.Lock()
	rn, ok := h.runs[id]
	h.mu.Unlock()
	var res Result
	switch {
	case ok && rn.teamID == teamID:
		res = rn.snapshot()
	case !ok && h.db != nil:
		stored, err := h.db.get(r.Context(), teamID, id)
		if err != nil {
			errdefs.WriteHTTP(w, h.log, err)
			return
		}
		if stored == nil {
			errdefs.WriteHTTP(w, h.log, errdefs.NotFound("refinement %q not found", id))
			return
		}
		res = *stored
	default:
		errdefs.WriteHTTP(w, h.log, errdefs.NotFound("refinement %q not found", id))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(res); err != nil {
		h.log.Debug("write refinement", "err", err)
	}
}

func apiKey(r *http.Request) string {
	if k := r.Header.Get("X-API-Key"); k != "" {
		return k
	}
	b, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return b
}

// sandboxError gives an error from the server's own API (reached through
// the SDK) the category it had there, so the caller sees the same status.
func sandboxError(err error) error {
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return err
	case sdk.IsNotFound(err):
		return errdefs.Wrap(errdefs.ErrNotFound, err, "%v", err)
	case sdk.IsUnauthorized(err):
		return errdefs.Wrap(errdefs.ErrUnauthenticated, err, "%v", err)
	case sdk.IsRateLimited(err):
		return errdefs.Wrap(errdefs.ErrResourceExhausted, err, "%v", err)
	case sdk.IsInvalidArgument(err):
		return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "%v", err)
	}
	return errdefs.Wrap(errdefs.ErrUnavailable, err, "%v", err)
}

// SetHTTPClient sets the client used to reach the server's own API: over
// TLS, one that trusts the certificate the server serves.
func (h *Handler) SetHTTPClient(hc *http.Client) { h.hc = hc }
