package template

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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

// TestUploadCapWhileStreaming: an upload bigger than what the team's
// budget has left is refused as its files arrive, not after it was all
// unpacked on the replica's disk: the server stops reading at the first
// file past the budget and answers 413 naming the cap and what to do.
// Before, a team near its cap could still make a replica read and unpack
// up to the per-step limit (2 GiB) per upload before being refused.
func TestUploadCapWhileStreaming(t *testing.T) {
	t.Parallel()
	bs, err := blob.NewFileStore(t.TempDir())
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
	if code := e.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "stream"}, &r); code != http.StatusAccepted {
		t.Fatalf("POST /v3/templates: HTTP %d", code)
	}
	small := tarOf(t, map[string]string{"half": strings.Repeat("a", capBytes/2)})
	if code, msg := e.uploadMsg(t, "team1", r.TemplateID, strings.Repeat("1", 64), small); code != http.StatusOK {
		t.Fatalf("upload under the cap: HTTP %d %s", code, msg)
	}

	// A plain tar (no compression: what is sent is what is unpacked) of
	// one 64 MiB file, sent over a raw connection so the answer can be
	// read while the body is still being written.
	const bigBytes = 64 << 20
	var files struct {
		URL string `json:"url"`
	}
	hash := strings.Repeat("2", 64)
	if code := e.call(t, "team1", "GET", "/templates/"+r.TemplateID+"/files/"+hash, nil, &files); code != http.StatusCreated {
		t.Fatalf("files: HTTP %d", code)
	}
	u, err := url.Parse(files.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: bigBytes, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	bodyLen := int64(hdr.Len()) + bigBytes + 1024 // the content, its padding (none) and the end blocks
	var sent atomic.Int64
	writeDone := make(chan error, 1)
	go func() {
		_, err := fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", u.RequestURI(), u.Host, bodyLen)
		if err == nil {
			_, err = conn.Write(hdr.Bytes())
		}
		zeros := make([]byte, 64<<10)
		for left := bigBytes; err == nil && left > 0; left -= len(zeros) {
			var n int
			n, err = conn.Write(zeros)
			sent.Add(int64(n))
		}
		if err == nil {
			_, err = conn.Write(make([]byte, 1024))
		}
		writeDone <- err
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(msg), TeamUploadsFlag) ||
		!strings.Contains(string(msg), "over the cap of 1 MiB per team") {
		t.Fatalf("upload past the budget: HTTP %d %s; want 413 naming the cap and %s", resp.StatusCode, msg, TeamUploadsFlag)
	}
	conn.Close() // the writer stops, if the server has not cut it already
	<-writeDone
	// What the server read is at most what the connection's buffers and
	// its drain of an unread body (256 KiB) took: far from the file.
	if n := sent.Load(); n >= bigBytes/2 {
		t.Errorf("the server took %d MiB of a 64 MiB file past the budget before refusing it; want it to stop at the file's header", n>>20)
	}
	if _, err := repo.Upload(t.Context(), "team1", hash); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("refused upload recorded: %v", err)
	}
	if tmp, _ := filepath.Glob(filepath.Join(e.data, "uploads", "team1", "*")); len(tmp) > 0 {
		t.Errorf("refused upload left %v", tmp)
	}
}

// Two uploads of one team unpacking at once share what its budget has
// left; the same files again are not charged, and more than they held
// is other content.
func TestUploadReserveShared(t *testing.T) {
	t.Parallel()
	var repo store.BuildJobs
	var sh *SharedUploads
	setup(t, filepath.Join(t.TempDir(), "sbx.db"), t.TempDir(), 0, func(s *Service) {
		repo = s.store.templatesRepo.(store.BuildJobs)
		sh = &SharedUploads{Repo: repo, MaxTeamBytes: 1000}
	})
	ctx := t.Context()
	// A first file past the budget: refused, nothing to give back.
	res0, rel0, err := sh.reserve(ctx, "team1", strings.Repeat("0", 64))
	if err != nil {
		t.Fatal(err)
	}
	if err := res0(1001); !errors.Is(err, errdefs.ErrTooLarge) {
		t.Fatalf("1001 of 1000: %v; want refused", err)
	}
	rel0()
	resA, relA, err := sh.reserve(ctx, "team1", strings.Repeat("a", 64))
	if err != nil {
		t.Fatal(err)
	}
	resB, relB, err := sh.reserve(ctx, "team1", strings.Repeat("b", 64))
	if err != nil {
		t.Fatal(err)
	}
	resC, relC, err := sh.reserve(ctx, "team2", strings.Repeat("c", 64))
	if err != nil {
		t.Fatal(err)
	}
	defer relC()
	if err := resA(600); err != nil {
		t.Fatalf("A's 600 of 1000: %v", err)
	}
	if err := resB(600); !errors.Is(err, errdefs.ErrTooLarge) {
		t.Fatalf("B's 600 while A unpacks 600 of 1000: %v; want refused", err)
	}
	if err := resC(1000); err != nil {
		t.Errorf("another team's 1000: %v", err)
	}
	relA()
	if err := resB(600); err != nil {
		t.Fatalf("B's 600 once A let go: %v", err)
	}
	relB()
	if _, err := repo.PutUpload(ctx, store.Upload{TeamID: "team1", FilesHash: strings.Repeat("d", 64), BlobDigest: "sha256:" + strings.Repeat("0", 64),
		ContentDigest: "x", Entries: 1, Bytes: 900, CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	again, relAgain, err := sh.reserve(ctx, "team1", strings.Repeat("d", 64))
	if err != nil {
		t.Fatal(err)
	}
	defer relAgain()
	if err := again(900); err != nil {
		t.Errorf("the same 900 bytes again at 900 of 1000: %v; want them not charged", err)
	}
	if err := again(1); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("a byte more than the recorded upload: %v; want a conflict (other content)", err)
	}
}
