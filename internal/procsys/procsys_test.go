package procsys

import (
	"errors"
	"os"
	goruntime "runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWriteInNewNetNS sets sysctls from a thread in a new network
// namespace, through a private procfs and through the host's /proc (the
// fallback): the values must land in that namespace, read back through
// the host's /proc, and leave the host's own untouched.
func TestWriteInNewNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("SBX_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	const port = "sys/net/ipv4/ip_unprivileged_port_start"
	const ping = "sys/net/ipv4/ping_group_range"
	hostPort := read(t, "/proc/"+port)
	hostPing := read(t, "/proc/"+ping)
	for _, tc := range []struct {
		name        string
		mount       func() (int, error)
		wantPrivate bool
	}{
		{"private procfs", privateProc, true},
		{"host /proc", func() (int, error) { return -1, errors.New("refused") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mountPrivate = tc.mount
			defer func() { mountPrivate = privateProc }()
			type result struct {
				private    bool
				port, ping string
				err        error
			}
			res := make(chan result, 1)
			go func() {
				// The thread's namespace changes: it is never unlocked,
				// and ends with this goroutine.
				goruntime.LockOSThread()
				if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
					res <- result{err: err}
					return
				}
				r, err := Open()
				if err != nil {
					res <- result{err: err}
					return
				}
				defer r.Close()
				err = errors.Join(r.Write(port, "0"), r.Write(ping, "0 2147483647"))
				res <- result{private: r.Private(), port: readQuiet("/proc/" + port), ping: readQuiet("/proc/" + ping), err: err}
			}()
			got := <-res
			if got.err != nil {
				t.Fatal(got.err)
			}
			if got.private != tc.wantPrivate {
				t.Errorf("Private() = %v, want %v", got.private, tc.wantPrivate)
			}
			if got.port != "0" || got.ping != "0\t2147483647" {
				t.Errorf("in the new namespace: port start %q, ping range %q; want \"0\", \"0\\t2147483647\"", got.port, got.ping)
			}
			if p, g := read(t, "/proc/"+port), read(t, "/proc/"+ping); p != hostPort || g != hostPing {
				t.Errorf("host's values changed: %q %q, were %q %q", p, g, hostPort, hostPing)
			}
		})
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func readQuiet(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// BenchmarkWrite: one namespace setup's three sysctls, through a private
// procfs (its mount and unmount included) and through the host's /proc,
// from a thread in a new network namespace each round.
func BenchmarkWrite(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	for _, bc := range []struct {
		name  string
		mount func() (int, error)
	}{
		{"private", privateProc},
		{"host", func() (int, error) { return -1, errors.New("refused") }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			mountPrivate = bc.mount
			defer func() { mountPrivate = privateProc }()
			done := make(chan error)
			go func() {
				goruntime.LockOSThread() // never unlocked: the thread changes namespace
				for b.Loop() {
					b.StopTimer()
					if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
						done <- err
						return
					}
					b.StartTimer()
					r, err := Open()
					if err == nil {
						err = errors.Join(r.Write("sys/net/ipv4/ping_group_range", "0 2147483647"),
							r.Write("sys/net/ipv4/ip_unprivileged_port_start", "0"),
							r.Write("sys/net/ipv6/conf/default/disable_ipv6", "1"), r.Close())
					}
					if err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
