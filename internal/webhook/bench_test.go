package webhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
)

// countingReceiver answers 200 at once and counts deliveries.
func countingReceiver(b *testing.B) (*httptest.Server, *atomic.Int64, chan time.Time) {
	var n atomic.Int64
	arrivals := make(chan time.Time, 1<<16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		select {
		case arrivals <- time.Now():
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	return srv, &n, arrivals
}

// BenchmarkEventToDelivered measures one event at a time: Append returns,
// then the receiver gets it. Reports the p50 and p99 latency.
func BenchmarkEventToDelivered(b *testing.B) {
	e := newEnv(b, Config{AllowPrivate: true})
	srv, _, arrivals := countingReceiver(b)
	createHook(b, e.eng, "t", srv.URL)
	run(b, e.eng)
	lat := make([]time.Duration, 0, b.N)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := e.log.Append(ctx, &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "sb"}); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-arrivals:
			lat = append(lat, at.Sub(start))
		case <-time.After(10 * time.Second):
			b.Fatal("event not delivered within 10s")
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkSustained measures the delivery pipeline alone: it appends b.N
// events (in transactions of 100) with the engine stopped, then runs it and
// waits until every event is delivered to each of the webhooks; it reports
// deliveries per second from the engine's start to the last arrival (fan-out,
// queue claims, sends and their records all included), and how fast the
// log took the appends. The events are sandboxes' created and killed, one
// pair per sandbox (sandboxes=many), or all of one sandbox (sandboxes=1:
// they go one at a time, each after the previous one's record).
func BenchmarkSustained(b *testing.B) {
	for _, c := range []struct {
		hooks int
		many  bool
	}{{1, true}, {4, true}, {16, true}, {1, false}} {
		name := "webhooks=" + itoa(c.hooks) + "/sandboxes=1"
		if c.many {
			name = "webhooks=" + itoa(c.hooks) + "/sandboxes=many"
		}
		b.Run(name, func(b *testing.B) { benchSustained(b, c.hooks, c.many) })
	}
}

func benchSustained(b *testing.B, hooks int, many bool) {
	e := newEnv(b, Config{AllowPrivate: true})
	srv, n, _ := countingReceiver(b)
	for range hooks {
		createHook(b, e.eng, "t", srv.URL)
	}
	ctx := context.Background()
	b.ResetTimer()
	b.StopTimer()
	start := time.Now()
	for i := 0; i < b.N; i += 100 {
		tx, err := e.db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		for j := i; j < min(i+100, b.N); j++ {
			ev := &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "sb"}
			if many {
				ev.SandboxID = "sb" + itoa(j/2)
			}
			if j%2 == 1 {
				ev.Type = events.SandboxKilled
			}
			if err := e.log.AppendTx(ctx, tx, ev); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	appended := time.Since(start)
	b.StartTimer()
	start = time.Now()
	run(b, e.eng)
	want := int64(b.N * hooks)
	deadline := time.Now().Add(5 * time.Minute)
	for n.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d", n.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if n.Load() != want {
		b.Fatalf("delivered %d, want exactly %d", n.Load(), want)
	}
	b.ReportMetric(float64(want)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.N)/appended.Seconds(), "appends/s")
}

// BenchmarkBurstToLastDelivered measures what a node-lost sweep after a
// burst of creates waits for: 300 events committed at once to a running
// engine, to the last of them arriving at a receiver that takes 20 ms per
// request, with one delivery per webhook in flight (the old behaviour)
// and with the default PerWebhook. Each iteration is a fresh database and
// engine; reports the median and the slowest in ms (run with
// -benchtime=5x for five bursts each).
func BenchmarkBurstToLastDelivered(b *testing.B) {
	for _, per := range []int{1, DefaultPerWebhook} {
		b.Run("per-webhook="+itoa(per), func(b *testing.B) {
			const burst = 300
			var took []time.Duration
			for range b.N {
				b.StopTimer()
				e := newEnv(b, Config{AllowPrivate: true, PerWebhook: per})
				var n atomic.Int64
				last := make(chan time.Time, 1)
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					time.Sleep(20 * time.Millisecond)
					if n.Add(1) == burst {
						last <- time.Now()
					}
					w.WriteHeader(http.StatusNoContent)
				}))
				createHook(b, e.eng, "t", srv.URL)
				stop := run(b, e.eng)
				ctx := context.Background()
				b.StartTimer()
				start := time.Now()
				tx, err := e.db.BeginTx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				for i := range burst {
					if err := e.log.AppendTx(ctx, tx, &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "sb" + itoa(i)}); err != nil {
						b.Fatal(err)
					}
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
				e.log.Notify()
				select {
				case at := <-last:
					took = append(took, at.Sub(start))
				case <-time.After(time.Minute):
					b.Fatalf("delivered %d of %d within a minute", n.Load(), burst)
				}
				b.StopTimer()
				stop()
				srv.Close()
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "median-ms")
			b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
		})
	}
}
