package sandbox

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

type observed []string

func (p *observed) PoolStarted(t template.Template) { *p = append(*p, "started "+t.ID) }
func (p *observed) PoolClaim(t template.Template, hit bool) {
	*p = append(*p, fmt.Sprintf("claim %s %v", t.ID, hit))
}
func (p *observed) CreateDone(sb store.Sandbox, _ time.Duration, err error) {
	*p = append(*p, fmt.Sprintf("create %q %v", sb.ID, errdefs.Message(err)))
}

// TestObserverFromConstruction: the observer passed to New hears of the
// pools and of every Create, failed ones included (the failures counter).
func TestObserverFromConstruction(t *testing.T) {
	t.Parallel()
	var calls observed
	m := New(Config{Data: datadir.Layout{Root: t.TempDir()}}, slog.New(slog.DiscardHandler), nil, newExitDriver(), nopNetwork{}, nil,
		WithObserver(&calls))
	ps := m.pools.(*Pools)
	ps.observer.PoolStarted(template.Template{ID: "base"})
	ps.observer.PoolClaim(template.Template{ID: "base"}, true)
	if _, err := m.Create(t.Context(), CreateRequest{}); err == nil {
		t.Fatal("Create without a template succeeded")
	}
	want := []string{"started base", "claim base true", `create "" templateID is required (for example "base")`}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("observer heard %v, want %v", calls, want)
	}
}
