package e2e

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
		firstCommands(b, clients, []string{"all", "api"}, 30, "")
	}
}

// BenchmarkClusterScale gives the closing figures in one run on
// one PostgreSQL: create → first command through an api replica in front
// of three nodes against a --role all server (samples interleaved), and
// creates per second through the api replica with three nodes, then with
// two of them SIGKILLed (one node left), and on the --role all server.
// SBX_BENCH_CREATES (default 30) creates per rate, 6 at a time.
//
//	scripts/with-postgres.sh go test ./tests/e2e -run '^$' -bench BenchmarkClusterScale -benchtime 1x
func BenchmarkClusterScale(b *testing.B) {
	noPools := []string{"--pool", "base=0,code-interpreter=0,*=0", "--snapshot-runtime", "none"}
	one := StartServer(b, append([]string{"--database", sqldbtest.DSN(b, sqldb.Postgres)}, noPools...)...)
	c := startClusterSpec(b, clusterSpec{apis: 1, nodes: 3, nodeFlags: []string{"--cpu-overcommit", "1000"}})
	clients := map[string]*sdk.Client{"all": one.Client(b), "api": c.api.Client(b)}
	creates := 30
	if v, err := strconv.Atoi(os.Getenv("SBX_BENCH_CREATES")); err == nil && v > 0 {
		creates = v
	}
	for range b.N {
		firstCommands(b, clients, []string{"all", "api"}, 20, "-first-cmd")
		b.ReportMetric(createRate(b, clients["api"], creates), "api-3-nodes-creates/s")
		b.ReportMetric(createRate(b, clients["all"], creates), "all-creates/s")
		c.nodes[1].Stop(syscall.SIGKILL)
		c.nodes[2].Stop(syscall.SIGKILL)
		time.Sleep(6 * time.Second) // past 3.5 heartbeats: the api replica places on node-1 only
		b.ReportMetric(createRate(b, clients["api"], creates), "api-1-node-creates/s")
		b.Logf("load average at the end: %s", loadAvgB())
	}
}

// createRate creates n sandboxes, 6 at a time, and returns how many per
// second; they are killed afterwards (not timed).
func createRate(b *testing.B, client *sdk.Client, n int) float64 {
	var mu sync.Mutex
	var made []*sdk.Sandbox
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				s, err := client.Create(ctx, sdk.CreateOptions{Timeout: 5 * time.Minute})
				cancel()
				if err != nil {
					b.Error(err)
					continue
				}
				mu.Lock()
				made = append(made, s)
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	rate := float64(len(made)) / time.Since(start).Seconds()
	for _, s := range made {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_ = s.Kill(ctx)
		cancel()
	}
	return rate
}

func loadAvgB() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}
