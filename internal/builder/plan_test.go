package builder

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestParseGolden parses every testdata/plan/*.Dockerfile and compares the
// plan (or the error) with the .golden file next to it.
func TestParseGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/plan/*.Dockerfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".Dockerfile")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			var got []byte
			plan, err := Parse(in, ParseOptions{BuildArgs: map[string]string{"OVERRIDDEN": "from-build-arg"}})
			if err != nil {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Errorf("error %v is not errdefs.ErrInvalid", err)
				}
				got = []byte("error: " + err.Error() + "\n")
			} else {
				got = plan.MarshalGolden()
			}
			golden := strings.TrimSuffix(f, ".Dockerfile") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if string(got) != string(want) {
				t.Errorf("plan for %s differs from %s:\n--- got\n%s\n--- want\n%s", f, golden, got, want)
			}
		})
	}
}

func TestTemplateBase(t *testing.T) {
	t.Parallel()
	for ref, want := range map[string]string{
		"base": "base", "base:latest": "base", "e2bdev/base": "base", "e2bdev/base:latest": "base",
		"docker.io/e2bdev/code-interpreter": "code-interpreter", "code-interpreter": "code-interpreter",
		"python:3.12": "", "debian": "", "base:1.0": "",
	} {
		if got := TemplateBase(ref); got != want {
			t.Errorf("TemplateBase(%q) = %q, want %q", ref, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"python3": "python3", "-m": "-m", "a b": "'a b'", "it's": `'it'\''s'`, "": "''", "$HOME": "'$HOME'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
