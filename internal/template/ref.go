package template

import (
	"regexp"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// refRE is a template reference: [namespace/]name-or-ID[:tag]. Names are
// lowercased when templates are built, but references are matched as
// given, so the syntax check accepts either case.
var refRE = regexp.MustCompile(`^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,127}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$`)

// CheckRef says what is wrong with a template reference given by a
// client (field names the request field), before any lookup: a reference
// can only be one namespace, a name or ID, and a tag; as every component
// starts with a letter or digit, none can be "." or "..".
func CheckRef(field, ref string) error {
	if ref == "" {
		return errdefs.Invalid("%s is required (for example \"base\")", field)
	}
	if !refRE.MatchString(ref) {
		return errdefs.Invalid("%s %q is not a template reference: use [namespace/]name[:tag] with letters, digits, '.', '_' and '-' (at most 128 each), e.g. \"base\" or \"my-template:v2\"",
			field, truncate(ref, 100))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
