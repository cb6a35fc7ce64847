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

// A client that leaves a JavaScript cell printing in a loop interrupts it,
// and the interrupt often lands inside console.log, between node's write
// and its stream's bookkeeping. The stream then held every later write,
// the end marker included, so the run never ended: it was killed after
// 5 s and the context lost its state (about one round in two). Every
// round must keep the context and the next run's output.
func TestInterruptedPrintLoopKeepsTheContext(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		testenv.Skip(t, "node not installed (apt-get install nodejs)")
	}
	_, ts := newTestServer(t, Config{})
	execute(t, ts.URL, map[string]any{"code": "var kept = 'yes'", "language": "js"})
	for round := range 6 {
		abandonRun(t, ts.URL, map[string]any{"code": "let i = 0; while (true) console.log('spin', i++)", "language": "js"}, "spin")
		code := fmt.Sprintf("console.log('after %d'); kept", round)
		lines := executeOrHang(t, ts.URL, map[string]any{"code": code, "language": "js"}, "the run after the interrupt")
		want := fmt.Sprintf("after %d\n", round)
		if r := ofType(lines, "result"); stdout(lines) != want || len(r) != 1 || r[0].str("text") != "yes" {
			t.Fatalf("round %d: the run after the interrupt gave %v, want stdout %q and result yes", round, lines, want)
		}
	}
}
