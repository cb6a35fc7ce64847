package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
)

// entry is one tar entry of a test archive.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
	size             int64 // header size when it differs from len(body)
}

func file(name, body string) entry {
	return entry{name: name, body: body, typ: tar.TypeReg, mode: 0o644}
}

// writeArchive writes entries as a tar (gzip-compressed when gz) file.
func writeArchive(t *testing.T, path string, gz bool, entries ...entry) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		size := int64(len(e.body))
		if e.typ != tar.TypeReg {
			size = 0
		}
		if e.size != 0 {
			size = e.size
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o755
		}
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: mode, Size: size, Linkname: e.link,
			ModTime: time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil && e.size == 0 {
				t.Fatal(err)
			}
		}
	}
	// An archive with a lying header is cut short; that is the point.
	_ = tw.Close()
	data := buf.Bytes()
	if gz {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		_, _ = zw.Write(data)
		_ = zw.Close()
		data = z.Bytes()
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestArchiveFormat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plain := filepath.Join(dir, "notes.txt")
	_ = os.WriteFile(plain, []byte("just text\n"), 0o644)
	gzNotTar := filepath.Join(dir, "data.gz")
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	_, _ = zw.Write([]byte("not a tar archive"))
	_ = zw.Close()
	_ = os.WriteFile(gzNotTar, z.Bytes(), 0o644)
	for _, tc := range []struct {
		path, want, err string
	}{
		{writeArchive(t, filepath.Join(dir, "a.tar"), false, file("a", "x")), "tar", ""},
		{writeArchive(t, filepath.Join(dir, "a.tar.gz"), true, file("a", "x")), "gzip", ""},
		{writeArchive(t, filepath.Join(dir, "misnamed.txt"), true, file("a", "x")), "gzip", ""}, // content decides, as in Docker
		{"testdata/archive/hello.tar.bz2", "bzip2", ""},
		{"testdata/archive/hello.tar.xz", "", "xz archive, which ADD cannot unpack: use .tar.gz"},
		{plain, "", ""},
		{gzNotTar, "", ""}, // copied as is
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			f, err := os.Open(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := archiveFormat(f, filepath.Base(tc.path))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want invalid argument with %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("archiveFormat = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestUnpack(t *testing.T) {
	t.Parallel()
	lim := unpackLimits{maxBytes: 1 << 20, maxEntries: 100}
	outside := t.TempDir() // what hostile archives aim at
	for _, tc := range []struct {
		name    string
		gz      bool
		entries []entry
		lim     *unpackLimits
		err     string // "" = success
		kind    error
		check   func(t *testing.T, dir string, notes []string)
	}{
		{name: "files, links, skipped devices", gz: true, entries: []entry{
			{name: "app/", typ: tar.TypeDir, mode: 0o750},
			{name: "app/bin/run.sh", body: "#!/bin/sh\necho hi\n", typ: tar.TypeReg, mode: 0o755},
			file("./app/data.txt", "data"),
			{name: "app/etc-passwd", typ: tar.TypeSymlink, link: "/etc/passwd"},
			{name: "app/hard", typ: tar.TypeLink, link: "app/data.txt"},
			{name: "app/fifo", typ: tar.TypeFifo},
			{name: "app/tty", typ: tar.TypeChar},
			file("app/data.txt", "replaced"), // a later entry wins, as in tar
		}, check: func(t *testing.T, dir string, notes []string) {
			if b, _ := os.ReadFile(filepath.Join(dir, "app/bin/run.sh")); string(b) != "#!/bin/sh\necho hi\n" {
				t.Errorf("run.sh = %q", b)
			}
			if fi, err := os.Stat(filepath.Join(dir, "app/bin/run.sh")); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("run.sh mode %v %v", fi.Mode(), err)
			}
			if fi, err := os.Stat(filepath.Join(dir, "app")); err != nil || fi.Mode().Perm() != 0o750 || fi.ModTime().Year() != 2020 {
				t.Errorf("app dir %v %v", fi.Mode(), err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "app/data.txt")); string(b) != "replaced" {
				t.Errorf("data.txt = %q", b)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "app/hard")); string(b) != "data" {
				t.Errorf("hard link = %q (links the first data.txt)", b)
			}
			if l, err := os.Readlink(filepath.Join(dir, "app/etc-passwd")); err != nil || l != "/etc/passwd" {
				t.Errorf("symlink %q %v", l, err)
			}
			for _, f := range []string{"app/fifo", "app/tty"} {
				if _, err := os.Lstat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s created: %v", f, err)
				}
			}
			if len(notes) != 2 || !strings.Contains(notes[0], `skipped "app/fifo"`) || !strings.Contains(notes[1], "device nodes") {
				t.Errorf("notes %q", notes)
			}
		}},
		{name: "plain tar", entries: []entry{file("a.txt", "a")}, check: func(t *testing.T, dir string, _ []string) {
			if b, _ := os.ReadFile(filepath.Join(dir, "a.txt")); string(b) != "a" {
				t.Errorf("a.txt = %q", b)
			}
		}},
		{name: "dot-dot", gz: true, entries: []entry{file("ok.txt", "x"), file("../../"+filepath.Base(outside)+"/pwn", "x")},
			err: `climbs out of the destination`, kind: errdefs.ErrInvalidArgument},
		{name: "absolute path", entries: []entry{file(outside+"/pwn", "x")}, err: "absolute path", kind: errdefs.ErrInvalidArgument},
		{name: "write through own symlink", gz: true, entries: []entry{
			{name: "s", typ: tar.TypeSymlink, link: outside},
			file("s/pwn", "x"),
		}, err: `goes through the symlink "s"`, kind: errdefs.ErrInvalidArgument},
		{name: "dir through own symlink", entries: []entry{
			{name: "s", typ: tar.TypeSymlink, link: outside},
			{name: "s/sub/", typ: tar.TypeDir},
		}, err: `goes through the symlink "s"`, kind: errdefs.ErrInvalidArgument},
		{name: "hard link out", entries: []entry{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}},
			err: "not a file earlier in the archive", kind: errdefs.ErrInvalidArgument},
		{name: "hard link to a symlink", entries: []entry{
			{name: "s", typ: tar.TypeSymlink, link: "/etc/shadow"},
			{name: "h", typ: tar.TypeLink, link: "s"},
		}, err: "not a file earlier in the archive", kind: errdefs.ErrInvalidArgument},
		{name: "size bomb", gz: true, entries: []entry{file("zeros", strings.Repeat("\x00", 3<<20))},
			err: "more than 1 MiB (the build's disk limit)", kind: errdefs.ErrResourceExhausted},
		{name: "bomb spread over files", gz: true, entries: []entry{
			file("z1", strings.Repeat("\x00", 600<<10)), file("z2", strings.Repeat("\x00", 600<<10)),
		}, err: `more than 1 MiB (the build's disk limit) at entry "z2"`, kind: errdefs.ErrResourceExhausted},
		{name: "too many entries", entries: []entry{file("1", ""), file("2", ""), file("3", "")},
			lim: &unpackLimits{maxBytes: 1 << 20, maxEntries: 2}, err: "more than 2 entries", kind: errdefs.ErrResourceExhausted},
		{name: "file over a directory", entries: []entry{{name: "d/", typ: tar.TypeDir}, file("d/x", "x"), file("d", "x")},
			err: `entry "d" is a directory`, kind: errdefs.ErrInvalidArgument},
		{name: "truncated", entries: []entry{{name: "short", typ: tar.TypeReg, body: "abc", size: 1000}},
			err: `entry "short"`, kind: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := writeArchive(t, filepath.Join(t.TempDir(), "a.tar"), tc.gz, tc.entries...)
			dir := t.TempDir()
			l := lim
			if tc.lim != nil {
				l = *tc.lim
			}
			var notes []string
			_, err := unpack(openFile(t, src), "a.tar", openDir(t, dir), l, func(s string) { notes = append(notes, s) })
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, dir, notes)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, tc.kind) {
				t.Fatalf("err = %v; want %v with %q", err, tc.kind, tc.err)
			}
			if !strings.Contains(err.Error(), "ADD a.tar") {
				t.Errorf("error %q does not name the archive", err)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("hostile archive wrote outside the destination: %v", ents)
			}
		})
	}
}

func TestUnpackBzip2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n, err := unpack(openFile(t, "testdata/archive/hello.tar.bz2"), "hello.tar.bz2", openDir(t, dir), unpackLimits{maxBytes: 1 << 20, maxEntries: 10}, func(string) {})
	if err != nil || n != 2 {
		t.Fatalf("unpack: %d entries, %v", n, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "hello", "a.txt")); string(b) != "A\n" {
		t.Errorf("hello/a.txt = %q", b)
	}
}

// TestStageAdd: ADD unpacks a source that is an archive, copies other
// files as they are, and leaves archives inside a directory source packed.
func TestStageAdd(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeArchive(t, filepath.Join(root, "vendor.tar.gz"), true, file("lib/v.py", "V = 1\n"))
	_ = os.MkdirAll(filepath.Join(root, "dir"), 0o755)
	writeArchive(t, filepath.Join(root, "dir", "inner.tar"), false, file("x", "x"))
	_ = os.WriteFile(filepath.Join(root, "plain.txt"), []byte("p"), 0o644)
	lim := &unpackLimits{maxBytes: 1 << 20, maxEntries: 10}
	for _, tc := range []struct {
		src, single string
		want        []string
	}{
		{"vendor.tar.gz", "", []string{"lib/v.py"}},
		{"plain.txt", "plain.txt", []string{"plain.txt"}},
		{"dir", "", []string{"inner.tar"}},
	} {
		stageDir := t.TempDir()
		var notes []string
		single, err := stage(openDir(t, root), tc.src, openDir(t, stageDir), lim, func(s string) { notes = append(notes, s) })
		if err != nil || single != tc.single {
			t.Errorf("stage %s: single %q, %v; want %q", tc.src, single, err, tc.single)
		}
		for _, w := range tc.want {
			if _, err := os.Stat(filepath.Join(stageDir, w)); err != nil {
				t.Errorf("stage %s: %s missing", tc.src, w)
			}
		}
		if tc.src == "vendor.tar.gz" && (len(notes) != 1 || !strings.Contains(notes[0], "unpacked vendor.tar.gz (gzip archive, 1 entries)")) {
			t.Errorf("notes %q", notes)
		}
	}
	// COPY never unpacks.
	stageDir := t.TempDir()
	if _, err := stage(openDir(t, root), "vendor.tar.gz", openDir(t, stageDir), nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(stageDir, "vendor.tar.gz")); err != nil {
		t.Errorf("COPY of an archive: %v", err)
	}
}

func openFile(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
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

// TestStageStaysInContext: COPY resolves the context's symlinks inside the
// context and copies them as symlinks; no host file is ever read.
func TestStageStaysInContext(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	_ = os.WriteFile(filepath.Join(outside, "secret"), []byte("host secret"), 0o600)
	root := t.TempDir()
	_ = os.Symlink(outside, filepath.Join(root, "d"))
	_ = os.Symlink("/etc/passwd", filepath.Join(root, "passwd"))
	_ = os.MkdirAll(filepath.Join(root, "app", "lib"), 0o755)
	_ = os.WriteFile(filepath.Join(root, "app", "lib", "x.py"), []byte("x"), 0o644)
	_ = os.Symlink("/app/lib", filepath.Join(root, "lib")) // absolute, meant inside the context
	for _, tc := range []struct {
		src  string
		err  string
		want map[string]string // staged name -> content, or "->target" for a symlink
	}{
		{src: "d/secret", err: "matches no file"},
		{src: "d/*", err: "matches no file"},
		{src: "d", want: map[string]string{"d": "->" + outside}},
		{src: "passwd", want: map[string]string{"passwd": "->/etc/passwd"}},
		{src: "lib/x.py", want: map[string]string{"x.py": "x"}},
		{src: "[dp]*", want: map[string]string{"d": "->" + outside, "passwd": "->/etc/passwd"}},
	} {
		t.Run(tc.src, func(t *testing.T) {
			stageDir := t.TempDir()
			_, err := stage(openDir(t, root), tc.src, openDir(t, stageDir), nil, nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tc.want {
				p := filepath.Join(stageDir, name)
				if target, ok := strings.CutPrefix(want, "->"); ok {
					if got, err := os.Readlink(p); err != nil || got != target {
						t.Errorf("%s: link %q %v, want -> %s", name, got, err, target)
					}
					continue
				}
				if got, err := os.ReadFile(p); err != nil || string(got) != want {
					t.Errorf("%s = %q %v, want %q", name, got, err, want)
				}
			}
		})
	}
}
