package envd

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/envd/files"
)

func TestHealthInitEnvsMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, map[string]string{"E2B_SANDBOX": "true", "E2B_SANDBOX_ID": "sbxa"})
	if resp, _ := e.do(t, "GET", "/health", nil); resp.StatusCode != 204 {
		t.Errorf("/health %d", resp.StatusCode)
	}
	initBody := `{"envVars":{"A":"1"},"accessToken":"tok","timestamp":"2026-01-01T00:00:00Z"}`
	r, _ := http.NewRequest("POST", "http://envd/init", strings.NewReader(initBody))
	nonce := e.sign(t, r, initBody)
	resp, err := e.sock.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("X-Envd-Version") != Version {
		t.Fatalf("/init %d version %q", resp.StatusCode, resp.Header.Get("X-Envd-Version"))
	}
	if err := agentauth.Verify(resp.Header.Get(agentauth.HeaderProof), agentauth.ReplyProof(e.key, "sbxa", nonce)); err != nil {
		t.Errorf("/init answer does not prove envd's key: %v", err)
	}
	// A stale /init (older timestamp) changes nothing.
	e.post(t, "/init", `{"envVars":{"B":"2"},"accessToken":"old","timestamp":"2025-01-01T00:00:00Z"}`)

	resp, body := e.do(t, "GET", "/envs", nil, "X-Access-Token", "tok")
	var envs map[string]string
	_ = json.Unmarshal(body, &envs)
	if resp.StatusCode != 200 || envs["A"] != "1" || envs["E2B_SANDBOX_ID"] != "sbxa" || envs["B"] != "" {
		t.Errorf("/envs %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(t, "GET", "/metrics", nil, "X-Access-Token", "tok")
	var m Metrics
	_ = json.Unmarshal(body, &m)
	if resp.StatusCode != 200 || m.CPUCount < 1 || m.MemTotal == 0 || m.MemUsed == 0 || m.DiskTotal == 0 || m.Timestamp == 0 {
		t.Errorf("/metrics %d %s", resp.StatusCode, body)
	}
	if st := e.post(t, "/init", `{"defaultUser":"no-such-user-sbx"}`); st != 400 {
		t.Errorf("/init with unknown user: %d", st)
	}
}

func TestAccessToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.post(t, "/init", `{"accessToken":"secret"}`)
	tests := []struct {
		method, path, token string
		status              int
	}{
		{"GET", "/health", "", 204},
		{"GET", "/envs", "", 401},
		{"GET", "/envs", "wrong", 401},
		{"GET", "/envs", "secret", 200},
		{"GET", "/metrics", "", 401},
		{"POST", "/process.Process/List", "", 401},
		{"POST", "/process.Process/List", "secret", 200},
		{"POST", "/init", "", 403},       // on TCP, code in the sandbox cannot replace the token
		{"POST", "/init", "secret", 403}, // not even with it
		{"GET", "/files?path=/etc/hostname", "", 401},
		{"GET", "/files?path=/etc/hostname", "wrong", 401},
		{"GET", "/files?path=/etc/hostname", "secret", 200},
	}
	for _, tt := range tests {
		hdr := []string{"Content-Type", "application/json"}
		if tt.token != "" {
			hdr = append(hdr, "X-Access-Token", tt.token)
		}
		resp, body := e.do(t, tt.method, tt.path, strings.NewReader("{}"), hdr...)
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s token %q: %d %s, want %d", tt.method, tt.path, tt.token, resp.StatusCode, body, tt.status)
		}
		if tt.status >= 400 && !strings.Contains(string(body), `"code"`) {
			t.Errorf("401 body %s is not a JSON error", body)
		}
	}
	// The host may re-init over its socket without the token (with its proof).
	if st := e.post(t, "/init", `{"accessToken":"rotated"}`); st != 204 {
		t.Errorf("socket /init: %d", st)
	}
	if resp, _ := e.do(t, "GET", "/envs", nil, "X-Access-Token", "rotated"); resp.StatusCode != 200 {
		t.Errorf("rotated token refused: %d", resp.StatusCode)
	}
}

func TestSignedURLs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.post(t, "/init", `{"accessToken":"tok"}`)
	dir := t.TempDir()
	p := filepath.Join(dir, "s.txt")
	if err := os.WriteFile(p, []byte("signed"), 0o644); err != nil {
		t.Fatal(err)
	}
	now := e.now.Unix()
	q := func(sig string, exp int64, user string) string {
		v := url.Values{"path": {p}, "signature": {sig}}
		if exp != 0 {
			v.Set("signature_expiration", fmt.Sprint(exp))
		}
		if user != "" {
			v.Set("username", user)
		}
		return "/files?" + v.Encode()
	}
	tests := []struct {
		name, query string
		status      int
		body        string
	}{
		{"good", q(files.Sign(p, "read", "", "tok", 0), 0, ""), 200, "signed"},
		{"good with user and expiry", q(files.Sign(p, "read", "root", "tok", now+60), now+60, "root"), 200, "signed"},
		{"expired", q(files.Sign(p, "read", "", "tok", now-1), now-1, ""), 401, `{"code":401,"message":"signature is already expired"}`},
		{"forged", q(files.Sign(p, "read", "", "other", 0), 0, ""), 401, "invalid signature"},
		{"write signature used to read", q(files.Sign(p, "write", "", "tok", 0), 0, ""), 401, "invalid signature"},
		{"wrong user", q(files.Sign(p, "read", "", "tok", 0), 0, "root"), 401, "invalid signature"},
	}
	for _, tt := range tests {
		resp, body := e.do(t, "GET", tt.query, nil)
		if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.body) {
			t.Errorf("%s: %d %s, want %d %s", tt.name, resp.StatusCode, body, tt.status, tt.body)
		}
	}
	// Upload with a write signature.
	v := url.Values{"path": {filepath.Join(dir, "up.txt")}, "signature": {files.Sign(filepath.Join(dir, "up.txt"), "write", "", "tok", 0)}}
	resp, body := e.do(t, "POST", "/files?"+v.Encode(), strings.NewReader("up"), "Content-Type", "application/octet-stream")
	if resp.StatusCode != 200 {
		t.Errorf("signed upload %d %s", resp.StatusCode, body)
	}
}

func TestSignVector(t *testing.T) {
	t.Parallel()
	// sha256("/home/user/a.txt:read:user:token") in unpadded standard base64.
	got := files.Sign("/home/user/a.txt", "read", "user", "token", 0)
	if !strings.HasPrefix(got, "v1_") || len(got) != 3+43 || strings.ContainsAny(got, "=") {
		t.Fatalf("signature %q has the wrong shape", got)
	}
	if files.Sign("/home/user/a.txt", "read", "user", "token", 1) == got {
		t.Error("expiration does not change the signature")
	}
}

func TestFilesUploadDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	dir := t.TempDir()

	// Multipart with several files whose filenames are destination paths.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for name, content := range map[string]string{filepath.Join(dir, "a/one.txt"): "one", filepath.Join(dir, "b/c/two.txt"): "two"} {
		fw, _ := mw.CreateFormFile("file", name)
		io.WriteString(fw, content)
	}
	mw.Close()
	resp, body := e.do(t, "POST", "/files", &buf, "Content-Type", mw.FormDataContentType())
	var ups []struct{ Path, Name, Type string }
	_ = json.Unmarshal(body, &ups)
	if resp.StatusCode != 200 || len(ups) != 2 || ups[0].Type != "file" {
		t.Fatalf("multipart upload %d %s", resp.StatusCode, body)
	}
	for p, want := range map[string]string{"a/one.txt": "one", "b/c/two.txt": "two"} {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v", p, b, err)
		}
	}

	// Octet stream, gzip-encoded, with metadata.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(bytes.Repeat([]byte("z"), 100000))
	zw.Close()
	target := filepath.Join(dir, "z.bin")
	resp, body = e.do(t, "POST", "/files?path="+url.QueryEscape(target), &gz,
		"Content-Type", "application/octet-stream", "Content-Encoding", "gzip", "X-Metadata-Owner", "me")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"name":"z.bin"`) {
		t.Fatalf("octet upload %d %s", resp.StatusCode, body)
	}
	if fi, err := os.Stat(target); err != nil || fi.Size() != 100000 {
		t.Fatalf("uploaded size: %v %v", fi, err)
	}
	var st struct {
		Entry struct{ Metadata map[string]string }
	}
	e.call(t, "filesystem.Filesystem/Stat", map[string]any{"path": target}, &st)
	if st.Entry.Metadata["owner"] != "me" {
		t.Errorf("metadata after upload: %v", st.Entry.Metadata)
	}

	// Download plain, gzip and a range.
	resp, body = e.do(t, "GET", "/files?path="+url.QueryEscape(filepath.Join(dir, "a/one.txt")), nil)
	if resp.StatusCode != 200 || string(body) != "one" || !strings.Contains(resp.Header.Get("Content-Disposition"), "one.txt") {
		t.Errorf("download %d %q %v", resp.StatusCode, body, resp.Header)
	}
	req, _ := http.NewRequest("GET", e.url+"/files?path="+url.QueryEscape(target), nil)
	req.Header.Set("Accept-Encoding", "gzip")
	raw, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(raw.Body)
	if err != nil || raw.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip download: %v %v", err, raw.Header)
	}
	all, _ := io.ReadAll(zr)
	raw.Body.Close()
	if len(all) != 100000 {
		t.Errorf("gzip download has %d bytes", len(all))
	}
	resp, body = e.do(t, "GET", "/files?path="+url.QueryEscape(target), nil, "Range", "bytes=0-9")
	if resp.StatusCode != 206 || len(body) != 10 {
		t.Errorf("range download %d %d bytes", resp.StatusCode, len(body))
	}

	// Errors are JSON with the right status.
	for _, tt := range []struct {
		method, query, ctype string
		status               int
	}{
		{"GET", "/files?path=" + url.QueryEscape(filepath.Join(dir, "missing")), "", 404},
		{"GET", "/files?path=" + url.QueryEscape(dir), "", 400},
		{"GET", "/files", "", 400},
		{"GET", "/files?path=/etc/hostname&username=no-such-user-sbx", "", 401},
		{"POST", "/files?path=" + url.QueryEscape(dir), "application/octet-stream", 400},
		{"POST", "/files", "application/octet-stream", 400},
		{"POST", "/files?path=/tmp/x", "text/plain", 400},
	} {
		hdr := []string{}
		if tt.ctype != "" {
			hdr = append(hdr, "Content-Type", tt.ctype)
		}
		resp, body := e.do(t, tt.method, tt.query, strings.NewReader("data"), hdr...)
		var eb struct {
			Code    int
			Message string
		}
		if err := json.Unmarshal(body, &eb); err != nil || resp.StatusCode != tt.status || eb.Code != tt.status || eb.Message == "" {
			t.Errorf("%s %s: %d %s, want %d", tt.method, tt.query, resp.StatusCode, body, tt.status)
		}
	}
}

func TestFilesOwnedByUser(t *testing.T) {
	addUser(t, "sbxenvdfiles")
	e := newEnv(t, nil)
	resp, body := e.do(t, "POST", "/files?username=sbxenvdfiles&path=new/dir/f.txt", strings.NewReader("x"), "Content-Type", "application/octet-stream")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "/home/sbxenvdfiles/new/dir/f.txt") {
		t.Fatalf("upload %d %s", resp.StatusCode, body)
	}
	r := e.run(t, "stat -c %U /home/sbxenvdfiles/new /home/sbxenvdfiles/new/dir/f.txt", nil)
	if r.stdout != "sbxenvdfiles\nsbxenvdfiles\n" {
		t.Errorf("owners %q", r.stdout)
	}
}

func TestForwarding(t *testing.T) {
	t.Parallel()
	e := newEnv(t, map[string]string{"E2B_SANDBOX_ID": "sbxfwd"})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "echo" {
			conn, rw, _ := http.NewResponseController(w).Hijack()
			defer conn.Close()
			rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			rw.Flush()
			line, _ := rw.ReadString('\n')
			rw.WriteString("echo:" + line)
			rw.Flush()
			return
		}
		fmt.Fprintf(w, "%s %s port-header=%q", r.Method, r.URL.Path, r.Header.Get(PortHeader))
	}))
	t.Cleanup(backend.Close)
	_, port, _ := net.SplitHostPort(backend.Listener.Addr().String())

	req, _ := http.NewRequest("GET", "http://envd/hello", nil)
	req.Header.Set(PortHeader, port)
	resp, err := e.sock.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != `GET /hello port-header=""` {
		t.Errorf("forwarded: %d %s", resp.StatusCode, body)
	}

	// Upgrade (websocket-style) through the socket.
	conn, err := net.Dial("unix", e.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n%s: %s\r\n\r\n", PortHeader, port)
	br := bufio.NewReader(conn)
	up, err := http.ReadResponse(br, nil)
	if err != nil || up.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", up, err)
	}
	fmt.Fprint(conn, "ping\n")
	if line, _ := br.ReadString('\n'); line != "echo:ping\n" {
		t.Errorf("upgraded echo %q", line)
	}

	// A closed port answers 502 with the proxy's JSON.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	_, closed, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	req, _ = http.NewRequest("GET", "http://envd/", nil)
	req.Header.Set(PortHeader, closed)
	resp, err = e.sock.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf(`{"code":502,"message":"The sandbox is running but port is not open","port":%s,"sandboxId":"sbxfwd"}`, closed)
	if resp.StatusCode != 502 || strings.TrimSpace(string(body)) != want {
		t.Errorf("closed port: %d %s, want %s", resp.StatusCode, body, want)
	}

	// The TCP listener ignores the header.
	if resp, _ := e.do(t, "GET", "/health", nil, PortHeader, port); resp.StatusCode != 204 {
		t.Errorf("TCP listener forwarded: %d", resp.StatusCode)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	resp, _ := e.do(t, "OPTIONS", "/process.Process/Start", nil, "Origin", "https://x.example", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "connect-protocol-version")
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Access-Control-Allow-Headers") != "connect-protocol-version" {
		t.Errorf("preflight %d %v", resp.StatusCode, resp.Header)
	}
}

func TestUploadWithoutSpaceIs507(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, nil)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	resp, body := e.do(t, "POST", "/files?path="+url.QueryEscape(dir+"/big"), bytes.NewReader(make([]byte, 1<<20)), "Content-Type", "application/octet-stream")
	if resp.StatusCode != 507 || !strings.Contains(string(body), `"code":507`) {
		t.Errorf("full disk: %d %s", resp.StatusCode, body)
	}
	if _, err := os.Stat(dir + "/big"); !os.IsNotExist(err) {
		t.Errorf("partial upload left behind: %v", err)
	}
}
