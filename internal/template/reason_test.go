package template

import (
	"archive/tar"
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/hostfs"
)

// deepTar is a build context whose directory d nests past what a COPY
// copies (hostfs.MaxCopyDepth), so the real executor fails staging it with
// an error that names the upload's host directory.
func deepTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	name := ""
	for range hostfs.MaxCopyDepth + 2 {
		name += "d/"
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestFailedBuildReasonHidesHostPaths runs builds that fail in the real
// executor (no sandbox needed: they fail before one starts) and reads them
// through the HTTP API as a client does: what went wrong and what to do,
// never a host path (the upload, data or scratch directory).
func TestFailedBuildReasonHidesHostPaths(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	e := setup(t, filepath.Join(t.TempDir(), "sbx.db"), data, 0, func(s *Service) {
		s.exec = builder.NewExecutor(builder.Config{DataDir: data, SandboxDir: filepath.Join(data, "sandboxes")},
			slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil)
	})
	for _, tc := range []struct {
		name string
		hash string
		tar  []byte
		src  string
		want []string // in the reason
	}{
		{"tree too deep", strings.Repeat("b", 64), deepTar(t), "d", []string{"step 1 (COPY d /app) failed", "nests deeper than", "flatten it"}},
		{"missing source", strings.Repeat("c", 64), tarOf(t, map[string]string{"app/main.py": "x"}), "nothing-here.txt",
			[]string{"step 1 (COPY nothing-here.txt /app) failed", `"nothing-here.txt" matches no file`, "check the path"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r registered
			if code := e.call(t, "team1", "POST", "/v3/templates", map[string]any{"name": "reason-" + strings.ReplaceAll(tc.name, " ", "-")}, &r); code != http.StatusAccepted {
				t.Fatalf("POST /v3/templates: HTTP %d", code)
			}
			if code := e.upload(t, "team1", r.TemplateID, tc.hash, tc.tar); code != http.StatusOK {
				t.Fatalf("upload: HTTP %d", code)
			}
			steps := []builder.Step{{Type: "COPY", Args: []string{tc.src, "/app"}, FilesHash: tc.hash}}
			if code := e.call(t, "team1", "POST", "/v2/templates/"+r.TemplateID+"/builds/"+r.BuildID,
				map[string]any{"fromTemplate": "base", "steps": steps}, nil); code != http.StatusAccepted {
				t.Fatalf("start: HTTP %d", code)
			}
			st, logs := e.waitBuild(t, "team1", r)
			if st.Status != StatusError || st.Reason == nil {
				t.Fatalf("status %+v, want an error with a reason", st)
			}
			read := st.Reason.Message + "\n" + strings.Join(logs, "\n")
			for _, host := range []string{data, "/tmp/", "uploads"} {
				if strings.Contains(read, host) {
					t.Errorf("the client reads host path %q:\n%s", host, read)
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(st.Reason.Message, w) {
					t.Errorf("reason %q lacks %q", st.Reason.Message, w)
				}
			}
		})
	}
}
