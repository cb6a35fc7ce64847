// Package storetest is the conformance suite every store.Store
// implementation runs: storetest.Run(t, newStore).
package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// Factory returns a fresh, empty store wired to rec (which may be nil).
type Factory func(t *testing.T, rec store.Recorder) store.Store

// Recorder captures changes, for asserting that they commit with the row.
type Recorder struct {
	mu       sync.Mutex
	Changes  []store.Change
	Committs int
	FailNext bool
}

func (r *Recorder) RecordTx(_ context.Context, _ *sqldb.Tx, c store.Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.FailNext {
		r.FailNext = false
		return errors.New("recorder failure")
	}
	r.Changes = append(r.Changes, c)
	return nil
}

func (r *Recorder) Committed() {
	r.mu.Lock()
	r.Committs++
	r.mu.Unlock()
}

// Run runs the suite.
func Run(t *testing.T, newStore Factory) {
	t.Run("Teams", func(t *testing.T) { testTeams(t, newStore(t, nil)) })
	t.Run("APIKeys", func(t *testing.T) { testKeys(t, newStore(t, nil)) })
	t.Run("AdminKey", func(t *testing.T) { testAdminKey(t, newStore(t, nil)) })
	t.Run("DeleteTeam", func(t *testing.T) { testDeleteTeam(t, newStore(t, nil)) })
	t.Run("Sandboxes", func(t *testing.T) { testSandboxes(t, newStore) })
	t.Run("ChangeRollsBackWithRow", func(t *testing.T) { testAtomic(t, newStore) })
	t.Run("NodeSandboxes", func(t *testing.T) { testNodes(t, newStore(t, nil)) })
}

// testNodes: a node's recovery sees its own live sandboxes and those of
// no node, never another node's or killed ones.
func testNodes(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Now().UTC()
	for _, c := range []struct {
		id, node string
		state    store.SandboxState
	}{
		{"a1", "node-a", store.StateRunning}, {"a2", "node-a", store.StatePaused}, {"a3", "node-a", store.StateKilled},
		{"b1", "node-b", store.StateRunning}, {"legacy", "", store.StateRunning},
	} {
		sb := sample(c.id, "t1", now, nil)
		sb.NodeID, sb.State = c.node, c.state
		if err := s.InsertSandbox(ctx, sb, nil); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.NodeSandboxes(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, sb := range got {
		ids[sb.ID] = sb.NodeID
	}
	want := map[string]string{"a1": "node-a", "a2": "node-a", "legacy": ""}
	if len(ids) != len(want) {
		t.Fatalf("NodeSandboxes(node-a) = %v, want %v", ids, want)
	}
	for id, node := range want {
		if n, ok := ids[id]; !ok || n != node {
			t.Fatalf("NodeSandboxes(node-a) = %v, want %v", ids, want)
		}
	}
	all, err := s.LiveSandboxes(ctx)
	if err != nil || len(all) != 4 {
		t.Fatalf("LiveSandboxes = %d, %v; want 4", len(all), err)
	}
}

func testTeams(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, err := s.CreateTeam(ctx, "alpha", "e2b_aaaa")
	if err != nil {
		t.Fatalf("CreateTeam: %v", err)
	}
	if _, err := s.CreateTeam(ctx, "alpha", "e2b_bbbb"); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate team name: got %v, want ErrAlreadyExists", err)
	}
	got, err := s.TeamByAPIKey(ctx, "e2b_aaaa")
	if err != nil || got.ID != a.ID {
		t.Fatalf("TeamByAPIKey = %+v, %v; want team %s", got, err, a.ID)
	}
	if _, err := s.TeamByAPIKey(ctx, "e2b_nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unknown key: got %v, want ErrNotFound", err)
	}
	if got, err := s.TeamByName(ctx, "alpha"); err != nil || got.ID != a.ID {
		t.Fatalf("TeamByName = %+v, %v", got, err)
	}
	teams, err := s.Teams(ctx)
	if err != nil || len(teams) != 1 {
		t.Fatalf("Teams = %v, %v; want 1 team", teams, err)
	}
}

func testKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	const first, second = "e2b_0123456789abcdef0123456789abcdef01234567", "e2b_fedcba9876543210fedcba9876543210fedcba98"
	a, err := s.CreateTeam(ctx, "alpha", first)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateTeam(ctx, "beta", "e2b_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := s.APIKeys(ctx, a.ID)
	if err != nil || len(keys) != 1 || keys[0].TeamID != a.ID || keys[0].ID == "" {
		t.Fatalf("APIKeys(alpha) = %+v, %v; want its first key", keys, err)
	}
	if m := keys[0].Mask; m != (store.KeyMask{Prefix: "e2b_", ValueLength: 40, MaskedPrefix: "01", MaskedSuffix: "4567"}) {
		t.Errorf("mask = %+v", m)
	}
	k2, err := s.CreateAPIKey(ctx, a.ID, "ci", second)
	if err != nil || k2.Name != "ci" || k2.TeamID != a.ID {
		t.Fatalf("CreateAPIKey = %+v, %v", k2, err)
	}
	if _, err := s.CreateAPIKey(ctx, "no-such-team", "x", "e2b_cccccccccccccccccccccccccccccccccccccccc"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("CreateAPIKey for a missing team: %v, want ErrNotFound", err)
	}
	k, team, admin, err := s.ResolveAPIKey(ctx, second)
	if err != nil || admin || team.ID != a.ID || k.ID != k2.ID {
		t.Fatalf("ResolveAPIKey(second) = %+v, %+v, %v, %v", k, team, admin, err)
	}
	if _, _, _, err := s.ResolveAPIKey(ctx, "e2b_nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("ResolveAPIKey(unknown) = %v, want ErrNotFound", err)
	}
	if err := s.RenameAPIKey(ctx, k2.ID, "deploy"); err != nil {
		t.Fatal(err)
	}
	used := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	if err := s.TouchAPIKey(ctx, k2.ID, used); err != nil {
		t.Fatal(err)
	}
	got, err := s.APIKey(ctx, k2.ID)
	if err != nil || got.Name != "deploy" || !got.LastUsed.Equal(used) {
		t.Fatalf("APIKey after rename and touch = %+v, %v", got, err)
	}
	all, err := s.APIKeys(ctx, "")
	if err != nil || len(all) != 3 {
		t.Fatalf("APIKeys(all) = %d keys, %v; want 3", len(all), err)
	}
	if err := s.DeleteAPIKey(ctx, k2.ID, false); err != nil {
		t.Fatalf("delete a team's second key: %v", err)
	}
	if _, _, _, err := s.ResolveAPIKey(ctx, second); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a deleted key still resolves: %v", err)
	}
	if err := s.DeleteAPIKey(ctx, keys[0].ID, false); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("deleting the last key without force: %v, want ErrConflict", err)
	}
	if err := s.DeleteAPIKey(ctx, "no-such-key", true); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("deleting a missing key: %v, want ErrNotFound", err)
	}
	if err := s.DeleteAPIKey(ctx, keys[0].ID, true); err != nil {
		t.Errorf("deleting the last key with force: %v", err)
	}
	if keys, _ := s.APIKeys(ctx, b.ID); len(keys) != 1 {
		t.Errorf("another team's keys changed: %+v", keys)
	}
}

func testAdminKey(t *testing.T, s store.Store) {
	ctx := t.Context()
	const k1, k2 = "sbx_admin_1111111111111111111111111111111111111111", "sbx_admin_2222222222222222222222222222222222222222"
	first, err := s.SetAdminKey(ctx, k1)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.SetAdminKey(ctx, k1); err != nil || again.ID != first.ID {
		t.Errorf("SetAdminKey with the same key = %+v, %v; want the same ID %s", again, err, first.ID)
	}
	k, team, admin, err := s.ResolveAPIKey(ctx, k1)
	if err != nil || !admin || team.ID != "" || k.ID != first.ID {
		t.Fatalf("ResolveAPIKey(admin) = %+v, %+v, %v, %v", k, team, admin, err)
	}
	if err := s.TouchAPIKey(ctx, k.ID, time.Now()); err != nil {
		t.Errorf("TouchAPIKey(admin): %v", err)
	}
	if _, err := s.SetAdminKey(ctx, k2); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.ResolveAPIKey(ctx, k1); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("the replaced admin key still resolves: %v", err)
	}
	if _, _, admin, err := s.ResolveAPIKey(ctx, k2); err != nil || !admin {
		t.Errorf("the new admin key: admin %v, %v", admin, err)
	}
	if keys, _ := s.APIKeys(ctx, ""); len(keys) != 0 {
		t.Errorf("the admin key is listed with team keys: %+v", keys)
	}
}

func testDeleteTeam(t *testing.T, s store.Store) {
	ctx := t.Context()
	const key = "e2b_dddddddddddddddddddddddddddddddddddddddd"
	a, err := s.CreateTeam(ctx, "doomed", key)
	if err != nil {
		t.Fatal(err)
	}
	five := 5
	if err := s.SetTeamMaxSandboxes(ctx, a.ID, &five); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Team(ctx, a.ID); err != nil || got.MaxSandboxes == nil || *got.MaxSandboxes != 5 {
		t.Fatalf("Team after SetTeamMaxSandboxes(5) = %+v, %v", got, err)
	}
	if err := s.SetTeamMaxSandboxes(ctx, a.ID, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Team(ctx, a.ID); got.MaxSandboxes != nil {
		t.Errorf("MaxSandboxes after clearing = %v, want nil", *got.MaxSandboxes)
	}
	if err := s.DeleteTeam(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Team(ctx, a.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("deleted team: %v, want ErrNotFound", err)
	}
	if _, _, _, err := s.ResolveAPIKey(ctx, key); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a deleted team's key resolves: %v", err)
	}
	if err := s.DeleteTeam(ctx, a.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("deleting it again: %v, want ErrNotFound", err)
	}
	if _, err := s.CreateTeam(ctx, "doomed", "e2b_eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"); err != nil {
		t.Errorf("a deleted team's name cannot be reused: %v", err)
	}
}

func sample(id, team string, started time.Time, meta map[string]string) store.Sandbox {
	return store.Sandbox{ID: id, TeamID: team, TemplateID: "base", State: store.StateRunning,
		Metadata: meta, EnvVars: map[string]string{"A": "1"}, CPUCount: 2, MemoryMB: 512, DiskMB: 1024,
		StartedAt: started, EndAt: started.Add(time.Minute), AccessToken: "tok", AllowInternet: true}
}

func testSandboxes(t *testing.T, newStore Factory) {
	rec := &Recorder{}
	s := newStore(t, rec)
	ctx := t.Context()
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, id := range []string{"aaa", "bbb", "ccc"} {
		team := "t1"
		if id == "ccc" {
			team = "t2"
		}
		sb := sample(id, team, base.Add(time.Duration(i)*time.Second), map[string]string{"n": id})
		if err := s.InsertSandbox(ctx, sb, &store.Change{Type: "created", Sandbox: sb}); err != nil {
			t.Fatalf("InsertSandbox %s: %v", id, err)
		}
	}
	if err := s.InsertSandbox(ctx, sample("aaa", "t1", base, nil), nil); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate insert: got %v", err)
	}
	got, err := s.Sandbox(ctx, "aaa")
	if err != nil {
		t.Fatal(err)
	}
	if got.Metadata["n"] != "aaa" || got.EnvVars["A"] != "1" || !got.StartedAt.Equal(base) || !got.AllowInternet {
		t.Fatalf("round trip mismatch: %+v", got)
	}
	tests := []struct {
		name string
		f    store.ListFilter
		want []string
	}{
		{"team t1 newest first", store.ListFilter{TeamID: "t1"}, []string{"bbb", "aaa"}},
		{"team t2", store.ListFilter{TeamID: "t2"}, []string{"ccc"}},
		{"metadata", store.ListFilter{TeamID: "t1", Metadata: map[string]string{"n": "aaa"}}, []string{"aaa"}},
		{"limit", store.ListFilter{TeamID: "t1", Limit: 1}, []string{"bbb"}},
		{"after cursor", store.ListFilter{TeamID: "t1", After: "bbb"}, []string{"aaa"}},
		{"paused only", store.ListFilter{TeamID: "t1", States: []store.SandboxState{store.StatePaused}}, nil},
		{"oldest first", store.ListFilter{TeamID: "t1", Ascending: true}, []string{"aaa", "bbb"}},
		{"oldest first after cursor", store.ListFilter{TeamID: "t1", Ascending: true, After: "aaa"}, []string{"bbb"}},
		{"started after", store.ListFilter{TeamID: "t1", StartedAfter: base.Add(time.Second)}, []string{"bbb"}},
		{"started before", store.ListFilter{TeamID: "t1", StartedBefore: base.Add(time.Second)}, []string{"aaa"}},
		{"template by ID", store.ListFilter{TeamID: "t1", Template: "base"}, []string{"bbb", "aaa"}},
		{"other template", store.ListFilter{TeamID: "t1", Template: "other"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list, err := s.ListSandboxes(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, sb := range list {
				ids = append(ids, sb.ID)
			}
			if len(ids) != len(tt.want) {
				t.Fatalf("got %v, want %v", ids, tt.want)
			}
			for i := range ids {
				if ids[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", ids, tt.want)
				}
			}
		})
	}
	got.State, got.KillReason = store.StateKilled, "request"
	if err := s.UpdateSandbox(ctx, got, &store.Change{Type: "killed", Sandbox: got}); err != nil {
		t.Fatal(err)
	}
	live, err := s.LiveSandboxes(ctx)
	if err != nil || len(live) != 2 {
		t.Fatalf("LiveSandboxes = %d, %v; want 2", len(live), err)
	}
	if err := s.UpdateSandbox(ctx, sample("zzz", "t1", base, nil), nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("update unknown: got %v", err)
	}
	if len(rec.Changes) != 4 || rec.Committs != 4 {
		t.Fatalf("recorded %d changes, %d commits; want 4 and 4", len(rec.Changes), rec.Committs)
	}
}

func testAtomic(t *testing.T, newStore Factory) {
	rec := &Recorder{FailNext: true}
	s := newStore(t, rec)
	sb := sample("abc", "t1", time.Now().UTC(), nil)
	if err := s.InsertSandbox(t.Context(), sb, &store.Change{Type: "created", Sandbox: sb}); err == nil {
		t.Fatal("insert succeeded although recording its change failed")
	}
	if _, err := s.Sandbox(t.Context(), "abc"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("row committed without its change: %v", err)
	}
}
