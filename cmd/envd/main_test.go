package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want config
		err  bool
	}{
		{nil, config{port: 49983, runDir: "/run/e2b"}, false},
		{[]string{"--init", "--socket", "/s", "--port", "0", "--run-dir", ""}, config{init: true, socket: "/s"}, false},
		{[]string{"--version", "--port", "0"}, config{version: true, runDir: "/run/e2b"}, false},
		{[]string{"--port", "0"}, config{}, true},
		{[]string{"--port", "70000"}, config{}, true},
		{[]string{"extra"}, config{}, true},
		{[]string{"--bogus"}, config{}, true},
	}
	for _, tt := range tests {
		got, err := parseFlags(tt.args, io.Discard)
		if (err != nil) != tt.err || (err == nil && got != tt.want) {
			t.Errorf("parseFlags(%q) = %+v, %v", tt.args, got, err)
		}
	}
}

func TestWithoutInit(t *testing.T) {
	t.Parallel()
	got := withoutInit([]string{"--init", "--socket", "/s", "-init", "--port", "1"})
	if strings.Join(got, " ") != "--socket /s --port 1" {
		t.Errorf("withoutInit = %q", got)
	}
}

// buildEnvd compiles the static binary the way the Makefile does.
func buildEnvd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "envd")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build envd: %v\n%s", err, out)
	}
	return bin
}

func TestInitModeServesReapsAndStops(t *testing.T) {
	bin := buildEnvd(t)
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "0.6.13" {
		t.Fatalf("--version: %q %v", out, err)
	}

	dir, _ := os.MkdirTemp("", "envdinit")
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run", "envd.sock")
	cmd := exec.Command(bin, "--init", "--socket", sock, "--port", "0", "--run-dir", filepath.Join(dir, "e2b"))
	cmd.Env = []string{"E2B_SANDBOX=true", "E2B_SANDBOX_ID=sbxinit", "PATH=/usr/bin:/bin"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("http://envd/health")
		if err == nil && resp.StatusCode == 204 {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("envd did not become healthy: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A background child outlives its shell; as subreaper, init must reap it.
	msg, _ := json.Marshal(map[string]any{"process": map[string]any{"cmd": "/bin/sh", "args": []string{"-c", "sleep 0.2 & echo $!"}}, "stdin": false})
	env := append([]byte{0, 0, 0, 0, 0}, msg...)
	binary.BigEndian.PutUint32(env[1:], uint32(len(msg)))
	req, _ := http.NewRequest("POST", "http://envd/process.Process/Start", bytes.NewReader(env))
	req.Header.Set("Content-Type", "application/connect+json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var orphan int
	for i := 0; i+5 <= len(body); {
		n := int(binary.BigEndian.Uint32(body[i+1:]))
		var m struct {
			Event struct {
				Data struct{ Stdout []byte }
			}
		}
		_ = json.Unmarshal(body[i+5:i+5+n], &m)
		if s := strings.TrimSpace(string(m.Event.Data.Stdout)); s != "" {
			orphan, _ = strconv.Atoi(s)
		}
		i += 5 + n
	}
	if orphan == 0 {
		t.Fatalf("no orphan pid in %q", body)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", orphan)); os.IsNotExist(err) {
			break // reaped: not even a zombie is left
		}
		if time.Now().After(deadline) {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", orphan))
			t.Fatalf("orphan %d not reaped: %s", orphan, st)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if id, err := os.ReadFile(filepath.Join(dir, "e2b", ".E2B_SANDBOX_ID")); err != nil || string(id) != "sbxinit" {
		t.Errorf("identity file: %q %v", id, err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if err != nil {
		t.Errorf("envd --init exit after SIGTERM: %v\n%s", err, stderr.String())
	}
}
