package oci

import (
	"bytes"
	"debug/elf"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
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

// The namespaces it makes map the whole range and nothing else: through
// an idmapped mount, a root-owned file belongs to the range's first ids,
// a file of the range's last id to its last host id, and one just past
// the range to nobody. Each is a new namespace.
func TestUnshareProgramMakesTheRange(t *testing.T) {
	requireUnshareProgram(t)
	dir := t.TempDir()
	for name, id := range map[string]int{"root": 0, "last": 65535, "outside": 65536} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(f, id, id); err != nil {
			t.Fatal(err)
		}
	}
	var u unshareRunner
	self, _ := os.Readlink("/proc/self/ns/user")
	seen := map[string]bool{}
	for _, r := range []idRange{slotRange(3), slotRange(7), slotRange(3)} {
		if r.Size != 65536 {
			t.Fatalf("slot ranges hold %d ids; the files above assume 65536", r.Size)
		}
		f, err := u.make(r)
		if err != nil {
			t.Fatalf("make(%+v): %v", r, err)
		}
		// Kept open to the end: a freed namespace's inode number is reused.
		t.Cleanup(func() { f.Close() })
		ns, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd()))) // the program is gone
		if err != nil {
			t.Fatal(err)
		}
		if ns == self || seen[ns] {
			t.Fatalf("namespace %s: ours is %s, made before: %v", ns, self, seen[ns])
		}
		seen[ns] = true
		fd, err := idmapClone(dir, f)
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]uint32{"root": r.UID, "last": r.UID + 65535, "outside": 65534} {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, 0); err != nil {
				t.Fatal(err)
			}
			wantGID := want
			if want != 65534 {
				wantGID = r.GID + (want - r.UID)
			}
			if st.Uid != want || st.Gid != wantGID {
				t.Errorf("range %+v: file %q shows %d:%d through the namespace, want %d:%d", r, name, st.Uid, st.Gid, want, wantGID)
			}
		}
		unix.Close(fd)
	}
}

// Where the program cannot run, usernsCache falls back to the helper, and
// says so once.
func TestUserNSCacheFallsBackToTheHelper(t *testing.T) {
	requireUnshareProgram(t)
	var logs bytes.Buffer
	c := usernsCache{log: slog.New(slog.NewTextHandler(&logs, nil))}
	t.Cleanup(c.maker.stop)
	if err := c.prog.load(); err != nil {
		t.Fatal(err)
	}
	c.prog.off.Store(true) // as after an exec refused
	for _, slot := range []int{4, 5} {
		f, err := c.make(slotRange(slot))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if c.maker.cmd == nil {
		t.Fatal("the namespace was made without the helper although the program could not run")
	}
	if n := strings.Count(logs.String(), "come from the helper process"); n != 1 {
		t.Fatalf("the fallback was logged %d times, want once: %q", n, logs.String())
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
		`echo 0 > /proc/sys/user/max_user_namespaces && echo running >&2 && exec "$0"`, prog)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if stderr.String() != "running\n" {
		t.Fatalf("the program did not run where intended (%v): %q", err, stderr.String())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("refused unshare: %v, want exit status 1", err)
	}
	if stdout.Len() != 0 {
		t.Fatalf("the program wrote %q although the unshare was refused", stdout.String())
	}

}
