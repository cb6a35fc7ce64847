package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sbxdev/sbx/internal/template"
)

// TestClusterUploadCapWhileStreaming: an api replica refuses a build
// context past its team's upload cap (--team-max-upload-mb) as the files
// arrive: it stops reading at the first file that does not fit and
// answers 413 naming the cap and what to do, so its disk never holds more
// than the cap. Before, it read and unpacked the whole upload (up to the
// per-step limit, 2 GiB) into its data dir and refused only then.
func TestClusterUploadCapWhileStreaming(t *testing.T) {
	c := startClusterSpec(t, clusterSpec{apis: 1, apiFlags: []string{template.TeamUploadsFlag, "1"}})
	owner := map[string]string{"X-API-Key": c.api.APIKey}
	r := c.api.Raw(t, http.MethodPost, "/v3/templates", `{"name":"upload-cap"}`, owner)
	var tpl struct {
		TemplateID string `json:"templateID"`
	}
	if err := json.Unmarshal([]byte(r.Body), &tpl); r.Status != http.StatusAccepted || err != nil {
		t.Fatalf("POST /v3/templates = %d %s", r.Status, r.Body)
	}
	r = c.api.Raw(t, http.MethodGet, "/templates/"+tpl.TemplateID+"/files/"+strings.Repeat("ab", 32), "", owner)
	var up struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal([]byte(r.Body), &up); r.Status != http.StatusCreated || err != nil || up.URL == "" {
		t.Fatalf("files of a new hash = %d %s; want an upload URL", r.Status, r.Body)
	}
	u, err := url.Parse(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	// One 256 MiB file in a plain tar, over a raw connection, so the
	// answer is read while the body is still being sent.
	const bigBytes = 256 << 20
	var hdr bytes.Buffer
	if err := tar.NewWriter(&hdr).WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: bigBytes, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s",
			u.RequestURI(), u.Host, int64(hdr.Len())+bigBytes+1024, hdr.Bytes())
		zeros := make([]byte, 64<<10)
		for left := bigBytes; err == nil && left > 0; left -= len(zeros) {
			var n int
			n, err = conn.Write(zeros)
			sent.Add(int64(n))
		}
		if err == nil {
			_, _ = conn.Write(make([]byte, 1024))
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(msg), template.TeamUploadsFlag) ||
		!strings.Contains(string(msg), "over the cap of 1 MiB per team") {
		t.Fatalf("upload past the team's cap = %d %s; want 413 naming the cap and %s", resp.StatusCode, msg, template.TeamUploadsFlag)
	}
	conn.Close()
	<-done
	t.Logf("the api replica refused the upload after %d KiB of the 256 MiB file had been sent", sent.Load()>>10)
	// What was sent is at most what the connection's buffers and the
	// server's drain of an unread body took, far from the file.
	if n := sent.Load(); n >= bigBytes/4 {
		t.Errorf("the api replica took %d MiB of a 256 MiB upload over a 1 MiB cap before refusing it", n>>20)
	}
	if left, _ := filepath.Glob(filepath.Join(c.api.DataDir, "uploads", "*", ".upload-*")); len(left) > 0 {
		t.Errorf("the refused upload left %v", left)
	}
}
