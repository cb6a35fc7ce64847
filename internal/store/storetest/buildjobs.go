package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// BuildJobsStore is what the build jobs suite needs: the builds the jobs
// are, and the queue.
type BuildJobsStore interface {
	store.Templates
	store.BuildJobs
	store.Layers // an upload's blob a layer stack names is not an orphan
}

// RunBuildJobs runs the build queue's conformance suite.
func RunBuildJobs(t *testing.T, newStore func(t *testing.T) BuildJobsStore) {
	t.Run("OneClaimerWins", func(t *testing.T) { testClaimRace(t, newStore(t)) })
	t.Run("ExpiredClaim", func(t *testing.T) { testExpiredClaim(t, newStore(t)) })
	t.Run("Release", func(t *testing.T) { testReleaseBuilds(t, newStore(t)) })
	t.Run("Cancel", func(t *testing.T) { testCancelBuilds(t, newStore(t)) })
	t.Run("Uploads", func(t *testing.T) { testUploads(t, newStore(t)) })
	t.Run("UploadBytesAndExpiry", func(t *testing.T) { testUploadExpiry(t, newStore(t)) })
}

// queuedBuild creates a waiting build of a fresh template and queues it.
func queuedBuild(t *testing.T, s BuildJobsStore, id string, at time.Duration) {
	t.Helper()
	ctx := t.Context()
	if err := s.CreateTemplate(ctx, sampleTemplate("tpl-"+id, "team-1", at)); err != nil {
		t.Fatal(err)
	}
	b := store.BuildRecord{ID: id, TemplateID: "tpl-" + id, Status: "waiting", CreatedAt: tplBase.Add(at), NodeID: "api-1"}
	if err := s.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.QueueBuild(ctx, id, json.RawMessage(`{"steps":[]}`)); err != nil {
		t.Fatalf("QueueBuild(%s): %v", id, err)
	}
}

func testClaimRace(t *testing.T, s BuildJobsStore) {
	ctx := t.Context()
	queuedBuild(t, s, "b1", 0)
	if err := s.QueueBuild(ctx, "b1", nil); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("queueing a started build again: %v, want ErrConflict", err)
	}
	// A restarting node fails its unfinished builds; a queued job is no
	// node's and must stay queued.
	if n, err := s.FailBuilds(ctx, "node-x", []string{"building", "waiting"}, "error", "restarted", tplBase); err != nil || n != 0 {
		t.Fatalf("FailBuilds touched %d queued jobs (%v)", n, err)
	}
	const claimers = 8
	var wg sync.WaitGroup
	won := make(chan string, claimers)
	for i := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("node-%d", i)
			job, ok, err := s.ClaimBuild(ctx, node, tplBase, tplBase.Add(time.Minute))
			if err != nil {
				t.Errorf("ClaimBuild(%s): %v", node, err)
				return
			}
			if ok {
				if job.Build.ID != "b1" || job.Build.NodeID != node || job.Claims != 1 || string(job.Build.Request) != `{"steps":[]}` {
					t.Errorf("claimed job = %+v", job)
				}
				won <- node
			}
		}()
	}
	wg.Wait()
	close(won)
	var winners []string
	for n := range won {
		winners = append(winners, n)
	}
	if len(winners) != 1 {
		t.Fatalf("%d claimers got the build (%v), want exactly one", len(winners), winners)
	}
	b, err := s.Build(ctx, "b1")
	if err != nil || b.NodeID != winners[0] || b.Status != "building" {
		t.Fatalf("build after the claim = %+v, %v; want building on %s", b, err, winners[0])
	}
	if _, ok, err := s.ClaimBuild(ctx, "node-late", tplBase.Add(time.Second), tplBase.Add(time.Minute)); ok || err != nil {
		t.Fatalf("a held claim was claimed again (%v)", err)
	}
}

func testExpiredClaim(t *testing.T, s BuildJobsStore) {
	ctx := t.Context()
	queuedBuild(t, s, "b1", 0)
	queuedBuild(t, s, "b2", time.Second)
	a, ok, err := s.ClaimBuild(ctx, "node-a", tplBase, tplBase.Add(10*time.Second))
	if err != nil || !ok || a.Build.ID != "b1" {
		t.Fatalf("first claim = %+v, %v, %v; want the oldest build b1", a, ok, err)
	}
	if err := s.RenewBuildClaim(ctx, "b1", "node-a", tplBase.Add(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	// node-b gets the other build; b1's renewed claim still holds.
	if j, ok, _ := s.ClaimBuild(ctx, "node-b", tplBase.Add(15*time.Second), tplBase.Add(45*time.Second)); !ok || j.Build.ID != "b2" {
		t.Fatalf("second claim = %+v, %v; want b2", j, ok)
	}
	if _, ok, _ := s.ClaimBuild(ctx, "node-b", tplBase.Add(19*time.Second), tplBase.Add(49*time.Second)); ok {
		t.Fatal("a renewed claim was taken before it ran out")
	}
	// node-a stops renewing (it died): past its claim, node-b takes b1.
	j, ok, err := s.ClaimBuild(ctx, "node-b", tplBase.Add(21*time.Second), tplBase.Add(51*time.Second))
	if err != nil || !ok || j.Build.ID != "b1" || j.Claims != 2 || j.Build.NodeID != "node-b" {
		t.Fatalf("claim of the expired build = %+v, %v, %v; want b1, claimed twice, node-b's", j, ok, err)
	}
	// The first holder comes back: it can neither renew nor finish.
	if err := s.RenewBuildClaim(ctx, "b1", "node-a", tplBase.Add(time.Minute)); !errors.Is(err, store.ErrClaimLost) {
		t.Fatalf("renew by the old holder: %v, want ErrClaimLost", err)
	}
	stale := j.Build
	stale.Status, stale.Reason, stale.FinishedAt = "error", "stale", tplBase.Add(22*time.Second)
	if err := s.FinishBuild(ctx, stale, "node-a"); !errors.Is(err, store.ErrClaimLost) {
		t.Fatalf("finish by the old holder: %v, want ErrClaimLost", err)
	}
	done := j.Build
	done.Status, done.FinishedAt = "ready", tplBase.Add(30*time.Second)
	done.Result = store.BuildResult{Layers: []string{"/d/layer"}, User: "user"}
	if err := s.FinishBuild(ctx, done, "node-b"); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Build(ctx, "b1")
	if got.Status != "ready" || got.Reason != "" || got.Result.User != "user" || !got.FinishedAt.Equal(done.FinishedAt) {
		t.Fatalf("finished build = %+v", got)
	}
	if err := s.FinishBuild(ctx, done, "node-b"); !errors.Is(err, store.ErrClaimLost) {
		t.Fatalf("finishing a done build again: %v, want ErrClaimLost", err)
	}
	if _, ok, _ := s.ClaimBuild(ctx, "node-c", tplBase.Add(time.Hour), tplBase.Add(2*time.Hour)); !ok {
		t.Fatal("b2's claim ran out but it was not claimed")
	}
	if _, ok, _ := s.ClaimBuild(ctx, "node-c", tplBase.Add(time.Hour), tplBase.Add(2*time.Hour)); ok {
		t.Fatal("a finished build was claimed")
	}
}

func testReleaseBuilds(t *testing.T, s BuildJobsStore) {
	ctx := t.Context()
	queuedBuild(t, s, "b1", 0)
	if _, ok, _ := s.ClaimBuild(ctx, "node-a", tplBase, tplBase.Add(time.Hour)); !ok {
		t.Fatal("no claim")
	}
	if n, err := s.FailBuilds(ctx, "node-a", []string{"building", "waiting"}, "error", "restarted", tplBase); err != nil || n != 0 {
		t.Fatalf("FailBuilds failed %d claimed jobs (%v): a restarting node releases them", n, err)
	}
	if n, err := s.ReleaseBuilds(ctx, "node-a"); err != nil || n != 1 {
		t.Fatalf("ReleaseBuilds = %d, %v; want 1", n, err)
	}
	j, ok, err := s.ClaimBuild(ctx, "node-b", tplBase.Add(time.Second), tplBase.Add(time.Hour))
	if err != nil || !ok || j.Build.ID != "b1" || j.Claims != 2 {
		t.Fatalf("claim after release = %+v, %v, %v", j, ok, err)
	}
}

func testUploads(t *testing.T, s BuildJobsStore) {
	ctx := t.Context()
	h := hex64('a')
	if _, err := s.Upload(ctx, "team-1", h); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Upload(missing) = %v, want ErrNotFound", err)
	}
	first := store.Upload{TeamID: "team-1", FilesHash: h, BlobDigest: "sha256:" + hex64('1'), ContentDigest: "sha256:" + hex64('2'),
		Entries: 3, CreatedAt: tplBase.Truncate(time.Millisecond)}
	got, err := s.PutUpload(ctx, first)
	if err != nil || got != first {
		t.Fatalf("PutUpload = %+v, %v; want %+v", got, err, first)
	}
	second := first
	second.BlobDigest, second.ContentDigest = "sha256:"+hex64('3'), "sha256:"+hex64('4')
	if got, err := s.PutUpload(ctx, second); err != nil || got != first {
		t.Fatalf("second PutUpload = %+v, %v; want the first kept", got, err)
	}
	if _, err := s.Upload(ctx, "team-2", h); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("another team's upload of the hash: %v, want ErrNotFound", err)
	}
}

// testUploadExpiry: the per-team sum the upload cap reads, the listing of
// uploads past retention, and their deletion, which exactly one of several
// pruners performs and which says when the blob is no longer named.
func testUploadExpiry(t *testing.T, s BuildJobsStore) {
	ctx := t.Context()
	if n, err := s.UploadBytes(ctx, "team-1"); err != nil || n != 0 {
		t.Fatalf("UploadBytes(no uploads) = %d, %v; want 0", n, err)
	}
	base := tplBase.Truncate(time.Millisecond)
	up := func(team string, hash, blob byte, bytes int64, age time.Duration) store.Upload {
		u := store.Upload{TeamID: team, FilesHash: hex64(hash), BlobDigest: "sha256:" + hex64(blob),
			ContentDigest: "sha256:" + hex64(blob), Entries: 1, Bytes: bytes, CreatedAt: base.Add(-age)}
		if got, err := s.PutUpload(ctx, u); err != nil || got != u {
			t.Fatalf("PutUpload = %+v, %v; want %+v", got, err, u)
		}
		return u
	}
	old1 := up("team-1", 'a', '1', 100, 3*time.Hour)
	old2 := up("team-1", 'b', '2', 20, 2*time.Hour) // its blob is also a build's layer
	shared := up("team-2", 'a', '1', 5, time.Hour)  // the same content as old1
	fresh := up("team-1", 'c', '3', 3, 0)
	if err := s.SetLayers(ctx, "build", "b1", []store.LayerRef{{Digest: old2.BlobDigest, Size: 1}}, base); err != nil {
		t.Fatal(err)
	}
	if n, err := s.UploadBytes(ctx, "team-1"); err != nil || n != 123 {
		t.Fatalf("UploadBytes(team-1) = %d, %v; want 123", n, err)
	}
	got, err := s.UploadsBefore(ctx, base.Add(-time.Minute), 10)
	if err != nil || len(got) != 3 || got[0] != old1 || got[1] != old2 || got[2] != shared {
		t.Fatalf("UploadsBefore = %+v, %v; want the three old ones, oldest first", got, err)
	}
	if got, err := s.UploadsBefore(ctx, base.Add(-time.Minute), 1); err != nil || len(got) != 1 || got[0] != old1 {
		t.Fatalf("UploadsBefore(limit 1) = %+v, %v", got, err)
	}
	// Two pruners race to delete old1: one deletes it; its blob is still
	// team-2's upload.
	var wg sync.WaitGroup
	var mu sync.Mutex
	deletions := 0
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deleted, orphan, err := s.DeleteUpload(ctx, old1)
			if err != nil {
				t.Error(err)
			}
			if deleted {
				mu.Lock()
				deletions++
				mu.Unlock()
			}
			if orphan {
				t.Error("old1's blob is team-2's upload too, not an orphan")
			}
		}()
	}
	wg.Wait()
	if deletions != 1 {
		t.Fatalf("%d pruners deleted the upload, want 1", deletions)
	}
	if _, err := s.Upload(ctx, "team-1", old1.FilesHash); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted upload: %v, want ErrNotFound", err)
	}
	if deleted, orphan, err := s.DeleteUpload(ctx, old2); err != nil || !deleted || orphan {
		t.Fatalf("DeleteUpload(old2) = %v, %v, %v; want deleted, its blob still a layer", deleted, orphan, err)
	}
	if deleted, orphan, err := s.DeleteUpload(ctx, shared); err != nil || !deleted || !orphan {
		t.Fatalf("DeleteUpload(shared) = %v, %v, %v; want deleted and its blob an orphan", deleted, orphan, err)
	}
	// A row uploaded again since it was listed is not the one listed.
	stale := fresh
	stale.CreatedAt = fresh.CreatedAt.Add(-time.Hour)
	if deleted, _, err := s.DeleteUpload(ctx, stale); err != nil || deleted {
		t.Fatalf("DeleteUpload(a newer row of the hash) = %v, %v; want left alone", deleted, err)
	}
	if n, err := s.UploadBytes(ctx, "team-1"); err != nil || n != 3 {
		t.Fatalf("UploadBytes(team-1) after expiry = %d, %v; want 3", n, err)
	}
}

// testCancelBuilds: the admin's cancel ends a queued build at once, asks
// the node holding a claimed one to stop it (its renewal says so, its
// outcome is still recorded), and ends a cancelled build whose node died
// instead of letting another node claim it.
func testCancelBuilds(t *testing.T, s BuildJobsStore) {
	ctx := t.Context()
	queuedBuild(t, s, "q1", 0)
	queuedBuild(t, s, "c1", time.Second)
	queuedBuild(t, s, "c2", 2*time.Second)
	at := tplBase.Add(time.Minute)
	if ended, req, err := s.CancelBuild(ctx, "q1", store.CancelledReason, at); err != nil || !ended || req {
		t.Fatalf("cancel a queued build = %v %v %v; want ended", ended, req, err)
	}
	if b, _ := s.Build(ctx, "q1"); b.Status != "error" || b.Reason != store.CancelledReason || b.FinishedAt.IsZero() {
		t.Fatalf("cancelled queued build = %+v", b)
	}
	for _, node := range []string{"node-a", "node-b"} {
		if _, ok, err := s.ClaimBuild(ctx, node, tplBase, tplBase.Add(10*time.Second)); !ok || err != nil {
			t.Fatalf("claim by %s: %v %v", node, ok, err)
		}
	}
	for _, id := range []string{"c1", "c2"} {
		if ended, req, err := s.CancelBuild(ctx, id, store.CancelledReason, at); err != nil || ended || !req {
			t.Fatalf("cancel claimed build %s = %v %v %v; want requested", id, ended, req, err)
		}
	}
	if _, req, _ := s.CancelBuild(ctx, "q1", store.CancelledReason, at); req {
		t.Fatal("an ended build was cancelled again")
	}
	// node-a (c1) renews: told to stop, and still holds the claim.
	if err := s.RenewBuildClaim(ctx, "c1", "node-a", tplBase.Add(20*time.Second)); !errors.Is(err, store.ErrBuildCancelled) {
		t.Fatalf("renewal of a cancelled build = %v; want ErrBuildCancelled", err)
	}
	if err := s.RenewBuildClaim(ctx, "c1", "node-b", tplBase.Add(20*time.Second)); !errors.Is(err, store.ErrClaimLost) {
		t.Fatalf("renewal by a node that does not hold it = %v; want ErrClaimLost", err)
	}
	b, _ := s.Build(ctx, "c1")
	b.Status, b.Reason, b.FinishedAt = "error", store.CancelledReason, at
	if err := s.FinishBuild(ctx, b, "node-a"); err != nil {
		t.Fatalf("the claiming node records the cancelled build: %v", err)
	}
	// node-b (c2) died: past its claim nobody builds c2 again; it ends.
	if j, ok, err := s.ClaimBuild(ctx, "node-c", tplBase.Add(11*time.Second), tplBase.Add(time.Minute)); ok || err != nil {
		t.Fatalf("a cancelled build whose node died was claimed again: %+v %v", j, err)
	}
	if b, _ := s.Build(ctx, "c2"); b.Status != "error" || b.Reason != store.CancelledReason {
		t.Fatalf("cancelled build of a dead node = %+v; want error, cancelled", b)
	}
	// A restarting node ends the cancelled builds it held.
	queuedBuild(t, s, "c3", 3*time.Second)
	if _, ok, _ := s.ClaimBuild(ctx, "node-d", tplBase.Add(time.Hour), tplBase.Add(2*time.Hour)); !ok {
		t.Fatal("claim c3")
	}
	if _, req, _ := s.CancelBuild(ctx, "c3", store.CancelledReason, at); !req {
		t.Fatal("cancel c3")
	}
	if n, err := s.ReleaseBuilds(ctx, "node-d"); err != nil || n != 0 {
		t.Fatalf("ReleaseBuilds queued %d cancelled builds (%v)", n, err)
	}
	if b, _ := s.Build(ctx, "c3"); b.Status != "error" || b.Reason != store.CancelledReason {
		t.Fatalf("cancelled build of a restarted node = %+v", b)
	}
}
