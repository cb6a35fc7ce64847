package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/store"
)

// testKeptLayers: the stacks garbage collection keeps are the ones still
// in use; a deleted template's builds and a replaced build that no
// sandbox runs are not kept once they finished long enough ago.
func testKeptLayers(t *testing.T, s LayersStore) {
	ctx := t.Context()
	tpls, ok := s.(store.Templates)
	if !ok {
		t.Skip("the store keeps no templates")
	}
	team, err := s.CreateTeam(ctx, "keepers", "e2b_kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk")
	if err != nil {
		t.Fatal(err)
	}
	old, recent := nodeBase.Add(-72*time.Hour), nodeBase.Add(-time.Hour)
	dig := func(c byte) string { return "sha256:" + hex64(c) }
	builds := []struct {
		id       string
		finished time.Time
		digest   string
	}{
		{"b-current", old, dig('1')},
		{"b-tagged", old, dig('2')},
		{"b-running", old, dig('3')}, // a sandbox runs it
		{"b-recent", recent, dig('4')},
		{"b-building", time.Time{}, dig('5')},
		{"b-replaced", old, dig('6')},
		{"b-deleted", old, dig('7')}, // its template is gone
		{"b-killed", old, dig('8')},  // only a killed sandbox ran it
		{"b-snapped", old, dig('b')}, // a sandbox snapshot starts above it
	}
	for _, tpl := range []string{"tpl-keep", "tpl-gone"} {
		if err := tpls.CreateTemplate(ctx, store.TemplateRecord{ID: tpl, TeamID: team.ID, Names: []string{tpl}, CPUCount: 1, MemoryMB: 512,
			CreatedAt: old, UpdatedAt: old}); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range builds {
		tpl := "tpl-keep"
		if b.id == "b-deleted" {
			tpl = "tpl-gone"
		}
		rec := store.BuildRecord{ID: b.id, TemplateID: tpl, Status: "ready", CreatedAt: old, FinishedAt: b.finished}
		if b.finished.IsZero() {
			rec.Status = "building"
		}
		if err := tpls.CreateBuild(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if err := tpls.UpdateBuild(ctx, rec); err != nil {
			t.Fatal(err)
		}
		// Each stack also holds the shared base layer, which stays while
		// any kept stack holds it.
		if err := s.SetLayers(ctx, store.LayerOwnerBuild, b.id, []store.LayerRef{{Digest: b.digest}, {Digest: dig('0')}, {Path: "/rootfs"}}, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := tpls.UpdateTemplate(ctx, store.TemplateRecord{ID: "tpl-keep", TeamID: team.ID, Names: []string{"tpl-keep"}, CPUCount: 1,
		MemoryMB: 512, CurrentBuild: "b-current", BuildCount: 8, CreatedAt: old, UpdatedAt: old}); err != nil {
		t.Fatal(err)
	}
	if err := tpls.SetTemplateTags(ctx, "tpl-keep", "b-tagged", []string{"v1"}, old); err != nil {
		t.Fatal(err)
	}
	if err := tpls.DeleteTemplate(ctx, "tpl-gone"); err != nil {
		t.Fatal(err)
	}
	for id, b := range map[string]string{"sbx-runs": "b-running", "sbx-died": "b-killed"} {
		sb := sample(id, team.ID, old, nil)
		sb.BuildID = b
		if err := s.InsertSandbox(ctx, sb, nil); err != nil {
			t.Fatal(err)
		}
	}
	killed := sample("sbx-died", team.ID, old, nil)
	killed.BuildID, killed.State = "b-killed", store.StateKilled
	if err := s.UpdateSandbox(ctx, killed, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLayers(ctx, store.LayerOwnerSandbox, "sbx-paused", []store.LayerRef{{Digest: dig('9')}}, old); err != nil {
		t.Fatal(err)
	}
	// A sandbox killed with its stack still recorded (its node was lost
	// and never forgot it): garbage.
	if err := s.SetLayers(ctx, store.LayerOwnerSandbox, "sbx-died", []store.LayerRef{{Digest: dig('a')}}, old); err != nil {
		t.Fatal(err)
	}
	// A sandbox snapshot keeps its own layers and its base build's, long
	// after the build was replaced and its sandbox killed; a deleted
	// snapshot keeps neither.
	if snaps, ok := s.(store.Snapshots); ok {
		for _, sn := range []store.Snapshot{
			{ID: "snap-kept", TeamID: team.ID, SandboxID: "sbx-died", BaseTemplate: "tpl-keep", BuildID: "b-snapped",
				Layers: []store.LayerRef{{Digest: dig('c')}}, CreatedAt: old},
			{ID: "snap-gone", TeamID: team.ID, SandboxID: "sbx-died", BaseTemplate: "tpl-keep", BuildID: "b-replaced",
				Layers: []store.LayerRef{{Digest: dig('d')}}, CreatedAt: old},
		} {
			if err := snaps.PutSnapshot(ctx, sn); err != nil {
				t.Fatal(err)
			}
		}
		if err := snaps.DeleteSnapshot(ctx, team.ID, "snap-gone"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.KeptLayerDigests(ctx, nodeBase.Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{dig('0'), dig('1'), dig('2'), dig('3'), dig('4'), dig('5'), dig('9')}
	if _, ok := s.(store.Snapshots); ok {
		want = append(want, dig('b'), dig('c'))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("KeptLayerDigests = %v\nwant %v (not the replaced, deleted or killed-only builds' 6, 7, 8, nor the killed sandbox's a)", got, want)
	}
}
