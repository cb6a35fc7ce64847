package oci

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// startUserNS starts a crun sandbox with a user namespace running script,
// with /out bind-mounted (owned by the sandbox's root), and waits for
// /out/done.
func startUserNS(t *testing.T, d *Driver, rootfs, script string) (id, out string) {
	t.Helper()
	id, out = runtimetest.NewID(t), runtimetest.Dir(t)
	spec := runtime.Spec{ID: id, Lower: []string{rootfs}, Args: []string{"/bin/sh", "-c", script},
		Env:    []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin"},
		Mounts: []runtime.Mount{{Source: out, Target: "/out", Owned: true}}}
	if err := d.Start(t.Context(), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = d.Delete(context.Background(), id) })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(out, "done")); err == nil {
			return id, out
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox never wrote /out/done")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A build step's layer holds the image's ids, not the host ids the sandbox
// wrote them with: root's files are root's, uid 1000's are 1000's, set-uid
// bits and hard links survive, and whiteouts of removed lower files stay.
func TestCaptureLayerShiftsIDsBack(t *testing.T) {
	requireRuntime(t, "crun")
	t.Parallel()
	rootfs := runtimetest.BusyboxRootfs(t)
	d := newTestDriver(t, "crun")
	script := `set -e; echo x > /root/by-root; ln /root/by-root /root/link; mkdir /home; mkdir /home/u;
echo y > /home/u/f; chown -R 1000:1000 /home/u; cp /bin/busybox /root/suid; chown 1000:1000 /root/suid;
chmod 4755 /root/suid; rm /etc/group; touch /out/done; sleep 1000`
	id, _ := startUserNS(t, d, rootfs, script)
	ids, ok, err := d.IDMap(t.Context(), id)
	if err != nil || !ok || ids.UID < idBase {
		t.Fatalf("IDMap = %+v, %v, %v; want a user namespace", ids, ok, err)
	}
	layer := filepath.Join(t.TempDir(), "diff")
	if err := d.CaptureLayer(t.Context(), id, layer); err != nil {
		t.Fatalf("CaptureLayer: %v", err)
	}
	stat := func(rel string) syscall.Stat_t {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(layer, rel), &st); err != nil {
			t.Fatalf("lstat %s in the layer: %v", rel, err)
		}
		return st
	}
	for rel, want := range map[string]uint32{"root/by-root": 0, "root/link": 0, "home/u": 1000, "home/u/f": 1000, "root/suid": 1000, "root": 0} {
		if st := stat(rel); st.Uid != want || st.Gid != want {
			t.Errorf("%s in the layer belongs to %d:%d; want %d:%d", rel, st.Uid, st.Gid, want, want)
		}
	}
	if a, b := stat("root/by-root"), stat("root/link"); a.Ino != b.Ino {
		t.Errorf("hard link lost: inodes %d and %d", a.Ino, b.Ino)
	}
	if st := stat("root/suid"); st.Mode&syscall.S_ISUID == 0 {
		t.Errorf("set-user-ID bit lost: mode %o", st.Mode)
	}
	if st := stat("etc/group"); st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
		t.Errorf("etc/group is not a whiteout (0/0 character device): mode %o rdev %d", st.Mode, st.Rdev)
	}
}

// A file capability recorded for a sandbox's root (revision 3, rootid = its
// host uid) is stored in the layer as one for any root (revision 2).
func TestShiftIDsFileCapability(t *testing.T) {
	runtimetest.RequireRoot(t)
	t.Parallel()
	r := slotRange(5)
	dir := t.TempDir()
	f := filepath.Join(dir, "ping")
	if err := os.WriteFile(f, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(f, int(r.UID), int(r.GID)); err != nil {
		t.Fatal(err)
	}
	v3 := make([]byte, vfsCapSize3)
	binary.LittleEndian.PutUint32(v3, vfsCapRevision3|1) // effective
	binary.LittleEndian.PutUint32(v3[4:], 1<<13)         // permitted: CAP_NET_RAW
	binary.LittleEndian.PutUint32(v3[20:], r.UID)
	if err := unix.Lsetxattr(f, "security.capability", v3, 0); err != nil {
		t.Skipf("this filesystem keeps no file capabilities: %v", err)
	}
	if err := shiftIDs(dir, r); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(f, &st); err != nil || st.Uid != 0 {
		t.Fatalf("owner after shift: %d (%v); want 0", st.Uid, err)
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(f, "security.capability", buf)
	if err != nil {
		t.Fatalf("file capability lost by the shift: %v", err)
	}
	if n != vfsCapSize2 || binary.LittleEndian.Uint32(buf)&vfsCapRevisionMask != vfsCapRevision2 ||
		binary.LittleEndian.Uint32(buf[4:]) != 1<<13 {
		t.Errorf("file capability after shift = %x; want revision 2 with CAP_NET_RAW permitted", buf[:n])
	}
}

// A restarted server (a new driver on the same dirs) still knows each
// sandbox's range and watches its init; deleting the sandbox frees the
// range for the next one.
func TestUserNSSurvivesRestart(t *testing.T) {
	requireRuntime(t, "crun")
	t.Parallel()
	rootfs := runtimetest.BusyboxRootfs(t)
	leases := t.TempDir()
	d := newTestDriverWith(t, Config{Runtime: "crun", UserNS: true, IDLeaseDir: leases})
	id, out := startUserNS(t, d, rootfs, `touch /out/done; while [ ! -e /out/go ]; do usleep 10000; done; exit 7`)
	before, _, err := d.IDMap(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	lease := filepath.Join(leases, strconv.Itoa((int(before.UID)-idBase)/idSize))
	if b, err := os.ReadFile(lease); err != nil || string(b) != d.paths(id).dir {
		t.Fatalf("lease %s = %q, %v; want it to name %s", lease, b, err, d.paths(id).dir)
	}
	d2, err := New(d.cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	after, ok, err := d2.IDMap(t.Context(), id)
	if err != nil || !ok || after != before {
		t.Fatalf("IDMap after restart = %+v, %v, %v; want %+v", after, ok, err, before)
	}
	got := make(chan runtime.Exit, 1)
	go func() {
		ex, err := d2.Wait(t.Context(), id)
		if err != nil {
			t.Errorf("Wait after restart: %v", err)
		}
		got <- ex
	}()
	if err := os.WriteFile(filepath.Join(out, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case ex := <-got:
		t.Logf("Wait after restart: %+v", ex)
		if ex.Reason != runtime.ExitExited || ex.Code != 7 {
			t.Errorf("Wait = %+v; want exited with code 7", ex)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait after restart never returned")
	}
	if err := d2.Delete(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lease); !os.IsNotExist(err) {
		t.Errorf("lease %s still there after Delete: %v", lease, err)
	}
}

// Both ways of handing idmapped layers to overlayfs work here: detached
// mounts (Linux 6.15 and later, what checkUserNS picks on such kernels) and
// mounts attached under the sandbox dir first (older kernels). Either way
// the layers' own mounts are gone soon after, and the overlay shows the
// template's root-owned files as the sandbox's root.
func TestIdmappedLayersBothWays(t *testing.T) {
	requireRuntime(t, "crun")
	t.Parallel()
	rootfs := runtimetest.BusyboxRootfs(t)
	d := newTestDriverWith(t, Config{Runtime: "crun", UserNS: true, IDLeaseDir: t.TempDir()})
	for _, detached := range []bool{true, false} {
		p := d.paths(runtimetest.NewID(t))
		ids, ns, err := d.leaseIDs(p)
		if err != nil {
			t.Fatal(err)
		}
		l := layers{lower: []string{rootfs, runtimetest.BusyboxRootfs(t)}, diskMB: 8, ids: ids, userns: ns, detached: detached}
		if err := mountLayers(t.Context(), p, l); err != nil {
			t.Fatalf("detached=%v: %v", detached, err)
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(p.rootfs(), "bin", "busybox"), &st); err != nil || st.Uid != ids.UID {
			t.Errorf("detached=%v: /bin/busybox owner %d (%v); want %d", detached, st.Uid, err, ids.UID)
		}
		deadline := time.Now().Add(5 * time.Second)
		for isMountpoint(p.lower(0)) || isMountpoint(p.lower(1)) {
			if time.Now().After(deadline) {
				t.Fatalf("detached=%v: idmapped layer mounts still attached", detached)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := d.removeDir("", p); err != nil {
			t.Fatal(err)
		}
	}
}

// crun compiles the seccomp profile once per driver: later starts carry the
// filter the first one compiled instead of the profile (the conformance
// suite's SyscallSurface checks such a later start still refuses what it
// must).
func TestCrunReusesCompiledSeccomp(t *testing.T) {
	requireRuntime(t, "crun")
	t.Parallel()
	rootfs := runtimetest.BusyboxRootfs(t)
	d := newTestDriver(t, "crun")
	first, _ := startIdle(t, d, rootfs, nil)
	compiled, err := os.ReadFile(filepath.Join(d.cfg.StateDir, first, "seccomp.bpf"))
	if err != nil || len(compiled) == 0 {
		t.Fatalf("crun left no compiled filter for the first sandbox: %v", err)
	}
	if b, _ := os.ReadFile(d.paths(first).config()); strings.Contains(string(b), annotationSeccompBPF) {
		t.Errorf("the first start already had a compiled filter to use")
	}
	second, _ := startIdle(t, d, rootfs, nil)
	var cfg struct {
		Annotations map[string]string `json:"annotations"`
		Linux       struct {
			Seccomp json.RawMessage `json:"seccomp"`
		} `json:"linux"`
	}
	b, err := os.ReadFile(d.paths(second).config())
	if err != nil || json.Unmarshal(b, &cfg) != nil {
		t.Fatalf("read config.json: %v", err)
	}
	got, err := base64.StdEncoding.DecodeString(cfg.Annotations[annotationSeccompBPF])
	if err != nil || !bytes.Equal(got, compiled) {
		t.Errorf("second start's %s = %d bytes (%v); want the %d bytes crun compiled first", annotationSeccompBPF, len(got), err, len(compiled))
	}
	// The filter alone: crun applies it without the profile (SyscallSurface
	// checks a later start still refuses what it must).
	if len(cfg.Linux.Seccomp) != 0 {
		t.Errorf("second start's config.json still carries the %d-byte seccomp profile", len(cfg.Linux.Seccomp))
	}
}

// TestUserNSCacheConcurrent asks for the namespaces of several ranges at
// once, each range twice: every caller of one range gets the same
// namespace, and different ranges get different ones.
func TestUserNSCacheConcurrent(t *testing.T) {
	runtimetest.RequireRoot(t)
	var c usernsCache
	t.Cleanup(func() {
		for _, f := range c.ns {
			f.Close()
		}
	})
	const ranges = 6
	got := make([]*os.File, 2*ranges)
	errs := make([]error, 2*ranges)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i], errs[i] = c.get(slotRange(i % ranges)) })
	}
	wg.Wait()
	inodes := map[uint64]int{}
	for i, f := range got {
		if errs[i] != nil {
			t.Fatalf("get(range %d): %v", i%ranges, errs[i])
		}
		if other := got[(i+ranges)%(2*ranges)]; other != f {
			t.Errorf("range %d: two callers got different namespaces", i%ranges)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		inodes[st.Ino] = i % ranges
	}
	if len(inodes) != ranges {
		t.Errorf("%d ranges got %d distinct namespaces, want one each", ranges, len(inodes))
	}
}

// TestUserNSMaker: namespaces made by the helper map 0 to each range's
// host ids (an idmapped mount of a root-owned file shows them), a
// helper that died is replaced at the next request, and the helper exits
// once its socket closes.
func TestUserNSMaker(t *testing.T) {
	runtimetest.RequireRoot(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var m usernsMaker
	t.Cleanup(m.stop)
	for _, tc := range []struct {
		name   string
		r      idRange
		before func(t *testing.T)
	}{
		{"first range starts the helper", slotRange(3), nil},
		{"another range", slotRange(7), nil},
		{"after the helper was killed", slotRange(3), func(t *testing.T) {
			if err := m.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before(t)
			}
			f, err := m.make(tc.r)
			if err != nil && tc.before != nil {
				f, err = m.make(tc.r) // the dead one is noticed by a request, then replaced
			}
			if err != nil {
				t.Fatalf("make(%+v): %v", tc.r, err)
			}
			defer f.Close()
			fd, err := idmapClone(dir, f)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			var st unix.Stat_t
			if err := unix.Fstatat(fd, "f", &st, 0); err != nil {
				t.Fatal(err)
			}
			if st.Uid != tc.r.UID || st.Gid != tc.r.GID {
				t.Errorf("root's file shows %d:%d through the namespace, want %d:%d", st.Uid, st.Gid, tc.r.UID, tc.r.GID)
			}
		})
	}
	p := m.cmd.Process
	m.stop()
	deadline := time.Now().Add(5 * time.Second)
	for p.Signal(syscall.Signal(0)) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the helper still runs after its socket closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
