package envd

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestOfficialJSSDK runs the E2B JS SDK (tests/e2b-js/node_modules) against
// envd: the strongest check that the wire format is right.
func TestOfficialJSSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	module, _ := filepath.Abs("../../tests/e2b-js/node_modules/e2b/dist/index.mjs")
	if _, serr := os.Stat(module); err != nil || serr != nil {
		if os.Getenv("SBX_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("needs node and the SDK (cd tests/e2b-js && npm ci): node %v, sdk %v", err, serr)
		}
		t.Skip("needs node and the E2B SDK: cd tests/e2b-js && npm ci")
	}
	t.Parallel()
	e := newEnv(t, nil)
	cmd := exec.CommandContext(t.Context(), node, "testdata/sdk_smoke.mjs")
	cmd.Env = append(os.Environ(), "E2B_MODULE="+module, "SANDBOX_URL="+e.url, "WORK_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("SDK smoke test: %v\n%s", err, out)
	}
}
