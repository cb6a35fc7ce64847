package envd

import (
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestStartOutputAndExitCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, map[string]string{"E2B_SANDBOX": "true", "E2B_SANDBOX_ID": "sbxtest1"})
	tests := []struct {
		name, script   string
		stdout, stderr string
		exitCode       float64 // JSON number; absent = 0
		exited         bool
		status         string
		hasError       bool
	}{
		{"echo", "echo hi", "hi\n", "", 0, true, "exit status 0", false},
		{"stderr and code", "echo out; echo err >&2; exit 3", "out\n", "err\n", 3, true, "exit status 3", true},
		{"killed by signal", "kill -9 $$", "", "", -1, false, "signal: killed", true},
		{"sandbox env", "echo $E2B_SANDBOX $E2B_SANDBOX_ID", "true sbxtest1\n", "", 0, true, "exit status 0", false},
		{"no stdin", "cat; echo done", "done\n", "", 0, true, "exit status 0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := e.run(t, tt.script, nil)
			code, _ := r.end["exitCode"].(float64)
			exited, _ := r.end["exited"].(bool)
			_, hasErr := r.end["error"]
			if r.stdout != tt.stdout || r.stderr != tt.stderr || code != tt.exitCode || exited != tt.exited ||
				r.end["status"] != tt.status || hasErr != tt.hasError {
				t.Errorf("got stdout %q stderr %q end %v", r.stdout, r.stderr, r.end)
			}
			if r.trailer.raw != "{}" {
				t.Errorf("end of stream %s, want {}", r.trailer.raw)
			}
		})
	}
}

func TestStartEnvIsolationAndCwd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	if st := e.post(t, "/init", `{"envVars":{"GLOBAL":"g"}}`); st != 204 {
		t.Fatalf("/init status %d", st)
	}
	r := e.run(t, `echo "$GLOBAL $LOCAL"`, map[string]any{"envs": map[string]string{"LOCAL": "l"}})
	if r.stdout != "g l\n" {
		t.Errorf("with envs: %q", r.stdout)
	}
	r = e.run(t, `echo "$GLOBAL [$LOCAL]"`, nil)
	if r.stdout != "g []\n" {
		t.Errorf("per-process env leaked: %q", r.stdout)
	}
	dir := t.TempDir()
	r = e.run(t, "pwd", map[string]any{"cwd": dir})
	if r.stdout != dir+"\n" {
		t.Errorf("cwd %q, want %s", r.stdout, dir)
	}
	home, _ := os.UserHomeDir()
	r = e.run(t, `pwd; echo "$HOME $USER $LOGNAME"`, nil)
	if !strings.HasPrefix(r.stdout, home+"\n") {
		t.Errorf("default cwd %q, want home %s", r.stdout, home)
	}
}

func TestStartBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tests := []struct {
		name string
		req  map[string]any
		hdr  []string
		code string
	}{
		{"missing binary", map[string]any{"process": map[string]any{"cmd": "/no/such/binary"}}, nil, "invalid_argument"},
		{"empty cmd", map[string]any{"process": map[string]any{}}, nil, "invalid_argument"},
		{"bad cwd", map[string]any{"process": map[string]any{"cmd": "/bin/true", "cwd": "/no/such/dir"}}, nil, "invalid_argument"},
		{"unknown user", map[string]any{"process": map[string]any{"cmd": "/bin/true"}}, []string{"Authorization", basic("no-such-user-sbx")}, "unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := e.stream(t, "process.Process/Start", tt.req, tt.hdr...)
			m := s.next()
			errv, _ := m.data["error"].(map[string]any)
			if !m.end || errv["code"] != tt.code {
				t.Errorf("got %s, want end-of-stream error %s", m.raw, tt.code)
			}
		})
	}
}

func TestStdinSendInputAndCloseStdin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	s := e.stream(t, "process.Process/Start", map[string]any{
		"process": map[string]any{"cmd": "/bin/cat"}, "stdin": true,
	})
	pid := s.start()
	sel := map[string]any{"pid": pid}
	if st := e.call(t, "process.Process/SendInput", map[string]any{"process": sel, "input": map[string]any{"stdin": base64.StdEncoding.EncodeToString([]byte("hello\n"))}}, nil); st != 200 {
		t.Fatalf("SendInput status %d", st)
	}
	m := s.next()
	if kind, v := event(m); kind != "data" || b64(v["stdout"]) != "hello\n" {
		t.Fatalf("echoed %s", m.raw)
	}
	if st := e.call(t, "process.Process/CloseStdin", map[string]any{"process": sel}, nil); st != 200 {
		t.Fatalf("CloseStdin status %d", st)
	}
	r := s.collect()
	if r.end["status"] != "exit status 0" {
		t.Errorf("cat did not end after CloseStdin: %v", r.end)
	}
	var errBody map[string]string
	if st := e.call(t, "process.Process/SendInput", map[string]any{"process": sel, "input": map[string]any{"stdin": "eA=="}}, &errBody); st != 404 || errBody["code"] != "not_found" || errBody["message"] != fmt.Sprintf("process with pid %d not found", pid) {
		t.Errorf("SendInput to exited process: %d %v", st, errBody)
	}
}

func TestKillListAndConnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	s := e.stream(t, "process.Process/Start", map[string]any{
		"process": map[string]any{"cmd": "/bin/sh", "args": []string{"-c", "read x; echo got $x; sleep 600"}}, "stdin": true, "tag": "t1",
	})
	pid := s.start()
	sel := map[string]any{"pid": pid}

	var list struct {
		Processes []struct {
			PID    uint32 `json:"pid"`
			Tag    string `json:"tag"`
			Config struct{ Cmd string }
		} `json:"processes"`
	}
	e.call(t, "process.Process/List", map[string]any{}, &list)
	found := false
	for _, p := range list.Processes {
		found = found || (p.PID == pid && p.Tag == "t1" && p.Config.Cmd == "/bin/sh")
	}
	if !found {
		t.Fatalf("List %+v misses pid %d", list, pid)
	}

	// A second subscriber sees the same output as the Start stream.
	c := e.stream(t, "process.Process/Connect", map[string]any{"process": sel})
	if got := c.start(); got != pid {
		t.Fatalf("Connect start pid %d, want %d", got, pid)
	}
	e.call(t, "process.Process/SendInput", map[string]any{"process": sel, "input": map[string]any{"stdin": base64.StdEncoding.EncodeToString([]byte("x\n"))}}, nil)
	for _, st := range []*stream{s, c} {
		if kind, v := event(st.next()); kind != "data" || b64(v["stdout"]) != "got x\n" {
			t.Errorf("subscriber got %s %v", kind, v)
		}
	}
	if st := e.call(t, "process.Process/SendSignal", map[string]any{"process": sel, "signal": "SIGNAL_SIGKILL"}, nil); st != 200 {
		t.Fatalf("SendSignal status %d", st)
	}
	for _, st := range []*stream{s, c} {
		r := st.collect()
		if r.end["exitCode"] != float64(-1) || r.end["status"] != "signal: killed" {
			t.Errorf("end after kill: %v", r.end)
		}
	}
	// Exited processes replay start and end.
	r := e.stream(t, "process.Process/Connect", map[string]any{"process": map[string]any{"tag": "t1"}})
	if r.start() != pid {
		t.Error("replay start pid differs")
	}
	if res := r.collect(); res.end["status"] != "signal: killed" {
		t.Errorf("replayed end %v", res.end)
	}
	var errBody map[string]string
	if st := e.call(t, "process.Process/SendSignal", map[string]any{"process": map[string]any{"pid": 999999999}, "signal": "SIGNAL_SIGTERM"}, &errBody); st != 404 || errBody["message"] != "process with pid 999999999 not found" {
		t.Errorf("unknown pid: %d %v", st, errBody)
	}
	u := e.stream(t, "process.Process/Connect", map[string]any{"process": map[string]any{"pid": 999999999}})
	if m := u.next(); !m.end || !has(m.raw, "not_found") {
		t.Errorf("Connect to unknown pid: %s", m.raw)
	}
}

func TestStartTimeoutKillsProcess(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	s := e.stream(t, "process.Process/Start", map[string]any{
		"process": map[string]any{"cmd": "/bin/sleep", "args": []string{"600"}}, "stdin": false,
	}, "Connect-Timeout-Ms", "200")
	pid := s.start()
	for {
		m := s.next()
		if m.end {
			if kind, _ := event(m); kind == "" && !has(m.raw, "deadline_exceeded") && !has(m.raw, "{}") {
				t.Errorf("trailer %s", m.raw)
			}
			break
		}
	}
	waitFor(t, "the timed-out process to die", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || has(string(b), ") Z ")
	})
}

func TestKeepaliveEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	r := e.run(t, "sleep 1.5", nil, "Keepalive-Ping-Interval", "1")
	if r.keepalives < 1 {
		t.Errorf("no keepalive in a 1.5 s idle stream with a 1 s interval")
	}
}

func TestPTY(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	s := e.stream(t, "process.Process/Start", map[string]any{
		"process": map[string]any{"cmd": "/bin/sh", "args": []string{"-c", "stty size; read line; echo got:$line; stty size"}},
		"pty":     map[string]any{"size": map[string]any{"cols": 100, "rows": 30}},
	})
	pid := s.start()
	sel := map[string]any{"pid": pid}
	out := ""
	for !has(out, "30 100") {
		kind, v := event(s.next())
		if kind == "data" {
			out += b64(v["pty"])
		}
	}
	if st := e.call(t, "process.Process/Update", map[string]any{"process": sel, "pty": map[string]any{"size": map[string]any{"cols": 120, "rows": 40}}}, nil); st != 200 {
		t.Fatalf("Update status %d", st)
	}
	e.call(t, "process.Process/SendInput", map[string]any{"process": sel, "input": map[string]any{"pty": base64.StdEncoding.EncodeToString([]byte("abc\n"))}}, nil)
	r := s.collect()
	out += r.pty
	if !has(out, "got:abc") || !has(out, "40 120") {
		t.Errorf("pty output %q", out)
	}
	var errBody map[string]string
	if st := e.call(t, "process.Process/CloseStdin", map[string]any{"process": sel}, &errBody); st != 404 {
		t.Errorf("CloseStdin on exited pty process: %d %v", st, errBody)
	}
}

func TestStartAsOtherUser(t *testing.T) {
	addUser(t, "sbxenvdtest")
	e := newEnv(t, nil)
	r := e.run(t, `id -un; echo "$HOME $USER"; pwd; touch f; stat -c %U f`, nil, "Authorization", basic("sbxenvdtest"))
	want := "sbxenvdtest\n/home/sbxenvdtest sbxenvdtest\n/home/sbxenvdtest\nsbxenvdtest\n"
	if r.stdout != want {
		t.Errorf("stdout %q stderr %q, want %q", r.stdout, r.stderr, want)
	}
	// A PTY belongs to the user it runs as.
	s := e.stream(t, "process.Process/Start", map[string]any{
		"process": map[string]any{"cmd": "/bin/sh", "args": []string{"-c", "stat -c %U $(tty)"}},
		"pty":     map[string]any{"size": map[string]any{"cols": 80, "rows": 24}},
	}, "Authorization", basic("sbxenvdtest"))
	s.start()
	if out := s.collect().pty; strings.TrimSpace(out) != "sbxenvdtest" {
		t.Errorf("pty owner %q", out)
	}
	// The default user from /init applies without a header.
	e.post(t, "/init", `{"defaultUser":"sbxenvdtest","defaultWorkdir":"/tmp"}`)
	r = e.run(t, `id -un; pwd`, nil)
	if r.stdout != "sbxenvdtest\n/tmp\n" {
		t.Errorf("default user: %q", r.stdout)
	}
}

func TestLargeOutputIsComplete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	// 4 MiB through the pipe and the stream; nothing may be lost when the
	// process exits while output is still buffered.
	r := e.run(t, "head -c 4194304 /dev/zero | tr '\\0' 'x'", nil)
	if len(r.stdout) != 4<<20 || strings.Trim(r.stdout, "x") != "" {
		t.Errorf("got %d bytes of stdout, want %d", len(r.stdout), 4<<20)
	}
}

func TestBackgroundChildDoesNotHoldStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	// The sleep inherits stdout; the stream must still end when sh exits.
	r := e.run(t, "sleep 5 & echo $!", nil)
	child, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if err != nil || r.end["status"] != "exit status 0" {
		t.Fatalf("got %q %v", r.stdout, r.end)
	}
	// Only this test's own orphan is killed.
	_ = syscall.Kill(child, syscall.SIGKILL)
}

func TestStreamInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	s := e.stream(t, "process.Process/Start", map[string]any{"process": map[string]any{"cmd": "/bin/cat"}, "stdin": true})
	pid := s.start()
	var body []byte
	for _, m := range []string{
		fmt.Sprintf(`{"start":{"process":{"pid":%d}}}`, pid),
		`{"data":{"input":{"stdin":"` + base64.StdEncoding.EncodeToString([]byte("streamed\n")) + `"}}}`,
	} {
		body = append(body, 0, 0, 0, 0, byte(len(m)))
		body = append(body, m...)
	}
	resp, _ := e.do(t, "POST", "/process.Process/StreamInput", strings.NewReader(string(body)), "Content-Type", "application/connect+json")
	if resp.StatusCode != 200 {
		t.Fatalf("StreamInput %d", resp.StatusCode)
	}
	if kind, v := event(s.next()); kind != "data" || b64(v["stdout"]) != "streamed\n" {
		t.Errorf("got %s %v", kind, v)
	}
	e.call(t, "process.Process/CloseStdin", map[string]any{"process": map[string]any{"pid": pid}}, nil)
	s.collect()
}

func TestCommandSearchesProcessPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/sbx-hello", []byte("#!/bin/sh\necho from-path\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := e.stream(t, "process.Process/Start", map[string]any{"process": map[string]any{"cmd": "sbx-hello", "envs": map[string]string{"PATH": dir + ":/usr/bin:/bin"}}, "stdin": false})
	s.start()
	if r := s.collect(); r.stdout != "from-path\n" {
		t.Errorf("stdout %q end %v", r.stdout, r.end)
	}
}
