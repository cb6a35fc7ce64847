package api

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/network"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
)

// newSandbox is E2B's NewSandbox (and NewSandboxV2) body. The fields sbx
// does not implement are accepted as the E2B SDKs send them and ignored;
// any other field is refused with a 400 naming it, so a typo is not
// silently dropped.
type newSandbox struct {
	TemplateID          string            `json:"templateID"`
	Timeout             *int64            `json:"timeout"`
	AutoPause           bool              `json:"autoPause"`
	Secure              *bool             `json:"secure"`
	AllowInternetAccess *bool             `json:"allow_internet_access"`
	Metadata            map[string]string `json:"metadata"`
	EnvVars             map[string]string `json:"envVars"`
	AutoPauseMemory     *bool             `json:"autoPauseMemory"`
	AutoResume          *autoResumeJSON   `json:"autoResume"`
	Network             *networkJSON      `json:"network"`
	VolumeMounts        []volumeMount     `json:"volumeMounts"`

	// mcp is accepted (the SDK starts the gateway itself); iam is refused (options.go).
	MCP json.RawMessage `json:"mcp"`
	IAM json.RawMessage `json:"iam"`
}

// timeoutBody is the body of set-timeout, connect and resume: E2B's
// {timeout} plus the fields its SDKs send that sbx ignores.
type timeoutBody struct {
	Timeout   *int64 `json:"timeout"`
	Memory    *bool  `json:"memory"`    // connect/resume: false = boot again from the filesystem
	AutoPause *bool  `json:"autoPause"` // legacy resume
}

// seconds converts the body's timeout (nil: def) without overflow.
func (b timeoutBody) seconds(def time.Duration) (time.Duration, error) {
	if b.Timeout == nil {
		return def, nil
	}
	return request.Seconds("timeout", *b.Timeout, sandbox.MaxTimeout)
}

// sandboxJSON is E2B's Sandbox (create/connect response).
type sandboxJSON struct {
	TemplateID         string  `json:"templateID"`
	SandboxID          string  `json:"sandboxID"`
	Alias              string  `json:"alias,omitempty"`
	ClientID           string  `json:"clientID"`
	EnvdVersion        string  `json:"envdVersion"`
	EnvdAccessToken    string  `json:"envdAccessToken,omitempty"`
	TrafficAccessToken *string `json:"trafficAccessToken"`
	Domain             *string `json:"domain"`
}

// detailJSON is E2B's SandboxDetail / ListedSandbox.
type detailJSON struct {
	TemplateID          string            `json:"templateID"`
	Alias               string            `json:"alias,omitempty"`
	SandboxID           string            `json:"sandboxID"`
	ClientID            string            `json:"clientID"`
	StartedAt           time.Time         `json:"startedAt"`
	EndAt               time.Time         `json:"endAt"`
	EnvdVersion         string            `json:"envdVersion"`
	EnvdAccessToken     string            `json:"envdAccessToken,omitempty"`
	AllowInternetAccess *bool             `json:"allowInternetAccess,omitempty"`
	Domain              *string           `json:"domain"`
	CPUCount            int               `json:"cpuCount"`
	MemoryMB            int               `json:"memoryMB"`
	DiskSizeMB          int               `json:"diskSizeMB"`
	Metadata            map[string]string `json:"metadata"`
	State               string            `json:"state"`
	Lifecycle           *lifecycleJSON    `json:"lifecycle,omitempty"`
	Network             *networkJSON      `json:"network,omitempty"`
	// PauseTier (sbx extension) says where a paused sandbox is kept:
	// "memory" (frozen) or "disk" (checkpointed).
	PauseTier string `json:"pauseTier,omitempty"`
	// Runtime (sbx extension) is the OCI runtime that runs the sandbox:
	// the server's (crun by default), or runsc for one restored from a
	// template snapshot.
	Runtime string `json:"runtime,omitempty"`
}

type lifecycleJSON struct {
	AutoResume bool   `json:"autoResume"`
	OnTimeout  string `json:"onTimeout"`
}

const clientID = "sbx"

func toSandboxJSON(sb store.Sandbox) sandboxJSON {
	return sandboxJSON{TemplateID: sb.TemplateID, SandboxID: sb.ID, Alias: sb.Alias, ClientID: clientID,
		EnvdVersion: sandbox.EnvdVersion, EnvdAccessToken: sb.AccessToken}
}

func toDetail(sb store.Sandbox, full bool) detailJSON {
	d := detailJSON{TemplateID: sb.TemplateID, Alias: sb.Alias, SandboxID: sb.ID, ClientID: clientID,
		StartedAt: sb.StartedAt, EndAt: sb.EndAt, EnvdVersion: sandbox.EnvdVersion,
		CPUCount: sb.CPUCount, MemoryMB: sb.MemoryMB, DiskSizeMB: sb.DiskMB,
		Metadata: sb.Metadata, State: string(sb.State)}
	if d.Metadata == nil {
		d.Metadata = map[string]string{}
	}
	if full {
		allow := sb.AllowInternet
		d.AllowInternetAccess = &allow
		d.EnvdAccessToken = sb.AccessToken
		onTimeout := "kill"
		if sb.AutoPause {
			onTimeout = "pause"
		}
		d.Lifecycle = &lifecycleJSON{OnTimeout: onTimeout}
		d.Runtime = sb.Runtime
	}
	return d
}

func (s *Server) createV1(w http.ResponseWriter, r *http.Request) { s.create(w, r, false) }
func (s *Server) createV2(w http.ResponseWriter, r *http.Request) { s.create(w, r, true) }

func (s *Server) create(w http.ResponseWriter, r *http.Request, v2 bool) {
	var body newSandbox
	if err := decode(r, &body, request.MaxBody); err != nil {
		s.fail(w, err)
		return
	}
	if err := body.unsupported(); err != nil {
		s.fail(w, err)
		return
	}
	req := sandbox.CreateRequest{TeamID: team(r).ID, Template: body.TemplateID,
		Metadata: body.Metadata, EnvVars: body.EnvVars, AllowInternet: true, AutoPause: body.AutoPause,
		Secure: v2}
	var err error
	if req.Timeout, err = (timeoutBody{Timeout: body.Timeout}).seconds(0); err != nil {
		s.fail(w, err)
		return
	}
	if err := req.Validate(); err != nil { // before any work, also in front of wrappers
		s.fail(w, err)
		return
	}
	var sb store.Sandbox
	var traffic string
	if rc, ok := s.sandboxes.(NodeCreator); ok {
		sb, traffic, err = s.createOnNode(r.Context(), rc, req, body)
	} else {
		sb, traffic, err = s.createHere(r.Context(), req, body)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	if r.Context().Err() != nil {
		// The caller left before it could learn the sandbox's ID (the
		// client gave up, or the api replica that forwarded the create
		// died): nobody would use it, and it would hold its resources
		// until its timeout. An answer lost after this point is not
		// seen here; such a sandbox is listed (its metadata says whose
		// it is) and ends at its timeout.
		s.abandon(context.WithoutCancel(r.Context()), sb)
		s.creates.failed.Add(1)
		s.fail(w, r.Context().Err())
		return
	}
	s.creates.ok.Add(1)
	out := toSandboxJSON(sb)
	out.Domain = s.domain()
	if traffic != "" {
		out.TrafficAccessToken = &traffic
	}
	writeJSON(w, http.StatusCreated, out)
}

// createHere creates a sandbox on this server's manager (one box, a
// node): secrets resolved, the network planned and applied, volumes
// mounted from this server's images.
func (s *Server) createHere(ctx context.Context, req sandbox.CreateRequest, body newSandbox) (store.Sandbox, string, error) {
	var err error
	if s.secrets != nil {
		if req.EnvVars, err = s.secrets.Resolve(ctx, req.TeamID, req.EnvVars); err != nil {
			return store.Sandbox{}, "", err
		}
	}
	if body.Secure != nil {
		req.Secure = *body.Secure
	}
	n := s.net
	if n == nil {
		n = &networking{}
	}
	policy, netCfg, traffic, internet, err := n.plan(body.Network, body.AllowInternetAccess)
	if err != nil {
		return store.Sandbox{}, "", err
	}
	req.AllowInternet = internet
	req.Egress = policy // the manager applies it before anything runs in the sandbox
	if req.Mounts, err = s.mountsFor(ctx, req.TeamID, body.VolumeMounts); err != nil {
		return store.Sandbox{}, "", err
	}
	req.AutoPauseMemory = body.AutoPauseMemory
	if body.AutoResume != nil {
		req.AutoResume = body.AutoResume.Enabled
	}
	sb, err := s.sandboxes.Create(ctx, req)
	if err != nil {
		s.creates.failed.Add(1)
		return store.Sandbox{}, "", err
	}
	if err := n.apply(ctx, sb.ID, network.Policy{}, netCfg, traffic); err != nil {
		// Never hand out a sandbox whose policy is not in force.
		_ = s.sandboxes.Kill(context.WithoutCancel(ctx), sb.TeamID, sb.ID)
		s.creates.failed.Add(1)
		return store.Sandbox{}, "", err
	}
	return sb, traffic, nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	sb, err := s.sandboxes.Get(r.Context(), team(r).ID, r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	if sb.State == store.StateKilled {
		// E2B answers 404 for a killed sandbox; the reason (request,
		// timeout, oom, exited, ...) tells the client why it is gone.
		s.fail(w, errdefs.NotFound("sandbox %s not found (it was killed: %s)", sb.ID, cmp.Or(sb.KillReason, "unknown")))
		return
	}
	d := toDetail(sb, true)
	if lc, ok := s.sandboxes.(interface {
		LifecycleOf(id string) sandbox.Lifecycle
	}); ok {
		d.Lifecycle.AutoResume = lc.LifecycleOf(sb.ID).AutoResume
	}
	d.Domain = s.domain()
	if s.net != nil {
		if d.Network, _, err = s.net.settings(r.Context(), sb.ID); err != nil {
			s.fail(w, err)
			return
		}
	}
	if t, ok := s.sandboxes.(interface {
		PauseTier(ctx context.Context, teamID, id string) (string, error)
	}); ok && sb.State == store.StatePaused {
		d.PauseTier, _ = t.PauseTier(r.Context(), team(r).ID, sb.ID)
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) kill(w http.ResponseWriter, r *http.Request) {
	if err := s.sandboxes.Kill(r.Context(), team(r).ID, r.PathValue("id")); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request) {
	var body timeoutBody
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	if body.Timeout == nil {
		s.fail(w, errdefs.Invalid(`body must be {"timeout": <seconds, 0 to %d>}`, int64(sandbox.MaxTimeout/time.Second)))
		return
	}
	timeout, err := body.seconds(0)
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := s.sandboxes.SetTimeout(r.Context(), team(r).ID, r.PathValue("id"), timeout); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	var body timeoutBody
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	timeout, err := body.seconds(0) // 0: the manager's default
	if err != nil {
		s.fail(w, err)
		return
	}
	sb, resumed, err := s.connectMemory(r, r.PathValue("id"), timeout, body.Memory)
	if err != nil {
		s.fail(w, err)
		return
	}
	status := http.StatusOK
	if resumed {
		status = http.StatusCreated
	}
	writeJSON(w, status, s.connected(r.Context(), sb))
}

func (s *Server) listV1(w http.ResponseWriter, r *http.Request) {
	f, err := listFilter(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	f.Limit = 0
	s.list(w, r, f, false)
}

func (s *Server) listV2(w http.ResponseWriter, r *http.Request) {
	f, err := listFilter(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.list(w, r, f, true)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, f store.ListFilter, paged bool) {
	limit := f.Limit
	if paged && limit > 0 {
		// One more than the page: a next token is sent only when another
		// page exists, so the SDK's paginator stops after a full last page.
		f.Limit = limit + 1
	}
	sbs, err := s.sandboxes.List(r.Context(), f)
	if err != nil {
		s.fail(w, err)
		return
	}
	more := paged && limit > 0 && len(sbs) > limit
	if more {
		sbs = sbs[:limit]
	}
	out := make([]detailJSON, 0, len(sbs))
	for _, sb := range sbs {
		out = append(out, toDetail(sb, false))
	}
	if more {
		w.Header().Set("X-Next-Token", base64.RawURLEncoding.EncodeToString([]byte(sbs[len(sbs)-1].ID)))
	}
	writeJSON(w, http.StatusOK, out)
}

// The times a Unix nanosecond count can hold.
var minNanoTime, maxNanoTime = time.Unix(0, math.MinInt64+1).UTC(), time.Unix(0, math.MaxInt64).UTC()

// listFilter parses E2B's list query: metadata (k=v&k2=v2, URL-encoded),
// state (comma separated), order (asc/desc by start time), startedAfter,
// startedBefore (sbx extension), template (ID or alias), limit, nextToken.
func listFilter(r *http.Request) (store.ListFilter, error) {
	q := r.URL.Query()
	f := store.ListFilter{TeamID: team(r).ID, Limit: 100}
	if m := q.Get("metadata"); m != "" {
		parsed, err := url.ParseQuery(m)
		if err != nil {
			return f, errdefs.Invalid("invalid metadata filter %q: use key=value&key2=value2", m)
		}
		f.Metadata = map[string]string{}
		for k, v := range parsed {
			f.Metadata[k] = v[len(v)-1]
		}
	}
	for _, st := range q["state"] {
		for _, one := range strings.Split(st, ",") {
			switch one {
			case "running", "paused":
				f.States = append(f.States, store.SandboxState(one))
			case "":
			default:
				return f, errdefs.Invalid("invalid state %q: use running or paused", one)
			}
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			return f, errdefs.Invalid("limit must be between 1 and 100, got %q", l)
		}
		f.Limit = n
	}
	switch o := q.Get("order"); o {
	case "", "desc":
	case "asc":
		f.Ascending = true
	default:
		return f, errdefs.Invalid("invalid order %q: use asc or desc (by start time)", o)
	}
	for _, b := range []struct {
		name string
		to   *time.Time
	}{{"startedAfter", &f.StartedAfter}, {"startedBefore", &f.StartedBefore}} {
		v := q.Get(b.name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return f, errdefs.Invalid("invalid %s %q: use an RFC 3339 time such as 2026-01-02T15:04:05Z", b.name, truncate(v, 64))
		}
		// Sandboxes' start times are kept as Unix nanoseconds (years
		// 1678-2262): a bound beyond them would wrap around and select the
		// opposite, so it is clamped (nothing started before or after).
		switch {
		case t.Before(minNanoTime):
			t = minNanoTime
		case t.After(maxNanoTime):
			t = maxNanoTime
		}
		*b.to = t
	}
	f.Template = q.Get("template")
	if tok := q.Get("nextToken"); tok != "" {
		id, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			return f, errdefs.Invalid("invalid nextToken")
		}
		f.After = string(id)
	}
	return f, nil
}

// pauserTo is the manager's pause with a tier (sbx extension: ?tier=disk
// checkpoints to disk at once; a runtime that cannot answers 412).
type pauserTo interface {
	PauseTo(ctx context.Context, teamID, id, tier string) error
}

func (s *Server) pause(w http.ResponseWriter, r *http.Request) {
	var body pauseBody
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	pause := s.sandboxes.Pause
	tier := r.URL.Query().Get("tier")
	if p, ok := s.sandboxes.(pauserTo); ok {
		pause = func(ctx context.Context, teamID, id string) error { return p.PauseTo(ctx, teamID, id, tier) }
	}
	if body.Memory != nil && !*body.Memory {
		p, ok := s.sandboxes.(interface {
			PauseMemory(ctx context.Context, teamID, id string, keepMemory bool) error
		})
		if !ok {
			s.fail(w, errdefs.Precondition("pausing without memory is not supported by this server"))
			return
		}
		if tier != "" {
			s.fail(w, errdefs.Invalid(`tier and {"memory": false} exclude each other: without memory only the filesystem is kept`))
			return
		}
		pause = func(ctx context.Context, teamID, id string) error { return p.PauseMemory(ctx, teamID, id, false) }
	}
	if err := pause(r.Context(), team(r).ID, r.PathValue("id")); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// resume is the legacy endpoint: it always answers 201 with the sandbox.
func (s *Server) resume(w http.ResponseWriter, r *http.Request) {
	var body timeoutBody
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	timeout, err := body.seconds(15 * time.Second) // the legacy endpoint's documented default
	if err != nil {
		s.fail(w, err)
		return
	}
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	sb, err := s.sandboxes.Get(r.Context(), team(r).ID, r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	if sb.State == store.StateKilled {
		s.fail(w, errdefs.NotFound("sandbox %s not found (it was killed; a killed sandbox cannot be resumed)", sb.ID))
		return
	}
	if sb.State != store.StatePaused {
		s.fail(w, errdefs.Conflict("sandbox %s is not paused", sb.ID))
		return
	}
	sb, _, err = s.connectMemory(r, sb.ID, timeout, body.Memory)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.connected(r.Context(), sb))
}

// reasonAbandoned is the kill reason of a sandbox whose create answer had
// nobody to go to.
const reasonAbandoned = "create_abandoned"

// abandon kills a sandbox whose creator left, with reasonAbandoned where
// the sandboxes can say why (a node's manager), else as a kill.
func (s *Server) abandon(ctx context.Context, sb store.Sandbox) {
	var err error
	if k, ok := s.sandboxes.(interface {
		KillWithReason(ctx context.Context, id, reason string) error
	}); ok {
		err = k.KillWithReason(ctx, sb.ID, reasonAbandoned)
	} else {
		err = s.sandboxes.Kill(ctx, sb.TeamID, sb.ID)
	}
	if err != nil {
		s.log.WarnContext(ctx, "kill a sandbox whose creator left; it runs until its timeout", "sandbox.id", sb.ID, "err", err)
		return
	}
	s.log.InfoContext(ctx, "sandbox killed: its creator left before the create answered", "sandbox.id", sb.ID)
}
