package envd

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
)

// TestOfficialJSSDK runs the E2B JS SDK (tests/e2b-js/node_modules) against
// envd: the strongest check that the wire format is right.
func TestOfficialJSSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	module, _ := filepath.Abs("../../tests/e2b-js/node_modules/e2b/dist/index.mjs")
	if _, serr := os.Stat(module); err != nil || serr != nil {
		testenv.Skip(t, "needs node and the E2B SDK (cd tests/e2b-js && npm ci): node %v, sdk %v", err, serr)
	}
	t.Parallel()
	e := newEnv(t, nil)
	// As root, run the SDK's commands as nobody: bash -l would source the
	// host root's dotfiles (here pyenv's rehash, which a command the test
	// kills can leave holding its lock, stalling every later login shell
	// for a minute). The test is about the wire, not the host's profile.
	work, err := os.MkdirTemp("", "envd-sdk-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	if err := os.Chmod(work, 0o777); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		body := `{"defaultUser":"nobody","defaultWorkdir":"` + work + `","timestamp":"` + time.Now().UTC().Format(time.RFC3339Nano) + `"}`
		if code := e.post(t, "/init", body); code != http.StatusNoContent {
			t.Fatalf("/init with defaultUser nobody: status %d", code)
		}
	}
	cmd := exec.CommandContext(t.Context(), node, "testdata/sdk_smoke.mjs")
	cmd.Env = append(os.Environ(), "E2B_MODULE="+module, "SANDBOX_URL="+e.url, "WORK_DIR="+work)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("SDK smoke test: %v\n%s", err, out)
	}
}
