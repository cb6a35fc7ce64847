package sandbox

import (
	"fmt"
	"testing"

	"github.com/sbxdev/sbx/internal/template"
)

type poolCalls []string

func (p *poolCalls) PoolStarted(t template.Template) { *p = append(*p, "started "+t.ID) }
func (p *poolCalls) PoolClaim(t template.Template, hit bool) {
	*p = append(*p, fmt.Sprintf("claim %s %v", t.ID, hit))
}

// TestObserverHearsEarlierPools: the metrics are wired after the pools
// start, so SetObserver tells the observer of the pools started before it.
func TestObserverHearsEarlierPools(t *testing.T) {
	t.Parallel()
	m := &Manager{}
	m.poolStarted(template.Template{ID: "base"})
	m.obs().PoolClaim(template.Template{ID: "base"}, true) // nobody listens yet
	var calls poolCalls
	m.SetObserver(&calls)
	m.poolStarted(template.Template{ID: "web"})
	m.obs().PoolClaim(template.Template{ID: "web"}, false)
	want := []string{"started base", "started web", "claim web false"}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("observer heard %v, want %v", calls, want)
	}
}
