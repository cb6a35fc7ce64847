package template

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/archive"
	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// fakeExecutor stands in for the crun-backed executor (tested in
// internal/builder): it logs each step and fails RUN steps containing "fail".
type fakeExecutor struct {
	mu   sync.Mutex
	reqs []builder.Request
	// block: RUN steps containing "block" wait until the build is stopped.
	block bool
}

func (f *fakeExecutor) Build(ctx context.Context, req builder.Request) (*builder.Result, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	for i, s := range req.Steps {
		req.Progress(builder.Progress{Step: i + 1, Total: len(req.Steps), Message: s.String()})
		if f.block && s.Type == builder.StepRun && strings.Contains(s.Args[0], "block") {
			<-ctx.Done() // until the build is stopped
			return nil, ctx.Err()
		}
		if s.Type == builder.StepRun && strings.Contains(s.Args[0], "fail") {
			return nil, &builder.StepError{Step: i + 1, What: s.String(), ExitCode: 3, Output: "it failed"}
		}
		if s.HasFiles() {
			if _, err := req.Files.Dir(ctx, s.FilesHash); err != nil {
				return nil, err
			}
		}
	}
	return &builder.Result{Layers: req.Base.Layers, User: req.Base.User, Workdir: req.Base.Workdir,
		Env: map[string]string{}}, nil
}

type env struct {
	svc   *Service
	reg   *Registry
	srv   *httptest.Server
	exec  *fakeExecutor
	evlog *events.Log
	db    string
	data  string
}

func setup(t *testing.T, dbPath, data string, maxUpload int64, beforeLoad ...func(*Service)) *env {
	t.Helper()
	db := eventstest.OpenDB(t, dbPath)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := NewStore(sqlstore.New(db, nil))
	reg := NewRegistry(log)
	reg.Put(Template{ID: "base", BuildID: "base", Names: []string{"base", "e2bdev/base"}, Rootfs: data,
		User: "user", Workdir: "/home/user", CPUCount: 2, MemoryMB: 512, DiskMB: 2048})
	ex := &fakeExecutor{}
	evlog := events.NewLog(db, log)
	svc := NewService(ServiceConfig{DataDir: data, MaxUploadBytes: maxUpload, PruneEvery: -1}, log, st, reg, ex, evlog)
	for _, f := range beforeLoad {
		f(svc)
	}
	if err := svc.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	h := NewHandler(svc)
	mux := http.NewServeMux()
	h.Register(mux)
	root := http.NewServeMux()
	root.HandleFunc(UploadPattern, h.Upload)
	root.Handle("/", eventstest.AsTeam(mux))
	srv := httptest.NewServer(root)
	t.Cleanup(srv.Close)
	return &env{svc: svc, reg: reg, srv: srv, exec: ex, evlog: evlog, db: dbPath, data: data}
}

func (e *env) call(t *testing.T, team, method, path string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, e.srv.URL+path, body)
	req.Header.Set(eventstest.TeamHeader, team)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

type registered struct {
	TemplateID string   `json:"templateID"`
	BuildID    string   `json:"buildID"`
	Names      []string `json:"names"`
}

// waitBuild polls the status endpoint as the SDK does and returns the
// final status and every log message.
func (e *env) waitBuild(t *testing.T, team string, r registered) (Status, []string) {
	t.Helper()
	var msgs []string
	offset := 0
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var st Status
		if code := e.call(t, team, "GET", "/templates/"+r.TemplateID+"/builds/"+r.BuildID+"/status?logsOffset="+itoa(offset), nil, &st); code != 200 {
			t.Fatalf("status: HTTP %d", code)
		}
		for _, l := range st.LogEntries {
			msgs = append(msgs, l.Message)
		}
		offset += len(st.LogEntries)
		if (st.Status == StatusReady || st.Status == StatusError) && len(st.LogEntries) == 0 {
			return st, msgs
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("build did not finish")
	return Status{}, nil
}

func itoa(i int) string { return strconv.Itoa(i) }

func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	var list []builder.ContextFile
	for name, content := range files {
		p := filepath.Join(dir, name)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Lstat(p)
		list = append(list, builder.ContextFile{Rel: name, Info: fi})
	}
	var buf bytes.Buffer
	if err := builder.WriteTar(&buf, dir, list); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (e *env) upload(t *testing.T, team, templateID, hash string, body []byte) int {
	t.Helper()
	var fs struct {
		Present bool   `json:"present"`
		URL     string `json:"url"`
	}
	if code := e.call(t, team, "GET", "/templates/"+templateID+"/files/"+hash, nil, &fs); code != http.StatusCreated {
		t.Fatalf("files: HTTP %d", code)
	}
	if fs.Present {
		return http.StatusOK
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, fs.URL, bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

const hashA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func TestBuildFlowAndPersistence(t *testing.T) {
	t.Parallel()
	e := setup(t, filepath.Join(t.TempDir(), "sbx.db"), t.TempDir(), 0)
	var r registered
	if code := e.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "my-app:v1", "cpuCount": 1, "memoryMB": 256}, &r); code != http.StatusAccepted {
		t.Fatalf("POST /v3/templates: HTTP %d", code)
	}
	if len(r.TemplateID) != 20 || r.BuildID == "" || len(r.Names) != 1 || r.Names[0] != "my-app" {
		t.Fatalf("registered %+v", r)
	}
	if code := e.upload(t, "team1", r.TemplateID, hashA, tarOf(t, map[string]string{"app/main.py": "x"})); code != http.StatusOK {
		t.Fatalf("upload: HTTP %d", code)
	}
	if code := e.upload(t, "team1", r.TemplateID, hashA, nil); code != http.StatusOK { // present now: no PUT
		t.Fatalf("second upload check: HTTP %d", code)
	}
	if b, err := os.ReadFile(filepath.Join(e.data, "uploads", "team1", hashA, "files", "app", "main.py")); err != nil || string(b) != "x" {
		t.Fatalf("uploaded file: %q, %v", b, err)
	}
	steps := []builder.Step{{Type: "RUN", Args: []string{"echo hi"}}, {Type: "COPY", Args: []string{"app", "/app", "", ""}, FilesHash: hashA}}
	// An option sbx does not know is refused, naming it, not dropped.
	var refused struct {
		Message string `json:"message"`
	}
	if code := e.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID,
		map[string]any{"fromTemplate": "base", "steps": steps, "unknownField": true}, &refused); code != http.StatusBadRequest ||
		!strings.Contains(refused.Message, "unknownField") {
		t.Fatalf("start with an unknown option: HTTP %d %q, want 400 naming it", code, refused.Message)
	}
	if code := e.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID,
		map[string]any{"fromTemplate": "base", "steps": steps, "fromImageRegistry": map[string]string{"type": "registry"}}, &refused); code != http.StatusBadRequest ||
		!strings.Contains(refused.Message, "fromImageRegistry") {
		t.Fatalf("start with registry credentials: HTTP %d %q, want 400 naming them", code, refused.Message)
	}
	if code := e.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID,
		map[string]any{"fromTemplate": "base", "steps": steps, "startCmd": "sleep 1"}, nil); code != http.StatusAccepted {
		t.Fatalf("start: HTTP %d", code)
	}
	st, logs := e.waitBuild(t, "team1", r)
	if st.Status != StatusReady || !strings.Contains(strings.Join(logs, "\n"), "RUN echo hi") {
		t.Fatalf("status %+v logs %q", st, logs)
	}
	tpl, ok := e.reg.Get("my-app")
	if !ok || tpl.BuildID != r.BuildID || tpl.TeamID != "team1" || tpl.StartCmd != "sleep 1" || tpl.CPUCount != 1 {
		t.Fatalf("registry has %+v (found %v)", tpl, ok)
	}
	// Another team: not found, name taken.
	if code := e.call(t, "team2", "GET", "/templates/"+r.TemplateID+"/builds/"+r.BuildID+"/status", nil, nil); code != http.StatusNotFound {
		t.Errorf("other team reads status: HTTP %d, want 404", code)
	}
	if code := e.call(t, "team2", "POST", "/v3/templates", map[string]any{"name": "my-app"}, nil); code != http.StatusConflict {
		t.Errorf("other team takes the name: HTTP %d, want 409", code)
	}
	if code := e.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "base"}, nil); code != http.StatusConflict {
		t.Errorf("name of a built-in: HTTP %d, want 409", code)
	}

	// A failing rebuild: error with step and output; the template keeps its build.
	var r2 registered
	e.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "my-app"}, &r2)
	if r2.TemplateID != r.TemplateID || r2.BuildID == r.BuildID {
		t.Fatalf("rebuild registered %+v, want same template, new build", r2)
	}
	e.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r2.BuildID,
		map[string]any{"steps": []builder.Step{{Type: "RUN", Args: []string{"true"}}, {Type: "RUN", Args: []string{"fail now"}}}}, nil)
	st, _ = e.waitBuild(t, "team1", r2)
	if st.Status != StatusError || st.Reason == nil || st.Reason.Step != "2" || !strings.Contains(st.Reason.Message, "exit code 3") ||
		!strings.Contains(st.Reason.Message, "it failed") {
		t.Fatalf("failed build status %+v reason %+v", st, st.Reason)
	}
	if tpl, _ := e.reg.Get(r.TemplateID); tpl.BuildID != r.BuildID {
		t.Errorf("failed build replaced the template's build: %s", tpl.BuildID)
	}
	// A start that cannot begin is rejected and recorded.
	var r3 registered
	e.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "my-app"}, &r3)
	if code := e.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r3.BuildID,
		map[string]any{"fromImage": "python:3.12"}, nil); code != http.StatusBadRequest {
		t.Errorf("unknown base: HTTP %d, want 400", code)
	}
	if st, _ := e.waitBuild(t, "team1", r3); st.Status != StatusError || !strings.Contains(st.Reason.Message, `unknown base "python:3.12"`) {
		t.Errorf("rejected build status %+v", st)
	}

	var withBuilds struct {
		TemplateID string      `json:"templateID"`
		Builds     []BuildInfo `json:"builds"`
	}
	if code := e.call(t, "team1", "GET", "/templates/my-app", nil, &withBuilds); code != http.StatusOK ||
		withBuilds.TemplateID != r.TemplateID || len(withBuilds.Builds) != 3 {
		t.Errorf("GET /templates/my-app: HTTP %d %+v", code, withBuilds)
	}
	if code := e.call(t, "team2", "GET", "/templates/"+r.TemplateID, nil, nil); code != http.StatusNotFound {
		t.Errorf("other team GET template: HTTP %d, want 404", code)
	}

	// Events: started and succeeded for the first, failed for the second.
	evs, err := e.evlog.List(t.Context(), events.Filter{TeamID: "team1", OrderAsc: true})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	if got := strings.Join(types, ","); got != "template.build.started,template.build.succeeded,template.build.started,template.build.failed" {
		t.Errorf("events %s", got)
	}

	// A new service over the same database registers the template again.
	e.svc.Close()
	e2 := setup(t, e.db, e.data, 0)
	if tpl, ok := e2.reg.Get("my-app"); !ok || tpl.BuildID != r.BuildID || tpl.StartCmd != "sleep 1" {
		t.Errorf("after restart registry has %+v (found %v)", tpl, ok)
	}
	if code := e2.call(t, "team2", "DELETE", "/templates/"+r.TemplateID, nil, nil); code != http.StatusNotFound {
		t.Errorf("other team deletes: HTTP %d, want 404", code)
	}
	if code := e2.call(t, "team1", "DELETE", "/templates/base", nil, nil); code != http.StatusForbidden {
		t.Errorf("delete built-in: HTTP %d, want 403", code)
	}
	if code := e2.call(t, "team1", "DELETE", "/templates/"+r.TemplateID, nil, nil); code != http.StatusNoContent {
		t.Errorf("delete: HTTP %d", code)
	}
	if _, ok := e2.reg.Get("my-app"); ok {
		t.Error("deleted template still registered")
	}
}

func TestUploadLimitsAndSafety(t *testing.T) {
	t.Parallel()
	e := setup(t, filepath.Join(t.TempDir(), "sbx.db"), t.TempDir(), 4096)
	var r registered
	e.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "up"}, &r)
	big := make([]byte, 64<<10)
	_, _ = rand.Read(big)
	if code := e.upload(t, "team1", r.TemplateID, hashA, tarOf(t, map[string]string{"big.bin": string(big)})); code != http.StatusRequestEntityTooLarge {
		t.Errorf("huge context: HTTP %d, want 413", code)
	}
	var evil bytes.Buffer
	tw := tar.NewWriter(&evil)
	_ = tw.WriteHeader(&tar.Header{Name: "../../escape.txt", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("x"))
	_ = tw.Close()
	hashB := strings.Repeat("b", 64)
	if code := e.upload(t, "team1", r.TemplateID, hashB, evil.Bytes()); code != http.StatusBadRequest {
		t.Errorf("tar escaping the context: HTTP %d, want 400", code)
	}
	if _, err := os.Stat(filepath.Join(e.data, "escape.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("escape.txt written outside: %v", err)
	}
	// A URL with a forged signature is refused.
	resp, err := http.DefaultClient.Do(mustReq(t, http.MethodPut, e.srv.URL+"/upload/templates/"+hashA+"?expires=9999999999&signature=00"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("forged signature: HTTP %d, want 403", resp.StatusCode)
	}
	if code := e.call(t, "team1", "GET", "/templates/"+r.TemplateID+"/files/NOTAHASH", nil, nil); code != http.StatusBadRequest {
		t.Errorf("bad hash: HTTP %d, want 400", code)
	}
	// Starting a build whose files were never uploaded fails fast.
	if code := e.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID, map[string]any{
		"steps": []builder.Step{{Type: "COPY", Args: []string{"a", "/a"}, FilesHash: strings.Repeat("c", 64)}}}, nil); code != http.StatusBadRequest {
		t.Errorf("COPY without upload: HTTP %d, want 400", code)
	}
}

// The upload cap (ServiceConfig.MaxUploadBytes) holds to the byte, for
// the body as sent (gzip; with its length or chunked, when only reading
// it tells) and for what it unpacks to: at the cap an upload is taken,
// one byte over it is refused with 413.
func TestUploadCapIsExact(t *testing.T) {
	t.Parallel()
	noise := make([]byte, 3000) // incompressible: the body is the larger
	_, _ = rand.Read(noise)
	sent := tarOf(t, map[string]string{"noise.bin": string(noise)})
	zeros := tarOf(t, map[string]string{"zeros.bin": string(make([]byte, 64<<10))}) // unpacks to the larger
	for _, tc := range []struct {
		name    string
		body    []byte
		max     int64
		chunked bool
		want    int
	}{
		{"body at the cap", sent, int64(len(sent)), false, http.StatusOK},
		// Chunked, the body's end comes in a read of its own: at the cap that
		// read must not count as one byte over (it did in about one run of ten).
		{"body at the cap, chunked", sent, int64(len(sent)), true, http.StatusOK},
		{"body a byte over", sent, int64(len(sent)) - 1, false, http.StatusRequestEntityTooLarge},
		{"body a byte over, chunked", sent, int64(len(sent)) - 1, true, http.StatusRequestEntityTooLarge},
		{"unpacked at the cap", zeros, 64 << 10, true, http.StatusOK},
		{"unpacked a byte over", zeros, 64<<10 - 1, true, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, filepath.Join(t.TempDir(), "sbx.db"), t.TempDir(), tc.max)
			var r registered
			e.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "cap"}, &r)
			var fs struct {
				URL string `json:"url"`
			}
			if code := e.call(t, "team1", "GET", "/templates/"+r.TemplateID+"/files/"+hashA, nil, &fs); code != http.StatusCreated {
				t.Fatalf("files: HTTP %d", code)
			}
			var body io.Reader = bytes.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // no length: sent chunked
			}
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, fs.URL, body)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%d bytes sent, cap %d: HTTP %d %s; want %d", len(tc.body), tc.max, resp.StatusCode, msg, tc.want)
			}
			// The refusal names the cap as it is, not "more than 0 MiB".
			if want := "more than " + archive.FormatSize(tc.max) + ";"; tc.want != http.StatusOK && !strings.Contains(string(msg), want) {
				t.Errorf("refusal %q does not say %q", msg, want)
			}
		})
	}
}

func mustReq(t *testing.T, method, url string) *http.Request {
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// put PUTs body to an upload URL.
func put(t *testing.T, url string, body []byte) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, url, bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Uploads are a team's own, bound to their team in the signed URL and to
// their first content.
func TestUploadsPerTeamAndBound(t *testing.T) {
	t.Parallel()
	e := setup(t, filepath.Join(t.TempDir(), "sbx.db"), t.TempDir(), 0)
	var a, b registered
	e.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "a"}, &a)
	e.call(t, "team2", "POST", "/v3/templates", map[string]any{"name": "b"}, &b)
	link := func(team, tid string) (bool, string) {
		t.Helper()
		var fs struct {
			Present bool   `json:"present"`
			URL     string `json:"url"`
		}
		if code := e.call(t, team, "GET", "/templates/"+tid+"/files/"+hashA, nil, &fs); code != http.StatusCreated {
			t.Fatalf("files: HTTP %d", code)
		}
		return fs.Present, fs.URL
	}
	_, u2 := link("team2", b.TemplateID)
	_, u1 := link("team1", a.TemplateID)
	if !strings.Contains(u2, "team=team2") {
		t.Fatalf("upload URL %s does not name its team", u2)
	}
	if code := put(t, u2, tarOf(t, map[string]string{"f": "team2"})); code != http.StatusOK {
		t.Fatalf("team2 upload: HTTP %d", code)
	}
	if present, _ := link("team1", a.TemplateID); present {
		t.Error("team1 is told team2's upload is present")
	}
	if code := put(t, strings.Replace(u1, "team=team1", "team=team2", 1), tarOf(t, map[string]string{"f": "forged"})); code != http.StatusForbidden {
		t.Errorf("team1's URL rewritten to team2: HTTP %d, want 403", code)
	}
	if code := put(t, u1, tarOf(t, map[string]string{"f": "team1"})); code != http.StatusOK {
		t.Fatalf("team1 upload: HTTP %d", code)
	}
	// The same files again (other times, other tar) are fine; other files are not.
	if code := put(t, u2, tarOf(t, map[string]string{"f": "team2"})); code != http.StatusOK {
		t.Errorf("same content again: HTTP %d, want 200", code)
	}
	if code := put(t, u2, tarOf(t, map[string]string{"f": "swapped"})); code != http.StatusConflict {
		t.Errorf("other content for an uploaded hash: HTTP %d, want 409", code)
	}
	for team, want := range map[string]string{"team1": "team1", "team2": "team2"} {
		dir, err := uploadFiles{e.svc, team}.Dir(t.Context(), hashA)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "f")); string(got) != want {
			t.Errorf("%s's files: f = %q, want %q", team, got, want)
		}
	}
	if _, err := (uploadFiles{e.svc, "team3"}).Dir(t.Context(), hashA); err == nil {
		t.Error("a team without an upload got one")
	}
}
