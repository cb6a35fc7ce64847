package ops

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sbxdev/sbx/tests/harness"
)

// capNames lists the capabilities in bit order.
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// privilegedCaps is what a privileged container gets, like podman
// --privileged: every capability this process holds (sbx inside runs
// sandboxes, as on a host; a machine may withhold some, e.g.
// CAP_SYS_RESOURCE, and capset would fail on those).
func privilegedCaps(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var bnd uint64
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			bnd, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	var caps []string
	for i, name := range capNames {
		if bnd&(1<<i) != 0 {
			caps = append(caps, name)
		}
	}
	return caps
}

// runImageUnderCrun runs the unpacked image (tree) with crun the way
// `podman run --privileged --cgroupns=host` would, with its entrypoint and
// command from cf, the data dir and the rootfs cache as volumes, in a
// network namespace of its own; then, from inside that namespace, the CLI
// creates a sandbox through the containerised server and runs a command.
func runImageUnderCrun(t *testing.T, tree string, cf *v1.ConfigFile, hostSbx string) {
	t.Helper()
	bundle := filepath.Dir(tree)
	dataDir, err := os.MkdirTemp("", "sbx-image-data-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { harness.CleanupDataDir(t, dataDir) })
	run(t, bundle, "crun", "spec")
	raw, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	spec.Root = &specs.Root{Path: filepath.Base(tree)}
	spec.Process.Terminal = false
	// Small pools: this checks the image serves, not how fast.
	spec.Process.Args = append(append(append([]string{}, cf.Config.Entrypoint...), cf.Config.Cmd...),
		"--pool", "base=0", "--pool", "code-interpreter=0", "--snapshot-runtime", "none")
	spec.Process.Env = cf.Config.Env
	caps := privilegedCaps(t)
	spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
	spec.Process.NoNewPrivileges = false
	spec.Process.Rlimits = nil
	spec.Hostname = "sbx-image"
	var nss []specs.LinuxNamespace
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type != specs.CgroupNamespace && ns.Type != specs.UserNamespace {
			nss = append(nss, ns) // pid, mount, ipc, uts, network of its own
		}
	}
	spec.Linux.Namespaces = nss
	spec.Linux.Seccomp = nil
	spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths = nil, nil
	spec.Linux.Resources = &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}}
	spec.Linux.CgroupsPath = "/sbx-image-test/" + filepath.Base(bundle)
	var mounts []specs.Mount
	for _, m := range spec.Mounts {
		switch m.Destination {
		case "/sys", "/sys/fs/cgroup":
			continue
		}
		mounts = append(mounts, m)
	}
	mounts = append(mounts,
		specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "rw"}},
		specs.Mount{Destination: "/var/lib/sbx", Type: "bind", Source: dataDir, Options: []string{"rbind", "rw"}},
		// The volume a real deployment keeps; the host's cache here, so
		// the base template is not built again.
		specs.Mount{Destination: "/var/cache/sbx", Type: "bind", Source: "/var/cache/sbx", Options: []string{"rbind", "rw"}},
		specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755"}},
		specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
	)
	spec.Mounts = mounts
	out, _ := json.MarshalIndent(spec, "", "  ")
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), out, 0o644); err != nil {
		t.Fatal(err)
	}

	id := "sbx-image-test-" + strconv.Itoa(os.Getpid())
	logf, err := os.Create(filepath.Join(bundle, "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ctr := exec.Command("crun", "run", "--bundle", bundle, id)
	ctr.Stdout, ctr.Stderr = logf, logf
	if err := ctr.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- ctr.Wait() }()
	t.Cleanup(func() {
		exec.Command("crun", "kill", id, "TERM").Run()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			exec.Command("crun", "kill", id, "KILL").Run()
			<-exited
		}
		exec.Command("crun", "delete", "-f", id).Run()
		// crun removes the container's cgroup, not the parent made for it.
		parents, _ := filepath.Glob("/sys/fs/cgroup/*/sbx-image-test")
		unified, _ := filepath.Glob("/sys/fs/cgroup/sbx-image-test")
		for _, p := range append(parents, unified...) {
			os.Remove(p)
		}
	})
	serveLog := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }

	// The server's pid on the host, for its network namespace.
	var pid int
	deadline := time.Now().Add(time.Minute)
	for pid == 0 {
		var st struct{ Pid int }
		if b, err := exec.Command("crun", "state", id).Output(); err == nil && json.Unmarshal(b, &st) == nil {
			pid = st.Pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("crun never reported the container running\n%s", serveLog())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The host's sbx CLI (same version) inside the container's network
	// namespace, keys from the data dir volume.
	cli := func(args ...string) (string, error) {
		cmd := exec.Command("nsenter", append([]string{"--net=/proc/" + strconv.Itoa(pid) + "/ns/net", hostSbx}, args...)...)
		env := runEnvAt(t, hostSbx, dataDir)
		cmd.Env = append(os.Environ(), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return string(out), fmt.Errorf("%w: %s", err, stderr.String())
		}
		return string(out), nil
	}
	deadline = time.Now().Add(20 * time.Minute) // as the harness: base may still be building
	for {
		if _, err := os.Stat(filepath.Join(dataDir, "api-url")); err == nil {
			if out, err := cli("template", "list"); err == nil && strings.Contains(out, "ready") {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("the containerised sbx serve exited: %v\n%s", err, serveLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the containerised sbx serve has no ready template after 20 minutes\n%s", serveLog())
		}
		time.Sleep(time.Second)
	}
	created, err := cli("sandbox", "create", "--json")
	if err != nil {
		t.Fatalf("sbx sandbox create against the image: %v\n%s", err, serveLog())
	}
	var sb struct {
		SandboxID string `json:"sandboxID"`
	}
	if err := json.Unmarshal([]byte(created), &sb); err != nil || sb.SandboxID == "" {
		t.Fatalf("sandbox create printed %q: %v", created, err)
	}
	got, err := cli("sandbox", "exec", sb.SandboxID, "--", "echo", "in-image")
	if err != nil || strings.TrimSpace(got) != "in-image" {
		t.Fatalf("sandbox exec in the image's sbx: %q, %v\n%s", got, err, serveLog())
	}
	t.Logf("sandbox %s ran a command under the image's sbx serve (crun pid %d)", sb.SandboxID, pid)
	if _, err := cli("sandbox", "kill", sb.SandboxID); err != nil {
		t.Errorf("sandbox kill: %v", err)
	}
}

// runEnvAt is `sbx env` of dataDir as KEY=VALUE pairs.
func runEnvAt(t *testing.T, sbx, dataDir string) []string {
	t.Helper()
	var env []string
	out, _ := exec.Command(sbx, "env", "--data-dir", dataDir).Output()
	for _, l := range strings.Split(string(out), "\n") {
		if kv, ok := strings.CutPrefix(l, "export "); ok {
			env = append(env, kv)
		}
	}
	return env
}
