package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/builder"
)

func TestTemplateInitWritesBuildableFiles(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "My Project!")
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"template", "init", "--path", dir})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(filepath.Join(dir, "e2b.Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := builder.Parse(bytes.NewReader(df), builder.ParseOptions{}); err != nil {
		t.Errorf("the Dockerfile init writes does not parse: %v", err)
	}
	cfg, err := readTemplateConfig(filepath.Join(dir, configFile))
	if err != nil {
		t.Fatal(err)
	}
	if cfg["template_name"] != "my-project" || cfg["dockerfile"] != "e2b.Dockerfile" || cfg["memory_mb"] != "1024" {
		t.Errorf("config %v", cfg)
	}
	// A second init refuses to overwrite.
	root = NewRoot()
	root.SetOut(&out)
	root.SetArgs([]string{"template", "init", "--path", dir})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("second init: %v", err)
	}
}

func TestTemplateConfigRoundTrip(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), configFile)
	in := templateConfig{"template_id": "abc", "template_name": "x", "start_cmd": `python3 -c "print('hi')"`, "cpu_count": "4"}
	if err := in.write(p); err != nil {
		t.Fatal(err)
	}
	got, err := readTemplateConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range in {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if err := os.WriteFile(p, []byte("no equals sign\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readTemplateConfig(p); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad config: %v", err)
	}
}
