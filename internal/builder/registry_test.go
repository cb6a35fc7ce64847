package builder

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// countingServer serves h on addr and counts requests.
func countingServer(t *testing.T, addr string, h http.Handler) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h.ServeHTTP(w, r)
	}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &hits
}

func hostOf(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

// TestPullGuarded: a pull reaches only allowed addresses, follows no realm
// elsewhere, repeats nothing a registry says and stops at its size cap.
// It needs no root: nothing is unpacked.
func TestPullGuarded(t *testing.T) {
	t.Parallel()
	const marker = "registry-secret-body"
	log := slog.New(slog.DiscardHandler)
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"errors":[{"code":"%s","message":"%s"}]} %s`, marker, marker, marker)
	})
	// The realm is on this host's own non-loopback address, which
	// go-containerregistry's check of private IP literals lets through:
	// the guard must refuse it.
	realm, realmHits := countingServer(t, net.JoinHostPort(hostAddr(t), "0"), echo)
	withRealm := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="x"`, realm.URL))
		http.Error(w, marker, http.StatusUnauthorized)
	})
	bodies, bodyHits := countingServer(t, "127.0.0.1:0", echo)
	realmed, _ := countingServer(t, "127.0.0.1:0", withRealm)
	good, _ := countingServer(t, "127.0.0.1:0", registry.New(registry.Logger(nilLogger())))
	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	goodRef := hostOf(good) + "/x/img:1"
	r, err := name.ParseReference(goodRef)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		cfg   ImagesConfig
		ref   string
		want  string
		kind  error
		check func(t *testing.T)
	}{
		{name: "loopback refused", ref: hostOf(bodies) + "/x/img:1", want: "--registry-allow-private", kind: errdefs.ErrInvalidArgument,
			check: func(t *testing.T) {
				if n := bodyHits.Load(); n > 0 {
					t.Errorf("%d requests reached the refused registry", n)
				}
			}},
		{name: "body not echoed", cfg: ImagesConfig{Guard: loopbackOK()}, ref: hostOf(bodies) + "/x/img:1", want: "the registry answered 404 Not Found",
			kind: errdefs.ErrInvalidArgument},
		{name: "realm elsewhere refused", cfg: ImagesConfig{Guard: loopbackOK()}, ref: hostOf(realmed) + "/x/img:1", want: "refused",
			kind: errdefs.ErrInvalidArgument, check: func(t *testing.T) {
				if n := realmHits.Load(); n > 0 {
					t.Errorf("%d requests reached the realm on this host's address", n)
				}
			}},
		{name: "too large", cfg: ImagesConfig{Guard: loopbackOK(), MaxBytes: 32 << 10}, ref: goodRef, want: "larger than 0 MiB",
			kind: errdefs.ErrResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := NewImages(t.TempDir(), tc.cfg, log)
			var lines []string
			_, err := im.Pull(t.Context(), tc.ref, func(l string) { lines = append(lines, l) })
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.kind) {
				t.Fatalf("err = %v; want %v with %q", err, tc.kind, tc.want)
			}
			if strings.Contains(err.Error(), marker) || strings.Contains(strings.Join(lines, "\n"), marker) {
				t.Errorf("a registry's answer is repeated: %v\n%s", err, lines)
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
}

func TestIsBlobRequest(t *testing.T) {
	t.Parallel()
	blob, _ := http.NewRequest("GET", "http://r/v2/x/blobs/sha256:ab", nil)
	storage, _ := http.NewRequest("GET", "http://storage/some/object", nil)
	storage.Response = &http.Response{Request: blob}
	manifest, _ := http.NewRequest("GET", "http://r/v2/x/manifests/1", nil)
	for req, want := range map[*http.Request]bool{blob: true, storage: true, manifest: false} {
		if got := isBlobRequest(req); got != want {
			t.Errorf("%s: %v, want %v", req.URL, got, want)
		}
	}
}

// hostAddr returns a non-loopback IPv4 address of this host.
func hostAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsPrivate() {
			return n.IP.String()
		}
	}
	t.Skip("this host has no public-looking IPv4 address to put a token realm on")
	return ""
}
