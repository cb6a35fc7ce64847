package proxy

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"

	"github.com/sbxdev/sbx/internal/testenv"
)

// directRoutes is a router whose sandboxes have a direct path.
type directRoutes struct {
	routes
	paths map[string]directTarget
}

func (d directRoutes) DirectPath(id string) (netip.Addr, string, bool) {
	t, ok := d.paths[id]
	return t.addr.Addr(), t.iface, ok
}

// The direct path dials the sandbox's address only through the interface
// that leads to it; when that fails (no such interface, nothing listening)
// the request goes through the agent instead, unchanged.
func TestServeDirectPathIsBoundToTheSandboxInterface(t *testing.T) {
	testenv.Require(t, testenv.Root) // SO_BINDTODEVICE needs CAP_NET_RAW
	var direct, viaAgent int
	sandboxPort := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		direct++
		if r.Header.Get("X-Sbx-Port") != "" {
			t.Errorf("direct request carries X-Sbx-Port %q", r.Header.Get("X-Sbx-Port"))
		}
		io.WriteString(w, "direct")
	}))
	defer sandboxPort.Close()
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		viaAgent++
		io.WriteString(w, "agent "+r.Header.Get("X-Sbx-Port"))
	}))
	defer agent.Close()
	ap := netip.MustParseAddrPort(sandboxPort.Listener.Addr().String())
	tr := &rewriteTransport{target: agent.URL}
	p := New(directRoutes{
		routes: routes{"onlo": tr, "gone": tr},
		paths: map[string]directTarget{
			"onlo": {ap, "lo"},
			"gone": {ap, "sbx-gone00000"}, // its veth went with the sandbox
		},
	}, "", slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		id, want string
	}{
		{"onlo", "direct"},
		{"gone", "agent " + strconv.Itoa(int(ap.Port()))},
	} {
		rec := httptest.NewRecorder()
		p.Serve(rec, httptest.NewRequest("GET", "/x", nil), Target{SandboxID: tc.id, Port: int(ap.Port())})
		if rec.Code != 200 || rec.Body.String() != tc.want {
			t.Errorf("%s: %d %q; want %q", tc.id, rec.Code, rec.Body.String(), tc.want)
		}
	}
	if direct != 1 || viaAgent != 1 {
		t.Errorf("direct %d, via agent %d; want 1 and 1", direct, viaAgent)
	}
}
