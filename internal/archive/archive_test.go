package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
	"github.com/sbxdev/sbx/internal/testenv"
)

type ent struct {
	name, body, link string
	typ              byte
	mode             int64
	size             int64 // header size when it differs from len(body)
	mtime            time.Time
}

func reg(name, body string) ent { return ent{name: name, body: body, typ: tar.TypeReg} }

func tarBytes(t *testing.T, entries ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		size := e.size
		if size == 0 && e.typ == tar.TypeReg {
			size = int64(len(e.body))
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		mt := e.mtime
		if mt.IsZero() {
			mt = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
		}
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: e.typ, Mode: mode, Size: size, Linkname: e.link,
			ModTime: mt, Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil && e.size == 0 {
				t.Fatal(err)
			}
		}
	}
	_ = tw.Close() // a lying header leaves the archive short: that is the point
	return buf.Bytes()
}

func openDir(t *testing.T, p string) *hostfs.Dir {
	t.Helper()
	d, err := hostfs.OpenDir(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func extract(t *testing.T, dst string, opt Options, entries ...ent) (Result, error, []string) {
	t.Helper()
	var notes []string
	if opt.Name == "" {
		opt.Name = "test.tar"
	}
	if opt.MaxBytes == 0 {
		opt.MaxBytes = 1 << 20
	}
	if opt.MaxEntries == 0 {
		opt.MaxEntries = 100
	}
	opt.Note = func(s string) { notes = append(notes, s) }
	res, err := Extract(bytes.NewReader(tarBytes(t, entries...)), openDir(t, dst), opt)
	return res, err, notes
}

func TestExtract(t *testing.T) {
	t.Parallel()
	dst := t.TempDir()
	res, err, notes := extract(t, dst, Options{SkipSpecial: true},
		ent{name: "app/", typ: tar.TypeDir, mode: 0o750},
		ent{name: "./app/bin/run.sh", body: "#!/bin/sh\n", typ: tar.TypeReg, mode: 0o4755},
		reg("app/data.txt", "data"),
		ent{name: "app/passwd", typ: tar.TypeSymlink, link: "/etc/passwd"},
		ent{name: "app/hard", typ: tar.TypeLink, link: "app/data.txt"},
		ent{name: "app/fifo", typ: tar.TypeFifo},
		reg("app/data.txt", "replaced"), // a later entry wins, as in tar
		ent{name: "app/tmp/", typ: tar.TypeDir, mode: 0o1777},
	)
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, _ := os.ReadFile(filepath.Join(dst, p))
		return string(b)
	}
	if read("app/data.txt") != "replaced" || read("app/hard") != "data" || read("app/bin/run.sh") != "#!/bin/sh\n" {
		t.Errorf("contents: %q %q %q", read("app/data.txt"), read("app/hard"), read("app/bin/run.sh"))
	}
	if fi, err := os.Stat(filepath.Join(dst, "app/bin/run.sh")); err != nil || fi.Mode() != 0o755|os.ModeSetuid {
		t.Errorf("run.sh mode %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "app")); err != nil || fi.Mode().Perm() != 0o750 || fi.ModTime().Year() != 2020 {
		t.Errorf("app dir %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "app/tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("app/tmp %v %v", fi.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "app/passwd")); err != nil || l != "/etc/passwd" {
		t.Errorf("symlink %q %v", l, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "app/fifo")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("fifo created: %v", err)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], `test.tar: skipped "app/fifo"`) {
		t.Errorf("notes %q", notes)
	}
	if res.Entries != 7 || res.Bytes != int64(len("#!/bin/sh\n")+len("data")+len("replaced")) || !res.HasDirs {
		t.Errorf("result %+v", res)
	}
}

// TestExtractRefuses: every way out of the destination fails with a
// message naming the entry, and nothing lands outside.
func TestExtractRefuses(t *testing.T) {
	t.Parallel()
	outside := t.TempDir() // what hostile archives aim at
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	rel := strings.Repeat("../", 20) + strings.TrimPrefix(outside, "/")
	for _, tc := range []struct {
		name    string
		entries []ent
		onDisk  func(t *testing.T, dst string) // state of the destination before
		err     string
		kind    error
	}{
		{name: "absolute", entries: []ent{reg(outside+"/pwn", "x")}, err: "absolute path", kind: errdefs.ErrInvalidArgument},
		{name: "dot-dot", entries: []ent{reg("ok", "x"), reg("a/../../pwn", "x")}, err: `climbs out`, kind: errdefs.ErrInvalidArgument},
		{name: "file through own symlink", entries: []ent{{name: "s", typ: tar.TypeSymlink, link: outside}, reg("s/pwn", "x")},
			err: `entry "s/pwn" goes through the symlink "s"`, kind: errdefs.ErrInvalidArgument},
		{name: "file through own relative symlink", entries: []ent{{name: "a/s", typ: tar.TypeSymlink, link: rel}, reg("a/s/pwn", "x")},
			err: `goes through the symlink "a/s"`, kind: errdefs.ErrInvalidArgument},
		{name: "dir through own symlink", entries: []ent{{name: "s", typ: tar.TypeSymlink, link: outside}, {name: "s/d/", typ: tar.TypeDir}},
			err: `goes through the symlink "s"`, kind: errdefs.ErrInvalidArgument},
		{name: "symlink through own symlink", entries: []ent{{name: "s", typ: tar.TypeSymlink, link: outside}, {name: "s/l", typ: tar.TypeSymlink, link: "x"}},
			err: `goes through the symlink "s"`, kind: errdefs.ErrInvalidArgument},
		{name: "hard link through own symlink", entries: []ent{{name: "d", typ: tar.TypeSymlink, link: outside}, {name: "leak", typ: tar.TypeLink, link: "d/secret"}},
			err: `hard link "leak" points to "d/secret", which is not a file earlier in the archive`, kind: errdefs.ErrInvalidArgument},
		{name: "hard link placed through own symlink", entries: []ent{reg("f", "x"), {name: "d", typ: tar.TypeSymlink, link: outside}, {name: "d/new", typ: tar.TypeLink, link: "f"}},
			err: `goes through the symlink "d"`, kind: errdefs.ErrInvalidArgument},
		{name: "hard link absolute", entries: []ent{{name: "leak", typ: tar.TypeLink, link: secret}},
			err: "not a file earlier in the archive", kind: errdefs.ErrInvalidArgument},
		{name: "hard link dot-dot", entries: []ent{{name: "leak", typ: tar.TypeLink, link: rel + "/secret"}},
			err: "not a file earlier in the archive", kind: errdefs.ErrInvalidArgument},
		{name: "hard link to a symlink", entries: []ent{{name: "s", typ: tar.TypeSymlink, link: secret}, {name: "h", typ: tar.TypeLink, link: "s"}},
			err: "not a file earlier in the archive", kind: errdefs.ErrInvalidArgument},
		{name: "hard link to a file replaced by a symlink", entries: []ent{reg("f", "x"), {name: "f", typ: tar.TypeSymlink, link: secret}, {name: "h", typ: tar.TypeLink, link: "f"}},
			err: "not a file earlier in the archive", kind: errdefs.ErrInvalidArgument},
		{name: "hard link to a file already on disk", entries: []ent{{name: "h", typ: tar.TypeLink, link: "old"}},
			onDisk: func(t *testing.T, dst string) { _ = os.WriteFile(filepath.Join(dst, "old"), []byte("x"), 0o600) },
			err:    "not a file earlier in the archive", kind: errdefs.ErrInvalidArgument},
		{name: "hard link to a directory", entries: []ent{{name: "d/", typ: tar.TypeDir}, {name: "h", typ: tar.TypeLink, link: "d"}},
			err: "not a file earlier in the archive", kind: errdefs.ErrInvalidArgument},
		{name: "through a symlink already on disk", entries: []ent{reg("planted/pwn", "x")},
			onDisk: func(t *testing.T, dst string) { _ = os.Symlink(outside, filepath.Join(dst, "planted")) },
			err:    `goes through the symlink "planted"`, kind: errdefs.ErrInvalidArgument},
		{name: "through a file", entries: []ent{reg("f", "x"), reg("f/g", "x")},
			err: `goes through "f", which is not a directory`, kind: errdefs.ErrInvalidArgument},
		{name: "file over a directory", entries: []ent{{name: "d/", typ: tar.TypeDir}, reg("d", "x")},
			err: `entry "d" is a directory`, kind: errdefs.ErrInvalidArgument},
		{name: "device refused", entries: []ent{{name: "tty", typ: tar.TypeChar}},
			err: `entry "tty": device nodes`, kind: errdefs.ErrInvalidArgument},
		{name: "size bomb", entries: []ent{reg("zeros", strings.Repeat("\x00", 2<<20))},
			err: `more than 1 MiB at entry "zeros"`, kind: errdefs.ErrResourceExhausted},
		{name: "bomb spread over files", entries: []ent{reg("z1", strings.Repeat("\x00", 600<<10)), reg("z2", strings.Repeat("\x00", 600<<10))},
			err: `more than 1 MiB at entry "z2"`, kind: errdefs.ErrResourceExhausted},
		{name: "too many entries", entries: func() []ent {
			var es []ent
			for i := range 101 {
				es = append(es, ent{name: "d" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + "/", typ: tar.TypeDir})
			}
			return es
		}(), err: "more than 100 entries", kind: errdefs.ErrResourceExhausted},
		{name: "truncated", entries: []ent{{name: "short", typ: tar.TypeReg, body: "abc", size: 1000}},
			err: `entry "short": the archive is corrupt`, kind: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dst := t.TempDir()
			if tc.onDisk != nil {
				tc.onDisk(t, dst)
			}
			_, err, _ := extract(t, dst, Options{}, tc.entries...)
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, tc.kind) {
				t.Fatalf("err = %v; want %v with %q", err, tc.kind, tc.err)
			}
			if !strings.Contains(err.Error(), "test.tar") {
				t.Errorf("error %q does not name the archive", err)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 1 {
				t.Fatalf("the archive wrote outside the destination: %v", ents)
			}
			if st, _ := os.Stat(secret); st.Sys() != nil && linkCount(st) != 1 {
				t.Fatalf("the host file got a hard link: %d links", linkCount(st))
			}
		})
	}
}

// TestDigest: one digest per content, whatever the order, times or tool.
func TestDigest(t *testing.T) {
	t.Parallel()
	digest := func(entries ...ent) string {
		t.Helper()
		res, err, _ := extract(t, t.TempDir(), Options{Digest: true}, entries...)
		if err != nil {
			t.Fatal(err)
		}
		return res.Digest
	}
	base := digest(reg("a", "1"), ent{name: "d/", typ: tar.TypeDir}, reg("d/b", "2"), ent{name: "l", typ: tar.TypeSymlink, link: "a"})
	same := digest(ent{name: "d/", typ: tar.TypeDir, mtime: time.Now()}, ent{name: "l", typ: tar.TypeSymlink, link: "a"},
		reg("d/b", "2"), ent{name: "a", body: "1", typ: tar.TypeReg, mtime: time.Now()})
	if base != same {
		t.Errorf("the same files in another order, at other times: %s != %s", base, same)
	}
	for name, other := range map[string]string{
		"content": digest(reg("a", "X"), ent{name: "d/", typ: tar.TypeDir}, reg("d/b", "2"), ent{name: "l", typ: tar.TypeSymlink, link: "a"}),
		"mode":    digest(ent{name: "a", body: "1", typ: tar.TypeReg, mode: 0o755}, ent{name: "d/", typ: tar.TypeDir}, reg("d/b", "2"), ent{name: "l", typ: tar.TypeSymlink, link: "a"}),
		"link":    digest(reg("a", "1"), ent{name: "d/", typ: tar.TypeDir}, reg("d/b", "2"), ent{name: "l", typ: tar.TypeSymlink, link: "d/b"}),
		"name":    digest(reg("a", "1"), ent{name: "d/", typ: tar.TypeDir}, reg("d/c", "2"), ent{name: "l", typ: tar.TypeSymlink, link: "a"}),
		"extra":   digest(reg("a", "1"), ent{name: "d/", typ: tar.TypeDir}, reg("d/b", "2"), ent{name: "l", typ: tar.TypeSymlink, link: "a"}, reg("e", "")),
	} {
		if other == base {
			t.Errorf("a change of %s keeps the digest", name)
		}
	}
}

func TestDecompress(t *testing.T) {
	t.Parallel()
	plain := tarBytes(t, reg("a", "x"))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(plain)
	_ = zw.Close()
	for _, tc := range []struct {
		name, kind string
		data       []byte
		err        bool
	}{
		{"tar", "tar", plain, false},
		{"gzip", "gzip", gz.Bytes(), false},
		{"xz", "xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2}, true},
		{"zstd", "zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0}, true},
		{"text", "", []byte("hello"), false},
	} {
		kind, r, err := Decompress(bufio.NewReader(bytes.NewReader(tc.data)))
		if kind != tc.kind || (err != nil) != tc.err {
			t.Errorf("%s: kind %q err %v", tc.name, kind, err)
		}
		if err == nil && tc.kind != "" {
			if _, err := tar.NewReader(r).Next(); err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		}
	}
}

// TestExtractOwners: with Owners (image layers) entries get the archive's
// numeric owners, setuid bits survive the chown, symlinks are not followed.
func TestExtractOwners(t *testing.T) {
	t.Parallel()
	testenv.Require(t, testenv.Root) // chown
	dst := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o2775, Uid: 1000, Gid: 1001},
		{Name: "d/su", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 0, Gid: 0, Size: 1},
		{Name: "d/own", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1234, Gid: 5678, Size: 1},
		{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd", Uid: 42, Gid: 43},
	} {
		_ = tw.WriteHeader(h)
		if h.Size > 0 {
			_, _ = tw.Write([]byte("x"))
		}
	}
	_ = tw.Close()
	if _, err := Extract(&buf, openDir(t, dst), Options{Name: "image", MaxBytes: 1 << 20, MaxEntries: 10, Owners: true}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][3]uint64{"d": {1000, 1001, 0o2775}, "d/su": {0, 0, 0o4755}, "d/own": {1234, 5678, 0o640}} {
		fi, err := os.Lstat(filepath.Join(dst, name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if uint64(st.Uid) != want[0] || uint64(st.Gid) != want[1] || uint64(st.Mode&0o7777) != want[2] {
			t.Errorf("%s: %d:%d %o, want %d:%d %o", name, st.Uid, st.Gid, st.Mode&0o7777, want[0], want[1], want[2])
		}
	}
	fi, _ := os.Lstat(filepath.Join(dst, "d/l"))
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 42 {
		t.Errorf("symlink owner %d, want 42", st.Uid)
	}
	if fi, _ := os.Stat("/etc/passwd"); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("/etc/passwd changed owner")
	}
}

func TestFormatSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 bytes"},
		{3000, "3000 bytes"},
		{1<<20 - 1, "1048575 bytes"},
		{1 << 20, "1 MiB"},
		{3<<20 + 1<<19, "3.5 MiB"},
		{2 << 30, "2048 MiB"},
	} {
		if got := FormatSize(tc.n); got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
