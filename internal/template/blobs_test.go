package template

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/testenv"
)

// layerExecutor makes one layer per build in the data dir, as the real
// executor does (layers/<key>/diff), over a base outside it (as the
// machine's rootfs cache is).
type layerExecutor struct{ data, base string }

func (x layerExecutor) Build(ctx context.Context, req builder.Request) (*builder.Result, error) {
	dir := filepath.Join(x.data, "layers", "k1", "diff")
	if err := os.MkdirAll(filepath.Join(dir, "opt"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "opt", "built.txt"), []byte("built here\n"), 0o644); err != nil {
		return nil, err
	}
	return &builder.Result{Layers: []string{dir, x.base}, User: "user", Workdir: "/home/user", Env: map[string]string{}}, nil
}

// withBlobs wires a server's service to the shared blob store (its own
// cache) before it loads, as the server does.
func withBlobs(t *testing.T, dbPath string, st blob.Store) func(*Service) {
	t.Helper()
	cache, err := blob.NewCache(filepath.Join(t.TempDir(), "cache"), st, 1<<30, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	db := sqlstore.New(eventstest.OpenDB(t, dbPath), nil)
	return func(s *Service) {
		s.SetBlobs(&layer.Blobs{Store: st, Puller: &layer.Puller{Cache: cache}, Layers: db})
		t.Cleanup(func() { // mounted layers would stop TempDir's cleanup
			ents, _ := os.ReadDir(filepath.Join(s.cfg.DataDir, "templates"))
			for _, e := range ents {
				unmount(filepath.Join(s.cfg.DataDir, "templates", e.Name(), "rootfs"))
			}
		})
	}
}

// A build on one server publishes its layers; a server sharing the
// database and the blob store that never saw the template loads it on
// first use and pulls the layer into its own data dir (not reading the
// first's); a blob gone from the store fails a third server's first use
// with a message naming the template.
func TestBuildStartsOnAnotherServer(t *testing.T) {
	testenv.Require(t, testenv.Root) // the layers are mounted as overlays
	dbPath := filepath.Join(t.TempDir(), "sbx.db")
	st, err := blob.NewFileStore(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	base := t.TempDir()
	if err := os.WriteFile(filepath.Join(base, "base.txt"), []byte("base\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	a := setup(t, dbPath, t.TempDir(), 0, withBlobs(t, dbPath, st))
	a.svc.exec = layerExecutor{data: a.data, base: base}
	var r registered
	if code := a.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "shared-app"}, &r); code != 202 {
		t.Fatalf("POST /v3/templates: HTTP %d", code)
	}
	if code := a.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID,
		map[string]any{"fromTemplate": "base", "steps": []builder.Step{{Type: "RUN", Args: []string{"true"}}}}, nil); code != 202 {
		t.Fatalf("start: HTTP %d", code)
	}
	status, logs := a.waitBuild(t, "team1", r)
	if status.Status != StatusReady || !strings.Contains(strings.Join(logs, "\n"), "layers published to the blob store") {
		t.Fatalf("build on A: %+v %q", status, logs)
	}

	b := setup(t, dbPath, t.TempDir(), 0, withBlobs(t, dbPath, st))
	if _, ok := b.reg.Get("shared-app"); ok {
		t.Fatal("B registered A's template before its first use")
	}
	tpl, err := b.reg.ResolveFor(t.Context(), "team1", "shared-app")
	if err != nil {
		t.Fatalf("resolve A's template on B: %v", err)
	}
	if len(tpl.Layers) != 2 || !strings.HasPrefix(tpl.Layers[0], filepath.Join(b.data, "layer-blobs")+"/") || tpl.Layers[1] != base {
		t.Fatalf("B's layers = %v; want the pulled layer in B's data dir over the shared base", tpl.Layers)
	}
	if got, err := os.ReadFile(filepath.Join(tpl.Rootfs, "opt", "built.txt")); err != nil || string(got) != "built here\n" {
		t.Fatalf("B's mounted template: %q, %v", got, err)
	}
	if _, err := b.reg.ResolveFor(t.Context(), "team2", "shared-app"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("another team resolves the private template on B: %v, want not found", err)
	}

	refs, err := sqlstore.New(eventstest.OpenDB(t, dbPath), nil).Layers(t.Context(), "build", r.BuildID)
	if err != nil || len(refs) != 2 || refs[0].Digest == "" || refs[1].Digest != "" {
		t.Fatalf("recorded layers: %+v, %v; want a digest for the built layer and none for the base", refs, err)
	}
	if err := st.Delete(t.Context(), blob.Digest(refs[0].Digest)); err != nil {
		t.Fatal(err)
	}
	c := setup(t, dbPath, t.TempDir(), 0, withBlobs(t, dbPath, st))
	// Another team learns nothing, not even that loading failed.
	if _, err := c.reg.ResolveFor(t.Context(), "team2", "shared-app"); !errors.Is(err, errdefs.ErrNotFound) || strings.Contains(err.Error(), "blob") {
		t.Errorf("another team resolving the private template on C: %v, want a plain not found", err)
	}
	_, err = c.reg.ResolveFor(t.Context(), "team1", "shared-app")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), `template "shared-app"`) ||
		!strings.Contains(err.Error(), "missing from the blob store") {
		t.Fatalf("resolve with the layer's blob gone: %v; want a precondition error naming the template", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(c.data, "layer-blobs")); len(ents) > 0 {
		for _, e := range ents {
			if sub, _ := os.ReadDir(filepath.Join(c.data, "layer-blobs", e.Name())); len(sub) != 0 {
				t.Errorf("a failed pull left %s/%v", e.Name(), sub)
			}
		}
	}
}
