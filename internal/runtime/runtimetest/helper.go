package runtimetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// udsServer is a tiny static program run inside sandboxes: it listens on a
// unix socket (the path in its first argument) and greets every client, the
// way envd serves the host over <data-dir>/sandboxes/<id>/run/envd.sock.
const udsServer = `package main

import (
	"net"
	"os"
)

func main() {
	ln, err := net.Listen("unix", os.Args[1])
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		c.Write([]byte("pong from " + os.Getenv("HOSTNAME") + "\n"))
		c.Close()
	}
}
`

// buildUDSServer compiles udsServer into a directory of its own (to be
// bind-mounted read-only) and returns that directory.
func buildUDSServer(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		Skip(t, "the go toolchain is needed to build the in-sandbox test server")
	}
	src := t.TempDir()
	for name, content := range map[string]string{
		"go.mod":  "module udsserver\n\ngo 1.22\n",
		"main.go": udsServer,
	} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	cmd := exec.Command(goBin, "build", "-o", filepath.Join(out, "uds-server"), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the in-sandbox test server: %v\n%s", err, b)
	}
	return out
}
