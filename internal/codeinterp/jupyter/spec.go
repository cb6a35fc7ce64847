package jupyter

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
)

// KernelSpec is a parsed kernel.json.
type KernelSpec struct {
	Name          string            `json:"-"`
	Dir           string            `json:"-"`
	Argv          []string          `json:"argv"`
	DisplayName   string            `json:"display_name"`
	Language      string            `json:"language"`
	InterruptMode string            `json:"interrupt_mode"`
	Env           map[string]string `json:"env"`
}

// DefaultKernelDirs are the standard system locations of kernelspecs, in
// Jupyter's search order after the user's own directory.
var DefaultKernelDirs = []string{
	"/usr/local/share/jupyter/kernels",
	"/usr/share/jupyter/kernels",
}

var specNameRe = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ErrNoKernel means no kernelspec of the requested name exists.
var ErrNoKernel = errors.New("no such kernel")

// LoadSpec finds kernelspec name in dirs (first match wins).
func LoadSpec(dirs []string, name string) (*KernelSpec, error) {
	if !specNameRe.MatchString(name) {
		return nil, fmt.Errorf("kernel name %q: %w (names are letters, digits, '.', '_' and '-')", name, ErrNoKernel)
	}
	for _, d := range dirs {
		dir := filepath.Join(d, name)
		b, err := os.ReadFile(filepath.Join(dir, "kernel.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read kernelspec %s: %w", dir, err)
		}
		var s KernelSpec
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("parse %s/kernel.json: %w", dir, err)
		}
		if len(s.Argv) == 0 {
			return nil, fmt.Errorf("%s/kernel.json has an empty argv", dir)
		}
		s.Name, s.Dir = name, dir
		return &s, nil
	}
	return nil, fmt.Errorf("kernel %q not found in %v: %w", name, dirs, ErrNoKernel)
}

// ListSpecs returns the names of all kernelspecs found in dirs, sorted.
func ListSpecs(dirs []string) []string {
	seen := map[string]bool{}
	for _, d := range dirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(d, e.Name(), "kernel.json")); err == nil {
				seen[e.Name()] = true
			}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// argv expands the {connection_file} and {resource_dir} placeholders.
func (s *KernelSpec) argv(connFile string) []string {
	out := make([]string, len(s.Argv))
	for i, a := range s.Argv {
		switch a {
		case "{connection_file}":
			a = connFile
		case "{resource_dir}":
			a = s.Dir
		}
		out[i] = a
	}
	return out
}
