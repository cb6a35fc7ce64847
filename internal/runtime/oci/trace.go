package oci

import "time"

// phaseTrace times the steps of one start for the debug log ("where the
// milliseconds go"); cheap enough to keep on every start.
type phaseTrace struct {
	last  time.Time
	names []string
	took  []time.Duration
}

func newPhaseTrace() *phaseTrace { return &phaseTrace{last: time.Now()} }

// mark ends the step named name.
func (t *phaseTrace) mark(name string) {
	now := time.Now()
	t.names, t.took = append(t.names, name), append(t.took, now.Sub(t.last))
	t.last = now
}

func (t *phaseTrace) attrs() []any {
	out := make([]any, 0, 2*len(t.names))
	for i, n := range t.names {
		out = append(out, n, t.took[i])
	}
	return out
}
