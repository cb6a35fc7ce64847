package cluster

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/placement"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/template"
	"github.com/sbxdev/sbx/internal/volume"
)

// volumeCluster is an api replica's Volumes over two fake nodes, a (the
// freer, placed on first) and b, on one SQLite database.
func volumeCluster(t *testing.T, a, b func(w http.ResponseWriter, r *http.Request)) (*Volumes, *sqlstore.Volumes, *node, *node) {
	t.Helper()
	db := sqldbtest.Open(t, sqldb.SQLite)
	st, repo := sqlstore.New(db, nil), sqlstore.NewVolumes(db)
	na, nb := newNode(t, "a", a), newNode(t, "b", b)
	now := time.Now().UTC()
	register(t, st, "a", na.srv.URL, 64000, now)
	register(t, st, "b", nb.srv.URL, 8000, now)
	nodes := NewNodes(st, time.Minute, quiet)
	if err := nodes.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	signer := NewSigner(testSecret)
	sbs := NewSandboxes(st, nodes, placement.New(nodes, placement.Config{Seed: 1}), NewClient(signer), template.NewRegistry(quiet), quiet)
	return NewVolumes(repo, sbs, signer, quiet), repo, na, nb
}

// makes answers POST /volumes as a node does: the row, with its name.
func makes(t *testing.T, repo **sqlstore.Volumes, nodeName string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Name string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		v := volume.Volume{ID: "vol_" + nodeName, TeamID: "team1", Name: body.Name, Token: "vtk_" + nodeName, SizeMB: 8,
			CreatedAt: time.Now().UTC(), NodeID: nodeName}
		if err := (*repo).Insert(r.Context(), v); err != nil {
			errdefs.WriteHTTP(w, nil, err)
			return
		}
		errdefs.WriteJSON(w, http.StatusCreated, map[string]string{"volumeID": v.ID, "name": v.Name, "token": v.Token})
	}
}

// TestVolumeCreate: a volume goes to the placed node, and only an
// unreachable node sends it to another (a taken name or the team's
// limit would be refused everywhere, and is answered as the node said).
func TestVolumeCreate(t *testing.T) {
	tests := []struct {
		name     string
		a        func(*testing.T, **sqlstore.Volumes) func(w http.ResponseWriter, r *http.Request)
		wantNode string
		wantErr  error
		bAsked   bool
	}{
		{"placed on the freer node", func(t *testing.T, r **sqlstore.Volumes) func(w http.ResponseWriter, r *http.Request) {
			return makes(t, r, "a")
		}, "a", nil, false},
		{"a node that is down sends it to the other", func(*testing.T, **sqlstore.Volumes) func(w http.ResponseWriter, r *http.Request) {
			return failing(http.StatusServiceUnavailable, "draining")
		}, "b", nil, true},
		{"a taken name is not tried elsewhere", func(*testing.T, **sqlstore.Volumes) func(w http.ResponseWriter, r *http.Request) {
			return failing(http.StatusConflict, `a volume named "data" already exists in your team`)
		}, "", errdefs.ErrConflict, false},
		{"the team's limit is not tried elsewhere", func(*testing.T, **sqlstore.Volumes) func(w http.ResponseWriter, r *http.Request) {
			return failing(http.StatusTooManyRequests, "your team has 64 volumes, the limit")
		}, "", errdefs.ErrResourceExhausted, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var repo *sqlstore.Volumes
			vols, r, na, nb := volumeCluster(t, tt.a(t, &repo), makes(t, &repo, "b"))
			repo = r
			v, err := vols.Create(t.Context(), "team1", "data")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Create = %v; want %v", err, tt.wantErr)
				}
			} else if err != nil || v.NodeID != tt.wantNode || v.Token == "" {
				t.Fatalf("Create = %+v, %v; want a volume on node %s", v, err, tt.wantNode)
			}
			if got := len(nb.requests()) > 0; got != tt.bAsked {
				t.Errorf("node b asked = %v; want %v", got, tt.bAsked)
			}
			if len(na.requests()) != 1 || na.requests()[0].team != "team1" {
				t.Errorf("node a saw %+v; want one request signed for team1", na.requests())
			}
		})
	}
}

// TestVolumeContentForward: /volumecontent is forwarded, signed for the
// volume's team, to the node that holds the volume, with the volume's
// token and nothing else of the client's credentials; a missing or
// wrong token stops at the api replica.
func TestVolumeContentForward(t *testing.T) {
	answer := func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "content from "+r.Host) }
	vols, repo, na, nb := volumeCluster(t, answer, answer)
	for _, v := range []volume.Volume{
		{ID: "vol_onb", TeamID: "team1", Name: "data", Token: "vtk_right", SizeMB: 8, NodeID: "b"},
		{ID: "vol_single", TeamID: "team1", Name: "old", Token: "vtk_single", SizeMB: 8},
	} {
		if err := repo.Insert(t.Context(), v); err != nil {
			t.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	vols.Register(mux)
	var doOp func(id, op string, h map[string]string) *httptest.ResponseRecorder
	do := func(id string, h map[string]string) *httptest.ResponseRecorder {
		return doOp(id, "file", h)
	}
	doOp = func(id, op string, h map[string]string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/volumecontent/"+id+"/"+op+"?path=/x", nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		return w
	}
	for _, tt := range []struct {
		name, id string
		h        map[string]string
		status   int
	}{
		{"no token", "vol_onb", nil, http.StatusUnauthorized},
		{"wrong token", "vol_onb", map[string]string{"Authorization": "Bearer vtk_wrong"}, http.StatusUnauthorized},
		{"another volume's token", "vol_onb", map[string]string{"Authorization": "Bearer vtk_single"}, http.StatusUnauthorized},
		{"an API key", "vol_onb", map[string]string{"X-API-Key": "sbx_key"}, http.StatusUnauthorized},
		{"no such volume", "vol_nope", map[string]string{"Authorization": "Bearer vtk_right"}, http.StatusUnauthorized},
		{"a single box's volume", "vol_single", map[string]string{"Authorization": "Bearer vtk_single"}, http.StatusPreconditionFailed},
	} {
		if w := do(tt.id, tt.h); w.Code != tt.status {
			t.Errorf("%s: %d %s; want %d", tt.name, w.Code, w.Body, tt.status)
		}
	}
	// The node acts for the volume's team: nothing but a content route
	// may reach it, whatever the last segment says.
	good := map[string]string{"Authorization": "Bearer vtk_right"}
	for _, op := range []string{"sandboxes", "..%2f..%2fsandboxes", "file%2f..%2f..%2fsecrets"} {
		if w := doOp("vol_onb", op, good); w.Code != http.StatusNotFound && w.Code != http.StatusMovedPermanently {
			t.Errorf("op %q with the volume's token: %d %s; want 404", op, w.Code, w.Body)
		}
	}
	if len(na.requests())+len(nb.requests()) != 0 {
		t.Fatalf("refused requests reached a node: %+v %+v", na.requests(), nb.requests())
	}
	w := do("vol_onb", map[string]string{"Authorization": "Bearer vtk_right", "X-API-Key": "sbx_key", SandboxIDHeader: "sb1"})
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Body.String(), "content from") {
		t.Fatalf("forwarded read = %d %s", w.Code, w.Body)
	}
	got := nb.requests()
	if len(got) != 1 || len(na.requests()) != 0 {
		t.Fatalf("node a saw %d, node b %d requests; want the one on b", len(na.requests()), len(got))
	}
	if got[0].team != "team1" || got[0].uri != "/volumecontent/vol_onb/file?path=/x" ||
		got[0].header.Get("Authorization") != "Bearer vtk_right" || got[0].header.Get("X-API-Key") != "" || got[0].header.Get(SandboxIDHeader) != "" {
		t.Errorf("node b got %+v; want the request signed for team1 with the volume's token only", got[0])
	}
}

// TestCreateOnNodePinned: a create mounting a volume goes to the
// volume's node even when another is freer, carries the network and
// mounts in its body and returns the node's traffic token; with that
// node gone the NoFit names the volume.
func TestCreateOnNodePinned(t *testing.T) {
	var body map[string]json.RawMessage
	sbs, st, na, _ := cluster2(t, created("sb-a"), func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&body)
		errdefs.WriteJSON(w, http.StatusCreated, map[string]string{"sandboxID": "sb-b", "trafficAccessToken": "tt"})
	})
	insert(t, st, "sb-b", "team1", "b")
	nc := NodeCreate{Network: json.RawMessage(`{"denyOut":["10.1.2.3"]}`), VolumeMounts: []VolumeMount{{Name: "vol_x", Path: "/mnt/data"}},
		Node: "b", PinnedBy: "volume data"}
	sb, token, err := sbs.CreateOnNode(t.Context(), sandbox.CreateRequest{TeamID: "team1"}, nc)
	if err != nil || sb.ID != "sb-b" || token != "tt" {
		t.Fatalf("CreateOnNode = %s, %q, %v; want sb-b on node b with its token", sb.ID, token, err)
	}
	if len(na.requests()) != 0 {
		t.Errorf("node a, the freer, was asked: %+v", na.requests())
	}
	if string(body["network"]) != `{"denyOut":["10.1.2.3"]}` || string(body["volumeMounts"]) != `[{"name":"vol_x","path":"/mnt/data"}]` {
		t.Errorf("node b's create body = %v", body)
	}
	nc.Node = "gone"
	_, _, err = sbs.CreateOnNode(t.Context(), sandbox.CreateRequest{TeamID: "team1"}, nc)
	var nf *placement.NoFitError
	if !errors.As(err, &nf) || !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(nf.PublicMessage(), "holds volume data is not in the cluster") {
		t.Errorf("CreateOnNode pinned to a gone node = %v; want unavailable naming the volume", err)
	}
}
