// Package ociimage builds sbx's server image without a container engine:
// layers are tar streams of directories on this host, written with
// go-containerregistry as a `docker save`-style archive that podman,
// docker, skopeo and crane load or push.
package ociimage

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sbxdev/sbx/internal/atomicfile"
)

// epoch is every file's modification time in the layers, so the same
// inputs give the same layer digests (reproducible builds).
var epoch = time.Unix(0, 0).UTC()

// File is one file of a layer: Src on this host, Dst in the image.
type File struct {
	Src, Dst string
	Mode     fs.FileMode
}

// Spec is what goes into the image.
type Spec struct {
	// RootFS is a directory whose tree becomes the first layer.
	RootFS string
	// Files become the second layer (the sbx binaries).
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	Ports      []string // "3000/tcp"
	Volumes    []string
	Labels     map[string]string
	Created    time.Time
}

// Build assembles the image described by spec.
func Build(spec Spec) (v1.Image, error) {
	base, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return dirTar(spec.RootFS) },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("root filesystem layer: %w", err)
	}
	bins, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return filesTar(spec.Files) },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("binaries layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, base, bins)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH // the binaries are built for this host
	cf.Created = v1.Time{Time: spec.Created}
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.Env = spec.Env
	cf.Config.Labels = spec.Labels
	cf.Config.ExposedPorts = map[string]struct{}{}
	for _, p := range spec.Ports {
		cf.Config.ExposedPorts[p] = struct{}{}
	}
	cf.Config.Volumes = map[string]struct{}{}
	for _, v := range spec.Volumes {
		cf.Config.Volumes[v] = struct{}{}
	}
	return mutate.ConfigFile(img, cf)
}

// Write saves img as a `docker save`-style archive tagged ref.
func Write(path, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	return atomicfile.WriteFunc(path, 0o644, func(w io.Writer) error {
		return tarball.Write(tag, img, w)
	})
}

// dirTar streams dir as a tar of its tree, owners, modes and hard links
// kept. Sockets and device nodes are left out: the container runtime
// makes /dev.
func dirTar(dir string) (io.ReadCloser, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := writeTree(tw, dir)
		if cerr := tw.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}

func writeTree(tw *tar.Writer, dir string) error {
	links := map[[2]uint64]string{} // (dev, inode) → first name
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch fi.Mode().Type() {
		case fs.ModeSocket, fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice, fs.ModeNamedPipe:
			return nil
		}
		target := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = epoch, time.Time{}, time.Time{}
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
			if fi.Mode().IsRegular() && st.Nlink > 1 {
				key := [2]uint64{uint64(st.Dev), st.Ino}
				if first, ok := links[key]; ok {
					hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
					return tw.WriteHeader(hdr)
				}
				links[key] = hdr.Name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		return copyFile(tw, p)
	})
}

func copyFile(w io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// filesTar streams files as a tar owned by root, with their parent
// directories.
func filesTar(files []File) (io.ReadCloser, error) {
	for _, f := range files {
		if _, err := os.Stat(f.Src); err != nil {
			return nil, err
		}
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := writeFiles(tw, files)
		if cerr := tw.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}

func writeFiles(tw *tar.Writer, files []File) error {
	dirs := map[string]bool{}
	var dirList []string
	for _, f := range files {
		for d := filepath.Dir(filepath.Clean(f.Dst)); d != "/" && d != "."; d = filepath.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				dirList = append(dirList, d)
			}
		}
	}
	sort.Strings(dirList) // parents first
	for _, d := range dirList {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, f := range files {
		fi, err := os.Stat(f.Src)
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return errors.New(f.Src + " is not a regular file")
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: filepath.Clean(f.Dst)[1:], Mode: int64(f.Mode.Perm()),
			Size: fi.Size(), ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if err := copyFile(tw, f.Src); err != nil {
			return err
		}
	}
	return nil
}
