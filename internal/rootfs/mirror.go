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

// HostMirror returns the Debian mirror URI the host's apt uses for suite.
func HostMirror(suite string) (string, error) {
	return mirrorFrom(hostDeb822Sources, hostLegacySources, suite)
}

// mirrorFrom prefers the deb822 file and falls back to the legacy one.
func mirrorFrom(deb822Path, legacyPath, suite string) (string, error) {
	var tried []string
	for _, src := range []struct {
		path  string
		parse func(io.Reader, string) (string, error)
	}{{deb822Path, parseDeb822Mirror}, {legacyPath, parseLegacyMirror}} {
		f, err := os.Open(src.path)
		if errors.Is(err, fs.ErrNotExist) {
			tried = append(tried, src.path+" (missing)")
			continue
		}
		if err != nil {
			return "", fmt.Errorf("read apt sources: %w", err)
		}
		uri, err := src.parse(f, suite)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("parse %s: %w", src.path, err)
		}
		if uri != "" {
			return uri, nil
		}
		tried = append(tried, src.path+" (no deb entry)")
	}
	return "", fmt.Errorf("no Debian mirror configured for apt (looked at %s): add one to %s",
		strings.Join(tried, ", "), deb822Path)
}

// parseDeb822Mirror returns the first URI of the first "Types: deb" stanza
// whose Suites list suite; failing that, of the first "deb" stanza that is
// not a security or updates pocket. "" when there is none.
func parseDeb822Mirror(r io.Reader, suite string) (string, error) {
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
				return "", fmt.Errorf("line %q: want \"Field: value\"", line)
			}
			last = strings.ToLower(strings.TrimSpace(k))
			cur[last] = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
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
	for _, s := range stanzas {
		if uri, suites, ok := usable(s); ok && slices.Contains(suites, suite) {
			return uri, nil
		}
	}
	for _, s := range stanzas {
		if uri, suites, ok := usable(s); ok && len(suites) > 0 && !isPocket(suites[0]) {
			return uri, nil
		}
	}
	return "", nil
}

// parseLegacyMirror returns the URI of the first "deb" line whose suite is
// suite, else of the first "deb" line that is not a pocket. "" when none.
func parseLegacyMirror(r io.Reader, suite string) (string, error) {
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
				return "", fmt.Errorf("line %q: unterminated [options]", line)
			}
			f = f[1:]
		}
		if len(f) < 2 {
			return "", fmt.Errorf("line %q: want \"deb URI SUITE COMPONENT...\"", line)
		}
		if f[1] == suite {
			return f[0], nil
		}
		if first == "" && !isPocket(f[1]) {
			first = f[0]
		}
	}
	return first, sc.Err()
}

// isPocket reports whether a suite is an add-on such as bookworm-security.
func isPocket(suite string) bool {
	return strings.Contains(suite, "-") || strings.Contains(suite, "/")
}
