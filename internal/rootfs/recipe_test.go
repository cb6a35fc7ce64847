package rootfs

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
)

func TestHashChangesWithEveryInput(t *testing.T) {
	t.Parallel()
	base := Recipe{Name: "r", Parent: "p", Packages: []string{"a", "b"}, Script: "true"}
	ref := Hash(base, "parenthash")
	if ref != Hash(base, "parenthash") {
		t.Fatal("same recipe hashed twice gave two hashes")
	}
	if len(ref) != 64 {
		t.Fatalf("hash %q: want 64 hex digits", ref)
	}
	tests := []struct {
		name   string
		change func(r *Recipe) string // returns the parent hash to use
	}{
		{"name", func(r *Recipe) string { r.Name = "s"; return "parenthash" }},
		{"parent name", func(r *Recipe) string { r.Parent = "q"; return "parenthash" }},
		{"parent hash", func(r *Recipe) string { return "otherhash" }},
		{"package added", func(r *Recipe) string { r.Packages = []string{"a", "b", "c"}; return "parenthash" }},
		{"package removed", func(r *Recipe) string { r.Packages = []string{"a"}; return "parenthash" }},
		{"package renamed", func(r *Recipe) string { r.Packages = []string{"a", "bb"}; return "parenthash" }},
		{"packages joined", func(r *Recipe) string { r.Packages = []string{"ab"}; return "parenthash" }},
		{"boundary shift", func(r *Recipe) string { r.Packages = []string{"a", "b;1:t"}; r.Script = "rue"; return "parenthash" }},
		{"script", func(r *Recipe) string { r.Script = "false"; return "parenthash" }},
		{"script whitespace", func(r *Recipe) string { r.Script = "true\n"; return "parenthash" }},
		{"omit added", func(r *Recipe) string { r.Omit = []string{"c"}; return "parenthash" }},
		{"omit two", func(r *Recipe) string { r.Omit = []string{"c", "d"}; return "parenthash" }},
		{"package moved to omit", func(r *Recipe) string { r.Packages = []string{"a"}; r.Omit = []string{"b"}; return "parenthash" }},
	}
	seen := map[string]string{ref: "reference"}
	for _, tt := range tests {
		r := base
		r.Packages = append([]string(nil), base.Packages...)
		ph := tt.change(&r)
		h := Hash(r, ph)
		if prev, dup := seen[h]; dup {
			t.Errorf("%s: hash equals the one of %s", tt.name, prev)
		}
		seen[h] = tt.name
	}
}

// The built-in hashes are the cache keys of every machine: they must not
// depend on anything but the recipes (no map order, no time, no host).
func TestBuiltinHashesStable(t *testing.T) {
	t.Parallel()
	b1 := NewBuilder(t.TempDir(), nil)
	b2 := NewBuilder(t.TempDir(), nil)
	for _, r := range Builtins() {
		c1, err := b1.resolve(r.Name)
		if err != nil {
			t.Fatal(err)
		}
		c2, _ := b2.resolve(r.Name)
		if c1[len(c1)-1].hash != c2[len(c2)-1].hash {
			t.Errorf("%s: hash differs between builders", r.Name)
		}
	}
	// A child's hash follows its parent's.
	ci, _ := b1.resolve("code-interpreter")
	if len(ci) != 2 || ci[0].Name != "base" || ci[1].hash != Hash(ci[1].Recipe, ci[0].hash) {
		t.Fatalf("code-interpreter chain = %+v, want base then code-interpreter hashed on base", ci)
	}
	b1.lookup = func(name string) (Recipe, bool) {
		r, ok := Lookup(name)
		if name == "base" {
			r.Packages = append(r.Packages, "jq")
		}
		return r, ok
	}
	changed, _ := b1.resolve("code-interpreter")
	if changed[1].hash == ci[1].hash {
		t.Error("changing base's packages did not change code-interpreter's hash")
	}
}

func TestBuiltins(t *testing.T) {
	t.Parallel()
	names := map[string]bool{}
	for _, r := range Builtins() {
		if !validName(r.Name) {
			t.Errorf("builtin %q: invalid name", r.Name)
		}
		if r.Parent != "" && !names[r.Parent] {
			t.Errorf("builtin %q: parent %q must come earlier", r.Name, r.Parent)
		}
		names[r.Name] = true
		for _, p := range r.Packages {
			if !validPackage(p) {
				t.Errorf("builtin %q: bad package %q", r.Name, p)
			}
		}
		if got, ok := Lookup(r.Name); !ok || got.Name != r.Name {
			t.Errorf("Lookup(%q) = %v, %v", r.Name, got.Name, ok)
		}
	}
	if _, ok := Lookup("nope"); ok {
		t.Error("Lookup(nope) found something")
	}
}

func TestResolveErrors(t *testing.T) {
	t.Parallel()
	recipes := map[string]Recipe{
		"loop-a":   {Name: "loop-a", Parent: "loop-b"},
		"loop-b":   {Name: "loop-b", Parent: "loop-a"},
		"orphan":   {Name: "orphan", Parent: "missing"},
		"Bad_Name": {Name: "Bad_Name"},
		"badpkg":   {Name: "badpkg", Packages: []string{"ok", "$(reboot)"}},
		"badomit":  {Name: "badomit", Packages: []string{"ok"}, Omit: []string{"gdb\nProvides: x"}},
	}
	b := NewBuilder(t.TempDir(), nil)
	b.lookup = func(n string) (Recipe, bool) { r, ok := recipes[n]; return r, ok }
	tests := []struct {
		name, want string
		kind       error
	}{
		{"unknown", `"unknown" not found`, errdefs.ErrNotFound},
		{"orphan", `parent "missing" not found`, errdefs.ErrNotFound},
		{"loop-a", "cycle", errdefs.ErrInvalidArgument},
		{"Bad_Name", "lowercase", errdefs.ErrInvalidArgument},
		{"badpkg", `"$(reboot)" is not a Debian package name`, errdefs.ErrInvalidArgument},
		{"badomit", `"gdb\nProvides: x" is not a Debian package name`, errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		_, err := b.Ensure(t.Context(), tt.name, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, tt.kind) {
			t.Errorf("Ensure(%q) = %v; want %v containing %q", tt.name, err, tt.kind, tt.want)
		}
	}
}

func TestNewBuilderCacheDir(t *testing.T) {
	t.Setenv(CacheDirEnv, "")
	if got := NewBuilder("", nil).CacheDir(); got != DefaultCacheDir {
		t.Errorf("default = %q, want %q", got, DefaultCacheDir)
	}
	t.Setenv(CacheDirEnv, "/tmp/x")
	if got := NewBuilder("", nil).CacheDir(); got != "/tmp/x" {
		t.Errorf("with env = %q, want /tmp/x", got)
	}
	if got := NewBuilder("/explicit", nil).CacheDir(); got != "/explicit" {
		t.Errorf("explicit = %q, want /explicit", got)
	}
}

func TestSourcesFrom(t *testing.T) {
	t.Parallel()
	td := func(n string) string { return filepath.Join("testdata", n) }
	missing := td("does-not-exist")
	const debSec = "http://deb.debian.org/debian-security"
	const exSec = "http://security.example.org/debian-security"
	tests := []struct {
		name, deb822, legacy, suite string
		want                        aptSources
		wantErr                     string
	}{
		{"host deb822", td("debian.sources"), missing, "bookworm", aptSources{"http://deb.debian.org/debian", debSec}, ""},
		{"stanza with the suite wins", td("security-first.sources"), missing, "bookworm", aptSources{"http://mirror.example.org/debian", exSec}, ""},
		{"suite absent: first non-pocket", td("other-suite.sources"), missing, "bookworm", aptSources{"http://mirror.example.org/debian", ""}, ""},
		{"deb822 without deb falls back to legacy", td("only-src.sources"), td("sources.list"), "bookworm", aptSources{"http://legacy.example.org/debian", exSec}, ""},
		{"legacy only", missing, td("sources.list"), "bookworm", aptSources{"http://legacy.example.org/debian", exSec}, ""},
		{"legacy spaced options, suite absent", missing, td("pocket-only.list"), "bookworm", aptSources{"http://legacy.example.org/debian", ""}, ""},
		{"deb822 preferred over legacy", td("debian.sources"), td("sources.list"), "bookworm", aptSources{"http://deb.debian.org/debian", debSec}, ""},
		{"nothing configured", missing, missing, "bookworm", aptSources{}, "no Debian mirror configured"},
		{"no deb anywhere", td("only-src.sources"), missing, "bookworm", aptSources{}, "no deb entry"},
		{"broken deb822", td("broken.sources"), missing, "bookworm", aptSources{}, `want "Field: value"`},
		{"broken legacy", missing, td("broken.list"), "bookworm", aptSources{}, "unterminated [options]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := sourcesFrom(tt.deb822, tt.legacy, tt.suite)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// The file written into trees parses back to what it was made from.
func TestSourcesFileRoundTrip(t *testing.T) {
	t.Parallel()
	for _, src := range []aptSources{
		{"http://mirror.example.org/debian", "http://security.example.org/debian-security"},
		{"http://mirror.example.org/debian", ""},
	} {
		text := src.sourcesFile("bookworm")
		got, err := parseDeb822Sources(strings.NewReader(text), "bookworm")
		if err != nil || got != src {
			t.Errorf("round trip of %+v = %+v, %v\n%s", src, got, err, text)
		}
		if !strings.Contains(text, "Suites: bookworm bookworm-updates\n") {
			t.Errorf("no updates pocket in\n%s", text)
		}
	}
}

func TestValidPackage(t *testing.T) {
	t.Parallel()
	for p, want := range map[string]bool{
		"python3-numpy": true, "g++": true, "libc6.1": true, "0ad": true,
		"": false, "-rf": false, "a b": false, "pkg;rm": false, "Foo": false, "$(x)": false,
	} {
		if got := validPackage(p); got != want {
			t.Errorf("validPackage(%q) = %v, want %v", p, got, want)
		}
	}
}

// The placeholder for omitted packages provides exactly them, so apt
// treats dependencies on them as met.
func TestOmitScript(t *testing.T) {
	t.Parallel()
	s := omitScript("ci", []string{"python3-pythran", "gdb"})
	for _, want := range []string{"Package: sbx-omitted\n", "Provides: python3-pythran, gdb\n", "dpkg -i "} {
		if !strings.Contains(s, want) {
			t.Errorf("omit script lacks %q:\n%s", want, s)
		}
	}
}
