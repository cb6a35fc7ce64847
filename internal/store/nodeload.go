package store

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Bounds of NodeLoad.Pooled. A node reports at most MaxNodePools
// templates (those with the most ready sandboxes), and a reader takes no
// more than that, each count capped at MaxPooledCount and each template
// ID at MaxPooledIDLen bytes: the string comes from a heartbeat row or a
// Lease annotation that anyone with write access to the namespace may
// have edited, and an api replica keeps it in memory for every node.
const (
	MaxNodePools   = 64
	MaxPooledCount = 1 << 16
	MaxPooledIDLen = 128
	// maxPooledLen is the longest Pooled string read at all.
	maxPooledLen = MaxNodePools * (MaxPooledIDLen + 8)
)

// FormatPooled writes ready pooled sandboxes per template as NodeLoad.Pooled:
// templates with none left out, the fullest first (ties by ID, so one
// state gives one string and a heartbeat that changes nothing writes the
// same row), at most MaxNodePools of them.
func FormatPooled(ready map[string]int) string {
	type entry struct {
		id string
		n  int
	}
	es := make([]entry, 0, len(ready))
	for id, n := range ready {
		if n > 0 && validPooledID(id) {
			es = append(es, entry{id, min(n, MaxPooledCount)})
		}
	}
	slices.SortFunc(es, func(a, b entry) int { return cmp.Or(cmp.Compare(b.n, a.n), strings.Compare(a.id, b.id)) })
	var b strings.Builder
	for i, e := range es[:min(len(es), MaxNodePools)] {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(e.id)
		b.WriteByte('=')
		b.WriteString(strconv.Itoa(e.n))
	}
	return b.String()
}

// ParsePooled reads NodeLoad.Pooled within the bounds above; malformed
// entries are skipped, and nil is returned for none.
func ParsePooled(s string) map[string]int {
	if s == "" {
		return nil
	}
	if len(s) > maxPooledLen {
		s = s[:maxPooledLen]
	}
	var out map[string]int
	for f := range strings.FieldsSeq(s) {
		if len(out) >= MaxNodePools {
			break
		}
		id, num, ok := strings.Cut(f, "=")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || n <= 0 || !validPooledID(id) {
			continue
		}
		if out == nil {
			out = make(map[string]int)
		}
		out[id] = min(n, MaxPooledCount)
	}
	return out
}

// validPooledID keeps the format parseable: an ID with neither spaces nor
// '=' (template IDs are letters, digits, '-', '_', '.' and '/').
func validPooledID(id string) bool {
	return id != "" && len(id) <= MaxPooledIDLen && !strings.ContainsAny(id, " \t\n\r=")
}

// ParseBuilds reads NodeLoad.Builds as a set, within MaxNodeBuilds IDs of
// at most MaxPooledIDLen bytes (the same hostile-source reasoning as
// ParsePooled); nil for none.
func ParseBuilds(s string) map[string]struct{} {
	if s == "" {
		return nil
	}
	if max := MaxNodeBuilds * (MaxPooledIDLen + 1); len(s) > max {
		s = s[:max]
	}
	var out map[string]struct{}
	for id := range strings.FieldsSeq(s) {
		if len(out) >= MaxNodeBuilds {
			break
		}
		if len(id) > MaxPooledIDLen {
			continue
		}
		if out == nil {
			out = make(map[string]struct{})
		}
		out[id] = struct{}{}
	}
	return out
}
