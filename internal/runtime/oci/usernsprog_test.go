package oci

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// The program is a well-formed executable: one read+execute segment
// holding the whole file, entered at the code.
func TestUnshareProgramIsAnELF(t *testing.T) {
	b := unshareProgram()
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Fatalf("class %v machine %v type %v", f.Class, f.Machine, f.Type)
	}
	if len(f.Progs) != 1 {
		t.Fatalf("%d program headers, want 1", len(f.Progs))
	}
	p := f.Progs[0]
	if p.Type != elf.PT_LOAD || p.Flags != elf.PF_R|elf.PF_X || p.Off != 0 || p.Filesz != uint64(len(b)) {
		t.Fatalf("segment %+v", p.ProgHeader)
	}
	if code := f.Entry - p.Vaddr; code != uint64(len(b)-len(unshareCode)) {
		t.Fatalf("entry at file offset %d, the code starts at %d", code, len(b)-len(unshareCode))
	}
}

func requireUnshareProgram(t *testing.T) {
	t.Helper()
	runtimetest.RequireRoot(t)
	if goruntime.GOARCH != "amd64" {
		t.Skip("the unshare program is x86-64 code")
	}
}

// The namespaces it makes map the range: a root-owned file seen through
// an idmapped mount belongs to the range's first ids. Each is a new
// namespace, and the program is gone once it returns.
func TestUnshareProgramMakesTheRange(t *testing.T) {
	requireUnshareProgram(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var u unshareRunner
	seen := map[string]bool{}
	for _, r := range []idRange{slotRange(3), slotRange(7), slotRange(3)} {
		f, err := u.make(r)
		if err != nil {
			t.Fatalf("make(%+v): %v", r, err)
		}
		ns, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd()))) // the program is gone
		if err != nil {
			t.Fatal(err)
		}
		self, _ := os.Readlink("/proc/self/ns/user")
		if ns == self || seen[ns] {
			t.Fatalf("namespace %s: ours is %s, made before: %v", ns, self, seen[ns])
		}
		seen[ns] = true
		fd, err := idmapClone(dir, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		err = unix.Fstatat(fd, "f", &st, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		if st.Uid != r.UID || st.Gid != r.GID {
			t.Errorf("root's file shows %d:%d through the namespace, want %d:%d", st.Uid, st.Gid, r.UID, r.GID)
		}
	}
	out, _ := exec.Command("pgrep", "-x", "sbx-userns").Output()
	if len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("unshare programs still run: %s", out)
	}
}

// Where the unshare is refused, the program says nothing and exits 1 (make
// then reports that the program ended without a namespace).
func TestUnshareProgramRefused(t *testing.T) {
	requireUnshareProgram(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		runtimetest.Skip(t, "unshare (util-linux) not on PATH")
	}
	prog := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(prog, unshareProgram(), 0o755); err != nil {
		t.Fatal(err)
	}
	// In a user namespace of its own that may have no child namespaces.
	cmd := exec.Command("unshare", "--user", "--map-root-user", "sh", "-c",
		`echo 0 > /proc/sys/user/max_user_namespaces && exec "$0"`, prog)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("refused unshare: %v (stderr %q), want exit status 1", err, stderr.String())
	}
	if stdout.Len() != 0 {
		t.Fatalf("the program wrote %q although the unshare was refused", stdout.String())
	}

}
