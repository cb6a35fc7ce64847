package template

import (
	"bytes"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// TestUploadCapPerTeam performs the attack on the shared blob store: a
// team asks upload URLs for made-up hashes and PUTs small gzips that
// unpack to much more. Past the team's cap each is refused (413, naming
// the cap and the flag) and leaves no blob, no row and no temporary
// directory; another team is not affected; pruning past the retention
// deletes the rows and their blobs, which frees the budget.
func TestUploadCapPerTeam(t *testing.T) {
	t.Parallel()
	blobDir := t.TempDir()
	bs, err := blob.NewFileStore(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	const capBytes = 1 << 20
	var repo store.BuildJobs
	e := setup(t, filepath.Join(t.TempDir(), "sbx.db"), t.TempDir(), 0, func(s *Service) {
		repo = s.store.templatesRepo.(store.BuildJobs)
		s.SetSharedUploads(&SharedUploads{Store: bs, Repo: repo, URLKey: []byte("key"), MaxTeamBytes: capBytes})
	})
	var r registered
	if code := e.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "cap"}, &r); code != http.StatusAccepted {
		t.Fatalf("POST /v3/templates: HTTP %d", code)
	}
	// Each body is a gzip of a few hundred bytes unpacking to 400 KiB.
	bomb := func(seed string) []byte {
		b := tarOf(t, map[string]string{"big-" + seed: strings.Repeat("a", 400<<10)}) // a .tar.gz
		if len(b) > 4<<10 {
			t.Fatalf("the gzip is %d bytes, want a small one", len(b))
		}
		return b
	}
	hash := func(c string) string { return strings.Repeat(c, 64) }
	for _, c := range []string{"1", "2"} {
		if code, msg := e.uploadMsg(t, "team1", r.TemplateID, hash(c), bomb(c)); code != http.StatusOK {
			t.Fatalf("upload %s under the cap: HTTP %d %s", c, code, msg)
		}
	}
	before := countBlobs(t, blobDir)
	for _, c := range []string{"3", "4", "5"} {
		code, msg := e.uploadMsg(t, "team1", r.TemplateID, hash(c), bomb(c))
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, TeamUploadsFlag) || !strings.Contains(msg, "over the cap of 1 MiB per team") {
			t.Fatalf("upload %s over the cap: HTTP %d %q; want 413 naming the cap and %s", c, code, msg, TeamUploadsFlag)
		}
		if _, err := repo.Upload(t.Context(), "team1", hash(c)); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("refused upload %s recorded: %v", c, err)
		}
	}
	if after := countBlobs(t, blobDir); after != before {
		t.Errorf("blob store grew from %d to %d blobs with refused uploads", before, after)
	}
	if tmp, _ := filepath.Glob(filepath.Join(e.data, "uploads", "team1", "*")); len(tmp) > 0 {
		t.Errorf("refused uploads left %v", tmp)
	}
	// The same files again are not charged twice.
	if code := e.upload(t, "team1", r.TemplateID, hash("1"), bomb("1")); code != http.StatusOK {
		t.Errorf("the same upload again: HTTP %d", code)
	}
	// Another team's budget is its own.
	var r2 registered
	e.call(t, "team2", "POST", "/v3/templates", map[string]any{"name": "other"}, &r2)
	if code := e.upload(t, "team2", r2.TemplateID, hash("3"), bomb("3")); code != http.StatusOK {
		t.Errorf("another team's upload: HTTP %d", code)
	}
	// Past the retention pruning deletes the uploads and their blobs, and
	// the team may upload again.
	if _, err := e.svc.Prune(t.Context(), time.Now().Add(PruneAge+time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := countBlobs(t, blobDir); n != 0 {
		t.Errorf("%d blobs left after pruning every upload", n)
	}
	if n, err := repo.UploadBytes(t.Context(), "team1"); err != nil || n != 0 {
		t.Errorf("team1 holds %d bytes after pruning (%v), want 0", n, err)
	}
	if code := e.upload(t, "team1", r.TemplateID, hash("3"), bomb("3")); code != http.StatusOK {
		t.Errorf("upload after pruning: HTTP %d", code)
	}
	// An upload whose blob went (a pruner racing a new upload of the same
	// content) is reported absent, and uploading it again restores it.
	u, err := repo.Upload(t.Context(), "team1", hash("3"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.Delete(t.Context(), blob.Digest(u.BlobDigest)); err != nil {
		t.Fatal(err)
	}
	if present, err := e.svc.FileStatus(t.Context(), "team1", r.TemplateID, hash("3")); err != nil || present {
		t.Fatalf("upload without its blob present = %v, %v; want false", present, err)
	}
	if code := e.upload(t, "team1", r.TemplateID, hash("3"), bomb("3")); code != http.StatusOK {
		t.Fatalf("upload again after its blob went: HTTP %d", code)
	}
	u, err = repo.Upload(t.Context(), "team1", hash("3"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := bs.Exists(t.Context(), blob.Digest(u.BlobDigest)); err != nil || !ok {
		t.Errorf("blob of the upload made again: %v, %v", ok, err)
	}
}

// uploadMsg is upload returning the status and the error message.
func (e *env) uploadMsg(t *testing.T, team, templateID, hash string, body []byte) (int, string) {
	t.Helper()
	var fs struct {
		URL string `json:"url"`
	}
	if code := e.call(t, team, "GET", "/templates/"+templateID+"/files/"+hash, nil, &fs); code != http.StatusCreated {
		t.Fatalf("files: HTTP %d", code)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, fs.URL, bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// countBlobs counts the files a FileStore holds under dir.
func countBlobs(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(dir, "sha256"), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
