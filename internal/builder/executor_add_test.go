package builder

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildAddArchive builds with crun: ADD unpacks a local .tar.gz into its
// destination with --chown applied, copies a plain file as COPY does, and
// hostile archives fail the step with a clear error, write nothing outside
// and leave the earlier build usable.
func TestBuildAddArchive(t *testing.T) {
	env := newTestEnv(t)
	ctxDir := t.TempDir()
	writeArchive(t, filepath.Join(ctxDir, "vendor.tar.gz"), true,
		entry{name: "lib/", typ: tar.TypeDir, mode: 0o755},
		file("lib/v.py", "V = 1\n"),
		entry{name: "bin/tool", typ: tar.TypeReg, body: "#!/bin/sh\necho tool\n", mode: 0o755},
		entry{name: "bin/t", typ: tar.TypeSymlink, link: "tool"},
	)
	writeFiles(t, ctxDir, map[string]string{"notes.txt": "plain\n"})
	files := &dirFiles{dir: ctxDir}
	p := files.plan(t, "FROM base\nADD --chown=user:user vendor.tar.gz /opt/vendor/\nADD notes.txt /etc/notes.txt\n")
	var lines []string
	res, err := env.exec.Build(t.Context(), Request{Base: env.base, Steps: p.Steps, Files: files,
		Progress: func(pr Progress) { lines = append(lines, pr.Message) }})
	if err != nil {
		t.Fatalf("build: %v\nlog:\n%s", err, strings.Join(lines, "\n"))
	}
	if !strings.Contains(strings.Join(lines, "\n"), "unpacked vendor.tar.gz (gzip archive, 4 entries)") {
		t.Errorf("build log does not report the unpacking:\n%s", strings.Join(lines, "\n"))
	}
	const check = `stat -c '%U:%G %a %n' /opt/vendor/lib/v.py /opt/vendor/bin/tool /etc/notes.txt; cat /opt/vendor/lib/v.py; /opt/vendor/bin/t; ls /opt/vendor`
	out := env.inspect(t, res, check)
	for _, want := range []string{"user:user 644 /opt/vendor/lib/v.py", "user:user 755 /opt/vendor/bin/tool",
		"root:root 644 /etc/notes.txt", "V = 1", "tool"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "vendor.tar.gz") {
		t.Errorf("the archive itself was copied:\n%s", out)
	}

	// Hostile archives: each fails its step and changes nothing.
	target := t.TempDir() // what the archives aim at on the host
	layersBefore, _ := os.ReadDir(env.exec.LayersDir())
	for _, tc := range []struct {
		name    string
		entries []entry
		disk    int
		want    string
	}{
		{"symlink escape", []entry{{name: "s", typ: tar.TypeSymlink, link: target}, file("s/pwn", "x")}, 0,
			`entry "s/pwn" goes through the symlink "s"`},
		{"dot-dot", []entry{file("../../../../../../.."+target+"/pwn", "x")}, 0, "climbs out of the destination"},
		{"absolute", []entry{file(target+"/pwn", "x")}, 0, "absolute path"},
		{"size bomb", []entry{file("zeros", strings.Repeat("\x00", 3<<20))}, 2, "unpacks to more than 2 MiB (the build's disk limit)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeArchive(t, filepath.Join(dir, "evil.tar.gz"), true, tc.entries...)
			files := &dirFiles{dir: dir}
			p := files.plan(t, "FROM base\nADD evil.tar.gz /opt/evil/\n")
			disk := env.exec.cfg.Limits.DiskMB
			if tc.disk > 0 {
				env.exec.cfg.Limits.DiskMB = tc.disk
				defer func() { env.exec.cfg.Limits.DiskMB = disk }()
			}
			_, err := env.exec.Build(t.Context(), Request{Base: env.base, Steps: p.Steps, Files: files})
			var se *StepError
			if !errors.As(err, &se) || se.Step != 3 || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ADD evil.tar.gz") {
				t.Fatalf("err = %v; want a step 3 error with %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(target); len(ents) != 0 {
				t.Fatalf("the archive wrote outside its destination: %v", ents)
			}
		})
	}
	if after, _ := os.ReadDir(env.exec.LayersDir()); len(after) != len(layersBefore) {
		t.Errorf("failed builds left layers: %d before, %d after", len(layersBefore), len(after))
	}
	if out := env.inspect(t, res, check); !strings.Contains(out, "V = 1") {
		t.Errorf("the earlier build changed:\n%s", out)
	}
}
