package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/tests/harness"
)

// The sbx CLI drives secrets, volumes and network policies end to end:
// a secret piped in reaches a sandbox's env, a file put into a volume is
// read in a sandbox that mounts it, and a policy is replaced live.
func TestCLISecretsVolumesNetwork(t *testing.T) {
	s := harness.StartServer(t)
	env := append(os.Environ(), "E2B_API_URL="+s.URL, "E2B_SANDBOX_URL="+s.URL, "E2B_API_KEY="+s.APIKey)
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), s.Bin, args...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sbx %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("s3cret-value\n", "secret", "create", "cli-token")
	if out := run("", "secret", "list", "--json"); !strings.Contains(out, `"cli-token"`) || strings.Contains(out, "s3cret") {
		t.Errorf("secret list: %s", out)
	}
	run("", "volume", "create", "cli-data")
	run("from the cli\n", "volume", "put", "cli-data", "/in/hello.txt")
	if out := run("", "volume", "ls", "cli-data", "/", "--depth", "2"); !strings.Contains(out, "/in/hello.txt") {
		t.Errorf("volume ls: %s", out)
	}
	id := run("", "sandbox", "create", "--env", "TOKEN=${e2b.secrets.cli-token}", "--volume", "cli-data:/mnt/data",
		"--deny-out", "0.0.0.0/0", "--allow-out", "1.1.1.1")
	defer run("", "sandbox", "kill", id)
	if out := run("", "sandbox", "exec", id, "--", "sh", "-c", `echo "$TOKEN"; cat /mnt/data/in/hello.txt; echo out > /mnt/data/out.txt`); out != "s3cret-value\nfrom the cli" {
		t.Errorf("in the sandbox: %q", out)
	}
	if out := run("", "volume", "cat", "cli-data", "/out.txt"); out != "out" {
		t.Errorf("volume cat: %q", out)
	}
	run("", "sandbox", "network", id, "--no-internet")
	if r := s.Raw(t, "GET", "/sandboxes/"+id, "", map[string]string{"X-API-Key": s.APIKey}); !strings.Contains(r.Body, `"denyOut":["0.0.0.0/0"]`) {
		t.Errorf("sandbox after network update: %s", r.Body)
	}
	run("", "secret", "delete", "cli-token")
	run("", "volume", "delete", "cli-data")
	if out := run("", "volume", "list", "--json"); out != "[]" {
		t.Errorf("volume list after delete: %s", out)
	}
}
