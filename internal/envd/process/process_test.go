package process

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/sbxdev/sbx/internal/envd/users"
)

func TestEnviron(t *testing.T) {
	t.Parallel()
	u := &users.User{Name: "user", Home: "/home/user"}
	got := environ(u, map[string]string{"A": "sandbox", "PATH": "/sbx/bin", "HOME": "/override"}, map[string]string{"A": "process"})
	want := []string{"A=process", "HOME=/override", "LOGNAME=user", "PATH=/sbx/bin", "USER=user"}
	if !slices.Equal(got, want) {
		t.Errorf("environ = %q, want %q", got, want)
	}
}

func TestLookPath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file string
		env  []string
		want string
		err  bool
	}{
		{"tool", []string{"PATH=/nonexistent:" + dir}, filepath.Join(dir, "tool"), false},
		{"data", []string{"PATH=" + dir}, "", true},
		{"tool", nil, "", true}, // default PATH does not contain dir
		{"sh", nil, "", false},  // some directory of the default PATH
	}
	for _, tt := range tests {
		got, err := lookPath(tt.file, tt.env)
		if tt.file == "sh" {
			if err != nil || filepath.Base(got) != "sh" {
				t.Errorf("lookPath(sh) = %q, %v", got, err)
			}
			continue
		}
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("lookPath(%q, %q) = %q, %v", tt.file, tt.env, got, err)
		}
	}
}

func TestSignalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Signal
		err  bool
	}{
		{`"SIGNAL_SIGKILL"`, Signal(syscall.SIGKILL), false},
		{`"SIGNAL_SIGTERM"`, Signal(syscall.SIGTERM), false},
		{`15`, Signal(syscall.SIGTERM), false},
		{`"SIGNAL_SIGHUP"`, 0, true},
		{`true`, 0, true},
	}
	for _, tt := range tests {
		var s Signal
		err := json.Unmarshal([]byte(tt.in), &s)
		if s != tt.want || (err != nil) != tt.err {
			t.Errorf("unmarshal %s = %d, %v", tt.in, s, err)
		}
	}
}

func TestEventJSON(t *testing.T) {
	t.Parallel()
	// ProtoJSON: defaults omitted, bytes as base64, oneof by field name.
	tests := []struct {
		ev   Event
		want string
	}{
		{Event{Start: &StartEvent{PID: 7}}, `{"start":{"pid":7}}`},
		{Event{Data: &DataEvent{Stdout: []byte("hi\n")}}, `{"data":{"stdout":"aGkK"}}`},
		{Event{End: &EndEvent{Exited: true, Status: "exit status 0"}}, `{"end":{"exited":true,"status":"exit status 0"}}`},
		{Event{End: &EndEvent{ExitCode: -1, Status: "signal: killed"}}, `{"end":{"exitCode":-1,"status":"signal: killed"}}`},
		{Event{Keepalive: &struct{}{}}, `{"keepalive":{}}`},
	}
	for _, tt := range tests {
		b, _ := json.Marshal(tt.ev)
		if string(b) != tt.want {
			t.Errorf("got %s, want %s", b, tt.want)
		}
	}
}
