package security

// Helpers of the builder work package's attacks (builder_test.go): the
// template build API spoken directly (an attacker does not use the SDK),
// hand-made tar archives, and fake registries.

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/tests/harness"
)

// bldBuildWait bounds one template build; it only turns a hang into a failure.
const bldBuildWait = 5 * time.Minute

// bldTenant is one team's view of the template API.
type bldTenant struct {
	s   *harness.Server
	key string
}

func (c bldTenant) call(t *testing.T, method, path string, in any) harness.RawResponse {
	t.Helper()
	body := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = string(b)
	}
	return c.s.Raw(t, method, path, body, map[string]string{"X-API-Key": c.key})
}

// requestBuild registers a template named name and returns its ID and a
// waiting build.
func (c bldTenant) requestBuild(t *testing.T, name string) (templateID, buildID string) {
	t.Helper()
	r := c.call(t, "POST", "/v3/templates", map[string]any{"name": name})
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST /v3/templates: %d %s", r.Status, r.Body)
	}
	var out struct{ TemplateID, BuildID string }
	if err := json.Unmarshal([]byte(r.Body), &out); err != nil || out.TemplateID == "" {
		t.Fatalf("POST /v3/templates answered %s: %v", r.Body, err)
	}
	return out.TemplateID, out.BuildID
}

// fileLink asks where to upload the files of hash; url is "" when the
// server says they are present.
func (c bldTenant) fileLink(t *testing.T, templateID, hash string) (present bool, uploadURL string) {
	t.Helper()
	r := c.call(t, "GET", "/templates/"+templateID+"/files/"+hash, nil)
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		t.Fatalf("GET files/%s: %d %s", hash, r.Status, r.Body)
	}
	var out struct {
		Present bool   `json:"present"`
		URL     string `json:"url"`
	}
	if err := json.Unmarshal([]byte(r.Body), &out); err != nil {
		t.Fatalf("GET files answered %s: %v", r.Body, err)
	}
	return out.Present, out.URL
}

// upload PUTs body to an upload URL and returns the status and answer.
func bldUpload(t *testing.T, u string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(opCtx(t), http.MethodPut, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startBuild starts a waiting build; the answer is returned as is (a
// build refused at start answers 4xx).
func (c bldTenant) startBuild(t *testing.T, templateID, buildID string, req map[string]any) harness.RawResponse {
	t.Helper()
	return c.call(t, "POST", "/v2/templates/"+templateID+"/builds/"+buildID, req)
}

// waitBuild polls the build's status until it is over and returns its
// status and everything the API said about it (every log page, the reason).
func (c bldTenant) waitBuild(t *testing.T, templateID, buildID string) (status, said string) {
	t.Helper()
	var all strings.Builder
	offset := 0
	deadline := time.Now().Add(bldBuildWait)
	for {
		r := c.call(t, "GET", fmt.Sprintf("/templates/%s/builds/%s/status?logsOffset=%d", templateID, buildID, offset), nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET build status: %d %s", r.Status, r.Body)
		}
		var st struct {
			Status     string `json:"status"`
			LogEntries []struct {
				Message string `json:"message"`
			} `json:"logEntries"`
		}
		if err := json.Unmarshal([]byte(r.Body), &st); err != nil {
			t.Fatalf("build status %s: %v", r.Body, err)
		}
		all.WriteString(r.Body)
		all.WriteByte('\n')
		offset += len(st.LogEntries)
		if st.Status != "building" && st.Status != "waiting" && len(st.LogEntries) == 0 {
			return st.Status, all.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s still %s after %v:\n%s", buildID, st.Status, bldBuildWait, all.String())
		}
		if len(st.LogEntries) == 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// build runs a whole build of steps (uploads done beforehand) and returns
// its final status and everything the API said about it.
func (c bldTenant) build(t *testing.T, templateID, buildID string, req map[string]any) (string, string) {
	t.Helper()
	r := c.startBuild(t, templateID, buildID, req)
	if r.Status != http.StatusAccepted {
		return "refused", r.Body
	}
	return c.waitBuild(t, templateID, buildID)
}

// bldAround shortens what the API said for a failure message: the text
// around the first marker, or the end.
func bldAround(said, marker string) string {
	if i := strings.Index(said, marker); i >= 0 {
		return said[max(0, i-300):min(len(said), i+len(marker)+100)]
	}
	return said[max(0, len(said)-1500):]
}

// bldTarEntry is one member of a hand-made archive.
type bldTarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func bldTar(t *testing.T, entries ...bldTarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, ModTime: time.Unix(1700000000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bldCopy is a COPY step of the build API.
func bldCopy(src, dest, hash string) map[string]any {
	return map[string]any{"type": "COPY", "args": []string{src, dest}, "filesHash": hash}
}

func bldRun(cmd string) map[string]any {
	return map[string]any{"type": "RUN", "args": []string{cmd}}
}

func bldUser(u string) map[string]any {
	return map[string]any{"type": "USER", "args": []string{u}}
}

// bldCounting is an HTTP server on addr that counts its requests.
type bldCounting struct {
	srv  *http.Server
	ln   net.Listener
	hits atomic.Int64
}

func (c *bldCounting) host() string { return c.ln.Addr().String() }

func bldServe(t *testing.T, addr string, h http.Handler) *bldCounting {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	c := &bldCounting{ln: ln}
	c.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		h.ServeHTTP(w, r)
	})}
	go c.srv.Serve(ln) //nolint:errcheck // closed at cleanup
	t.Cleanup(func() { c.srv.Close() })
	return c
}

// bldHostURL turns an upload URL the server handed out into one of the test's
// server (the Host header it saw is the test's own address anyway).
func bldHostURL(t *testing.T, s *harness.Server, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatalf("upload URL %q: %v", u, err)
	}
	p.Scheme, p.Host = "http", s.Addr
	return p.String()
}
