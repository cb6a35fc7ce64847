package security

// Attacks on template builds, uploads, registry pulls and webhook replies
// (issue 12, items 1, 2, 5, 6, 7 and 8): a tenant holding an API key, and
// code running in a build step, against the host and against other teams.

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/sbxdev/sbx/sdk"
)

// An upload whose archive holds a symlink to a host directory and then a
// file "through" it must not write that file on the host (item 1).
func TestUploadSymlinkWritesNothingOnHost(t *testing.T) {
	s := startServer(t)
	c := bldTenant{s, s.APIKey}
	hostDir := t.TempDir()
	for _, tc := range []struct{ name, link string }{
		{"absolute", hostDir},
		{"relative", strings.Repeat("../", 16) + strings.TrimPrefix(hostDir, "/")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tid, _ := c.requestBuild(t, "evil-"+tc.name+"-"+randHex(t, 3))
			hash := randHex(t, 32)
			_, u := c.fileLink(t, tid, hash)
			planted := "planted-" + tc.name
			status, answer := bldUpload(t, bldHostURL(t, s, u), bldTar(t,
				bldTarEntry{name: "evil", typ: tar.TypeSymlink, link: tc.link},
				bldTarEntry{name: "evil/" + planted, body: "written by a tenant\n"}))
			if _, err := os.Lstat(filepath.Join(hostDir, planted)); err == nil {
				t.Fatalf("the upload wrote %s on the host through its own symlink (upload answered %d %s)",
					filepath.Join(hostDir, planted), status, answer)
			}
			if status/100 == 2 {
				t.Errorf("an archive writing through its own symlink was accepted (%d); want it refused", status)
			}
		})
	}
}

// A hard link "through" a symlinked directory must not pull a root-only
// host file into the build context, where a COPY would print it (item 1).
func TestUploadHardLinkLeaksNoHostFile(t *testing.T) {
	s := startServer(t)
	c := bldTenant{s, s.APIKey}
	secretDir := t.TempDir() // same filesystem as the server's data dir (both under $TMPDIR)
	marker := "host-secret-" + randHex(t, 8)
	if err := os.WriteFile(filepath.Join(secretDir, "secret"), []byte(marker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tid, bid := c.requestBuild(t, "hardlink-"+randHex(t, 3))
	hash := randHex(t, 32)
	_, u := c.fileLink(t, tid, hash)
	status, answer := bldUpload(t, bldHostURL(t, s, u), bldTar(t,
		bldTarEntry{name: "d", typ: tar.TypeSymlink, link: secretDir},
		bldTarEntry{name: "leak", typ: tar.TypeLink, link: "d/secret"}))
	t.Logf("upload answered %d %s", status, strings.TrimSpace(answer))
	if status/100 == 2 {
		t.Errorf("an archive hard-linking through its own symlink was accepted (%d); want it refused", status)
	}
	st, said := c.build(t, tid, bid, map[string]any{"steps": []any{bldCopy("leak", "/leak", hash), bldRun("cat /leak")}})
	if strings.Contains(said, marker) {
		t.Fatalf("a root-only host file reached the build (status %s):\n%s", st, bldAround(said, marker))
	}
}

// A RUN step that replaces its log with a symlink to a host file must not
// make the server show that file (item 2).
func TestBuildLogSymlinkShowsNoHostFile(t *testing.T) {
	s := startServer(t)
	c := bldTenant{s, s.APIKey}
	marker := "host-file-" + randHex(t, 8)
	hostFile := filepath.Join(t.TempDir(), "host.txt")
	if err := os.WriteFile(hostFile, []byte(strings.Repeat(marker+"\n", 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	tid, bid := c.requestBuild(t, "logswap-"+randHex(t, 3))
	cmd := fmt.Sprintf(`for f in log exit; do rm -f /.sbx/build/$f; ln -s %s /.sbx/build/$f; done; ls -la /.sbx/build >&2; sleep 2; echo step-done`, hostFile)
	st, said := c.build(t, tid, bid, map[string]any{"steps": []any{bldUser("root"), bldRun(cmd)}})
	if strings.Contains(said, marker) {
		t.Fatalf("the build status shows a host file the step pointed its log at (status %s):\n%s", st, bldAround(said, marker))
	}
}

// bldRegistryRef is an image reference on a fake registry.
func bldRegistryRef(host string) string { return host + "/team/image:1" }

// A template FROM an image on the host's loopback must not make the server
// connect there, and what a registry answers must never be echoed (item 5).
func TestRegistryPullRefusesLoopback(t *testing.T) {
	marker := "registry-body-" + randHex(t, 8)
	reg := bldServe(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, marker, http.StatusNotFound)
	}))
	s := startServer(t)
	c := bldTenant{s, s.APIKey}
	tid, bid := c.requestBuild(t, "ssrf-"+randHex(t, 3))
	st, said := c.build(t, tid, bid, map[string]any{"fromImage": bldRegistryRef(reg.host()), "steps": []any{}})
	if n := reg.hits.Load(); n > 0 {
		t.Errorf("the server sent %d requests to a registry on 127.0.0.1 without --registry-allow-private", n)
	}
	if strings.Contains(said, marker) {
		t.Errorf("the registry's answer is echoed by the API:\n%s", bldAround(said, marker))
	}
	if st == "ready" || !strings.Contains(said, "--registry-allow") {
		t.Errorf("build %s; want an error naming --registry-allow-private:\n%s", st, bldAround(said, marker))
	}
}

// With --registry-allow-private a local registry works, and its error
// bodies are still not echoed (item 5).
func TestRegistryAllowPrivate(t *testing.T) {
	good := bldServe(t, "127.0.0.1:0", registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	ref := bldRegistryRef(good.host())
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push to the test registry: %v", err)
	}
	marker := "registry-body-" + randHex(t, 8)
	bad := bldServe(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `{"errors":[{"code":"DENIED","message":%q}]} %s`, marker, marker)
	}))
	s := startServer(t, "--registry-allow-private")
	c := bldTenant{s, s.APIKey}

	tid, bid := c.requestBuild(t, "local-"+randHex(t, 3))
	if st, said := c.build(t, tid, bid, map[string]any{"fromImage": ref, "steps": []any{}}); st != "ready" {
		t.Errorf("build from a registry on 127.0.0.1 with --registry-allow-private: %s\n%s", st, bldAround(said, "error"))
	}
	tid, bid = c.requestBuild(t, "denied-"+randHex(t, 3))
	st, said := c.build(t, tid, bid, map[string]any{"fromImage": bldRegistryRef(bad.host()), "steps": []any{}})
	if bad.hits.Load() == 0 {
		t.Errorf("the allowed registry was never asked")
	}
	if st == "ready" || strings.Contains(said, marker) {
		t.Errorf("a registry's error body is echoed (status %s):\n%s", st, bldAround(said, marker))
	}
}

// A registry the operator allowed must not send the server on to a token
// realm in a range it did not allow (item 5): here the host's own address,
// which go-containerregistry's own check of private IP literals lets by.
func TestRegistryRealmGuarded(t *testing.T) {
	marker := "realm-body-" + randHex(t, 8)
	realm := bldServe(t, net.JoinHostPort(bldHostAddr(t), "0"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, marker, http.StatusUnauthorized)
	}))
	reg := bldServe(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="registry"`, realm.host()))
		http.Error(w, marker, http.StatusUnauthorized)
	}))
	s := startServer(t, "--registry-allow-cidr", "127.0.0.1/32")
	c := bldTenant{s, s.APIKey}
	tid, bid := c.requestBuild(t, "realm-"+randHex(t, 3))
	st, said := c.build(t, tid, bid, map[string]any{"fromImage": bldRegistryRef(reg.host()), "steps": []any{}})
	if reg.hits.Load() == 0 {
		t.Errorf("the allowed registry was never asked (status %s):\n%s", st, bldAround(said, "error"))
	}
	if n := realm.hits.Load(); n > 0 {
		t.Errorf("the server followed the registry's realm to %s (%d requests)", realm.host(), n)
	}
	if st == "ready" || strings.Contains(said, marker) {
		t.Errorf("status %s, or a body echoed:\n%s", st, bldAround(said, marker))
	}
}

// A RUN step that allocates more memory than builds may use fails with a
// message naming the limit and its flag, and the server keeps serving
// (item 6).
func TestBuildMemoryLimit(t *testing.T) {
	s := startServer(t, "--build-memory", "256")
	c := bldTenant{s, s.APIKey}
	tid, bid := c.requestBuild(t, "hog-"+randHex(t, 3))
	// tail keeps a "line" without newline whole: 700 MiB of it.
	st, said := c.build(t, tid, bid, map[string]any{"steps": []any{bldRun(`head -c 700m /dev/zero | tail -n 1 >/dev/null; echo survived-$((40+2))`)}})
	// The kernel kills the biggest process (tail) and the script goes on:
	// the build must fail anyway, its layer being whatever tail left.
	if st != "error" {
		t.Fatalf("a step using 700 MiB under --build-memory 256 did not fail (status %s):\n%s", st, bldAround(said, "survived-42"))
	}
	if !strings.Contains(said, "memory") || !strings.Contains(said, "--build-memory") {
		t.Errorf("the failure does not name the memory limit and --build-memory:\n%s", bldAround(said, "error"))
	}
	sb := create(t, s.Client(t), sdk.CreateOptions{})
	if out := mustSh(t, sb, "", "echo still-serving"); !strings.Contains(out, "still-serving") {
		t.Errorf("sandbox after the failed build: %q", out)
	}
}

// Team B's upload for a files hash must not become team A's build context
// (item 7).
func TestUploadsArePerTeam(t *testing.T) {
	s := startServer(t)
	a := bldTenant{s, s.APIKey}
	b := bldTenant{s, s.CreateTeam(t, "team-b")}
	hash := randHex(t, 32)
	markerB := "team-b-bytes-" + randHex(t, 8)
	tidB, _ := b.requestBuild(t, "b-"+randHex(t, 3))
	if present, u := b.fileLink(t, tidB, hash); !present {
		if st, answer := bldUpload(t, bldHostURL(t, s, u), bldTar(t, bldTarEntry{name: "f", body: markerB + "\n"})); st != http.StatusOK {
			t.Fatalf("team B's upload: %d %s", st, answer)
		}
	}
	markerA := "team-a-bytes-" + randHex(t, 8)
	tidA, bidA := a.requestBuild(t, "a-"+randHex(t, 3))
	present, u := a.fileLink(t, tidA, hash)
	if present {
		t.Errorf("team A is told team B's files for %s are present", hash)
	} else if st, answer := bldUpload(t, bldHostURL(t, s, u), bldTar(t, bldTarEntry{name: "f", body: markerA + "\n"})); st != http.StatusOK {
		t.Fatalf("team A's upload: %d %s", st, answer)
	}
	st, said := a.build(t, tidA, bidA, map[string]any{"steps": []any{bldCopy("f", "/f", hash), bldRun("cat /f")}})
	if strings.Contains(said, markerB) {
		t.Fatalf("team A's COPY got team B's bytes (status %s):\n%s", st, bldAround(said, markerB))
	}
	if st != "ready" || !strings.Contains(said, markerA) {
		t.Errorf("team A's own upload was not used (status %s):\n%s", st, bldAround(said, markerA))
	}
}

// bldWebhook registers a webhook for sandbox creation and returns its ID
// (or the refusal).
func bldWebhook(t *testing.T, c bldTenant, url string) (string, int, string) {
	t.Helper()
	r := c.call(t, "POST", "/events/webhooks", map[string]any{"name": "rt", "url": url,
		"events": []string{"sandbox.lifecycle.created"}, "signatureSecret": "red-team-secret"})
	if r.Status != http.StatusCreated {
		return "", r.Status, r.Body
	}
	var wh struct{ ID string }
	if err := json.Unmarshal([]byte(r.Body), &wh); err != nil || wh.ID == "" {
		t.Fatalf("webhook creation answered %s: %v", r.Body, err)
	}
	return wh.ID, r.Status, r.Body
}

// What a webhook receiver answers must not come back through the API
// (item 8): neither its body nor its headers.
func TestWebhookReplyNotEchoed(t *testing.T) {
	marker := "receiver-" + randHex(t, 8)
	rcv := bldServe(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Internal-Token", marker)
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "internal page %s", marker)
	}))
	s := startServer(t, "--webhook-allow-private")
	c := bldTenant{s, s.APIKey}
	id, st, answer := bldWebhook(t, c, "http://"+rcv.host()+"/hook")
	if id == "" {
		t.Fatalf("create webhook: %d %s", st, answer)
	}
	test := c.call(t, "POST", "/events/webhooks/"+id+"/test", nil)
	if rcv.hits.Load() == 0 {
		t.Fatalf("the test delivery never reached the receiver: %d %s", test.Status, test.Body)
	}
	if strings.Contains(test.Body, marker) {
		t.Errorf("the test delivery's answer echoes the receiver's reply:\n%s", test.Body)
	}
	create(t, s.Client(t), sdk.CreateOptions{})
	deadline := time.Now().Add(time.Minute)
	for {
		d := c.call(t, "GET", "/events/webhooks/"+id+"/deliveries", nil)
		if strings.Contains(d.Body, marker) {
			t.Fatalf("the delivery log echoes the receiver's reply:\n%s", d.Body)
		}
		if strings.Count(d.Body, `"responseHttpStatusCode":500`) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no attempt recorded within a minute: %s", d.Body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// bldHostAddr returns a non-loopback IPv4 address of this host (eth0's on
// the project's machines, 192.0.2.2).
func bldHostAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !strings.HasPrefix(n.IP.String(), "10.88.") {
			return n.IP.String()
		}
	}
	t.Fatalf("this host has no non-loopback IPv4 address to attack")
	return ""
}

// A webhook aimed at the host's own interface address is refused (item 8,
// the netguard half).
func TestWebhookHostAddressRefused(t *testing.T) {
	rcv := bldServe(t, net.JoinHostPort(bldHostAddr(t), "0"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	s := startServer(t)
	c := bldTenant{s, s.APIKey}
	id, st, answer := bldWebhook(t, c, "http://"+rcv.host()+"/hook")
	if id != "" {
		test := c.call(t, "POST", "/events/webhooks/"+id+"/test", nil)
		if !strings.Contains(test.Body, "refused") {
			t.Errorf("a delivery to the host's own address %s was not refused: %d %s", rcv.host(), test.Status, test.Body)
		}
	} else if st != http.StatusBadRequest {
		t.Errorf("create webhook for the host's address: %d %s, want 400", st, answer)
	}
	if n := rcv.hits.Load(); n > 0 {
		t.Errorf("the server delivered %d requests to its own address %s", n, rcv.host())
	}
}
