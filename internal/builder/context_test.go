package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestIgnore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte("# comment\n*.log\n**/__pycache__\nbuild/\n!build/keep.txt\nsecrets/*.key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ig, err := LoadIgnore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"app.log": true, "src/app.log": false, // *.log is anchored at the context root, as in Docker
		"src/__pycache__/x.pyc": true, "__pycache__": true,
		"build/out.bin": true, "build/keep.txt": false, "build": true,
		"secrets/a.key": true, "secrets/a.pub": false, "main.py": false,
	} {
		if got := ig.Ignored(path); got != want {
			t.Errorf("Ignored(%q) = %v, want %v", path, got, want)
		}
	}
	none, err := LoadIgnore(t.TempDir())
	if err != nil || none.Ignored("anything") {
		t.Errorf("no .dockerignore: %v %v", err, none.Ignored("anything"))
	}
}

func TestCopyFilesHashAndTar(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"app/main.py": "v1", "app/debug.log": "x", "app/lib/u.py": "u", "README": "r"})
	if err := os.Symlink("main.py", filepath.Join(dir, "app", "link.py")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte("app/*.log\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ig, _ := LoadIgnore(dir)
	step := Step{Type: StepCopy, Args: []string{"app", "/app"}}
	files, err := CopyFiles(dir, "app", ig)
	if err != nil {
		t.Fatal(err)
	}
	var rels []string
	for _, f := range files {
		rels = append(rels, f.Rel)
	}
	if got := strings.Join(rels, ","); got != "app,app/lib,app/lib/u.py,app/link.py,app/main.py" {
		t.Errorf("files %s", got)
	}
	h1, _ := FilesHash(dir, step, files)
	h2, _ := FilesHash(dir, step, files)
	if h1 != h2 || len(h1) != 64 {
		t.Fatalf("hash not stable: %s %s", h1, h2)
	}
	other, _ := FilesHash(dir, Step{Type: StepCopy, Args: []string{"app", "/elsewhere"}}, files)
	if other == h1 {
		t.Error("hash ignores the destination")
	}
	writeFiles(t, dir, map[string]string{"app/main.py": "v2"})
	files2, _ := CopyFiles(dir, "app", ig)
	if h3, _ := FilesHash(dir, step, files2); h3 == h1 {
		t.Error("hash ignores file content")
	}
	writeFiles(t, dir, map[string]string{"app/debug.log": "changed"})
	files3, _ := CopyFiles(dir, "app", ig)
	h4, _ := FilesHash(dir, step, files3)
	if h5, _ := FilesHash(dir, step, files2); h4 != h5 {
		t.Error("hash changes with an ignored file")
	}

	var buf bytes.Buffer
	if err := WriteTar(&buf, dir, files2); err != nil {
		t.Fatal(err)
	}
	gz, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	got := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[h.Name] = string(b) + h.Linkname
	}
	var names []string
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "app/,app/lib/,app/lib/u.py,app/link.py,app/main.py" || got["app/main.py"] != "v2" || got["app/link.py"] != "main.py" {
		t.Errorf("tar holds %v", got)
	}

	for _, bad := range []string{"../x", "nothing*", "missing.txt"} {
		if _, err := CopyFiles(dir, bad, ig); err == nil {
			t.Errorf("CopyFiles(%q) succeeded", bad)
		}
	}
	if all, err := CopyFiles(dir, ".", ig); err != nil || len(all) < 6 {
		t.Errorf("CopyFiles(.) = %d files, %v", len(all), err)
	}
}
