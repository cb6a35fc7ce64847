package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/blobtest"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// TestBlobStoreTwoServers: two `--role all` servers with their own data
// dirs share one PostgreSQL database and one blob store, a directory
// (file://) or a real S3 server (SeaweedFS). A template built through A
// starts sandboxes on B, which pulls its layers from the store (not from
// A's data dir); a sandbox paused without memory on A resumes on B with
// the files written before the pause, and A can no longer touch it; a
// paused sandbox whose blob is gone from the store fails to resume on B
// with a message saying so and stays A's, intact.
func TestBlobStoreTwoServers(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "shared-blobs")
		testBlobPair(t, "file://"+dir, blob.Options{})
	})
	t.Run("s3", func(t *testing.T) {
		weed := blobtest.StartWeed(t)
		url := fmt.Sprintf("s3://%s?endpoint=%s&region=%s", weed.Bucket(t), weed.Endpoint, weed.Region)
		keyFile := filepath.Join(t.TempDir(), "s3-secret")
		if err := os.WriteFile(keyFile, []byte(weed.SecretKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		testBlobPair(t, url, blob.Options{S3AccessKey: weed.AccessKey, S3SecretKey: weed.SecretKey},
			"--blob-s3-access-key", weed.AccessKey, "--blob-s3-secret-key-file", keyFile)
	})
}

const blobDockerfile = `FROM e2bdev/base:latest
RUN echo built-on-a > /opt/built.txt && rm -f /etc/issue && mkdir -p /opt/empty
ENV BLOB_TEST=1
`

func testBlobPair(t *testing.T, url string, opts blob.Options, flags ...string) {
	flags = append(flags, harness.MirrorAllowFlags(t)...)
	a, b, dsn := startPairDSN(t, append([]string{"--blob-store", url, "--pool", "base=0", "--pool", "code-interpreter=0"}, flags...)...)
	ca, cb := a.Client(t), b.Client(t)

	// A template built through A starts on B (B started before it existed).
	dir := t.TempDir()
	writeContext(t, dir, map[string]string{"e2b.Dockerfile": blobDockerfile})
	out, err := templateCLI(t, a, dir, "build", "--name", "blob-tpl")
	if err != nil {
		t.Fatalf("template build through A: %v\n%s", err, out)
	}
	if !strings.Contains(out, "layers published to the blob store") {
		t.Errorf("build log does not say the layers were published:\n%s", out)
	}
	// Three creates at once on B: one load and pull, three sandboxes.
	t0 := time.Now()
	var wg sync.WaitGroup
	made := make([]*sdk.Sandbox, 3)
	for i := range made {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := cb.Create(opCtx(t), sdk.CreateOptions{Template: "blob-tpl", Timeout: 10 * time.Minute})
			if err != nil {
				t.Errorf("create on B from A's template: %v", err)
				return
			}
			made[i] = s
			t.Cleanup(func() { _ = s.Kill(context.Background()) })
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("3 concurrent creates on B from A's template (first use: load and pull) took %v", time.Since(t0))
	if n := strings.Count(b.Log(), "template registered from the database"); n != 1 {
		t.Errorf("B loaded the template %d times for 3 concurrent creates, want once", n)
	}
	sbB := made[0]
	got := runIn(t, sbB, `cat /opt/built.txt; test -e /etc/issue && echo issue-present; test -d /opt/empty && echo empty-dir; echo "env=$BLOB_TEST"`)
	for _, want := range []string{"built-on-a", "empty-dir", "env=1"} {
		if !strings.Contains(got, want) {
			t.Errorf("sandbox on B from A's template: output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "issue-present") {
		t.Errorf("a file the build deleted (/etc/issue) is back on B: the layer's whiteout was lost:\n%s", got)
	}
	if ents, err := os.ReadDir(filepath.Join(b.DataDir, "layer-blobs")); err != nil || len(ents) == 0 {
		t.Errorf("B holds no pulled layers (%v): it did not pull the template from the blob store", err)
	}

	// A template built through B FROM A's template starts on A, which
	// pulls the new layer and has the base's.
	dirChild := t.TempDir()
	writeContext(t, dirChild, map[string]string{"e2b.Dockerfile": "FROM blob-tpl\nRUN cat /opt/built.txt > /opt/child.txt\n"})
	if out, err := templateCLI(t, b, dirChild, "build", "--name", "blob-tpl-child"); err != nil {
		t.Fatalf("build through B FROM A's template: %v\n%s", err, out)
	}
	child := create(t, ca, sdk.CreateOptions{Template: "blob-tpl-child"})
	if got := runIn(t, child, "cat /opt/child.txt; test -e /etc/issue && echo issue-present; true"); !strings.Contains(got, "built-on-a") || strings.Contains(got, "issue-present") {
		t.Fatalf("sandbox on A from B's template FROM A's: %q; want built-on-a and no /etc/issue", got)
	}

	// A sandbox paused without memory on A resumes on B with its files
	// and its egress policy.
	mirror := mirrorAddr(t)
	sa := create(t, ca, sdk.CreateOptions{Timeout: 10 * time.Minute, Network: &sdk.NetworkOptions{DenyOut: []string{mirror}}})
	if reachesPort80(t, sa, mirror) {
		t.Fatalf("the sandbox created with denyOut %s reaches it on A", mirror)
	}
	runIn(t, sa, `echo written-before-pause > /home/user/before.txt && sync`)
	if res := run(t, sa, "rm /etc/issue.net", sdk.RunOptions{User: "root"}); res.ExitCode != 0 {
		t.Fatalf("rm /etc/issue.net as root: %+v", res)
	}
	pauseFS(t, a, sa.ID)
	t0 = time.Now()
	moved, err := cb.Connect(opCtx(t), sa.ID, sdk.ConnectOptions{Timeout: 10 * time.Minute})
	t.Logf("resume on B of the sandbox paused on A (pull, take-over, boot) took %v", time.Since(t0))
	if err != nil {
		t.Fatalf("resume on B of the sandbox paused on A: %v\nB's log:\n%s", err, tail(b.Log()))
	}
	got = runIn(t, moved, `cat /home/user/before.txt; test -e /etc/issue.net && echo issue-net-present; hostname`)
	if !strings.Contains(got, "written-before-pause") || strings.Contains(got, "issue-net-present") {
		t.Fatalf("resumed on B: %q; want the file written before the pause, and the one deleted still gone", got)
	}
	if !reachesPort80(t, sbB, mirror) {
		t.Fatalf("a sandbox on B without a policy cannot reach %s: nothing to compare with", mirror)
	}
	if reachesPort80(t, moved, mirror) {
		t.Errorf("the sandbox resumed on B reaches %s, which its policy denies (taken over with open egress)", mirror)
	}
	db := openDB(t, dsn)
	if row, err := db.Sandbox(opCtx(t), sa.ID); err != nil || row.NodeID != "node-b" || row.State != store.StateRunning {
		t.Fatalf("row after the resume on B: node %q state %q (%v); want node-b running", row.NodeID, row.State, err)
	}
	// A no longer owns it: a connect through A is refused, names B, and
	// leaves the sandbox running on B.
	_, err = ca.Connect(opCtx(t), sa.ID, sdk.ConnectOptions{})
	if err == nil || !strings.Contains(err.Error(), "node-b") {
		t.Fatalf("connect through A to the sandbox B took over: %v; want a refusal naming node-b", err)
	}
	if got := runIn(t, moved, "cat /home/user/before.txt"); !strings.Contains(got, "written-before-pause") {
		t.Fatalf("after A's connect attempt the sandbox on B answers %q", got)
	}

	// Pause on B, resume on A: the layers of both boots go along.
	runIn(t, moved, `echo second-boot > /home/user/second.txt`)
	pauseFS(t, b, sa.ID)
	// A policy changed while it is paused goes with it: cleared through B,
	// the sandbox resumed on A reaches the mirror again (it booted with the
	// policy of the pause before).
	if r := b.Raw(t, "PUT", "/sandboxes/"+sa.ID+"/network", `{}`, map[string]string{"X-API-Key": b.APIKey}); r.Status != http.StatusNoContent {
		t.Fatalf("PUT network of the sandbox paused on B: %d %s", r.Status, r.Body)
	}
	back, err := ca.Connect(opCtx(t), sa.ID, sdk.ConnectOptions{Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatalf("resume on A of the sandbox paused on B: %v\nA's log:\n%s", err, tail(a.Log()))
	}
	if !reachesPort80(t, back, mirror) {
		t.Errorf("the policy cleared while the sandbox was paused on B still denies %s after its resume on A", mirror)
	}
	if got := runIn(t, back, "cat /home/user/before.txt /home/user/second.txt"); !strings.Contains(got, "written-before-pause") || !strings.Contains(got, "second-boot") {
		t.Fatalf("back on A: %q; want the files of both boots", got)
	}

	// A blob missing from the store: the resume on B fails, saying which
	// sandbox and what to do, and the sandbox stays A's, intact.
	lost := create(t, ca, sdk.CreateOptions{Timeout: 10 * time.Minute})
	runIn(t, lost, `echo keep-me > /home/user/keep.txt`)
	pauseFS(t, a, lost.ID)
	refs, err := db.Layers(opCtx(t), store.LayerOwnerSandbox, lost.ID)
	if err != nil || len(refs) == 0 {
		t.Fatalf("published layers of %s: %v, %v", lost.ID, refs, err)
	}
	st, err := blob.Open(opCtx(t), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Delete(opCtx(t), blob.Digest(refs[0].Digest)); err != nil {
		t.Fatal(err)
	}
	_, err = cb.Connect(opCtx(t), lost.ID, sdk.ConnectOptions{})
	if err == nil || !strings.Contains(err.Error(), lost.ID) || !strings.Contains(err.Error(), "missing from the blob store") ||
		!strings.Contains(err.Error(), "node-a") {
		t.Fatalf("resume on B with the blob gone: %v; want an error naming the sandbox, the missing blob and node-a", err)
	}
	if row, err := db.Sandbox(opCtx(t), lost.ID); err != nil || row.NodeID != "node-a" || row.State != store.StatePaused {
		t.Fatalf("after the failed resume on B: node %q state %q (%v); want still paused on node-a", row.NodeID, row.State, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(b.DataDir, "sandbox-layers", lost.ID)); len(ents) != 0 {
		t.Errorf("the failed resume left files on B: %v", ents)
	}
	again, err := ca.Connect(opCtx(t), lost.ID, sdk.ConnectOptions{Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatalf("resume on A after B's failed attempt: %v", err)
	}
	if got := runIn(t, again, "cat /home/user/keep.txt"); !strings.Contains(got, "keep-me") {
		t.Fatalf("resumed on A: %q; want keep-me", got)
	}

	// A template whose layer is gone from the store: a create on B says
	// which template and what to do; A, which built it, still starts it.
	dir2 := t.TempDir()
	writeContext(t, dir2, map[string]string{"e2b.Dockerfile": "FROM e2bdev/base:latest\nRUN echo second > /opt/second.txt\n"})
	if out, err := templateCLI(t, a, dir2, "build", "--name", "blob-tpl-lost"); err != nil {
		t.Fatalf("second template build through A: %v\n%s", err, out)
	}
	recs, err := db.Templates(opCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	var build string
	for _, r := range recs {
		if slices.Contains(r.Names, "blob-tpl-lost") {
			build = r.CurrentBuild
		}
	}
	trefs, err := db.Layers(opCtx(t), store.LayerOwnerBuild, build)
	if err != nil || len(trefs) == 0 || trefs[0].Digest == "" {
		t.Fatalf("published layers of build %s: %+v, %v", build, trefs, err)
	}
	if err := st.Delete(opCtx(t), blob.Digest(trefs[0].Digest)); err != nil {
		t.Fatal(err)
	}
	_, err = cb.Create(opCtx(t), sdk.CreateOptions{Template: "blob-tpl-lost"})
	if err == nil || !strings.Contains(err.Error(), "blob-tpl-lost") || !strings.Contains(err.Error(), "missing from the blob store") {
		t.Fatalf("create on B with the template's layer gone: %v; want an error naming the template and the missing blob", err)
	}
	onA := create(t, ca, sdk.CreateOptions{Template: "blob-tpl-lost"})
	if got := runIn(t, onA, "cat /opt/second.txt"); !strings.Contains(got, "second") {
		t.Fatalf("template on A after its blob went: %q", got)
	}

	// Resumed where it was paused, then paused with its memory: what was
	// published is stale, so B refuses to resume it and names A.
	local := create(t, ca, sdk.CreateOptions{Timeout: 10 * time.Minute})
	pauseFS(t, a, local.ID)
	local, err = ca.Connect(opCtx(t), local.ID, sdk.ConnectOptions{Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	runIn(t, local, "echo after-resume > /home/user/late.txt")
	if err := local.Pause(opCtx(t)); err != nil {
		t.Fatal(err)
	}
	_, err = cb.Connect(opCtx(t), local.ID, sdk.ConnectOptions{})
	if err == nil || !strings.Contains(err.Error(), "with its memory") || !strings.Contains(err.Error(), "node-a") {
		t.Fatalf("resume on B of a sandbox paused in memory on A: %v; want a refusal naming node-a", err)
	}
	if local, err = ca.Connect(opCtx(t), local.ID, sdk.ConnectOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := runIn(t, local, "cat /home/user/late.txt"); !strings.Contains(got, "after-resume") {
		t.Fatalf("resumed on A: %q", got)
	}

	// A taken over while it is down removes its stale copy at its restart.
	gone := create(t, ca, sdk.CreateOptions{Timeout: 10 * time.Minute})
	runIn(t, gone, "echo x > /home/user/x.txt")
	pauseFS(t, a, gone.ID)
	a.Stop(syscall.SIGTERM)
	if _, err := cb.Connect(opCtx(t), gone.ID, sdk.ConnectOptions{Timeout: 10 * time.Minute}); err != nil {
		t.Fatalf("resume on B while A is down: %v", err)
	}
	stale := filepath.Join(a.DataDir, "sandbox-layers", gone.ID)
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("A's copy of the paused sandbox before its restart: %v", err)
	}
	a.Start(t)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("A kept its copy of sandbox %s, which B took over while it was down (stat: %v)", gone.ID, err)
	}
}

// pauseFS pauses a sandbox without its memory through srv (E2B's pause
// {"memory": false}): its filesystem is published to the blob store.
func pauseFS(t *testing.T, srv *Server, id string) {
	t.Helper()
	r := srv.Raw(t, "POST", "/sandboxes/"+id+"/pause", `{"memory": false}`, map[string]string{"X-API-Key": srv.APIKey})
	if r.Status != http.StatusNoContent && r.Status != http.StatusOK {
		t.Fatalf("pause %s without memory: %d %s", id, r.Status, r.Body)
	}
}

func openDB(t *testing.T, dsn string) *sqlstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	db, err := sqldb.Open(ctx, dsn, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return sqlstore.New(db, nil)
}

func tail(s string) string {
	if len(s) > 6000 {
		return s[len(s)-6000:]
	}
	return s
}
