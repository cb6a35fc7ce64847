package network

import (
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A host conf dir writes its sysctls relative to the dir it holds open,
// or by path when it could not open it.
func TestConfDirWrite(t *testing.T) {
	t.Parallel()
	for _, opened := range []bool{true, false} {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, "veth0"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "veth0", "arp_ignore"), []byte("0"), 0o644); err != nil {
			t.Fatal(err)
		}
		d := confDir{fd: unix.AT_FDCWD, path: dir}
		if opened {
			fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			d.fd = fd
			// From now on the dir is reached only through the fd.
			if err := os.Rename(dir, dir+".moved"); err != nil {
				t.Fatal(err)
			}
			dir += ".moved"
			t.Cleanup(func() { unix.Close(fd); os.RemoveAll(dir) })
		}
		if err := d.write("veth0/arp_ignore", "8"); err != nil {
			t.Fatalf("opened %v: %v", opened, err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "veth0", "arp_ignore")); string(b) != "8" {
			t.Errorf("opened %v: arp_ignore = %q, want 8", opened, b)
		}
		if err := d.write("nosuch/arp_ignore", "8"); err == nil {
			t.Errorf("opened %v: writing a missing sysctl succeeded", opened)
		}
	}
}

// BenchmarkHostSysctlOpen compares finding a host interface's sysctl by
// path from /proc/sys with finding it from the held conf dir, with many
// network namespaces on the host (as with hundreds of sandboxes):
//
//	go test ./internal/network -run XXX -bench HostSysctlOpen
func BenchmarkHostSysctlOpen(b *testing.B) {
	requireRoot(b)
	conf := openHostConf()
	defer conf.close()
	if conf.ipv4.fd == unix.AT_FDCWD {
		b.Skip("no /proc/sys/net/ipv4/conf")
	}
	open := map[string]func() (int, error){
		"path": func() (int, error) {
			return unix.Open("/proc/sys/net/ipv4/conf/lo/arp_ignore", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		},
		"conf-fd": func() (int, error) {
			return unix.Openat(conf.ipv4.fd, "lo/arp_ignore", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		},
	}
	var held []netns.NsHandle
	defer func() {
		for _, h := range held {
			h.Close()
		}
	}()
	for _, extra := range []int{0, 300} {
		for len(held) < extra {
			held = append(held, newNetNS(b))
		}
		for _, how := range []string{"path", "conf-fd"} {
			b.Run(how+"/netns="+strconv.Itoa(extra), func(b *testing.B) {
				for b.Loop() {
					fd, err := open[how]()
					if err != nil {
						b.Fatal(err)
					}
					unix.Close(fd)
				}
			})
		}
	}
}

// newNetNS makes a network namespace held only by the returned handle.
func newNetNS(b *testing.B) netns.NsHandle {
	b.Helper()
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		b.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.New()
	if err != nil {
		b.Fatal(err)
	}
	// Look its sysctls up as a sandbox's setup does: that is what puts
	// its entries in the dcache next to the host's.
	for _, p := range []string{"/proc/sys/net/ipv4/ping_group_range", "/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv4/conf/lo/arp_ignore"} {
		if fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			unix.Close(fd)
		}
	}
	if err := netns.Set(orig); err != nil {
		b.Fatal(err)
	}
	return h
}
