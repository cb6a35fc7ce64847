package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/sdk"
)

// BenchmarkCreateFirstCommand measures create → first command done on a
// server on SQLite and one on PostgreSQL, in one run, samples interleaved so
// both see the same machine load. Run with -benchtime 1x: each iteration
// takes 30 samples per database and reports the p50 and p95 of each.
//
//	go test ./tests/e2e -run '^$' -bench BenchmarkCreateFirstCommand -benchtime 1x
func BenchmarkCreateFirstCommand(b *testing.B) {
	lite := StartServer(b)
	pg := StartServer(b, "--database", sqldbtest.DSN(b, sqldb.Postgres))
	clients := map[string]*sdk.Client{"sqlite": lite.Client(b), "postgres": pg.Client(b)}
	for range b.N {
		firstCommands(b, clients, []string{"sqlite", "postgres"}, 30, "")
	}
}

// firstCommands times create → first command (`true`) rounds times on
// each client, interleaved in order so every setup sees the same machine
// load, and reports each one's p50 and p95 as <name><metric>-p50-ms and
// -p95-ms. Sandboxes are killed after each sample (not timed).
func firstCommands(b *testing.B, clients map[string]*sdk.Client, order []string, rounds int, metric string) {
	b.Helper()
	samples := map[string][]time.Duration{}
	for range rounds {
		for _, name := range order {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			start := time.Now()
			s, err := clients[name].Create(ctx, sdk.CreateOptions{Timeout: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.Commands.Run(ctx, "true", sdk.RunOptions{}); err != nil {
				b.Fatal(err)
			}
			samples[name] = append(samples[name], time.Since(start))
			s.Kill(ctx)
			cancel()
		}
	}
	for name, d := range samples {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, name+metric+"-p50-ms")
		b.ReportMetric(float64(d[len(d)*95/100].Microseconds())/1000, name+metric+"-p95-ms")
	}
}
