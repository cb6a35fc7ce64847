package cli

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestSandboxPauseResume runs the real command tree against an HTTP server
// that answers like the sbx API: it records what each command sent.
func TestSandboxPauseResume(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI())
		switch {
		case strings.HasSuffix(r.URL.Path, "/busy/pause"):
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"code":409,"message":"sandbox busy is already paused"}`)
		case strings.HasSuffix(r.URL.Path, "/pause"):
			w.WriteHeader(http.StatusNoContent)
		case strings.HasSuffix(r.URL.Path, "/connect"):
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"sandboxID":"abc","templateID":"base","envdVersion":"0.6.13"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"code":404,"message":"no route"}`)
		}
	}))
	defer srv.Close()
	tests := []struct {
		args    []string
		out     string
		request string
		errHas  string
	}{
		{[]string{"pause", "abc"}, "paused abc\n", "POST /sandboxes/abc/pause", ""},
		{[]string{"pause", "--disk", "abc"}, "paused to disk abc\n", "POST /sandboxes/abc/pause?tier=disk", ""},
		{[]string{"pause", "busy"}, "", "POST /sandboxes/busy/pause", "already paused"},
		{[]string{"resume", "--timeout", "90", "abc"}, "resumed abc\n", "POST /v2/sandboxes/abc/connect", ""},
		{[]string{"resume", "--timeout", "soon", "abc"}, "", "", "soon"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got = nil
			root := NewRoot()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(io.Discard)
			root.SetArgs(append([]string{"sandbox", "--api-url", srv.URL, "--api-key", "e2b_ab"}, tt.args...))
			err := root.ExecuteContext(t.Context())
			if tt.errHas == "" && err != nil || tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)) {
				t.Fatalf("error = %v; want one containing %q", err, tt.errHas)
			}
			if out.String() != tt.out {
				t.Errorf("output %q; want %q", out.String(), tt.out)
			}
			if tt.request != "" && (len(got) != 1 || got[0] != tt.request) {
				t.Errorf("requests %v; want [%s]", got, tt.request)
			}
		})
	}
}
