// Package query parses the query parameters that the REST list endpoints
// share (limit, boolean flags, repeated or comma-separated lists), so they
// accept the same forms and reject bad values with the same message.
package query

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Limit reads the `limit` parameter: def when absent, else an integer from
// 1 to max.
func Limit(q url.Values, def, max int) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, errdefs.Invalid("limit must be an integer from 1 to %d, got %q", max, v)
	}
	return n, nil
}

// Bool reads a true/false parameter (any form strconv.ParseBool accepts);
// false when absent.
func Bool(q url.Values, name string) (bool, error) {
	v := q.Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, errdefs.Invalid("%s must be true or false, got %q", name, v)
	}
	return b, nil
}

// List flattens a parameter given repeated (a=x&a=y) or comma-separated
// (a=x,y), dropping blanks.
func List(vs []string) []string {
	var out []string
	for _, v := range vs {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
