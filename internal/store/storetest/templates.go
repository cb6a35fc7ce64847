package storetest

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// TemplatesFactory returns a fresh, empty templates repository.
type TemplatesFactory func(t *testing.T) store.Templates

// RunTemplates runs the templates repository's conformance suite.
func RunTemplates(t *testing.T, newTemplates TemplatesFactory) {
	t.Run("Templates", func(t *testing.T) { testTemplates(t, newTemplates(t)) })
	t.Run("Builds", func(t *testing.T) { testBuilds(t, newTemplates(t)) })
	t.Run("BuildLogs", func(t *testing.T) { testBuildLogs(t, newTemplates(t)) })
	t.Run("Tags", func(t *testing.T) { testTags(t, newTemplates(t)) })
	t.Run("DeleteKeepsBuilds", func(t *testing.T) { testDeleteTemplate(t, newTemplates(t)) })
}

var tplBase = time.Date(2026, 12, 1, 8, 0, 0, 123456789, time.UTC)

func sampleTemplate(id, team string, at time.Duration) store.TemplateRecord {
	return store.TemplateRecord{ID: id, TeamID: team, Names: []string{id + "-name"}, CPUCount: 2, MemoryMB: 512,
		DiskMB: 2048, CreatedAt: tplBase.Add(at), UpdatedAt: tplBase.Add(at)}
}

func testTemplates(t *testing.T, r store.Templates) {
	ctx := t.Context()
	a, b := sampleTemplate("tpl-a", "team-1", 0), sampleTemplate("tpl-b", "team-2", time.Second)
	b.Public = true
	for _, rec := range []store.TemplateRecord{b, a} {
		if err := r.CreateTemplate(ctx, rec); err != nil {
			t.Fatalf("CreateTemplate(%s): %v", rec.ID, err)
		}
	}
	if err := r.CreateTemplate(ctx, a); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate template ID: got %v, want ErrAlreadyExists", err)
	}
	got, err := r.Template(ctx, "tpl-b")
	if err != nil || !reflect.DeepEqual(got, b) {
		t.Fatalf("Template(tpl-b) =\n %+v, %v\nwant %+v", got, err, b)
	}
	if _, err := r.Template(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Template(missing): got %v, want ErrNotFound", err)
	}
	a.Names, a.Public, a.CPUCount, a.MemoryMB, a.DiskMB = []string{"alpha", "team-1/alpha"}, true, 4, 1024, 4096
	a.CurrentBuild, a.BuildCount, a.UpdatedAt = "bld-1", 3, tplBase.Add(time.Hour)
	if err := r.UpdateTemplate(ctx, a); err != nil {
		t.Fatal(err)
	}
	all, err := r.Templates(ctx)
	if err != nil || len(all) != 2 || !reflect.DeepEqual(all[0], a) || all[1].ID != "tpl-b" || all[1].TeamID != "team-2" {
		t.Fatalf("Templates (oldest first, each with its team) =\n %+v, %v\nwant [%+v tpl-b]", all, err, a)
	}
}

func testBuilds(t *testing.T, r store.Templates) {
	ctx := t.Context()
	mk := func(id string, at time.Duration) store.BuildRecord {
		return store.BuildRecord{ID: id, TemplateID: "tpl", Status: "waiting", Tags: []string{"v1"}, CreatedAt: tplBase.Add(at), NodeID: "n1"}
	}
	for i, id := range []string{"b1", "b2", "b3"} {
		if err := r.CreateBuild(ctx, mk(id, time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	other := mk("o1", 0)
	other.TemplateID, other.Tags, other.NodeID = "other", nil, "" // a row from before nodes
	if err := r.CreateBuild(ctx, other); err != nil {
		t.Fatal(err)
	}
	got, err := r.Build(ctx, "b1")
	if err != nil || got.Status != "waiting" || !reflect.DeepEqual(got.Tags, []string{"v1"}) || !got.CreatedAt.Equal(tplBase) ||
		!got.FinishedAt.IsZero() || got.NodeID != "n1" {
		t.Fatalf("Build(b1) = %+v, %v", got, err)
	}
	if _, err := r.Build(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Build(missing): got %v, want ErrNotFound", err)
	}
	done := got
	done.Status, done.Request, done.FinishedAt = "ready", json.RawMessage(`{"fromImage":"alpine"}`), tplBase.Add(time.Minute)
	done.Result = store.BuildResult{Layers: []string{"l1", "l2"}, User: "user", Workdir: "/home/user",
		Env: map[string]string{"A": "1"}, StartCmd: "run", ReadyCmd: "ready", ContentKey: "ck"}
	if err := r.UpdateBuild(ctx, done); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Build(ctx, "b1"); err != nil || !reflect.DeepEqual(got, done) {
		t.Fatalf("Build after update =\n %+v, %v\nwant %+v", got, err, done)
	}
	failed := mk("b2", time.Second)
	failed.Status, failed.Reason, failed.ReasonStep = "error", "step failed", "3"
	if err := r.UpdateBuild(ctx, failed); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Build(ctx, "b2"); got.Reason != "step failed" || got.ReasonStep != "3" || string(got.Request) != "{}" {
		t.Fatalf("failed build reads %+v", got)
	}
	list, err := r.Builds(ctx, "tpl")
	if err != nil || len(list) != 3 || list[0].ID != "b3" || list[2].ID != "b1" || list[2].Result.ContentKey != "ck" {
		t.Fatalf("Builds(tpl) = %+v, %v; want b3, b2, b1 with their results", list, err)
	}
	if list, err := r.Builds(ctx, "none"); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("Builds(no builds) = %#v, %v; want empty", list, err)
	}
	if ready, err := r.BuildsWithStatus(ctx, "ready"); err != nil || len(ready) != 1 || ready[0].ID != "b1" {
		t.Fatalf("BuildsWithStatus(ready) = %+v, %v", ready, err)
	}
	building := mk("b4", 4*time.Second)
	building.Status = "building"
	if err := r.CreateBuild(ctx, building); err != nil {
		t.Fatal(err)
	}
	elsewhere := mk("b5", 5*time.Second)
	elsewhere.Status, elsewhere.NodeID = "building", "n2"
	if err := r.CreateBuild(ctx, elsewhere); err != nil {
		t.Fatal(err)
	}
	n, err := r.FailBuilds(ctx, "n1", []string{"building", "waiting"}, "error", "restarted", tplBase.Add(time.Hour))
	if err != nil || n != 3 { // b3 (waiting), b4 (building), o1 (waiting, no node)
		t.Fatalf("FailBuilds(n1) = %d, %v; want 3", n, err)
	}
	if got, _ := r.Build(ctx, "b5"); got.Status != "building" {
		t.Errorf("FailBuilds(n1) touched node n2's build: %+v", got)
	}
	for _, id := range []string{"b3", "o1", "b4"} {
		if got, _ := r.Build(ctx, id); got.Status != "error" || got.Reason != "restarted" || !got.FinishedAt.Equal(tplBase.Add(time.Hour)) {
			t.Errorf("build %s after FailBuilds: %+v", id, got)
		}
	}
	if got, _ := r.Build(ctx, "b1"); got.Status != "ready" {
		t.Errorf("FailBuilds touched a ready build: %+v", got)
	}
}

func testBuildLogs(t *testing.T, r store.Templates) {
	ctx := t.Context()
	line := func(i int, msg string) store.BuildLogEntry {
		return store.BuildLogEntry{Timestamp: tplBase.Add(time.Duration(i) * time.Millisecond), Message: msg, Level: "info", Step: "1"}
	}
	if err := r.AppendBuildLog(ctx, "b1", line(0, "a"), line(1, "b")); err != nil {
		t.Fatal(err)
	}
	if err := r.AppendBuildLog(ctx, "b1", line(2, "c")); err != nil {
		t.Fatal(err)
	}
	if err := r.AppendBuildLog(ctx, "b2", line(3, "other build")); err != nil {
		t.Fatal(err)
	}
	got, err := r.BuildLogs(ctx, "b1", 0, 100)
	if err != nil || !reflect.DeepEqual(got, []store.BuildLogEntry{line(0, "a"), line(1, "b"), line(2, "c")}) {
		t.Fatalf("BuildLogs(b1) = %+v, %v", got, err)
	}
	if got, _ := r.BuildLogs(ctx, "b1", 1, 1); len(got) != 1 || got[0].Message != "b" {
		t.Fatalf("BuildLogs(offset 1, limit 1) = %+v", got)
	}
	if got, err := r.BuildLogs(ctx, "none", 0, 10); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("BuildLogs(no lines) = %#v, %v; want empty, not nil", got, err)
	}
}

func testTags(t *testing.T, r store.Templates) {
	ctx := t.Context()
	if err := r.SetTemplateTags(ctx, "tpl", "b1", []string{"latest", "v1"}, tplBase); err != nil {
		t.Fatal(err)
	}
	if err := r.SetTemplateTags(ctx, "other", "o1", []string{"latest"}, tplBase); err != nil {
		t.Fatal(err)
	}
	// Moving a tag points it at the new build.
	if err := r.SetTemplateTags(ctx, "tpl", "b2", []string{"latest"}, tplBase.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	tag, err := r.TemplateTag(ctx, "tpl", "latest")
	want := store.TemplateTag{TemplateID: "tpl", Tag: "latest", BuildID: "b2", CreatedAt: tplBase.Add(time.Minute)}
	if err != nil || !reflect.DeepEqual(tag, want) {
		t.Fatalf("TemplateTag(latest) = %+v, %v; want %+v", tag, err, want)
	}
	if _, err := r.TemplateTag(ctx, "tpl", "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("TemplateTag(missing): got %v, want ErrNotFound", err)
	}
	names := func(tags []store.TemplateTag) []string {
		var out []string
		for _, tg := range tags {
			out = append(out, tg.TemplateID+":"+tg.Tag+"="+tg.BuildID)
		}
		return out
	}
	if got, err := r.TemplateTags(ctx, "tpl"); err != nil || !reflect.DeepEqual(names(got), []string{"tpl:latest=b2", "tpl:v1=b1"}) {
		t.Fatalf("TemplateTags(tpl) = %v, %v", names(got), err)
	}
	if got, err := r.TemplateTags(ctx, ""); err != nil || !reflect.DeepEqual(names(got), []string{"other:latest=o1", "tpl:latest=b2", "tpl:v1=b1"}) {
		t.Fatalf("TemplateTags(all) = %v, %v", names(got), err)
	}
	// All or none: one missing tag removes nothing.
	missing, err := r.RemoveTemplateTags(ctx, "tpl", []string{"v1", "nope"})
	if err != nil || !reflect.DeepEqual(missing, []string{"nope"}) {
		t.Fatalf("RemoveTemplateTags(v1, nope) = %v, %v; want [nope]", missing, err)
	}
	if _, err := r.TemplateTag(ctx, "tpl", "v1"); err != nil {
		t.Fatalf("a failed removal removed v1: %v", err)
	}
	if missing, err := r.RemoveTemplateTags(ctx, "tpl", []string{"v1", "latest"}); err != nil || len(missing) != 0 {
		t.Fatalf("RemoveTemplateTags = %v, %v", missing, err)
	}
	if got, _ := r.TemplateTags(ctx, ""); !reflect.DeepEqual(names(got), []string{"other:latest=o1"}) {
		t.Fatalf("after removal: %v", names(got))
	}
}

func testDeleteTemplate(t *testing.T, r store.Templates) {
	ctx := t.Context()
	for _, id := range []string{"gone", "kept"} {
		if err := r.CreateTemplate(ctx, sampleTemplate(id, "team", 0)); err != nil {
			t.Fatal(err)
		}
		if err := r.CreateBuild(ctx, store.BuildRecord{ID: id + "-b", TemplateID: id, Status: "ready", CreatedAt: tplBase}); err != nil {
			t.Fatal(err)
		}
		if err := r.AppendBuildLog(ctx, id+"-b", store.BuildLogEntry{Timestamp: tplBase, Message: "m", Level: "info"}); err != nil {
			t.Fatal(err)
		}
		if err := r.SetTemplateTags(ctx, id, id+"-b", []string{"latest"}, tplBase); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.DeleteTemplate(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Template(ctx, "gone"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted template still reads: %v", err)
	}
	if tags, _ := r.TemplateTags(ctx, "gone"); len(tags) != 0 {
		t.Errorf("deleted template's tags remain: %+v", tags)
	}
	if logs, _ := r.BuildLogs(ctx, "gone-b", 0, 10); len(logs) != 0 {
		t.Errorf("deleted template's build logs remain: %+v", logs)
	}
	if b, err := r.Build(ctx, "gone-b"); err != nil || b.Status != "ready" {
		t.Errorf("deleted template's build should stay (pruning needs its layers): %+v, %v", b, err)
	}
	if tags, _ := r.TemplateTags(ctx, "kept"); len(tags) != 1 {
		t.Errorf("another template's tags went too: %+v", tags)
	}
	if logs, _ := r.BuildLogs(ctx, "kept-b", 0, 10); len(logs) != 1 {
		t.Errorf("another template's logs went too: %+v", logs)
	}
}
