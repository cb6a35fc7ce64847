package codeinterp

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
)

// A JavaScript cell may close fd 3, where the node driver sends its
// replies, and open a file that gets the number: then the reply went into
// the cell's file and the run never ended until the client left. Node
// cannot move a descriptor out of the way (no dup), so the driver checks
// that fd 3 is still its pipe before each reply; when it is not, it ends
// with a message on stderr, and the run ends with an error, the context
// restarting as after any death.
func TestNodeDriverSurvivesACellClosingItsReplies(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		testenv.Skip(t, "node not installed (apt-get install nodejs)")
	}
	for _, tc := range []struct{ name, code string }{
		{"close 3, open a file", "const fs = require('fs'); fs.closeSync(3); fs.openSync(P, 'w'); console.log('after')"},
		{"a file over fd 3 in an async cell", "const fsp = await import('fs'); fsp.closeSync(3); fsp.openSync(P, 'a'); console.log('after')"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ts := newTestServer(t, Config{})
			file := filepath.Join(t.TempDir(), "cell-file")
			if err := os.WriteFile(file, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			execute(t, ts.URL, map[string]any{"code": fmt.Sprintf("var state = 1; var P = %q", file), "language": "js"})
			lines, err := executeWithin(t, ts.URL, map[string]any{"code": tc.code, "language": "js"}, 20*time.Second)
			if err != nil {
				t.Fatalf("the run never ended: %v; got %v", err, lines)
			}
			if b, _ := os.ReadFile(file); len(b) > 0 {
				t.Errorf("the driver wrote into the cell's file: %q", b)
			}
			if got := stdout(lines); got != "after\n" {
				t.Errorf("stdout %q, want the cell's %q", got, "after\n")
			}
			checkEndedSaying(t, lines, "closed or replaced")
			next := execute(t, ts.URL, map[string]any{"code": "typeof state", "language": "js"})
			if r := ofType(next, "result"); len(r) != 1 || r[0].str("text") != "undefined" {
				t.Fatalf("run after the restart: %v", next)
			}
		})
	}
}
