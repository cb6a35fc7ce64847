package oci

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/network"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// startIdle starts a sandbox whose init sleeps, and waits until it runs.
func startIdle(t *testing.T, d *Driver, rootfs string, edit func(*runtime.Spec)) (id, out string) {
	t.Helper()
	id, out = runtimetest.NewID(t), runtimetest.Dir(t)
	spec := runtime.Spec{
		ID: id, Lower: []string{rootfs},
		Args:   []string{"/bin/sh", "-c", "cat /proc/net/dev > /out/netdev; ls /sys/class/net > /out/sysnet; touch /out/ready; exec sleep 1000"},
		Mounts: []runtime.Mount{{Source: out, Target: "/out", Owned: true}},
	}
	if edit != nil {
		edit(&spec)
	}
	if err := d.Start(t.Context(), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = d.Delete(context.Background(), id) })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(out, "ready")); err == nil {
			return id, out
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s never became ready", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRestartReattaches(t *testing.T) {
	requireRuntime(t, "crun")
	rootfs := runtimetest.BusyboxRootfs(t)
	base := t.TempDir()
	cfg := Config{Runtime: "crun", StateDir: base + "/state", SandboxDir: base + "/sandboxes"}
	d1, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := startIdle(t, d1, rootfs, nil)

	d2, err := New(cfg, testLogger(t)) // a restarted server
	if err != nil {
		t.Fatal(err)
	}
	ids, err := d2.List(t.Context())
	if err != nil || !slices.Contains(ids, id) {
		t.Fatalf("List after restart = %v, %v; want %s", ids, err, id)
	}
	if st, err := d2.State(t.Context(), id); err != nil || st != runtime.StatusRunning {
		t.Fatalf("State after restart = %q, %v; want running", st, err)
	}
	if err := d2.Pause(t.Context(), id); err != nil {
		t.Fatalf("Pause after restart: %v", err)
	}
	if st, _ := d1.State(t.Context(), id); st != runtime.StatusPaused {
		t.Errorf("first driver sees %q; want paused (state lives on disk, not in memory)", st)
	}
	if err := d2.Delete(t.Context(), id); err != nil {
		t.Fatalf("Delete after restart: %v", err)
	}
	// A driver for another runtime sharing SandboxDir must not claim it.
	if _, err := exec.LookPath("runc"); err == nil {
		id2, _ := startIdle(t, d1, rootfs, nil)
		rc, err := New(Config{Runtime: "runc", StateDir: base + "/runc", SandboxDir: cfg.SandboxDir}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if ids, _ := rc.List(t.Context()); slices.Contains(ids, id2) {
			t.Errorf("runc driver lists crun's sandbox %s", id2)
		}
	}
}

// The runtime can lose a container (its --root wiped, a crash between
// delete and cleanup); Delete must still clean up whatever is left.
func TestDeleteCleansUpLostContainers(t *testing.T) {
	requireRuntime(t, "crun")
	rootfs := runtimetest.BusyboxRootfs(t)
	tests := []struct {
		name string
		lose func(t *testing.T, d *Driver, id string)
	}{
		{"deleted behind our back", func(t *testing.T, d *Driver, id string) {
			if out, err := d.command(t.Context(), "delete", "--force", id); err != nil {
				t.Fatalf("crun delete: %v: %s", err, out)
			}
		}},
		{"state dir wiped while running", func(t *testing.T, d *Driver, id string) {
			if err := os.RemoveAll(filepath.Join(d.cfg.StateDir, id)); err != nil {
				t.Fatal(err)
			}
		}},
		{"paused and state dir wiped", func(t *testing.T, d *Driver, id string) {
			if err := d.Pause(t.Context(), id); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(d.cfg.StateDir, id)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDriver(t, "crun")
			id, _ := startIdle(t, d, rootfs, nil)
			h, err := readHandle(d.paths(id))
			if err != nil {
				t.Fatal(err)
			}
			tc.lose(t, d, id)
			if err := d.Delete(t.Context(), id); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := os.Stat(d.paths(id).dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("sandbox dir still exists: %v", err)
			}
			if _, err := procStartTime(h.Pid); err == nil {
				t.Errorf("init process %d still alive", h.Pid)
			}
			if _, err := os.Stat(d.cgroupDir("pids", id)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cgroup %s still exists", d.cgroupDir("pids", id))
			}
			if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), d.paths(id).dir) {
				t.Errorf("mounts under %s remain", d.paths(id).dir)
			}
			if err := d.Delete(t.Context(), id); !errors.Is(err, runtime.ErrNotFound) {
				t.Errorf("second Delete = %v; want ErrNotFound", err)
			}
		})
	}
}

func TestJoinsNetworkNamespace(t *testing.T) {
	runtimetest.RequireRoot(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	nm, err := network.New(network.Config{NetnsDir: t.TempDir(), Subnet: "10.249.77.0/24"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nm.Uninstall(context.Background()); nm.Close() })
	for _, name := range []string{"crun", "runc", "runsc"} {
		t.Run(name, func(t *testing.T) {
			requireRuntime(t, name)
			nsID := runtimetest.NewID(t)
			nsPath, err := nm.Setup(t.Context(), nsID, true)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = nm.Teardown(context.Background(), nsID) })
			d := newTestDriver(t, name)
			id, out := startIdle(t, d, rootfs, func(s *runtime.Spec) { s.NetNS = nsPath })
			netdev, err := os.ReadFile(filepath.Join(out, "netdev"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(netdev), "eth0:") {
				t.Errorf("sandbox in namespace %s has no eth0:\n%s", nsPath, netdev)
			}
			// /sys is the sandbox namespace's, not the host's (a user
			// namespace cannot mount it itself, see prepareNetNS).
			sysnet, _ := os.ReadFile(filepath.Join(out, "sysnet"))
			if name != "runsc" && (!strings.Contains(string(sysnet), "eth0") || strings.Contains(string(sysnet), "sbtoci0")) {
				t.Errorf("/sys/class/net in the sandbox = %q; want its own eth0 and not the host's bridge sbtoci0", sysnet)
			}
			// The host's copy of that sysfs goes once the sandbox runs:
			// each host mount costs every later start (dropHostSysfs).
			sysfs := " " + d.paths(id).sysfs() + " "
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				mounts, _ := os.ReadFile("/proc/self/mountinfo")
				if !strings.Contains(string(mounts), sysfs) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s is still mounted on the host 5s after the start", d.paths(id).sysfs())
				}
			}
			if name == "crun" {
				again, err := exec.Command("crun", "--root", d.cfg.StateDir, "exec", id, "ls", "/sys/class/net").CombinedOutput()
				if err != nil {
					t.Logf("crun exec (to list /sys/class/net again): %v: %s", err, again)
				} else if !strings.Contains(string(again), "eth0") {
					t.Errorf("/sys/class/net in the sandbox after the host's copy went = %q; want its eth0", again)
				}
			}
		})
	}
}

// A namespace given late (runtime.Spec.NetNSWait, made while the driver
// prepares the root filesystem) is joined as one given up front; one that
// cannot be made fails the start, which leaves nothing behind.
func TestJoinsLateNetworkNamespace(t *testing.T) {
	requireRuntime(t, "crun")
	rootfs := runtimetest.BusyboxRootfs(t)
	nm, err := network.New(network.Config{NetnsDir: t.TempDir(), Subnet: "10.249.78.0/24"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nm.Uninstall(context.Background()); nm.Close() })
	d := newTestDriver(t, "crun")
	t.Run("made", func(t *testing.T) {
		nsID := runtimetest.NewID(t)
		made := make(chan error, 1)
		var nsPath string
		go func() {
			var err error
			nsPath, err = nm.Setup(context.Background(), nsID, true)
			made <- err
		}()
		t.Cleanup(func() { _ = nm.Teardown(context.Background(), nsID) })
		_, out := startIdle(t, d, rootfs, func(s *runtime.Spec) {
			s.NetNSWait = func() (string, error) {
				err := <-made // before nsPath is read
				return nsPath, err
			}
		})
		netdev, err := os.ReadFile(filepath.Join(out, "netdev"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(netdev), "eth0:") {
			t.Errorf("sandbox in the late namespace %s has no eth0:\n%s", nsPath, netdev)
		}
	})
	t.Run("fails", func(t *testing.T) {
		id := runtimetest.NewID(t)
		refused := errors.New("no namespace")
		err := d.Start(t.Context(), runtime.Spec{ID: id, Lower: []string{rootfs}, Args: []string{"/bin/true"},
			NetNSWait: func() (string, error) { return "", refused }})
		if !errors.Is(err, refused) {
			t.Fatalf("Start = %v; want %v", err, refused)
		}
		if _, err := os.Stat(d.paths(id).dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("sandbox dir after the failed start: %v; want it gone", err)
		}
		if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), d.paths(id).dir) {
			t.Errorf("mounts under %s remain", d.paths(id).dir)
		}
	})
}
