package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/template"
	"github.com/sbxdev/sbx/sdk"
)

// instantExecutor "builds" by returning the base's layers: these tests are
// about the tag commands, not about building (internal/builder tests that).
type instantExecutor struct{}

func (instantExecutor) Build(_ context.Context, req builder.Request) (*builder.Result, error) {
	return &builder.Result{Layers: req.Base.Layers, User: req.Base.User, Workdir: req.Base.Workdir}, nil
}

// tagServer serves the real template API for one team (any API key) and
// has built "app" twice; it returns the server URL and both build IDs.
func tagServer(t *testing.T) (string, string, string) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db := eventstest.OpenDB(t, filepath.Join(t.TempDir(), "sbx.db"))
	st := template.NewStore(sqlstore.New(db, nil))
	reg := template.NewRegistry(log)
	reg.Put(template.Template{ID: "base", BuildID: "base", Names: []string{"base"}, Rootfs: t.TempDir()})
	svc := template.NewService(template.ServiceConfig{DataDir: t.TempDir(), PruneEvery: -1}, log, st, reg, instantExecutor{}, nil)
	if err := svc.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	mux := http.NewServeMux()
	template.NewHandler(svc).Register(mux)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(auth.WithTeam(r.Context(), auth.Team{ID: "team1"})))
	}))
	t.Cleanup(srv.Close)
	var builds []string
	for _, name := range []string{"app:v1", "app"} {
		cfg := clientOptions{apiURL: srv.URL, apiKey: "e2b_00"}
		c, err := cfg.client()
		if err != nil {
			t.Fatal(err)
		}
		reg, err := c.BuildTemplate(t.Context(), sdk.TemplateBuildOptions{Name: name, FromTemplate: "base",
			Steps: []sdk.TemplateStep{{Type: "RUN", Args: []string{"true"}}}})
		if err != nil {
			t.Fatal(err)
		}
		builds = append(builds, reg.BuildID)
	}
	return srv.URL, builds[0], builds[1]
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestTemplateTagCommands(t *testing.T) {
	url, b1, b2 := tagServer(t)
	t.Setenv("E2B_API_KEY", "e2b_00")
	t.Setenv("E2B_API_URL", url)
	for _, tc := range []struct {
		args    []string
		want    []string // in the output (or the error)
		wantErr bool
	}{
		{args: []string{"template", "tag", "app:v1", "stable", "prod"}, want: []string{"Tagged build " + b1 + " as stable, prod", "sbx sandbox create -t app:stable"}},
		{args: []string{"template", "tag", "app", "edge", "--json"}, want: []string{`"buildID": "` + b2 + `"`, `"edge"`}},
		{args: []string{"template", "tags", "app"}, want: []string{"TAG", "default  " + b2, "edge     " + b2, "prod     " + b1, "v1       " + b1}},
		{args: []string{"template", "untag", "app", "prod"}, want: []string{"Removed tags prod from app"}},
		{args: []string{"template", "untag", "app", "prod"}, wantErr: true, want: []string{`no tag "prod"`, "HTTP 404"}},
		{args: []string{"template", "tag", "app:nope", "x"}, wantErr: true, want: []string{`no tag "nope"`, "default, edge, stable, v1"}},
		{args: []string{"template", "tag", "app"}, wantErr: true, want: []string{"requires at least 2 arg"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := runCLI(t, tc.args...)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v; output:\n%s", err, tc.wantErr, out)
			}
			if err != nil {
				out += err.Error()
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	out, err := runCLI(t, "template", "tags", "app", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var tags []struct{ Tag, BuildID string }
	if err := json.Unmarshal([]byte(out), &tags); err != nil || len(tags) != 4 || tags[0].Tag != "default" || tags[3].BuildID != b1 {
		t.Errorf("tags --json: %v %q", err, out)
	}
}
