package hostfs

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// plant builds a directory the way a hostile sandbox would leave it, next
// to a "host" directory that must stay out of reach.
func plant(t *testing.T) (dir, host string) {
	t.Helper()
	root := t.TempDir()
	dir, host = filepath.Join(root, "run"), filepath.Join(root, "host")
	for _, d := range []string{dir, host, filepath.Join(dir, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(host, "secret"), []byte("host secret"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "ok"), []byte("fine"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "sub", "ok"), []byte("nested"), 0o644))
	must(os.Symlink(filepath.Join(host, "secret"), filepath.Join(dir, "abs-link")))
	must(os.Symlink("../host/secret", filepath.Join(dir, "rel-link")))
	must(os.Symlink(host, filepath.Join(dir, "dir-link")))
	must(os.Symlink("/proc/self/root/etc/hostname", filepath.Join(dir, "magic")))
	must(syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	return dir, host
}

func TestReadRefusesEverythingButBeneathFiles(t *testing.T) {
	t.Parallel()
	dir, _ := plant(t)
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, tt := range []struct {
		name string
		want string // content, "" = must fail
	}{
		{"ok", "fine"},
		{"sub/ok", "nested"},
		{"abs-link", ""},
		{"rel-link", ""},
		{"dir-link/secret", ""},
		{"../host/secret", ""},
		{"magic", ""},
		{"fifo", ""}, // and must not block
		{"sub", ""},
		{"missing", ""},
	} {
		b, err := d.ReadFile(tt.name, 1<<10)
		if tt.want == "" {
			if err == nil {
				t.Errorf("ReadFile(%q) = %q, want an error", tt.name, b)
			}
			continue
		}
		if err != nil || string(b) != tt.want {
			t.Errorf("ReadFile(%q) = %q, %v; want %q", tt.name, b, err, tt.want)
		}
	}
	if _, err := d.ReadFile("ok", 3); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFile over the cap: err = %v, want ErrTooLarge", err)
	}
}

func TestWriteReplacesLinksInsteadOfFollowing(t *testing.T) {
	t.Parallel()
	dir, host := plant(t)
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, name := range []string{"abs-link", "rel-link", "fifo", "ok"} {
		if err := d.WriteFile(name, []byte("token"), 0o600); err != nil {
			t.Fatalf("WriteFile(%q): %v", name, err)
		}
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s after WriteFile: %v %v, want a regular 0600 file", name, fi.Mode(), err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(host, "secret")); string(b) != "host secret" {
		t.Fatalf("a write through a planted link changed the host file: %q", b)
	}
	if err := d.WriteFile("dir-link/x", []byte("x"), 0o600); err == nil {
		t.Error("WriteFile through a symlinked directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(host, "x")); err == nil {
		t.Error("WriteFile through a symlinked directory created a host file")
	}
}

func TestDialUnixOnlyReachesSocketsBeneath(t *testing.T) {
	t.Parallel()
	dir, host := plant(t)
	hostSock := filepath.Join(host, "host.sock")
	ln, err := net.Listen("unix", hostSock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	own, err := net.Listen("unix", filepath.Join(dir, "own.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	go func() {
		for {
			c, err := own.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("own"))
			c.Close()
		}
	}()
	if err := os.Symlink(hostSock, filepath.Join(dir, "planted.sock")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := DialUnix(ctx, dir, "own.sock")
	if err != nil {
		t.Fatalf("dial own socket: %v", err)
	}
	b := make([]byte, 3)
	if _, err := c.Read(b); err != nil || string(b) != "own" {
		t.Errorf("read from own socket: %q %v", b, err)
	}
	c.Close()
	for _, name := range []string{"planted.sock", "dir-link/host.sock", "ok", "fifo"} {
		if c, err := DialUnix(ctx, dir, name); err == nil {
			c.Close()
			t.Errorf("DialUnix(%q) connected; want refused", name)
		}
	}
}
