package ops

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/tests/harness"
)

// TestMakeRun runs `make run` as a new user would, with SBX_FLAGS turning
// TLS on, and checks it says "sbx is up" only once the base template is
// ready, with the https URL and the trust lines of `sbx env`.
func TestMakeRun(t *testing.T) {
	testenv.Require(t, append(testenv.Integration, testenv.Binary("curl", "apt-get install curl"))...)
	root := harness.RepoRoot(t)
	addr := harness.FreeAddr(t)
	dataDir, err := os.MkdirTemp("", "sbx-makerun-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { harness.CleanupDataDir(t, dataDir) })
	certFile, keyFile := filepath.Join(t.TempDir(), "tls.crt"), filepath.Join(t.TempDir(), "tls.key")
	writeSelfSigned(t, certFile, keyFile)

	binDir := t.TempDir()
	cmd := exec.Command("make", "--no-print-directory", "run", "BIN="+binDir, "LISTEN="+addr, "DATA_DIR="+dataDir,
		"SBX_FLAGS=--tls-cert "+certFile+" --tls-key "+keyFile+" --pool base=0 --pool code-interpreter=0")
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout // the server's log goes to the same pipe
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		// run.sh stops sbx serve on TERM; make and the script share the group.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})

	lines := make(chan string)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		cmd.Wait()
	}()
	var seen []string
	up := false
	// As long as the harness waits for a template: on a fresh machine the
	// first start builds the base root filesystem.
	deadline := time.After(20 * time.Minute)
	for !up || !strings.Contains(strings.Join(seen, "\n"), "SSL_CERT_FILE=") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("make run ended before it was up:\n%s", strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			if strings.HasPrefix(l, "sbx is up (https://"+addr+"; base template ready)") {
				up = true
				// By then the base template must really be ready.
				env := runEnv(t, binDir, dataDir)
				status := exec.Command(filepath.Join(binDir, "sbx"), "template", "list")
				status.Env = append(os.Environ(), env...)
				b, err := status.CombinedOutput()
				if err != nil || !strings.Contains(string(b), "ready") {
					t.Fatalf("make run said it was up, but template list says: %v\n%s", err, b)
				}
			}
		case <-deadline:
			t.Fatalf("make run not up within 20 minutes:\n%s", strings.Join(seen, "\n"))
		}
	}
	all := strings.Join(seen, "\n")
	for _, want := range []string{"export E2B_API_URL=https://" + addr, "export NODE_EXTRA_CA_CERTS=" + dataDir} {
		if !strings.Contains(all, want) {
			t.Errorf("make run printed no %q:\n%s", want, all)
		}
	}
	go func() {
		for range lines { // keep draining until make exits
		}
	}()
}

// runEnv is `sbx env` as KEY=VALUE pairs.
func runEnv(t *testing.T, binDir, dataDir string) []string {
	t.Helper()
	var env []string
	for _, l := range strings.Split(run(t, "", filepath.Join(binDir, "sbx"), "env", "--data-dir", dataDir), "\n") {
		if kv, ok := strings.CutPrefix(l, "export "); ok {
			env = append(env, kv)
		}
	}
	return env
}
