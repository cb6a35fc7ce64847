package webhook

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// countedFanOuts is the real repository counting its fan-out transactions.
type countedFanOuts struct {
	store.Webhooks
	n atomic.Int64
}

func (c *countedFanOuts) FanOut(ctx context.Context, notify string, fn store.FanOutFunc) (int64, bool, error) {
	c.n.Add(1)
	return c.Webhooks.FanOut(ctx, notify, fn)
}

// TestFanOutWithoutWebhooks: with no webhook anywhere an event costs no
// fan-out transaction (it cost one write transaction per sandbox event),
// and an event from before the first webhook is still never sent to it
// while the ones after are.
func TestFanOutWithoutWebhooks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastConfig())
	repo := &countedFanOuts{Webhooks: sqlstore.NewWebhooks(e.db)}
	eng, err := NewEngineWithRepository(repo, e.db, e.log, fastConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "before"}); err != nil {
		t.Fatal(err)
	}
	if n, err := eng.fanout(t.Context()); n != 0 || err != nil {
		t.Fatalf("fanout without webhooks = %d, %v", n, err)
	}
	if got := repo.n.Load(); got != 0 {
		t.Fatalf("%d fan-out transactions without any webhook, want 0", got)
	}

	rc := newReceiver(t, nil)
	createHook(t, eng, "t", rc.srv.URL)
	run(t, eng)
	if err := e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "after"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delivery of the event after the webhook", func() bool { return len(rc.all()) > 0 })
	// A queue goes in event order: an event from before would have come first.
	got := rc.all()
	if len(got) != 1 || !strings.Contains(string(got[0].body), `"after"`) {
		t.Fatalf("deliveries %d, first %s; want only the event after the webhook's creation", len(got), got[0].body)
	}
}
