package codeinterp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A bash cell that moves its own output (`exec >log 2>&1`, as scripts do
// to keep a log, or closes it) moved the shell's: the run's end markers
// went into the file, or nowhere, and the run never ended until the client
// gave up, then the context was killed. Each run's end now gives the shell
// back its output, so the cell's redirection lasts for the cell, and the
// context, its variables and the next run's output survive.
func TestBashCellRedirectingItsOutput(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	for _, tc := range []struct {
		name, code, stdout, file string
	}{
		{"output to a log", "exec >" + log + " 2>&1; echo a; echo b >&2", "", "a\nb\n"},
		{"stdout closed", "exec 1>&-; echo lost", "", ""},
		{"stderr closed", "exec 2>&-; echo x >&2; echo shown", "shown\n", ""},
		{"stdin from a file", "exec 0<" + log + "; echo read", "read\n", ""}, // bash's own care; kept working
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(log)
			_, ts := newTestServer(t, Config{})
			execute(t, ts.URL, map[string]any{"code": "KEPT=yes; touch " + log, "language": "bash"})
			lines, err := executeWithin(t, ts.URL, map[string]any{"code": tc.code, "language": "bash"}, 20*time.Second)
			if err != nil {
				t.Fatalf("the run never ended: %v; got %v", err, lines)
			}
			if got := stdout(lines); got != tc.stdout {
				t.Errorf("stdout %q, want %q", got, tc.stdout)
			}
			if b, _ := os.ReadFile(log); tc.file != "" && string(b) != tc.file || strings.Contains(string(b), "SBX") {
				t.Errorf("the log holds %q, want the cell's %q and no marker", b, tc.file)
			}
			next, err := executeWithin(t, ts.URL, map[string]any{"code": "echo next $KEPT; echo err >&2", "language": "bash"}, 20*time.Second)
			if err != nil {
				t.Fatalf("the next run never ended: %v; got %v", err, next)
			}
			if got, e := stdout(next), ofType(next, "stderr"); got != "next yes\n" || len(e) != 1 || e[0].str("text") != "err\n" {
				t.Fatalf("the next run gave %v, want stdout %q and stderr %q: the context lost its state or its output", next, "next yes\n", "err\n")
			}
		})
	}
}
