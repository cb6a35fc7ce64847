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

// BenchmarkClusterCreateFirstCommand measures create → first command
// done through an api replica (in front of two nodes) and on one --role
// all server, both on PostgreSQL, without warm pools, in one run with the
// samples interleaved so both see the same machine load. Run with
// -benchtime 1x: each iteration takes 30 samples per setup and reports
// the p50 and p95 of each.
//
//	scripts/with-postgres.sh go test ./tests/e2e -run '^$' -bench BenchmarkClusterCreateFirstCommand -benchtime 1x
func BenchmarkClusterCreateFirstCommand(b *testing.B) {
	noPools := []string{"--pool", "base=0,code-interpreter=0,*=0", "--snapshot-runtime", "none"}
	one := StartServer(b, append([]string{"--database", sqldbtest.DSN(b, sqldb.Postgres)}, noPools...)...)
	c := startCluster(b)
	clients := map[string]*sdk.Client{"all": one.Client(b), "api": c.api.Client(b)}
	for range b.N {
		samples := map[string][]time.Duration{}
		for range 30 {
			for _, name := range []string{"all", "api"} {
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
			b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, name+"-p50-ms")
			b.ReportMetric(float64(d[len(d)*95/100].Microseconds())/1000, name+"-p95-ms")
		}
	}
}
