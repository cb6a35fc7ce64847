package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sbxdev/sbx/internal/auth"
)

// TeamLabel is the label naming the team a series is about.
const TeamLabel = "team"

// scope is what one scrape may see.
type scope struct {
	all  bool   // the admin: every series
	team string // a team: its series; "" and !all: the series without a team
}

func scopeOf(ctx context.Context) scope {
	t, ok := auth.TeamFrom(ctx)
	switch {
	case !ok: // anonymous (--metrics-public)
		return scope{}
	case t.Admin && t.ID == "":
		return scope{all: true}
	}
	return scope{team: t.ID}
}

// scoped gathers the registry and keeps the series the scope may see.
// Filtering after gathering, rather than keeping a registry per team,
// keeps one source of truth; a scrape costs one gather either way.
type scoped struct {
	g prometheus.Gatherer
	s scope
}

func (f scoped) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := f.g.Gather()
	if f.s.all {
		return mfs, err
	}
	out := mfs[:0]
	for _, mf := range mfs {
		kept := mf.Metric[:0]
		for _, m := range mf.Metric {
			if team, has := teamOf(m); (f.s.team == "" && !has) || (f.s.team != "" && has && team == f.s.team) {
				kept = append(kept, m)
			}
		}
		if len(kept) > 0 {
			mf.Metric = kept
			out = append(out, mf)
		}
	}
	return out, err
}

// teamOf is the team a series is about. An empty team label (a pool of a
// built-in template) names no team, as in Prometheus itself.
func teamOf(m *dto.Metric) (string, bool) {
	for _, l := range m.GetLabel() {
		if l.GetName() == TeamLabel {
			return l.GetValue(), l.GetValue() != ""
		}
	}
	return "", false
}
