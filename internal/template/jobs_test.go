package template

import (
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/store"
)

// TestBuildJobs: an api replica (no executor, no layers) and a node share
// a database and a blob store. The build requested, uploaded and started
// through the replica is claimed and run by the node, which reads the
// upload from the blob store; the replica answers its status and log.
func TestBuildJobs(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "sbx.db")
	bs, err := blob.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("a key every replica derives from the cluster secret")
	shared := func(node string, puller *layer.Puller) func(*Service) {
		return func(s *Service) {
			q := s.store.templatesRepo.(store.BuildJobs)
			s.SetJobs(&Jobs{Queue: q, Node: node, Poll: 20 * time.Millisecond})
			s.SetSharedUploads(&SharedUploads{Store: bs, Puller: puller, Repo: q, URLKey: key})
		}
	}
	api := setup(t, dbPath, t.TempDir(), 0, shared("", nil))
	cache, err := blob.NewCache(t.TempDir(), bs, 1<<30, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cache.Close() })
	node := setup(t, dbPath, t.TempDir(), 0, shared("node-1", &layer.Puller{Cache: cache}))

	var r registered
	if code := api.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "jobs-app"}, &r); code != http.StatusAccepted {
		t.Fatalf("POST /v3/templates: HTTP %d", code)
	}
	if code := api.upload(t, "team1", r.TemplateID, hashA, tarOf(t, map[string]string{"app/main.py": "x"})); code != http.StatusOK {
		t.Fatalf("upload through the replica: HTTP %d", code)
	}
	if ents, _ := filepath.Glob(filepath.Join(api.data, "uploads", "team1", "*")); len(ents) > 0 {
		t.Fatalf("the upload stayed in the replica's data dir: %v", ents)
	}
	// The node sees the upload as present (the URL is not needed again).
	if present, err := node.svc.FileStatus(t.Context(), "team1", r.TemplateID, hashA); err != nil || !present {
		t.Fatalf("upload present on the node = %v, %v", present, err)
	}
	steps := []builder.Step{{Type: "COPY", Args: []string{"app", "/app", "", ""}, FilesHash: hashA}}
	if code := api.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID,
		map[string]any{"fromTemplate": "base", "steps": steps}, nil); code != http.StatusAccepted {
		t.Fatalf("start through the replica: HTTP %d", code)
	}
	if code := api.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID,
		map[string]any{"fromTemplate": "base", "steps": steps}, nil); code != http.StatusConflict {
		t.Fatalf("second start of the build: HTTP %d, want 409", code)
	}
	st, msgs := api.waitBuild(t, "team1", r)
	if st.Status != StatusReady {
		t.Fatalf("build ended %s (%+v): %v", st.Status, st.Reason, msgs)
	}
	if !slices.Contains(msgs, "claimed by node node-1") {
		t.Errorf("build log %q does not name the claiming node", msgs)
	}
	if len(api.exec.reqs) != 0 || len(node.exec.reqs) != 1 {
		t.Errorf("builds run: replica %d, node %d; want 0 and 1", len(api.exec.reqs), len(node.exec.reqs))
	}
	if rec, err := api.svc.store.Template(t.Context(), r.TemplateID); err != nil || rec.CurrentBuild != r.BuildID {
		t.Errorf("template's current build = %q, %v; want %s", rec.CurrentBuild, err, r.BuildID)
	}
	// Another team reads nothing of it.
	if code := api.call(t, "team2", "GET", "/templates/"+r.TemplateID+"/builds/"+r.BuildID+"/status", nil, nil); code != http.StatusNotFound {
		t.Errorf("another team's status read: HTTP %d, want 404", code)
	}
	// An upload URL signed by the replica for team1 cannot be turned into
	// team2's, on the replica or the node.
	var fs struct {
		URL string `json:"url"`
	}
	hashB := strings.Repeat("b", 64)
	api.call(t, "team1", "GET", "/templates/"+r.TemplateID+"/files/"+hashB, nil, &fs)
	for _, base := range []string{api.srv.URL, node.srv.URL} {
		u := base + fs.URL[strings.Index(fs.URL, "/upload/"):]
		if code := put(t, strings.Replace(u, "team=team1", "team=team2", 1), tarOf(t, map[string]string{"f": "x"})); code != http.StatusForbidden {
			t.Errorf("re-teamed upload URL on %s: HTTP %d, want 403", base, code)
		}
	}
	// The same URL works on the node: every process derives the key.
	if code := put(t, node.srv.URL+fs.URL[strings.Index(fs.URL, "/upload/"):], tarOf(t, map[string]string{"f": "x"})); code != http.StatusOK {
		t.Errorf("upload URL of the replica sent to the node: HTTP %d, want 200", code)
	}
}

// TestBuildJobReclaimed: a node shutting down mid-build puts the build
// back in the queue (it records no failure); another node claims it and
// builds it from the start.
func TestBuildJobReclaimed(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "sbx.db")
	jobs := func(node string) func(*Service) {
		return func(s *Service) {
			s.SetJobs(&Jobs{Queue: s.store.templatesRepo.(store.BuildJobs), Node: node, Poll: 20 * time.Millisecond})
		}
	}
	api := setup(t, dbPath, t.TempDir(), 0, jobs(""))
	first := setup(t, dbPath, t.TempDir(), 0, jobs("node-1"))
	first.exec.block = true
	var r registered
	if code := api.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "reclaimed"}, &r); code != http.StatusAccepted {
		t.Fatalf("POST /v3/templates: HTTP %d", code)
	}
	steps := []builder.Step{{Type: "RUN", Args: []string{"block until stopped"}}}
	if code := api.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID,
		map[string]any{"fromTemplate": "base", "steps": steps}, nil); code != http.StatusAccepted {
		t.Fatalf("start: HTTP %d", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		first.exec.mu.Lock()
		n := len(first.exec.reqs)
		first.exec.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node-1 did not claim the build")
		}
		time.Sleep(10 * time.Millisecond)
	}
	first.svc.Close() // node-1 shuts down mid-build
	if b, err := api.svc.store.Build(t.Context(), r.BuildID); err != nil || b.Status != StatusBuilding || b.NodeID != "" {
		t.Fatalf("build after node-1 stopped = %+v, %v; want building, queued for any node", b, err)
	}
	second := setup(t, dbPath, t.TempDir(), 0, jobs("node-2"))
	st, msgs := api.waitBuild(t, "team1", r)
	if st.Status != StatusReady || len(second.exec.reqs) != 1 {
		t.Fatalf("build after node-2 claimed it: %s (%+v), node-2 ran %d builds", st.Status, st.Reason, len(second.exec.reqs))
	}
	found := false
	for _, m := range msgs {
		found = found || strings.Contains(m, "node node-2 builds again from the start") && strings.Contains(m, "attempt 2")
	}
	if !found {
		t.Errorf("build log %q does not show node-2 claiming it again", msgs)
	}
}

// TestBuildJobCancelled: the admin's cancel on an api replica ends a
// queued build at once and stops one a node is running at the node's next
// claim renewal; the node records it failed as cancelled, once.
func TestBuildJobCancelled(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "sbx.db")
	jobs := func(node string) func(*Service) {
		return func(s *Service) {
			s.SetJobs(&Jobs{Queue: s.store.templatesRepo.(store.BuildJobs), Node: node, Poll: 20 * time.Millisecond,
				Lease: 300 * time.Millisecond})
			s.cfg.MaxBuilds = 1 // node-1 runs one build at a time: the second stays queued
		}
	}
	api := setup(t, dbPath, t.TempDir(), 0, jobs(""))
	node := setup(t, dbPath, t.TempDir(), 0, jobs("node-1"))
	node.exec.block = true
	steps := []builder.Step{{Type: "RUN", Args: []string{"block until stopped"}}}
	start := func(name string) registered {
		var r registered
		if code := api.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": name}, &r); code != http.StatusAccepted {
			t.Fatalf("POST /v3/templates: HTTP %d", code)
		}
		if code := api.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID,
			map[string]any{"fromTemplate": "base", "steps": steps}, nil); code != http.StatusAccepted {
			t.Fatalf("start: HTTP %d", code)
		}
		return r
	}
	running := start("running")
	deadline := time.Now().Add(10 * time.Second)
	for b, _ := api.svc.store.Build(t.Context(), running.BuildID); b.NodeID != "node-1"; b, _ = api.svc.store.Build(t.Context(), running.BuildID) {
		if time.Now().After(deadline) {
			t.Fatal("node-1 did not claim the build")
		}
		time.Sleep(10 * time.Millisecond)
	}
	queued := start("queued")
	var other registered
	if code := api.call(t, "team2", "POST", "/v3/templates", map[string]any{"name": "other"}, &other); code != http.StatusAccepted {
		t.Fatalf("POST /v3/templates: HTTP %d", code)
	}
	cancelled, failed, err := api.svc.CancelTeamBuilds(t.Context(), "team1")
	if err != nil || cancelled != 2 || failed != 0 {
		t.Fatalf("CancelTeamBuilds = %d cancelled, %d failed, %v; want 2, 0", cancelled, failed, err)
	}
	for i, r := range []registered{queued, running} {
		st, msgs := api.waitBuild(t, "team1", r)
		if i == 1 && !strings.Contains(strings.Join(msgs, "\n"), "build stopped: "+store.CancelledReason) {
			t.Errorf("the running build's log %q does not say it was cancelled", msgs)
		}
		b, _ := api.svc.store.Build(t.Context(), r.BuildID)
		if st.Status != StatusError || b.Reason != store.CancelledReason {
			t.Errorf("build %s after the cancel: %s, reason %q; want error, %q", r.BuildID, st.Status, b.Reason, store.CancelledReason)
		}
	}
	if b, _ := api.svc.store.Build(t.Context(), other.BuildID); b.Status != StatusWaiting {
		t.Errorf("another team's build was touched: %s", b.Status)
	}
}
