package template

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/errdefs"
)

// build registers and runs one build of name as team and waits for it.
func (e *env) build(t *testing.T, team string, req map[string]any) registered {
	t.Helper()
	var r registered
	if code := e.call(t, team, "POST", "/v3/templates", req, &r); code != http.StatusAccepted {
		t.Fatalf("POST /v3/templates %v: HTTP %d", req, code)
	}
	if code := e.call(t, team, "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID,
		map[string]any{"fromTemplate": "base", "steps": []builder.Step{{Type: "RUN", Args: []string{"true"}}}}, nil); code != http.StatusAccepted {
		t.Fatalf("start build: HTTP %d", code)
	}
	if st, logs := e.waitBuild(t, team, r); st.Status != StatusReady {
		t.Fatalf("build %+v: %q", st, logs)
	}
	return r
}

type tagList []TagInfo

func (l tagList) String() string {
	var s []string
	for _, ti := range l {
		s = append(s, ti.Tag+"="+ti.BuildID)
	}
	return strings.Join(s, " ")
}

func TestTags(t *testing.T) {
	t.Parallel()
	e := setup(t, filepath.Join(t.TempDir(), "sbx.db"), t.TempDir(), 0)
	// v1 by name:tag; then a rebuild with tags[] becomes the latest build.
	r1 := e.build(t, "team1", map[string]any{"name": "app:v1"})
	r2 := e.build(t, "team1", map[string]any{"name": "acme/app", "tags": []string{"v2", "stable", "v2"}})
	if r1.TemplateID != r2.TemplateID || r1.BuildID == r2.BuildID {
		t.Fatalf("builds %+v %+v: want one template, two builds", r1, r2)
	}
	b1, b2 := r1.BuildID, r2.BuildID
	want := func(pairs ...string) string { return strings.Join(pairs, " ") }
	listTags := func(t *testing.T, e *env, ref string) string {
		t.Helper()
		var l tagList
		if code := e.call(t, "team1", "GET", "/templates/"+ref+"/tags", nil, &l); code != http.StatusOK {
			t.Fatalf("GET tags of %s: HTTP %d", ref, code)
		}
		for _, ti := range l {
			if ti.CreatedAt.IsZero() {
				t.Errorf("tag %s has no createdAt", ti.Tag)
			}
		}
		return l.String()
	}
	if got := listTags(t, e, "app"); got != want("default="+b2, "stable="+b2, "v1="+b1, "v2="+b2) {
		t.Fatalf("tags by name: %s", got)
	}
	if got := listTags(t, e, r1.TemplateID); got != want("default="+b2, "stable="+b2, "v1="+b1, "v2="+b2) {
		t.Fatalf("tags by ID: %s", got)
	}

	resolve := func(t *testing.T, e *env, team, ref string) (string, error) {
		t.Helper()
		tpl, err := e.reg.ResolveFor(t.Context(), team, ref)
		return tpl.BuildID, err
	}
	for _, tc := range []struct {
		ref, team, build string
		err              error
		msg              []string
	}{
		{ref: "app", build: b2},
		{ref: "app:default", build: b2},
		{ref: "app:latest", build: b2},
		{ref: "app:v1", build: b1},
		{ref: "acme/app:v1", build: b1},
		{ref: r1.TemplateID + ":v1", build: b1},
		{ref: "app:stable", build: b2},
		{ref: "app:" + b1, build: b1}, // a build ID works as a tag
		{ref: "app:nope", err: errdefs.ErrNotFound, msg: []string{`"app" has no tag "nope"`, "default, stable, v1, v2"}},
		{ref: "app:v1", team: "team2", err: errdefs.ErrNotFound},
		{ref: "base:v1", err: errdefs.ErrNotFound, msg: []string{"built-in"}},
		{ref: "base", build: "base"},
	} {
		t.Run("resolve "+tc.ref, func(t *testing.T) {
			team := tc.team
			if team == "" {
				team = "team1"
			}
			got, err := resolve(t, e, team, tc.ref)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				for _, m := range tc.msg {
					if !strings.Contains(errdefs.Message(err), m) {
						t.Errorf("message %q lacks %q", errdefs.Message(err), m)
					}
				}
				return
			}
			if err != nil || got != tc.build {
				t.Fatalf("build %q, %v; want %q", got, err, tc.build)
			}
		})
	}

	// Assign: the build the target designates gets the tags.
	var assigned struct {
		Tags    []string `json:"tags"`
		BuildID string   `json:"buildID"`
	}
	if code := e.call(t, "team1", "POST", "/templates/tags", map[string]any{"target": "app:v1", "tags": []string{"prod", "prod"}}, &assigned); code != http.StatusCreated ||
		assigned.BuildID != b1 || strings.Join(assigned.Tags, ",") != "prod" {
		t.Fatalf("assign: HTTP %d %+v", code, assigned)
	}
	if code := e.call(t, "team1", "POST", "/templates/tags", map[string]any{"target": "app", "tags": []string{"stable"}}, &assigned); code != http.StatusCreated || assigned.BuildID != b2 {
		t.Fatalf("assign to the latest build: HTTP %d %+v", code, assigned)
	}
	// Moving a tag: stable now points at v1's build.
	if code := e.call(t, "team1", "POST", "/templates/tags", map[string]any{"target": "app:prod", "tags": []string{"stable"}}, &assigned); code != http.StatusCreated || assigned.BuildID != b1 {
		t.Fatalf("move tag: HTTP %d %+v", code, assigned)
	}
	if got, _ := resolve(t, e, "team1", "app:stable"); got != b1 {
		t.Errorf("moved tag resolves to %s, want %s", got, b1)
	}

	for _, tc := range []struct {
		name, team, method, path string
		body                     any
		status                   int
		msg                      string
	}{
		{"other team assigns", "team2", "POST", "/templates/tags", map[string]any{"target": "app:v1", "tags": []string{"x"}}, 404, "not found"},
		{"built-in", "team1", "POST", "/templates/tags", map[string]any{"target": "base", "tags": []string{"x"}}, 403, "built in"},
		{"assign default", "team1", "POST", "/templates/tags", map[string]any{"target": "app:v1", "tags": []string{"default"}}, 400, "latest build"},
		{"no tags", "team1", "POST", "/templates/tags", map[string]any{"target": "app:v1", "tags": []string{}}, 400, "at least one"},
		{"bad tag", "team1", "POST", "/templates/tags", map[string]any{"target": "app:v1", "tags": []string{"no spaces"}}, 400, "invalid"},
		{"unknown source tag", "team1", "POST", "/templates/tags", map[string]any{"target": "app:v9", "tags": []string{"x"}}, 404, `no tag "v9"`},
		{"no target", "team1", "POST", "/templates/tags", map[string]any{"tags": []string{"x"}}, 400, "target is required"},
		{"wrong JSON type", "team1", "POST", "/templates/tags", map[string]any{"target": 5}, 400, "must be a string"},
		{"remove unknown", "team1", "DELETE", "/templates/tags", map[string]any{"name": "app", "tags": []string{"prod", "nope"}}, 404, "nothing removed"},
		{"remove default", "team1", "DELETE", "/templates/tags", map[string]any{"name": "app", "tags": []string{"default"}}, 400, "cannot be removed"},
		{"other team removes", "team2", "DELETE", "/templates/tags", map[string]any{"name": "app", "tags": []string{"v1"}}, 404, "not found"},
		{"remove from built-in", "team1", "DELETE", "/templates/tags", map[string]any{"name": "base", "tags": []string{"v1"}}, 403, "built in"},
		{"remove without name", "team1", "DELETE", "/templates/tags", map[string]any{"tags": []string{"v1"}}, 400, "name is required"},
		{"other team lists", "team2", "GET", "/templates/" + r1.TemplateID + "/tags", nil, 404, "not found"},
		{"unknown sub-resource", "team1", "GET", "/templates/app/other", nil, 404, "no such endpoint"},
		{"build with a bad tag", "team1", "POST", "/v3/templates", map[string]any{"name": "app:bad tag"}, 400, "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			code := e.call(t, tc.team, tc.method, tc.path, tc.body, &body)
			if code != tc.status || body.Code != tc.status || !strings.Contains(body.Message, tc.msg) {
				t.Errorf("HTTP %d %+v; want %d with %q", code, body, tc.status, tc.msg)
			}
		})
	}
	// The failed removal removed nothing.
	if got, _ := resolve(t, e, "team1", "app:prod"); got != b1 {
		t.Errorf("prod after a failed removal: %q", got)
	}
	var builtin tagList
	if code := e.call(t, "team1", "GET", "/templates/base/tags", nil, &builtin); code != 200 || builtin.String() != "default=base" {
		t.Errorf("built-in tags: HTTP %d %s", code, builtin)
	}

	if code := e.call(t, "team1", "DELETE", "/templates/tags", map[string]any{"name": "app", "tags": []string{"prod"}}, nil); code != http.StatusNoContent {
		t.Fatalf("remove: HTTP %d", code)
	}
	if _, err := resolve(t, e, "team1", "app:prod"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("removed tag resolves: %v", err)
	}

	// Tags survive a restart.
	e.svc.Close()
	e2 := setup(t, e.db, e.data, 0)
	if got := listTags(t, e2, "app"); got != want("default="+b2, "stable="+b1, "v1="+b1, "v2="+b2) {
		t.Errorf("after restart: %s", got)
	}
	if got, err := resolve(t, e2, "team1", "app:v1"); err != nil || got != b1 {
		t.Errorf("after restart app:v1 = %q, %v", got, err)
	}
	// Deleting the template deletes its tags.
	if code := e2.call(t, "team1", "DELETE", "/templates/"+r1.TemplateID, nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete: HTTP %d", code)
	}
	if trs, err := e2.svc.store.TemplateTags(t.Context(), r1.TemplateID); err != nil || len(trs) != 0 {
		t.Errorf("tags of a deleted template: %v %v", trs, err)
	}
}

func TestBuildTags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		nameTag string
		tags    []string
		want    string
		bad     bool
	}{
		{"", nil, "", false},
		{"v1", nil, "v1", false},
		{"v1", []string{"v2", "v1", "default"}, "v1,v2", false},
		{"default", nil, "", false},
		{"", []string{"Prod_1.0-rc"}, "Prod_1.0-rc", false},
		{"", []string{""}, "", true},
		{"", []string{"-x"}, "", true},
		{"a/b", nil, "", true},
		{strings.Repeat("x", 129), nil, "", true},
	} {
		got, err := buildTags(tc.nameTag, tc.tags)
		if (err != nil) != tc.bad || strings.Join(got, ",") != tc.want {
			t.Errorf("buildTags(%q, %q) = %q, %v; want %q (error %v)", tc.nameTag, tc.tags, got, err, tc.want, tc.bad)
		}
	}
}

func TestSplitRef(t *testing.T) {
	t.Parallel()
	for ref, want := range map[string][2]string{
		"app": {"app", ""}, "app:v1": {"app", "v1"}, "acme/app:v1": {"acme/app", "v1"},
		"e2bdev/base:latest": {"e2bdev/base", "latest"}, "host:5000/app": {"host:5000/app", ""},
	} {
		if n, tag := SplitRef(ref); n != want[0] || tag != want[1] {
			t.Errorf("SplitRef(%q) = %q, %q; want %q", ref, n, tag, want)
		}
	}
}

// TestTagRoutesBesideAliases: the tags route must not conflict with the
// API server's alias route on one mux (http.ServeMux panics on conflicts).
func TestTagRoutesBesideAliases(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /templates/aliases/{alias}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(299) })
	NewHandler(nil).Register(mux)
	_, pattern := mux.Handler(mustReq(t, "GET", "http://x/templates/aliases/tags"))
	if pattern != "GET /templates/aliases/{alias}" {
		t.Errorf("aliases/tags routed to %q", pattern)
	}
	_, pattern = mux.Handler(mustReq(t, "GET", "http://x/templates/abc/tags"))
	if pattern != "GET /templates/{id}/{sub}" {
		t.Errorf("abc/tags routed to %q", pattern)
	}
}

// TestTagPrunedBuild: a build whose layers are gone can be neither tagged
// nor started from, and both say so.
func TestTagPrunedBuild(t *testing.T) {
	t.Parallel()
	e := setup(t, filepath.Join(t.TempDir(), "sbx.db"), t.TempDir(), 0)
	r := e.build(t, "team1", map[string]any{"name": "old"})
	gone := BuildRecord{ID: "gone-build", TemplateID: r.TemplateID, Status: StatusReady, CreatedAt: time.Now()}
	if err := e.svc.store.CreateBuild(t.Context(), gone); err != nil {
		t.Fatal(err)
	}
	gone.Result = BuildResult{Layers: []string{filepath.Join(e.data, "layers", "pruned", "diff"), e.data}}
	if err := e.svc.store.UpdateBuild(t.Context(), gone); err != nil {
		t.Fatal(err)
	}
	var body struct{ Message string }
	if code := e.call(t, "team1", "POST", "/templates/tags", map[string]any{"target": "old:gone-build", "tags": []string{"x"}}, &body); code != http.StatusPreconditionFailed ||
		!strings.Contains(body.Message, "cannot be tagged") || !strings.Contains(body.Message, "rebuild it") {
		t.Errorf("tag a pruned build: HTTP %d %q", code, body.Message)
	}
	if _, err := e.reg.ResolveFor(t.Context(), "team1", "old:gone-build"); !errors.Is(err, errdefs.ErrFailedPrecondition) ||
		!strings.Contains(errdefs.Message(err), "cannot be started") {
		t.Errorf("start from a pruned build: %v", err)
	}
}
