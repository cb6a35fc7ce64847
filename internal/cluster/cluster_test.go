package cluster

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/placement"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/template"
)

var quiet = slog.New(slog.DiscardHandler)

// node stands in for a node's HTTP API: it checks every request's
// cluster signature with the real verifier and answers from answer.
type node struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []seen
	answer func(w http.ResponseWriter, r *http.Request)
}

type seen struct {
	method, uri, team, host string
	header                  http.Header
}

func newNode(t *testing.T, name string, answer func(w http.ResponseWriter, r *http.Request)) *node {
	n := &node{answer: answer}
	v := NewVerifier(testSecret, name)
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		team, err := v.Verify(r)
		if err != nil {
			errdefs.WriteHTTP(w, nil, errdefs.Unauthenticated("%v", err))
			return
		}
		n.mu.Lock()
		n.got = append(n.got, seen{r.Method, r.RequestURI, team, r.Host, r.Header.Clone()})
		n.mu.Unlock()
		n.answer(w, r)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

func (n *node) requests() []seen {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]seen(nil), n.got...)
}

func newStore(t *testing.T) *sqlstore.Store {
	return sqlstore.New(sqldbtest.Open(t, sqldb.SQLite), nil)
}

func register(t *testing.T, st *sqlstore.Store, id, url string, cpu int64, beat time.Time) {
	t.Helper()
	err := st.Heartbeat(t.Context(), store.Node{ID: id, Boot: "b", StartedAt: beat, HeartbeatAt: beat,
		NodeLoad: store.NodeLoad{AdvertiseURL: url, CPUMillis: cpu, MemoryMiB: 16384}})
	if err != nil {
		t.Fatal(err)
	}
}

func insert(t *testing.T, st *sqlstore.Store, id, team, nodeID string) {
	t.Helper()
	now := time.Now().UTC()
	err := st.InsertSandbox(t.Context(), store.Sandbox{ID: id, TeamID: team, TemplateID: "base", State: store.StateRunning,
		CPUCount: 2, MemoryMB: 512, StartedAt: now, EndAt: now.Add(time.Hour), AccessToken: "tok-" + id, NodeID: nodeID}, nil)
	if err != nil {
		t.Fatal(err)
	}
}

func TestNodesView(t *testing.T) {
	st := newStore(t)
	now := time.Now().UTC()
	register(t, st, "fresh", "http://10.0.0.1:3100", 8000, now)
	register(t, st, "silent", "http://10.0.0.2:3100", 8000, now.Add(-10*time.Second))
	register(t, st, "all-role", "", 8000, now) // a --role all server: not reachable by signature
	nodes := NewNodes(st, 3500*time.Millisecond, quiet)
	if err := nodes.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, _ := nodes.Nodes(t.Context())
	states := map[string]placement.State{}
	for _, n := range got {
		states[n.ID] = n.State
	}
	if len(states) != 2 || states["fresh"] != placement.Ready || states["silent"] != placement.Unhealthy {
		t.Errorf("view = %v; want fresh ready, silent unhealthy, all-role left out", states)
	}
	if u, err := nodes.URL(t.Context(), "fresh"); err != nil || u != "http://10.0.0.1:3100" {
		t.Errorf("URL(fresh) = %q, %v", u, err)
	}
	if _, err := nodes.URL(t.Context(), "all-role"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("URL(all-role) = %v; want unavailable", err)
	}
}

// cluster builds an api replica's Sandboxes over two fake nodes.
func cluster2(t *testing.T, a, b func(w http.ResponseWriter, r *http.Request)) (*Sandboxes, *sqlstore.Store, *node, *node) {
	st := newStore(t)
	na, nb := newNode(t, "a", a), newNode(t, "b", b)
	now := time.Now().UTC()
	register(t, st, "a", na.srv.URL, 64000, now) // the freer: placed on first
	register(t, st, "b", nb.srv.URL, 8000, now)
	nodes := NewNodes(st, time.Minute, quiet)
	if err := nodes.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	reg := template.NewRegistry(quiet)
	sbs := NewSandboxes(st, nodes, placement.New(nodes, placement.Config{Seed: 1}), NewClient(NewSigner(testSecret)), reg, quiet)
	return sbs, st, na, nb
}

func created(id string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		errdefs.WriteJSON(w, http.StatusCreated, map[string]string{"sandboxID": id})
	}
}

func failing(status int, msg string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) { errdefs.WriteStatus(w, status, msg) }
}

func TestCreate(t *testing.T) {
	tests := []struct {
		name         string
		a            func(w http.ResponseWriter, r *http.Request)
		wantErr      error // nil: created on b
		wantBCreates int
	}{
		{"a full node: placed again on the other", failing(http.StatusTooManyRequests, "node full"), nil, 1},
		{"an unavailable node: placed again on the other", failing(http.StatusServiceUnavailable, "draining"), nil, 1},
		{"a bad request fails at once", failing(http.StatusBadRequest, "no such template"), errdefs.ErrInvalidArgument, 0},
		{"a denied request fails at once", failing(http.StatusForbidden, "budget spent"), errdefs.ErrPermissionDenied, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sbs, st, na, nb := cluster2(t, tt.a, created("onb"))
			insert(t, st, "onb", "team1", "b") // as node b records it
			sb, err := sbs.Create(t.Context(), sandbox.CreateRequest{TeamID: "team1", Template: "base", Timeout: time.Minute, AllowInternet: true})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Create = %v; want %v", err, tt.wantErr)
				}
			} else if err != nil || sb.ID != "onb" {
				t.Fatalf("Create = %+v, %v; want sandbox onb", sb, err)
			}
			ra, rb := na.requests(), nb.requests()
			if len(ra) != 1 || ra[0].method != "POST" || ra[0].uri != "/sandboxes" || ra[0].team != "team1" {
				t.Errorf("node a saw %+v; want one POST /sandboxes signed for team1", ra)
			}
			if len(rb) != tt.wantBCreates {
				t.Errorf("node b saw %d creates, want %d", len(rb), tt.wantBCreates)
			}
		})
	}
	t.Run("no node fits", func(t *testing.T) {
		sbs, _, _, _ := cluster2(t, failing(503, "down"), failing(503, "down"))
		_, err := sbs.Create(t.Context(), sandbox.CreateRequest{TeamID: "team1"})
		var nf *placement.NoFitError
		if !errors.As(err, &nf) || !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("Create on two failing nodes = %v; want a NoFitError", err)
		}
		if msg := errdefs.Message(err); msg == err.Error() {
			t.Errorf("the client's message %q carries no hint", msg)
		}
	})
}

func TestCallsGoToTheOwner(t *testing.T) {
	sbs, st, na, nb := cluster2(t, failing(500, "not me"), func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	insert(t, st, "mine", "team1", "b")
	if err := sbs.Kill(t.Context(), "team1", "mine"); err != nil {
		t.Fatal(err)
	}
	if err := sbs.SetTimeout(t.Context(), "team1", "mine", 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := sbs.Kill(t.Context(), "team2", "mine"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("another team's kill = %v; want not found", err)
	}
	rb := nb.requests()
	if len(na.requests()) != 0 || len(rb) != 2 || rb[0].method != "DELETE" || rb[0].uri != "/sandboxes/mine" ||
		rb[1].uri != "/sandboxes/mine/timeout" || rb[0].team != "team1" {
		t.Errorf("node a saw %d, node b %+v; want DELETE and timeout of mine on b for team1", len(na.requests()), rb)
	}
}

func TestRouter(t *testing.T) {
	st := newStore(t)
	status := http.StatusOK
	n := newNode(t, "n1", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		io.WriteString(w, "from the sandbox")
	})
	register(t, st, "n1", n.srv.URL, 8000, time.Now().UTC())
	insert(t, st, "sbx1", "team1", "n1")
	nodes := NewNodes(st, time.Minute, quiet)
	rt := NewRouter(st, nodes, NewSigner(testSecret), quiet)
	if _, ok := rt.Route("nosuch"); ok {
		t.Errorf("a sandbox without a row was routed")
	}
	send := func() *http.Response {
		tr, ok := rt.Route("sbx1")
		if !ok {
			t.Fatal("sbx1 not routed")
		}
		// As proxy.Serve hands it over: a placeholder URL, X-Sbx-Port for
		// ports other than envd's, the client's Host.
		req := httptest.NewRequest("GET", "http://sandbox/index.html?x=1", nil)
		req.Host = "8001-sbx1.sbx.test"
		req.Header.Set("X-Sbx-Port", "8001")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	send()
	got := n.requests()
	if len(got) != 1 || got[0].uri != "/index.html?x=1" || got[0].host != "8001-sbx1.sbx.test" ||
		got[0].header.Get("E2b-Sandbox-Id") != "sbx1" || got[0].header.Get("E2b-Sandbox-Port") != "8001" ||
		got[0].header.Get("X-Sbx-Port") != "" || got[0].team != "" {
		t.Fatalf("the node saw %+v; want /index.html?x=1 for sbx1 port 8001, Host kept, no team", got)
	}
	if _, cached := rt.routes["sbx1"]; !cached {
		t.Errorf("the route was not cached")
	}
	status = http.StatusBadGateway // the node no longer has it
	send()
	if _, cached := rt.routes["sbx1"]; cached {
		t.Errorf("the route was kept after the node answered 502")
	}
}

func TestSignedBy(t *testing.T) {
	st := newStore(t)
	for _, id := range []string{"one", "two"} {
		insert(t, st, id, "team1", "n1")
	}
	rt := NewRouter(st, NewNodes(st, time.Minute, quiet), NewSigner(testSecret), quiet)
	sign := func(tok string) string { return "sig(" + tok + ")" }
	if id, ok := rt.SignedBy("sig(tok-two)", sign); !ok || id != "two" {
		t.Errorf("SignedBy = %q, %v; want two", id, ok)
	}
	if _, ok := rt.SignedBy("sig(tok-three)", sign); ok {
		t.Errorf("a signature of no live sandbox matched")
	}
}

// TestConnectWhenTheOwnerIsGone: connect goes to the sandbox's node; when
// that node is silent or does not answer and the sandbox is paused,
// another node is asked to resume it (from the blob store); a running
// sandbox of a gone node is not moved.
func TestConnectWhenTheOwnerIsGone(t *testing.T) {
	resumed := func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) }
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // nothing listens there any more
	tests := []struct {
		name     string
		ownerURL string
		silent   bool
		state    store.SandboxState
		wantErr  error // nil: resumed
		wantOnB  int   // connects node b (not the owner) saw
	}{
		{"paused on a silent node: resumed on another", deadURL, true, store.StatePaused, nil, 1},
		{"paused on a node that refuses connections: resumed on another", deadURL, false, store.StatePaused, nil, 1},
		{"running on a node that refuses connections: not moved", deadURL, false, store.StateRunning, errdefs.ErrUnavailable, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sbs, st, na, nb := cluster2(t, failing(http.StatusTooManyRequests, "full"), resumed)
			beat := time.Now().UTC()
			if tt.silent {
				beat = beat.Add(-time.Hour)
			}
			register(t, st, "gone", tt.ownerURL, 8000, beat)
			if err := sbs.nodes.Refresh(t.Context()); err != nil {
				t.Fatal(err)
			}
			now := time.Now().UTC()
			if err := st.InsertSandbox(t.Context(), store.Sandbox{ID: "sb", TeamID: "team1", TemplateID: "base", State: tt.state,
				CPUCount: 2, MemoryMB: 512, StartedAt: now, EndAt: now.Add(time.Hour), NodeID: "gone"}, nil); err != nil {
				t.Fatal(err)
			}
			_, wasResumed, err := sbs.ConnectMemory(t.Context(), "team1", "sb", time.Minute, false)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Connect = %v; want %v", err, tt.wantErr)
				}
			} else if err != nil || !wasResumed {
				t.Fatalf("Connect = resumed %v, %v; want resumed", wasResumed, err)
			}
			rb := nb.requests()
			if len(rb) != tt.wantOnB {
				t.Fatalf("node b saw %+v; want %d connects", rb, tt.wantOnB)
			}
			if len(rb) > 0 && (rb[0].uri != "/sandboxes/sb/connect" || rb[0].team != "team1") {
				t.Errorf("node b saw %+v; want a connect of sb for team1", rb[0])
			}
			for _, r := range na.requests() { // a is full: placement may try it first
				if r.uri != "/sandboxes/sb/connect" {
					t.Errorf("node a saw %+v", r)
				}
			}
		})
	}
	t.Run("paused on a ready node: connected there only", func(t *testing.T) {
		sbs, st, na, nb := cluster2(t, failing(500, "not me"), resumed)
		now := time.Now().UTC()
		if err := st.InsertSandbox(t.Context(), store.Sandbox{ID: "sb", TeamID: "team1", TemplateID: "base", State: store.StatePaused,
			CPUCount: 2, MemoryMB: 512, StartedAt: now, EndAt: now.Add(time.Hour), NodeID: "b"}, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, err := sbs.Connect(t.Context(), "team1", "sb", time.Minute); err != nil {
			t.Fatal(err)
		}
		if len(na.requests()) != 0 || len(nb.requests()) != 1 {
			t.Errorf("a saw %d, b %d requests; want the connect on b only", len(na.requests()), len(nb.requests()))
		}
	})
}
