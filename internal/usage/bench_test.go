package usage

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
)

// BenchmarkSpend measures what a budget check costs: the team's spend this
// month over n sandboxes (created + killed events each) in a real SQLite.
func BenchmarkSpend(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			db, _ := eventstest.TempDB(b)
			log := events.NewLog(db, slog.New(slog.DiscardHandler))
			t0 := time.Now().Add(-time.Hour)
			tx, err := db.BeginTx(b.Context(), nil)
			if err != nil {
				b.Fatal(err)
			}
			for i := range n {
				id := fmt.Sprint("sb", i)
				for _, ev := range []events.Event{
					{Type: events.SandboxCreated, TeamID: "t", SandboxID: id, SandboxTemplateID: "base", Timestamp: t0.Add(time.Duration(i) * time.Millisecond)},
					{Type: events.SandboxKilled, TeamID: "t", SandboxID: id, SandboxTemplateID: "base", Timestamp: t0.Add(time.Duration(i)*time.Millisecond + time.Minute),
						EventData: map[string]any{"kill_reason": "request", "execution": map[string]any{"vcpu_count": 2, "memory_mb": 512}}},
				} {
					if err := log.AppendTx(b.Context(), tx, &ev); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
			svc := NewService(log, DefaultRates(), nil)
			b.ResetTimer()
			for b.Loop() {
				if _, err := svc.Spend(b.Context(), "t", MonthStart(time.Now()), time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
