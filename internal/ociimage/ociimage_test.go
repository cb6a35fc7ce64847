package ociimage

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

func TestBuildIsReproducibleAndKeepsLinks(t *testing.T) {
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(rootfs, "usr", "bin"), 0o755))
	must(os.WriteFile(filepath.Join(rootfs, "usr", "bin", "tool"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Link(filepath.Join(rootfs, "usr", "bin", "tool"), filepath.Join(rootfs, "usr", "bin", "tool2")))
	must(os.Symlink("usr/bin", filepath.Join(rootfs, "bin")))
	bin := filepath.Join(dir, "sbx")
	must(os.WriteFile(bin, []byte("binary"), 0o600))
	spec := Spec{RootFS: rootfs, Files: []File{{Src: bin, Dst: "/usr/bin/sbx", Mode: 0o755}},
		Entrypoint: []string{"/usr/bin/sbx", "serve"}}

	a, err := Build(spec)
	must(err)
	// Touch everything: times must not reach the layers.
	later := time.Now().Add(time.Hour)
	must(os.Chtimes(filepath.Join(rootfs, "usr", "bin", "tool"), later, later))
	must(os.Chtimes(bin, later, later))
	b, err := Build(spec)
	must(err)
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("same inputs, different digests: %s vs %s", da, db)
	}

	got := map[string]*tar.Header{}
	tr := tar.NewReader(mutate.Extract(a))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(err)
		got[h.Name] = h
	}
	if h := got["usr/bin/tool2"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "usr/bin/tool" {
		t.Errorf("hard link: %+v, want a link to usr/bin/tool", h)
	}
	if h := got["bin"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "usr/bin" {
		t.Errorf("symlink: %+v", h)
	}
	if h := got["usr/bin/sbx"]; h == nil || h.Mode != 0o755 || h.Uid != 0 {
		t.Errorf("sbx: %+v, want mode 0755 owned by root", h)
	}
}
