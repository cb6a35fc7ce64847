package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func testSpec() runtime.Spec {
	return runtime.Spec{
		ID:       "abc123",
		Lower:    []string{"/var/cache/sbx/rootfs/base/rootfs"},
		Hostname: "sbx-abc123",
		Args:     []string{"/.sbx/bin/envd", "--init"},
		Env:      []string{"E2B_SANDBOX=true"},
		Cwd:      "/home/user",
		Mounts: []runtime.Mount{
			{Source: "/var/lib/sbx/agent", Target: "/.sbx/bin", ReadOnly: true},
			{Source: "/var/lib/sbx/sandboxes/abc123/run", Target: "/.sbx/run/"},
		},
		Resources: runtime.Resources{CPUs: 1.5, MemoryMB: 512, PidsMax: 256, DiskMB: 1024},
		NetNS:     "/var/lib/sbx/netns/abc123",
	}
}

func testPaths() bundlePaths {
	return bundlePaths{
		rootfs:     "/var/lib/sbx/sandboxes/abc123/rootfs",
		resolvConf: "/var/lib/sbx/sandboxes/abc123/etc/resolv.conf",
		hosts:      "/var/lib/sbx/sandboxes/abc123/etc/hosts",
	}
}

// TestBuildSpecGolden pins the whole config.json; review the diff when it
// changes (go test ./internal/runtime/oci -run Golden -update).
func TestBuildSpecGolden(t *testing.T) {
	if goruntime.GOARCH != "amd64" {
		t.Skip("golden config.json is recorded on amd64 (seccomp architectures differ)")
	}
	profile, err := seccompProfile(defaultCaps, false)
	if err != nil {
		t.Fatal(err)
	}
	ids := slotRange(3)
	got, err := json.MarshalIndent(buildSpec(testSpec(), testPaths(), hostLimits{memsw: true, nofile: maxNofile, seccomp: profile}, &ids), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "config.golden.json")
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(bytes.TrimSpace(want), got) {
		t.Errorf("config.json differs from %s; rerun with -update and review the diff", golden)
	}
}

func TestBuildSpecVariants(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*runtime.Spec)
		lim   hostLimits
		check func(t *testing.T, s *specs.Spec)
	}{
		{"no limits", func(s *runtime.Spec) { s.Resources = runtime.Resources{} }, hostLimits{nofile: 100},
			func(t *testing.T, s *specs.Spec) {
				r := s.Linux.Resources
				if r.CPU != nil || r.Memory != nil || r.Pids != nil {
					t.Errorf("unlimited sandbox got limits: %+v", r)
				}
				if s.Process.Rlimits[0].Hard != 100 {
					t.Errorf("nofile = %d; want the host's 100", s.Process.Rlimits[0].Hard)
				}
			}},
		{"no memsw", nil, hostLimits{memsw: false, nofile: 1},
			func(t *testing.T, s *specs.Spec) {
				if s.Linux.Resources.Memory.Swap != nil {
					t.Errorf("memory+swap limit set on a host without swap accounting")
				}
			}},
		{"fresh netns, defaults", func(s *runtime.Spec) { s.NetNS, s.Hostname, s.Cwd, s.Env = "", "", "", nil }, hostLimits{nofile: 1},
			func(t *testing.T, s *specs.Spec) {
				i := slices.IndexFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace })
				if i < 0 || s.Linux.Namespaces[i].Path != "" {
					t.Errorf("want a new network namespace, got %+v", s.Linux.Namespaces)
				}
				if s.Hostname != "abc123" || s.Process.Cwd != "/" || !slices.Contains(s.Process.Env, defaultPath) {
					t.Errorf("defaults: hostname %q cwd %q env %v", s.Hostname, s.Process.Cwd, s.Process.Env)
				}
			}},
		{"no user namespace", nil, hostLimits{nofile: 1},
			func(t *testing.T, s *specs.Spec) {
				if slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.UserNamespace }) ||
					s.Linux.UIDMappings != nil || s.Linux.GIDMappings != nil {
					t.Errorf("a sandbox without ids got a user namespace: %+v", s.Linux)
				}
			}},
		{"background", func(s *runtime.Spec) { s.Resources.Background = true }, hostLimits{nofile: 1},
			func(t *testing.T, s *specs.Spec) {
				c := s.Linux.Resources.CPU
				if c == nil || c.Shares == nil || *c.Shares != backgroundShares || c.Quota == nil {
					t.Errorf("background sandbox's CPU = %+v; want shares %d and its quota kept", c, backgroundShares)
				}
			}},
		{"background, no CPU limit", func(s *runtime.Spec) { s.Resources = runtime.Resources{Background: true} }, hostLimits{nofile: 1},
			func(t *testing.T, s *specs.Spec) {
				c := s.Linux.Resources.CPU
				if c == nil || c.Shares == nil || *c.Shares != backgroundShares || c.Quota != nil {
					t.Errorf("background sandbox's CPU = %+v; want shares %d alone", c, backgroundShares)
				}
			}},
		{"PATH kept", func(s *runtime.Spec) { s.Env = []string{"PATH=/x"} }, hostLimits{nofile: 1},
			func(t *testing.T, s *specs.Spec) {
				if !slices.Equal(s.Process.Env, []string{"PATH=/x"}) {
					t.Errorf("env = %v; want the caller's PATH only", s.Process.Env)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testSpec()
			if tc.edit != nil {
				tc.edit(&s)
			}
			tc.check(t, buildSpec(s, testPaths(), tc.lim, nil))
		})
	}
	p := testPaths()
	p.resolvConf = ""
	for _, m := range buildSpec(testSpec(), p, hostLimits{}, nil).Mounts {
		if m.Destination == "/etc/resolv.conf" {
			t.Errorf("resolv.conf bind-mounted although there is none to give")
		}
	}
}

func TestGlobalFlags(t *testing.T) {
	tests := []struct {
		cfg  Config
		want []string
	}{
		{Config{Runtime: "crun", StateDir: "/s"}, []string{"--root", "/s", "--cgroup-manager=cgroupfs"}},
		{Config{Runtime: "runc", StateDir: "/s"}, []string{"--root", "/s", "--systemd-cgroup=false"}},
		{Config{Runtime: "runsc", StateDir: "/s"}, []string{"--root", "/s", "--systemd-cgroup=false",
			"--oci-seccomp", "--overlay2=none", "--host-uds=create", "--platform=systrap", "--allow-suid"}},
		{Config{Runtime: "runsc", StateDir: "/s", ExtraArgs: []string{"--platform=ptrace", "--host-uds", "all"}},
			[]string{"--root", "/s", "--systemd-cgroup=false", "--oci-seccomp", "--overlay2=none", "--allow-suid",
				"--platform=ptrace", "--host-uds", "all"}},
	}
	for _, tc := range tests {
		if got := globalFlags(tc.cfg); !slices.Equal(got, tc.want) {
			t.Errorf("globalFlags(%+v) = %v; want %v", tc.cfg, got, tc.want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []Config{
		{Runtime: "docker", StateDir: "/s", SandboxDir: "/d"},
		{Runtime: "crun", SandboxDir: "/d"},
		{Runtime: "crun", StateDir: "/s", SandboxDir: "/d,x"},
		{Runtime: "crun", StateDir: "/s", SandboxDir: "/d", Binary: "/nonexistent/crun"},
	}
	for _, cfg := range tests {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("New(%+v) succeeded; want an error", cfg)
		}
	}
}

func TestValidateSpec(t *testing.T) {
	dir := t.TempDir()
	ok := func() runtime.Spec {
		return runtime.Spec{ID: "abc", Lower: []string{dir}, Args: []string{"/bin/true"}, Env: []string{"A=b", "EMPTY="}}
	}
	tests := []struct {
		name string
		edit func(*runtime.Spec)
		ok   bool
	}{
		{"valid", func(*runtime.Spec) {}, true},
		{"valid mount", func(s *runtime.Spec) { s.Mounts = []runtime.Mount{{Source: dir, Target: "/data"}} }, true},
		{"id with dash", func(s *runtime.Spec) { s.ID = "a-b" }, false},
		{"id too long", func(s *runtime.Spec) { s.ID = strings.Repeat("a", 65) }, false},
		{"relative layer", func(s *runtime.Spec) { s.Lower = []string{"rootfs"} }, false},
		{"layer with colon", func(s *runtime.Spec) { s.Lower = []string{dir + ":x"} }, false},
		{"layer is a file", func(s *runtime.Spec) { s.Lower = []string{"/etc/hostname"} }, false},
		{"env without =", func(s *runtime.Spec) { s.Env = []string{"NOVALUE"} }, false},
		{"env without key", func(s *runtime.Spec) { s.Env = []string{"=x"} }, false},
		{"long hostname", func(s *runtime.Spec) { s.Hostname = strings.Repeat("h", 65) }, false},
		{"relative mount target", func(s *runtime.Spec) { s.Mounts = []runtime.Mount{{Source: dir, Target: "data"}} }, false},
		{"mount over root", func(s *runtime.Spec) { s.Mounts = []runtime.Mount{{Source: dir, Target: "/x/.."}} }, false},
		{"negative memory", func(s *runtime.Spec) { s.Resources.MemoryMB = -1 }, false},
		{"missing netns", func(s *runtime.Spec) { s.NetNS = "/nonexistent/netns" }, false},
		{"netns wait", func(s *runtime.Spec) { s.NetNSWait = func() (string, error) { return dir, nil } }, true},
		{"netns path and wait", func(s *runtime.Spec) {
			s.NetNS, s.NetNSWait = dir, func() (string, error) { return dir, nil }
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ok()
			tc.edit(&s)
			err := validateSpec(s)
			if (err == nil) != tc.ok {
				t.Fatalf("validateSpec = %v; want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v is not an invalid-argument error", err)
			}
		})
	}
}
