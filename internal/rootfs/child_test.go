package rootfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// childBuilder returns a builder on the machine-wide cache (so base is
// shared) that also knows the given test recipes, and removes their trees
// afterwards: each is a full copy of base.
func childBuilder(t *testing.T, recipes ...Recipe) *Builder {
	t.Helper()
	b := integrationBuilder(t)
	extra := map[string]Recipe{}
	for _, r := range recipes {
		extra[r.Name] = r
	}
	b.lookup = func(name string) (Recipe, bool) {
		if r, ok := extra[name]; ok {
			return r, true
		}
		return Lookup(name)
	}
	t.Cleanup(func() {
		for name := range extra {
			matches, _ := filepath.Glob(filepath.Join(b.CacheDir(), name+"-*"))
			builds, _ := filepath.Glob(filepath.Join(b.CacheDir(), ".build-"+name+"-*"))
			for _, dir := range append(matches, builds...) {
				if err := removeTree(dir); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
			os.Remove(filepath.Join(b.CacheDir(), name+".lock"))
		}
	})
	return b
}

// Two builders (as two processes would) ensure the same child at once:
// exactly one builds it, the other waits and gets the same tree.
func TestEnsureConcurrentBuildsOnce(t *testing.T) {
	requireBuildHost(t)
	r := Recipe{Name: "sbx-test-concurrent", Parent: "base", Script: "echo built > /sbx-test-built"}
	b1 := childBuilder(t, r)
	b2 := childBuilder(t, r)
	if _, err := b1.Ensure(t.Context(), "base", nil); err != nil {
		t.Fatal(err)
	}

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		copies int
		roots  [2]string
		errs   [2]error
	)
	for i, b := range []*Builder{b1, b2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			roots[i], errs[i] = b.Ensure(t.Context(), r.Name, func(line string) {
				if strings.Contains(line, "copying sbx-test-concurrent from base") {
					mu.Lock()
					copies++
					mu.Unlock()
				}
			})
		}()
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Fatalf("builder %d: %v", i, errs[i])
		}
	}
	if roots[0] != roots[1] {
		t.Errorf("builders disagree: %q vs %q", roots[0], roots[1])
	}
	if copies != 1 {
		t.Errorf("child built %d times, want once", copies)
	}
	if got, err := os.ReadFile(filepath.Join(roots[0], "sbx-test-built")); err != nil || string(got) != "built\n" {
		t.Errorf("recipe script output = %q, %v", got, err)
	}
	// The child is a copy: the parent stays untouched.
	base, _, _ := b1.Path("base")
	if _, err := os.Stat(filepath.Join(base, "sbx-test-built")); err == nil {
		t.Error("child's script wrote into the parent tree")
	}
	assertNoMountsUnder(t, b1.CacheDir())
}

// A failing step reports what failed with apt's or the script's own words
// and leaves nothing that looks complete.
func TestEnsureFailureLeavesNoCompleteTree(t *testing.T) {
	requireBuildHost(t)
	tests := []struct {
		recipe Recipe
		want   string
	}{
		{Recipe{Name: "sbx-test-badpkg", Parent: "base", Packages: []string{"sbx-no-such-package"}}, "Unable to locate package sbx-no-such-package"},
		{Recipe{Name: "sbx-test-badscript", Parent: "base", Script: "echo about to fail >&2; exit 3"}, "about to fail"},
	}
	for _, tt := range tests {
		t.Run(tt.recipe.Name, func(t *testing.T) {
			b := childBuilder(t, tt.recipe)
			_, err := b.Ensure(t.Context(), tt.recipe.Name, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Ensure = %v; want an error containing %q", err, tt.want)
			}
			root, complete, _ := b.Path(tt.recipe.Name)
			if complete {
				t.Errorf("%s marked complete after a failed build", root)
			}
			if _, err := os.Stat(root); err == nil {
				t.Errorf("%s exists after a failed build", root)
			}
			assertNoMountsUnder(t, b.CacheDir())
		})
	}
}

// Cancelling mid-script stops the build, kills its processes and unmounts
// everything; the next Ensure starts over and succeeds.
func TestEnsureCancel(t *testing.T) {
	requireBuildHost(t)
	r := Recipe{Name: "sbx-test-cancel", Parent: "base",
		Script: "echo sbx-test-sleeping; exec sleep 1000"}
	b := childBuilder(t, r)
	if _, err := b.Ensure(t.Context(), "base", nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	running := 0
	_, err := b.Ensure(ctx, r.Name, func(line string) {
		if strings.Contains(line, "sbx-test-sleeping") {
			running = len(chrootedUnder(t, filepath.Join(b.CacheDir(), ".build-"+r.Name+"-")))
			cancel()
		}
	})
	if running == 0 {
		t.Error("no chrooted build process seen while the script ran: the survivor check below is blind")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Ensure after cancel = %v, want context.Canceled", err)
	}
	if pids := chrootedUnder(t, filepath.Join(b.CacheDir(), ".build-"+r.Name+"-")); len(pids) > 0 {
		t.Errorf("build processes survived the cancel: %v", pids)
	}
	assertNoMountsUnder(t, b.CacheDir())
	if _, complete, _ := b.Path(r.Name); complete {
		t.Fatal("cancelled build marked complete")
	}

	if leftovers, _ := filepath.Glob(filepath.Join(b.CacheDir(), ".build-"+r.Name+"-*")); len(leftovers) != 0 {
		t.Errorf("failed build left %v behind", leftovers)
	}

	// A crash (no cleanup at all) leaves a scratch tree: the next build of
	// the recipe replaces it, and old hashes' leftovers are pruned.
	r.Script = "true"
	b2 := childBuilder(t, r)
	chain, err := b2.resolve(r.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{
		b2.scratchDir(chain[1]),
		filepath.Join(b2.CacheDir(), ".build-"+r.Name+"-0123456789ab"),
	} {
		if err := os.MkdirAll(filepath.Join(dir, "rootfs/junk"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root, err := b2.Ensure(t.Context(), r.Name, nil)
	if err != nil {
		t.Fatalf("Ensure after a cancelled build: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "bin/sh")); err != nil {
		t.Errorf("rebuilt tree incomplete: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "junk")); err == nil {
		t.Errorf("crashed build's junk survived into the new tree")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(b.CacheDir(), ".build-"+r.Name+"-*")); len(leftovers) != 0 {
		t.Errorf("leftover build dirs after a successful build: %v", leftovers)
	}
}

// chrootedUnder lists processes whose root directory starts with prefix:
// the build's own, told apart from other tests' sandboxes and from other
// recipes' builds that share the machine-wide cache dir.
func chrootedUnder(t *testing.T, prefix string) []string {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, p := range procs {
		if root, err := os.Readlink(filepath.Join(p, "root")); err == nil && strings.HasPrefix(root, prefix) {
			pids = append(pids, filepath.Base(p)+" ("+root+")")
		}
	}
	return pids
}
