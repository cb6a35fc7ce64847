package store

import (
	"fmt"
	"maps"
	"strings"
	"testing"
)

func TestPooledRoundTrip(t *testing.T) {
	t.Parallel()
	many := map[string]int{}
	for i := range MaxNodePools + 10 {
		many[fmt.Sprintf("tpl-%03d", i)] = 1 + i
	}
	tests := []struct {
		name  string
		ready map[string]int
		want  string
	}{
		{"none", nil, ""},
		{"empty pools are left out", map[string]int{"base": 0, "x": 2}, "x=2"},
		{"fullest first, ties by id", map[string]int{"b": 1, "a": 1, "c": 5}, "c=5 a=1 b=1"},
		{"ids that would break the format are dropped", map[string]int{"a b": 1, "a=b": 1, "": 3, "ok": 1}, "ok=1"},
		{"counts are capped", map[string]int{"big": MaxPooledCount * 2}, fmt.Sprintf("big=%d", MaxPooledCount)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := FormatPooled(tt.ready)
			if s != tt.want {
				t.Fatalf("FormatPooled = %q, want %q", s, tt.want)
			}
			got := ParsePooled(s)
			for id, n := range got {
				if tt.ready[id] != n && n != MaxPooledCount {
					t.Errorf("ParsePooled(%q)[%s] = %d, want %d", s, id, n, tt.ready[id])
				}
			}
		})
	}
	s := FormatPooled(many)
	if got := ParsePooled(s); len(got) != MaxNodePools || got[fmt.Sprintf("tpl-%03d", MaxNodePools+9)] != MaxNodePools+10 {
		t.Fatalf("a node with %d pools reported %d (want the %d fullest)", len(many), len(got), MaxNodePools)
	}
}

// TestParseBounded: what an api replica reads from a heartbeat row or a
// Lease annotation is bounded whatever was written there.
func TestParseBounded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want map[string]int
	}{
		{"garbage entries are skipped", "a=1 b= =3 c=x d=-1 e=0 f=2", map[string]int{"a": 1, "f": 2}},
		{"a huge count is capped", "a=999999999999", map[string]int{"a": MaxPooledCount}},
		{"a long id is skipped", strings.Repeat("x", MaxPooledIDLen+1) + "=1 y=1", map[string]int{"y": 1}},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := ParsePooled(tt.in); !maps.Equal(got, tt.want) {
				t.Fatalf("ParsePooled(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	var b strings.Builder
	for i := range 100_000 {
		fmt.Fprintf(&b, "t%d=1 ", i)
	}
	if got := ParsePooled(b.String()); len(got) > MaxNodePools {
		t.Errorf("ParsePooled of 100,000 entries kept %d, want at most %d", len(got), MaxNodePools)
	}
	b.Reset()
	for i := range 100_000 {
		fmt.Fprintf(&b, "build-%d ", i)
	}
	if got := ParseBuilds(b.String()); len(got) != MaxNodeBuilds {
		t.Errorf("ParseBuilds of 100,000 ids kept %d, want %d", len(got), MaxNodeBuilds)
	}
	if got := ParseBuilds(strings.Repeat("x", 1<<20)); len(got) != 0 {
		t.Errorf("ParseBuilds of a 1 MiB id kept %v", len(got))
	}
}
