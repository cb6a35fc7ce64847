package rootfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// The host's apt sources. The mirror is read from them at run time, never
// written into the code: each deployment has its own reachable mirror.
const (
	hostDeb822Sources = "/etc/apt/sources.list.d/debian.sources"
	hostLegacySources = "/etc/apt/sources.list"
)

// aptSources are the archives a tree is built from and keeps for apt.
type aptSources struct {
	Mirror   string // the suite itself, and suite-updates
	Security string // suite-security; "" when the host has none
}

// HostMirror returns the Debian mirror URI the host's apt uses for suite.
func HostMirror(suite string) (string, error) {
	src, err := hostSources(suite)
	return src.Mirror, err
}

func hostSources(suite string) (aptSources, error) {
	return sourcesFrom(hostDeb822Sources, hostLegacySources, suite)
}

// sourcesFrom prefers the deb822 file and falls back to the legacy one.
func sourcesFrom(deb822Path, legacyPath, suite string) (aptSources, error) {
	var tried []string
	for _, src := range []struct {
		path  string
		parse func(io.Reader, string) (aptSources, error)
	}{{deb822Path, parseDeb822Sources}, {legacyPath, parseLegacySources}} {
		f, err := os.Open(src.path)
		if errors.Is(err, fs.ErrNotExist) {
			tried = append(tried, src.path+" (missing)")
			continue
		}
		if err != nil {
			return aptSources{}, fmt.Errorf("read apt sources: %w", err)
		}
		got, err := src.parse(f, suite)
		f.Close()
		if err != nil {
			return aptSources{}, fmt.Errorf("parse %s: %w", src.path, err)
		}
		if got.Mirror != "" {
			return got, nil
		}
		tried = append(tried, src.path+" (no deb entry)")
	}
	return aptSources{}, fmt.Errorf("no Debian mirror configured for apt (looked at %s): add one to %s",
		strings.Join(tried, ", "), deb822Path)
}

// parseDeb822Sources takes as mirror the first URI of the first "Types: deb"
// stanza whose Suites list suite; failing that, of the first "deb" stanza
// that is not a security or updates pocket. Security is the first stanza
// listing suite-security. Empty fields when there is none.
func parseDeb822Sources(r io.Reader, suite string) (aptSources, error) {
	type stanza map[string]string
	var stanzas []stanza
	cur := stanza{}
	last := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			if len(cur) > 0 {
				stanzas = append(stanzas, cur)
				cur = stanza{}
			}
			last = ""
		case strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t':
			// Continuation of a multi-line field.
			if last != "" {
				cur[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				return aptSources{}, fmt.Errorf("line %q: want \"Field: value\"", line)
			}
			last = strings.ToLower(strings.TrimSpace(k))
			cur[last] = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return aptSources{}, err
	}
	if len(cur) > 0 {
		stanzas = append(stanzas, cur)
	}

	usable := func(s stanza) (string, []string, bool) {
		if !slices.Contains(strings.Fields(s["types"]), "deb") ||
			strings.EqualFold(s["enabled"], "no") {
			return "", nil, false
		}
		uris := strings.Fields(s["uris"])
		if len(uris) == 0 {
			return "", nil, false
		}
		return uris[0], strings.Fields(s["suites"]), true
	}
	var out aptSources
	for _, s := range stanzas {
		uri, suites, ok := usable(s)
		if !ok {
			continue
		}
		if out.Mirror == "" && slices.Contains(suites, suite) {
			out.Mirror = uri
		}
		if out.Security == "" && slices.Contains(suites, suite+"-security") {
			out.Security = uri
		}
	}
	for _, s := range stanzas {
		if uri, suites, ok := usable(s); ok && out.Mirror == "" && len(suites) > 0 && !isPocket(suites[0]) {
			out.Mirror = uri
		}
	}
	return out, nil
}

// parseLegacySources takes as mirror the URI of the first "deb" line whose
// suite is suite, else of the first "deb" line that is not a pocket;
// security is the first line for suite-security. Empty when none.
func parseLegacySources(r io.Reader, suite string) (aptSources, error) {
	var out aptSources
	first := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			// Options: "[arch=amd64 signed-by=...]", possibly split in fields.
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) == 0 {
				return aptSources{}, fmt.Errorf("line %q: unterminated [options]", line)
			}
			f = f[1:]
		}
		if len(f) < 2 {
			return aptSources{}, fmt.Errorf("line %q: want \"deb URI SUITE COMPONENT...\"", line)
		}
		switch {
		case f[1] == suite && out.Mirror == "":
			out.Mirror = f[0]
		case f[1] == suite+"-security" && out.Security == "":
			out.Security = f[0]
		case first == "" && !isPocket(f[1]):
			first = f[0]
		}
	}
	if out.Mirror == "" {
		out.Mirror = first
	}
	return out, sc.Err()
}

// sourcesFile is the deb822 apt configuration written into every tree:
// the suite, its updates and (when the host has it) its security pocket,
// like Debian's own container images.
func (a aptSources) sourcesFile(suite string) string {
	const keyring = "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
	out := "Types: deb\nURIs: " + a.Mirror + "\nSuites: " + suite + " " + suite + "-updates\nComponents: main\n" + keyring
	if a.Security != "" {
		out += "\nTypes: deb\nURIs: " + a.Security + "\nSuites: " + suite + "-security\nComponents: main\n" + keyring
	}
	return out
}

// isPocket reports whether a suite is an add-on such as bookworm-security.
func isPocket(suite string) bool {
	return strings.Contains(suite, "-") || strings.Contains(suite, "/")
}
