package template

import (
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
)

func TestRegistryPutRemoveResolveFor(t *testing.T) {
	t.Parallel()
	r := NewRegistry(slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.Put(Template{ID: "t1", BuildID: "b1", Names: []string{"app"}, TeamID: "team1", Rootfs: "/r1"})
	r.Put(Template{ID: "t2", BuildID: "b1", Names: []string{"shared"}, TeamID: "team1", Public: true, Rootfs: "/r2"})
	if got, err := r.ResolveFor(t.Context(), "team1", "app"); err != nil || got.BuildID != "b1" {
		t.Fatalf("own template: %+v %v", got, err)
	}
	if _, err := r.ResolveFor(t.Context(), "team2", "app"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("other team's private template: %v, want not found", err)
	}
	if _, err := r.ResolveFor(t.Context(), "team2", "shared"); err != nil {
		t.Errorf("public template: %v", err)
	}
	// A rebuild replaces the template; Lower falls back to the rootfs.
	r.Put(Template{ID: "t1", BuildID: "b2", Names: []string{"app"}, TeamID: "team1", Layers: []string{"/l2", "/base"}})
	got, _ := r.Resolve(t.Context(), "t1")
	if got.BuildID != "b2" || len(got.Lower()) != 2 || (Template{Rootfs: "/x"}).Lower()[0] != "/x" {
		t.Errorf("after rebuild %+v lower %v", got, got.Lower())
	}
	if len(r.List("team1")) != 2 || len(r.List("team2")) != 0 {
		t.Errorf("List: team1 %d, team2 %d", len(r.List("team1")), len(r.List("team2")))
	}
	if !r.Remove("t1") || r.Remove("t1") {
		t.Error("Remove reports wrongly")
	}
	if _, err := r.Resolve(t.Context(), "app"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("removed template resolves: %v", err)
	}
}
