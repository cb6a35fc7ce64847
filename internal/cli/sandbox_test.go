package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestParseTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"300", 300 * time.Second, false},
		{"0", 0, false},
		{"5m", 5 * time.Minute, false},
		{"1h30m", 90 * time.Minute, false},
		{"-3", 0, true},
		{"soon", 0, true},
		{"-1m", 0, true},
	}
	for _, tt := range tests {
		got, err := parseTimeout(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseTimeout(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParsePairs(t *testing.T) {
	t.Parallel()
	got, err := parsePairs("env", []string{"A=1", "B=x=y", "C="})
	if err != nil || len(got) != 3 || got["B"] != "x=y" || got["C"] != "" {
		t.Errorf("parsePairs = %v, %v", got, err)
	}
	for _, bad := range []string{"A", "=1"} {
		if _, err := parsePairs("env", []string{bad}); err == nil || !strings.Contains(err.Error(), "KEY=VALUE") {
			t.Errorf("parsePairs(%q) error = %v", bad, err)
		}
	}
}

func TestShellJoin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"echo hi && ls"}, "echo hi && ls"},
		{[]string{"ls", "-la", "/tmp"}, "ls -la /tmp"},
		{[]string{"echo", "a b", "it's"}, `echo 'a b' 'it'\''s'`},
		{[]string{"printf", ""}, "printf ''"},
		{[]string{"echo", "$HOME"}, `echo '$HOME'`},
	}
	for _, tt := range tests {
		if got := shellJoin(tt.args); got != tt.want {
			t.Errorf("shellJoin(%q) = %s, want %s", tt.args, got, tt.want)
		}
	}
}

func TestStatsNearestRank(t *testing.T) {
	t.Parallel()
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := stats(ds)
	if s.P50 != 50 || s.P95 != 95 || s.P99 != 99 || s.Min != 1 || s.Max != 100 || s.Mean != 50.5 {
		t.Errorf("stats = %+v", s)
	}
	if one := stats([]time.Duration{7 * time.Millisecond}); one.P50 != 7 || one.P99 != 7 {
		t.Errorf("stats of one sample = %+v", one)
	}
	if empty := stats(nil); empty != (ttiStats{}) {
		t.Errorf("stats(nil) = %+v", empty)
	}
}

func TestParseLevels(t *testing.T) {
	t.Parallel()
	if got, err := parseLevels("1, 20"); err != nil || len(got) != 2 || got[1] != 20 {
		t.Errorf("parseLevels = %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "1,x", "-2"} {
		if _, err := parseLevels(bad); err == nil {
			t.Errorf("parseLevels(%q) accepted", bad)
		}
	}
}

// TestSandboxListJSON runs the real command tree against an HTTP server
// that answers like the sbx API.
func TestSandboxListJSON(t *testing.T) {
	var gotQuery string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/sandboxes" || r.Header.Get("X-API-Key") != "e2b_ab" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"code":401,"message":"bad key"}`)
			return
		}
		gotQuery = r.URL.Query().Get("metadata") + " " + r.URL.Query().Get("state")
		io.WriteString(w, `[{"sandboxID":"abc","templateID":"base","state":"running","metadata":{"owner":"alice"}}]`)
	}))
	defer srv.Close()
	t.Setenv("E2B_API_KEY", "")
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"sandbox", "list", "--json", "--api-url", srv.URL, "--api-key", "e2b_ab", "--metadata", "owner=alice", "--state", "running"})
	if err := root.ExecuteContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal(out.Bytes(), &list); err != nil || len(list) != 1 || list[0]["sandboxID"] != "abc" {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	if gotQuery != "owner=alice running" {
		t.Errorf("query = %q", gotQuery)
	}

	root = NewRoot()
	root.SetOut(io.Discard)
	root.SetArgs([]string{"sandbox", "list", "--api-url", srv.URL, "--api-key", "e2b_wrong"})
	if err := root.ExecuteContext(t.Context()); err == nil || !strings.Contains(err.Error(), "bad key") {
		t.Errorf("wrong key error = %v", err)
	}
}
