package builder

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sbxdev/sbx/internal/testenv"
)

// A step's layer counts as empty only when its diff holds nothing; a wide
// one is told apart by its first name, not by reading it all.
func TestLayerEmpty(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		files int // in diff; -1: no diff at all
		want  bool
	}{
		{"no diff", -1, false},
		{"empty diff", 0, true},
		{"one file", 1, false},
		{"many files", 5000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tc.files >= 0 {
				diff := filepath.Join(dir, "diff")
				if err := os.Mkdir(diff, 0o755); err != nil {
					t.Fatal(err)
				}
				testenv.ManyFiles(t, diff, tc.files)
			}
			if got := layerEmpty(dir); got != tc.want {
				t.Errorf("layerEmpty = %v, want %v", got, tc.want)
			}
		})
	}
}
