package users

import (
	"encoding/base64"
	"errors"
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
