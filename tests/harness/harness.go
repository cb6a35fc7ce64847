// Package harness starts real `bin/sbx serve` processes for the end-to-end
// and red-team tests (tests/e2e, tests/security): each server has its own
// data dir and port, is stopped and cleaned up with the test, and prints its
// log when the test fails.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/sdk"
)

// Bounds on waiting for the server. They only turn a hang into a clear
// failure; nothing asserts how fast anything is.
const (
	healthWait   = 60 * time.Second
	templateWait = 20 * time.Minute // the first start on a machine builds the base rootfs
	stopWait     = 15 * time.Second
)

// RepoRoot finds the module root from the test's working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above %s: run the tests from inside the sbx repository", dir)
		}
		dir = parent
	}
}

// Server is a `bin/sbx serve` subprocess with its own data dir.
type Server struct {
	Bin  string // path of bin/sbx
	Addr string // host:port it listens on
	URL  string // http://Addr, or https://Addr when Extra has --tls-cert
	// HTTP is the client for URL: http.DefaultClient, or over TLS one
	// trusting --tls-ca (else --tls-cert) of Extra.
	HTTP    *http.Client
	DataDir string
	APIKey  string   // the first team's key
	Extra   []string // extra `sbx serve` arguments

	t   testing.TB
	mu  sync.Mutex
	cmd *exec.Cmd
	log *lockedBuffer
	// exited is closed when the current process has been waited for.
	exited chan struct{}
}

// StartServer starts `bin/sbx serve` on a free port with a fresh data dir,
// waits until it answers /health and template "base" is ready, and stops it
// at cleanup. The server's log is printed if the test fails.
// Extra arguments are passed to every `sbx serve` of this server (also on
// restart), e.g. "--webhook-allow-private". t may be a *testing.B: the
// benchmarks in this package start their servers the same way.
func StartServer(t testing.TB, extra ...string) *Server {
	t.Helper()
	return StartServerPrepared(t, nil, extra...)
}

// StartServerPrepared is StartServer with prepare run on the fresh data dir
// before the server starts (e.g. to give it another server's key files when
// both share one database).
func StartServerPrepared(t testing.TB, prepare func(dataDir string), extra ...string) *Server {
	t.Helper()
	s := startServer(t, prepare, extra...)
	s.WaitTemplate(t, "base")
	return s
}

// StartNodeServer is StartServerPrepared for a cluster node (sbx serve
// --role node), which refuses API keys: it waits until /health says the
// server is wired, not for the API or a template (creates through an api
// replica wait for the node's templates themselves).
func StartNodeServer(t testing.TB, prepare func(dataDir string), extra ...string) *Server {
	t.Helper()
	return startServer(t, prepare, extra...)
}

func startServer(t testing.TB, prepare func(dataDir string), extra ...string) *Server {
	t.Helper()
	testenv.Require(t, testenv.Integration...)
	root := RepoRoot(t)
	bin := filepath.Join(root, "bin", "sbx")
	if b := os.Getenv("SBX_BIN"); b != "" {
		bin = b // another build; envd must sit next to it, as `make build` puts it
	}
	envd := filepath.Join(filepath.Dir(bin), "envd")
	if _, err := os.Stat(envd); err != nil {
		// An installed layout (make install, the Debian package):
		// bin/sbx and lib/sbx/envd, which sbx serve finds by itself.
		envd = filepath.Join(filepath.Dir(filepath.Dir(bin)), "lib", "sbx", "envd")
	}
	for _, b := range []string{bin, envd} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%s is missing: run `make build` in %s first (the e2e tests build nothing)", b, root)
		}
	}
	// Not t.TempDir: a server that dies badly can leave mounts under its
	// data dir, and RemoveAll on a mountpoint would fail the test for the
	// wrong reason; cleanup unmounts first.
	dataDir, err := os.MkdirTemp("", "sbx-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Bin: bin, Addr: FreeAddr(t), DataDir: dataDir, Extra: extra, t: t, log: &lockedBuffer{}}
	s.URL, s.HTTP = "http://"+s.Addr, http.DefaultClient
	if hc := tlsClient(t, extra); hc != nil {
		s.URL, s.HTTP = "https://"+s.Addr, hc
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sbx serve log (%s):\n%s", s.DataDir, s.log.String())
		}
		s.Stop(syscall.SIGTERM)
		CleanupDataDir(t, dataDir)
	})
	if prepare != nil {
		prepare(dataDir)
	}
	s.Start(t)
	s.APIKey = s.readAPIKey(t)
	return s
}

// Start (re)starts the server process on the same address and data dir and
// waits for /health and, once the API key is known, for the API.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(s.Bin, append([]string{"serve", "--listen", s.Addr, "--data-dir", s.DataDir}, s.Extra...)...)
	fmt.Fprintf(s.log, "=== %s start: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = s.log, s.log
	// Own process group, so a Ctrl-C to `go test` does not race our stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", s.Bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(t.Context(), healthWait)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/health", nil)
		resp, err := s.httpClient().Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			// While it wires itself the server answers /health ("(starting)")
			// and 503 to everything else: an api replica or a node is
			// ready once that ends.
			if (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent) &&
				!strings.Contains(string(body), "(starting)") {
				if s.APIKey == "" || s.apiReady(ctx) {
					return
				}
			}
		}
		select {
		case <-exited:
			t.Fatalf("sbx serve exited before answering /health: %v\nlog:\n%s", cmd.ProcessState, s.log.String())
		case <-ctx.Done():
			t.Fatalf("sbx serve did not answer GET /health within %v (last error %v)", healthWait, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// apiReady reports whether the control plane serves requests: after a
// restart it answers 503 while it reconciles sandboxes, although /health
// is already 200.
func (s *Server) apiReady(ctx context.Context) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/v2/sandboxes?limit=1", nil)
	req.Header.Set("X-API-Key", s.APIKey)
	resp, err := s.httpClient().Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode != http.StatusServiceUnavailable
}

// Stop stops the server: sig (SIGTERM for a graceful stop, SIGKILL for a
// crash), then SIGKILL if it has not exited after stopWait.
func (s *Server) Stop(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	fmt.Fprintf(s.log, "=== %s stop with %v\n", time.Now().Format(time.RFC3339Nano), sig)
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(stopWait):
		fmt.Fprintf(s.log, "=== still running after %v: SIGKILL\n", stopWait)
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Client returns an SDK client for the first team.
func (s *Server) Client(t testing.TB) *sdk.Client { return s.ClientWithKey(t, s.APIKey) }

// ClientWithKey returns an SDK client using the given API key.
func (s *Server) ClientWithKey(t testing.TB, key string) *sdk.Client {
	t.Helper()
	var hc *http.Client // the SDK's own default unless TLS needs a trust
	if s.HTTP != nil && s.HTTP != http.DefaultClient {
		hc = s.HTTP
	}
	c, err := sdk.NewClient(sdk.Config{APIURL: s.URL, SandboxURL: s.URL, APIKey: key, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Run runs bin/sbx with args and returns its stdout; a failure fails t.
func (s *Server) Run(t testing.TB, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), s.Bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sbx %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

var apiKeyRE = regexp.MustCompile(`^e2b_[0-9a-f]{40}$`)

func (s *Server) readAPIKey(t testing.TB) string {
	t.Helper()
	out := s.Run(t, "env", "--data-dir", s.DataDir, "--listen", s.Addr)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if key, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "export E2B_API_KEY="); ok {
			key = strings.Trim(key, `'"`)
			if !apiKeyRE.MatchString(key) {
				t.Fatalf("sbx env printed API key %q, want e2b_ + 40 lowercase hex", key)
			}
			return key
		}
	}
	t.Fatalf("sbx env printed no `export E2B_API_KEY=` line:\n%s", out)
	return ""
}

// CreateTeam makes another team with `sbx team create NAME --json` and
// returns its API key.
func (s *Server) CreateTeam(t testing.TB, name string) string {
	t.Helper()
	out := s.Run(t, "team", "create", name, "--data-dir", s.DataDir, "--json")
	var fields map[string]any
	if err := json.Unmarshal(out, &fields); err != nil {
		t.Fatalf("sbx team create --json printed %q: %v", out, err)
	}
	for _, v := range fields {
		if key, ok := v.(string); ok && apiKeyRE.MatchString(key) {
			return key
		}
	}
	t.Fatalf("sbx team create --json printed no API key: %s", out)
	return ""
}

// WaitTemplate waits until GET /templates reports the template ready.
func (s *Server) WaitTemplate(t testing.TB, name string) {
	t.Helper()
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), templateWait)
	defer cancel()
	var last string
	for {
		tpls, err := c.ListTemplates(ctx)
		if err != nil {
			last = err.Error()
		}
		for _, tpl := range tpls {
			if tpl.TemplateID == name || slices.Contains(tpl.Names, name) || slices.Contains(tpl.Aliases, name) {
				last = "buildStatus " + tpl.BuildStatus
				if tpl.BuildStatus == "ready" {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("template %q not ready within %v (last: %s)", name, templateWait, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// CrunContainers lists the containers crun knows in this server's state dir.
func (s *Server) CrunContainers(t testing.TB) []string {
	t.Helper()
	root := filepath.Join(s.DataDir, "runtime", "crun")
	out, err := exec.CommandContext(t.Context(), "crun", "--root", root, "list", "-q").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("crun --root %s list: %v: %s", root, err, ee.Stderr)
		}
		t.Fatalf("crun --root %s list: %v", root, err)
	}
	return strings.Fields(string(out))
}

// CrunStates maps each container crun knows in the server's runtime root
// to its status ("running", "stopped", ...). A killed sandbox is stopped
// at once and removed by a background reclaim shortly after.
func (s *Server) CrunStates(t testing.TB) map[string]string {
	t.Helper()
	root := filepath.Join(s.DataDir, "runtime", "crun")
	out, err := exec.CommandContext(t.Context(), "crun", "--root", root, "list", "--format", "json").Output()
	if err != nil {
		t.Fatalf("crun --root %s list: %v", root, err)
	}
	var list []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if len(bytes.TrimSpace(out)) > 0 {
		if err := json.Unmarshal(out, &list); err != nil {
			t.Fatalf("crun list --format json: %v: %s", err, out)
		}
	}
	states := make(map[string]string, len(list))
	for _, c := range list {
		states[c.ID] = c.Status
	}
	return states
}

// FreeAddr returns a loopback address with a port nobody listens on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// CleanupDataDir removes what a server may have left: containers still in
// its crun state dir and mounts under the data dir (deepest first), then
// the directory. Leftovers are logged, not failed on: the tests that care
// about orphans check for them explicitly.
func CleanupDataDir(t testing.TB, dir string) {
	// A graceful stop keeps sandboxes for the next server: delete what is
	// left under each runtime (crun by default, runsc for template snapshots).
	for _, rt := range []struct{ bin, list, force string }{{"crun", "-q", "-f"}, {"runsc", "-quiet", "-force"}} {
		root := filepath.Join(dir, "runtime", rt.bin)
		if _, err := os.Stat(root); err != nil {
			continue
		}
		if out, err := exec.Command(rt.bin, "--root", root, "list", rt.list).Output(); err == nil {
			for _, id := range strings.Fields(string(out)) {
				t.Logf("cleanup: container %s left in %s; deleting it", id, root)
				_ = exec.Command(rt.bin, "--root", root, "delete", rt.force, id).Run()
			}
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var under []string
	for line := range strings.SplitSeq(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			under = append(under, f[4])
		}
	}
	slices.SortFunc(under, func(a, b string) int { return len(b) - len(a) })
	for _, m := range under {
		t.Logf("cleanup: %s still mounted; unmounting", m)
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Logf("cleanup: remove %s: %v", dir, err)
	}
}

// lockedBuffer collects the server's output from two pipes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Log returns everything the server printed so far (all its starts).
func (s *Server) Log() string { return s.log.String() }

// RawResponse is an HTTP answer read completely.
type RawResponse struct {
	Status int
	Header http.Header
	Body   string
}

// Raw sends a request without the SDK, for inputs the SDK would refuse and
// for attacks; body "" sends none. The answer is read completely.
func (s *Server) Raw(t testing.TB, method, path, body string, headers map[string]string) RawResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := s.httpClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return RawResponse{resp.StatusCode, resp.Header, string(b)}
}

// AdminKey returns the admin key the server keeps in its data dir (teams,
// every team's keys and budgets, cluster-wide metrics).
func (s *Server) AdminKey(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.DataDir, "admin-key"))
	if err != nil {
		t.Fatalf("read the admin key: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// Pid is the process ID of the running server (0 when it is not running).
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *Server) httpClient() *http.Client {
	if s.HTTP == nil {
		return http.DefaultClient
	}
	return s.HTTP
}

// tlsClient returns a client trusting the server's certificate when the
// `sbx serve` arguments turn TLS on, else nil.
func tlsClient(t testing.TB, args []string) *http.Client {
	t.Helper()
	flag := func(name string) string {
		for i, a := range args {
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v
			}
			if a == name && i+1 < len(args) {
				return args[i+1]
			}
		}
		return ""
	}
	trust := flag("--tls-ca")
	if trust == "" {
		trust = flag("--tls-cert")
	}
	if trust == "" {
		return nil
	}
	pemBytes, err := os.ReadFile(trust)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s holds no PEM certificate", trust)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	return &http.Client{Transport: tr}
}
