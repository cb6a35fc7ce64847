package codeinterp

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
)

// A JavaScript cell may close fd 3, where the node driver sends its
// replies, and open a file that gets the number: then the reply went into
// the cell's file and the run never ended until the client left. Node
// cannot move a descriptor out of the way (no dup), so the driver checks
// that fd 3, and fd 1 and 2 where the end markers go, are still its pipes
// at the end of each run; when one is not, it ends with a message on
// stderr, and the run ends with an error, the context restarting as after
// any death. (A closed stdout hung the run the same way.)
func TestNodeDriverSurvivesACellClosingItsReplies(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		testenv.Skip(t, "node not installed (apt-get install nodejs)")
	}
	for _, tc := range []struct{ name, code, stdout, why string }{
		{"close 3, open a file", "const fs = require('fs'); fs.closeSync(3); fs.openSync(P, 'w'); console.log('after')", "after\n", "reply descriptor (3)"},
		{"a file over fd 3 in an async cell", "const fsp = await import('fs'); fsp.closeSync(3); fsp.openSync(P, 'a'); console.log('after')", "after\n", "reply descriptor (3)"},
		{"close stdout", "require('fs').closeSync(1); console.log('lost')", "", "stdout (1)"},
		{"a file over stdout", "const fs = require('fs'); fs.closeSync(1); fs.openSync(P, 'w'); console.log('in the file')", "", "stdout (1)"},
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
			if b, _ := os.ReadFile(file); len(b) > 0 && string(b) != "in the file\n" {
				t.Errorf("the driver wrote into the cell's file: %q", b)
			}
			if got := stdout(lines); got != tc.stdout {
				t.Errorf("stdout %q, want the cell's %q", got, tc.stdout)
			}
			checkEndedSaying(t, lines, "closed or replaced the code interpreter's "+tc.why)
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

// A node driver whose pipes close (the server's ends, here; a crashed
// server kills it with the parent-death signal) stayed alive for good
// while a cell's timer held its event loop, and a later uncaught error
// spun it at full CPU: reporting the error failed asynchronously, which
// was another uncaught error. The tenant's sandbox paid. It must end.
func TestNodeDriverEndsWhenItsPipesAreGone(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		testenv.Skip(t, "node not installed (apt-get install nodejs)")
	}
	for _, tc := range []struct {
		name, code string
		keepStdin  bool // the server's end of stdin stays open: only the reports fail
	}{
		{"a timer keeps the event loop", "setInterval(() => {}, 1000); 1", false},
		{"an uncaught error with nowhere to go", "setTimeout(() => { throw new Error('late') }, 300); setInterval(() => {}, 1000); 1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("node", "driver/node_kernel.js")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var ours, theirs []*os.File // read ends of stdout, stderr, replies; write ends
			for range 3 {
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				ours, theirs = append(ours, r), append(theirs, w)
			}
			cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = theirs[0], theirs[1], theirs[2:]
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
			for _, w := range theirs {
				w.Close()
			}
			req, _ := json.Marshal(map[string]any{"id": "a", "code": tc.code, "marker": "M"})
			if _, err := stdin.Write(append(req, '\n')); err != nil {
				t.Fatal(err)
			}
			// The reply, then the end markers: the run is over.
			for i, end := range []byte{'\n', 0x1e, 0x1e} {
				if _, err := bufio.NewReader(ours[(i+2)%3]).ReadString(end); err != nil {
					t.Fatalf("the cell did not end: %v", err)
				}
			}
			for _, r := range ours {
				r.Close()
			}
			if !tc.keepStdin {
				stdin.Close()
			}
			ended := make(chan error, 1)
			go func() { ended <- cmd.Wait() }()
			select {
			case err := <-ended:
				t.Logf("the driver ended: %v", err)
			case <-time.After(20 * time.Second): // a hang, not a slow exit
				t.Fatal("the driver outlived its server's pipes")
			}
		})
	}
}
