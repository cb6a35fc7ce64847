package history

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
)

// fakeSource is a hand-written Source: a fixed set of sandboxes whose
// samples carry the clock's time and a counter as memory use.
type fakeSource struct {
	now  func() time.Time
	live []store.Sandbox
	n    uint64
}

func (f *fakeSource) Live() []store.Sandbox { return f.live }
func (f *fakeSource) Metrics(_ context.Context, _, id string) ([]sandbox.Metric, error) {
	f.n++
	return []sandbox.Metric{{Timestamp: f.now(), MemUsed: f.n}}, nil
}

func TestHistorySelectsByIntervalAndPrunes(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	now := base
	clock := func() time.Time { return now }
	src := &fakeSource{now: clock, live: []store.Sandbox{
		{ID: "a", TeamID: "t1", State: store.StateRunning, StartedAt: base.Add(-time.Second)},
		{ID: "p", TeamID: "t1", State: store.StatePaused, StartedAt: base.Add(-time.Second)},
	}}
	h := New(src, 10*time.Second, time.Minute, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.SetClock(clock)
	for i := 0; i < 10; i++ { // 0s .. 90s
		h.Sample(context.Background())
		if i == 2 { // a sandbox starts between the samples at 20s and 30s
			src.live = append(src.live, store.Sandbox{ID: "b", TeamID: "t1", State: store.StateRunning, StartedAt: now.Add(5 * time.Second)})
		}
		now = now.Add(10 * time.Second)
	}
	// Retention 1 min: at 90s the samples of 30s..90s remain.
	all := h.Sandbox("a", time.Time{}, time.Time{})
	if len(all) != 7 || !all[0].Timestamp.Equal(base.Add(30*time.Second)) {
		t.Fatalf("after pruning: %d samples from %v, want 7 from %v", len(all), all[0].Timestamp, base.Add(30*time.Second))
	}
	got := h.Sandbox("a", base.Add(40*time.Second), base.Add(60*time.Second))
	if len(got) != 3 {
		t.Fatalf("[40s, 60s]: %d samples, want 3", len(got))
	}
	if h.Sandbox("p", time.Time{}, time.Time{}) != nil {
		t.Error("a paused sandbox was sampled")
	}
	ts := h.Team("t1", time.Time{}, time.Time{})
	if len(ts) == 0 || ts[len(ts)-1].Concurrent != 2 {
		t.Fatalf("team samples %+v: want the last with 2 running", ts)
	}
	var rate float64
	for _, s := range h.Team("t1", base.Add(30*time.Second), base.Add(30*time.Second)) {
		rate = s.StartRate
	}
	if rate != 0.1 { // one start in 10 s
		t.Errorf("start rate at 30s = %v, want 0.1", rate)
	}
	// The team's sandboxes are gone: one zero sample, then none.
	src.live = nil
	h.Sample(context.Background())
	now = now.Add(10 * time.Second)
	h.Sample(context.Background())
	ts = h.Team("t1", time.Time{}, time.Time{})
	if last := ts[len(ts)-1]; last.Concurrent != 0 || !last.At.Equal(base.Add(100*time.Second)) {
		t.Errorf("after the last sandbox: last sample %+v, want one zero sample at 100s", last)
	}
}

func TestHistoryBoundsSeriesByCount(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	h := New(&fakeSource{}, time.Second, 10*time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for i := 0; i < 1000; i++ {
		now = now.Add(time.Millisecond)
		h.Record("t", "x", sandbox.Metric{Timestamp: now})
	}
	if n := len(h.Sandbox("x", time.Time{}, time.Time{})); n != h.maxSamples() {
		t.Errorf("%d samples kept, want the bound %d", n, h.maxSamples())
	}
}
