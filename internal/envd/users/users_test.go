package users

import (
	"encoding/base64"
	"errors"
	"os"
	"testing"
)

func TestResolve(t *testing.T) {
	t.Parallel()
	u := &User{Name: "user", Home: "/home/user"}
	tests := []struct{ in, want string }{
		{"~", "/home/user"},
		{"~/a/b", "/home/user/a/b"},
		{"a/../b", "/home/user/b"},
		{"/etc//passwd", "/etc/passwd"},
		{"/../..", "/"},
		{"", "/home/user"},
	}
	for _, tt := range tests {
		if got := u.Resolve(tt.in); got != tt.want {
			t.Errorf("Resolve(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFromBasicAuth(t *testing.T) {
	t.Parallel()
	enc := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		header, name string
		ok, err      bool
	}{
		{"", "", false, false},
		{enc("user:"), "user", true, false},
		{enc("root:ignored"), "root", true, false},
		{enc(":"), "", false, false},
		{"Bearer x", "", false, true},
		{"Basic !!!", "", false, true},
	}
	for _, tt := range tests {
		name, ok, err := FromBasicAuth(tt.header)
		if name != tt.name || ok != tt.ok || (err != nil) != tt.err {
			t.Errorf("FromBasicAuth(%q) = %q, %v, %v", tt.header, name, ok, err)
		}
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	u, err := Lookup("root")
	if err != nil {
		t.Fatal(err)
	}
	if u.UID != 0 || u.Home == "" || len(u.Groups) == 0 {
		t.Errorf("root = %+v", u)
	}
	if _, err := Lookup("no-such-user-sbx"); !errors.Is(err, ErrUnknown) {
		t.Errorf("unknown user error = %v, want ErrUnknown", err)
	}
}

// TestLookupCache: answers are reused until /etc/passwd or /etc/group
// changes (here: stand-ins for them).
func TestLookupCache(t *testing.T) {
	dir := t.TempDir()
	files := [2]string{dir + "/passwd", dir + "/group"}
	for _, f := range files {
		if err := os.WriteFile(f, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	oldFiles, oldLookup := stampFiles, lookupUncached
	t.Cleanup(func() { stampFiles, lookupUncached = oldFiles, oldLookup })
	stampFiles = files
	calls := 0
	lookupUncached = func(name string) (*User, error) {
		calls++
		if name == "nobody-here" {
			return nil, ErrUnknown
		}
		return &User{Name: name, UID: uint32(calls), Home: "/home/" + name}, nil
	}
	steps := []struct {
		do        func()
		name      string
		wantCalls int
	}{
		{nil, "user", 1},
		{nil, "user", 1},
		{nil, "root", 2},
		{nil, "nobody-here", 3},
		{nil, "nobody-here", 4}, // failures are not remembered
		{func() { appendTo(t, files[1], "g\n") }, "user", 5},
		{nil, "user", 5},
		{func() { replace(t, files[0]) }, "user", 6},
		{func() { os.Remove(files[0]) }, "user", 7},
		{nil, "user", 8},
	}
	for i, s := range steps {
		if s.do != nil {
			s.do()
		}
		u, err := Lookup(s.name)
		if calls != s.wantCalls {
			t.Fatalf("step %d (%s): %d uncached lookups, want %d", i, s.name, calls, s.wantCalls)
		}
		if err == nil {
			u.Name = "changed" // a caller's copy, not the cache's
		}
	}
	if u, _ := Lookup("root"); u.Name != "root" {
		t.Errorf("the cache handed out a shared User: %+v", u)
	}
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// replace puts a new file of the same size in place, as useradd does.
func replace(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".new", b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}
