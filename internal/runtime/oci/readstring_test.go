package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadString: readString reads with plain system calls in 4 KiB
// reads; files longer than one read, empty or missing ones, and kernel
// files must read as os.ReadFile reads them.
func TestReadString(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	long := strings.Repeat("total_inactive_file 123456789\n", 500) // 15 KB: four reads
	for _, tc := range []struct {
		name, path, want string
	}{
		{"short", write("short", "42\n"), "42\n"},
		{"longer than one read", write("long", long), long},
		{"exactly one read", write("page", strings.Repeat("x", 4096)), strings.Repeat("x", 4096)},
		{"empty", write("empty", ""), ""},
		{"missing", filepath.Join(dir, "missing"), ""},
		{"directory", dir, ""},
		{"kernel file", "/proc/sys/kernel/ostype", "Linux\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := readString(tc.path); got != tc.want {
				t.Errorf("readString(%s) = %d bytes %.40q; want %d bytes %.40q", tc.path, len(got), got, len(tc.want), tc.want)
			}
		})
	}
}
