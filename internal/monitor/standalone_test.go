package monitor

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
	whsig "github.com/sbxdev/sbx/sdk/webhook"
)

// fakeE2B records the control-plane calls sbx monitor makes to E2B's API.
type fakeE2B struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeE2B) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path+" key="+r.Header.Get("X-API-Key"))
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeE2B) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

const secret = "whsec-test-secret"

func post(t *testing.T, url string, body []byte, sig string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if sig != "" {
		req.Header.Set(whsig.HeaderE2BSignatureVersion, "v1")
		req.Header.Set(whsig.HeaderE2BSignature, sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func get(t *testing.T, url, key string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

func TestStandalone(t *testing.T) {
	e2b := &fakeE2B{}
	api := httptest.NewServer(e2b)
	defer api.Close()
	mon, err := NewStandalone(t.Context(), StandaloneConfig{
		Secret: secret, DBPath: filepath.Join(t.TempDir(), "mon.db"), E2BAPIKey: "e2b_key", E2BAPIURL: api.URL,
		Runaway: []string{"max-lifetime=10m action=kill"}, DefaultVCPU: 2, DefaultMemoryMB: 512,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	srv := httptest.NewServer(mon)
	defer srv.Close()

	now := time.Now().UTC()
	// Variant 3 (camelCase, public docs) and variant 1 (snake_case v2).
	old := []byte(`{"id":"ev-1","version":"v2","type":"sandbox.lifecycle.created","eventData":{"sandbox_metadata":{"refinement_id":"r9"}},` +
		`"sandboxId":"sbx-old","sandboxTemplateId":"base","sandboxTeamId":"team-e2b","timestamp":"` + now.Add(-15*time.Minute).Format(time.RFC3339) + `"}`)
	young := []byte(`{"id":"ev-2","version":"v2","type":"sandbox.lifecycle.created","event_data":{"sandbox_metadata":{}},` +
		`"sandbox_id":"sbx-young","sandbox_template_id":"base","sandbox_team_id":"team-e2b","timestamp":"` + now.Add(-time.Minute).Format(time.RFC3339) + `"}`)
	forged := []byte(`{"id":"ev-3","type":"sandbox.lifecycle.created","sandboxId":"sbx-forged","sandboxTeamId":"team-e2b","timestamp":"` + now.Format(time.RFC3339) + `"}`)

	tests := []struct {
		name string
		body []byte
		sig  string
		want int
	}{
		{"good camelCase", old, whsig.SignE2B(secret, old), 204},
		{"good snake_case", young, whsig.SignE2B(secret, young), 204},
		{"retry is idempotent", old, whsig.SignE2B(secret, old), 204},
		{"forged with another secret", forged, whsig.SignE2B("guess", forged), 401},
		{"forged: body changed after signing", forged, whsig.SignE2B(secret, young), 401},
		{"no signature", forged, "", 401},
		{"hex encoding (the seed's) is not E2B's", forged, "deadbeef", 401},
		{"signed but not an event", []byte(`{"hello":1}`), whsig.SignE2B(secret, []byte(`{"hello":1}`)), 400},
	}
	for _, tt := range tests {
		if got := post(t, srv.URL+"/webhook", tt.body, tt.sig); got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}
	evs, err := mon.evlog.List(t.Context(), events.Filter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("stored %d events, want 2 (forged ones must not be stored): %+v", len(evs), evs)
	}

	// The dashboard and the data API.
	if st := get(t, srv.URL+"/dashboard", "", nil); st != 200 {
		t.Fatalf("GET /dashboard: %d", st)
	}
	if st := get(t, srv.URL+"/v2/sandboxes", "", nil); st != 401 {
		t.Fatalf("GET /v2/sandboxes without key: %d", st)
	}
	if st := get(t, srv.URL+"/v2/sandboxes", "wrong", nil); st != 401 {
		t.Fatalf("GET /v2/sandboxes with a wrong key: %d", st)
	}
	// The page signs in with the dashboard key and reads through its
	// session.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	resp, err := browser.Post(srv.URL+"/dashboard/session", "application/json", strings.NewReader(`{"apiKey":"`+mon.DashKey+`"}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("sign in to the dashboard: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	resp, err = browser.Get(srv.URL + "/dashboard/api/v2/sandboxes")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /dashboard/api/v2/sandboxes with the session: %v %v", resp.StatusCode, err)
	}
	var viaSession []listed
	_ = json.NewDecoder(resp.Body).Decode(&viaSession)
	resp.Body.Close()
	if len(viaSession) != 2 {
		t.Fatalf("the session sees %d sandboxes, want 2", len(viaSession))
	}
	var list []listed
	if st := get(t, srv.URL+"/v2/sandboxes", mon.DashKey, &list); st != 200 || len(list) != 2 {
		t.Fatalf("GET /v2/sandboxes: %d %+v", st, list)
	}
	var rep struct {
		Groups []struct {
			Key         string  `json:"key"`
			VCPUSeconds float64 `json:"vcpuSeconds"`
		} `json:"groups"`
	}
	if st := get(t, srv.URL+"/usage?groupBy=refinement&from="+now.Add(-time.Hour).Format(time.RFC3339), mon.DashKey, &rep); st != 200 {
		t.Fatalf("usage: %d", st)
	}
	var r9 float64
	for _, g := range rep.Groups {
		if g.Key == "r9" {
			r9 = g.VCPUSeconds
		}
	}
	// sbx-old has run ~15 min at the assumed 2 vCPU.
	if r9 < 2*14*60 || r9 > 2*16*60 {
		t.Fatalf("refinement r9 vCPU-seconds = %v, want about %v", r9, 2*15*60)
	}

	// Runaway: only sbx-old is past 10 minutes; it is killed through E2B.
	dets := mon.Runaway.Check(t.Context())
	if len(dets) != 1 || dets[0].Sandbox.ID != "sbx-old" {
		t.Fatalf("detections = %+v", dets)
	}
	if calls := e2b.Calls(); len(calls) != 1 || calls[0] != "DELETE /sandboxes/sbx-old key=e2b_key" {
		t.Fatalf("E2B calls = %v", calls)
	}
	det, err := mon.evlog.List(t.Context(), events.Filter{Types: []string{events.SandboxRunawayDetected}})
	if err != nil || len(det) != 1 || det[0].TeamID != "team-e2b" {
		t.Fatalf("runaway events = %+v, %v", det, err)
	}
	// Killed sandboxes leave the live list at once; a second check does nothing.
	mon.Runaway.Check(t.Context())
	if calls := e2b.Calls(); len(calls) != 1 {
		t.Fatalf("E2B calls after a second check = %v", calls)
	}
	if st := get(t, srv.URL+"/v2/sandboxes", mon.DashKey, &list); st != 200 || len(list) != 1 || list[0].SandboxID != "sbx-young" {
		t.Fatalf("live after the kill: %+v", list)
	}
}

func TestStandaloneConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		cfg  StandaloneConfig
		want string
	}{
		{StandaloneConfig{DBPath: filepath.Join(dir, "a.db")}, "--secret is required"},
		{StandaloneConfig{Secret: "s", DBPath: filepath.Join(dir, "b.db"), Runaway: []string{"cpu=95%"}}, "not CPU use"},
		{StandaloneConfig{Secret: "s", DBPath: filepath.Join(dir, "c.db"), Runaway: []string{"lifetime"}}, "key=value"},
	} {
		_, err := NewStandalone(t.Context(), tt.cfg, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err = %v, want %q", err, tt.want)
		}
	}
}
