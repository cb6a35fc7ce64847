package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
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

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/testenv"
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
		{[]string{"--agent-key-fd", "2"}, config{}, true},
		{[]string{"--agent-key-fd", "3", "--token-file", "/t"}, config{port: 49983, runDir: "/run/e2b", keyFD: 3, tokenFile: "/t"}, false},
	}
	for _, tt := range tests {
		got, err := parseFlags(tt.args, io.Discard)
		if (err != nil) != tt.err || (err == nil && got != tt.want) {
			t.Errorf("parseFlags(%q) = %+v, %v", tt.args, got, err)
		}
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

// The agent key reaches envd --init in its environment, which it scrubs:
// it does not show it there, and a process of the same user (as root in
// a sandbox is to envd, without CAP_SYS_PTRACE) cannot open their environ,
// memory or descriptors. /init then needs a proof made with that key.
func TestAgentKeyHandOff(t *testing.T) {
	testenv.Require(t, testenv.Root) // envd and a reader run as another user
	bin := buildEnvd(t)
	key, err := agentauth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "envdkey")
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "envd.sock")
	// The test's temp dirs are root's alone: run a copy nobody can reach.
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "envd")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd := exec.Command(bin, "--init", "--socket", sock, "--port", "0", "--run-dir", "")
	cmd.Env = []string{"E2B_SANDBOX_ID=sbxkey", agentauth.EnvVar + "=" + key.Hex(), "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = nobody
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	initWith := func(k agentauth.Key) *http.Response {
		t.Helper()
		body := []byte(`{"accessToken":"tok"}`)
		nonce, _ := agentauth.NewNonce()
		req, _ := http.NewRequest("POST", "http://envd/init", bytes.NewReader(body))
		req.Header.Set(agentauth.HeaderID, "sbxkey")
		req.Header.Set(agentauth.HeaderNonce, hex.EncodeToString(nonce))
		req.Header.Set(agentauth.HeaderProof, hex.EncodeToString(agentauth.InitProof(k, "sbxkey", nonce, body, nil)))
		resp, err := client.Do(req)
		if err != nil {
			return nil
		}
		resp.Body.Close()
		if resp.StatusCode == 204 {
			if err := agentauth.Verify(resp.Header.Get(agentauth.HeaderProof), agentauth.ReplyProof(k, "sbxkey", nonce)); err != nil {
				t.Errorf("envd's answer does not prove the key: %v", err)
			}
		}
		return resp
	}
	other, _ := agentauth.NewKey()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp := initWith(other); resp != nil {
			if resp.StatusCode != 401 {
				t.Fatalf("/init proven with another key: %d, want 401", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("envd did not listen: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp := initWith(key); resp == nil || resp.StatusCode != 204 {
		t.Fatalf("/init proven with the key did not succeed: %v\n%s", resp, stderr.String())
	}

	// One process serves and is init: no second copy holds the key.
	initPid := cmd.Process.Pid
	if kids := childrenOf(initPid); len(kids) != 0 {
		t.Errorf("envd --init has children %v before starting any process; want none (one process)", kids)
	}
	for _, pid := range []int{initPid} {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(env, []byte(key.Hex())) {
			t.Errorf("pid %d shows the agent key in its environ", pid)
		}
		for _, f := range []string{"environ", "mem", "maps", "fd/0"} {
			p := fmt.Sprintf("/proc/%d/%s", pid, f)
			peek := exec.Command("/bin/sh", "-c", `exec 3<"$0" && echo OPENED`, p)
			peek.SysProcAttr = nobody
			if out, _ := peek.CombinedOutput(); strings.Contains(string(out), "OPENED") {
				t.Errorf("a process of envd's own user opens %s: envd is dumpable", p)
			}
		}
	}
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	var out []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			p, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(f, "/proc/"), "/stat"))
			out = append(out, p)
		}
	}
	return out
}

func TestUTCTime(t *testing.T) {
	var b strings.Builder
	log := slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: utcTime}))
	log.Info("hi", "at", time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", 3600)))
	line := b.String()
	ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
	got, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil || got.Location() != time.UTC {
		t.Errorf("time %q is not in UTC (%v): %s", ts, err, line)
	}
	if !strings.Contains(line, "at=2026-01-02T03:04:05.000+01:00") {
		t.Errorf("an attribute's time was changed too: %s", line)
	}
}
