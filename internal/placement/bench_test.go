package placement

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// cluster simulates nodes nodes carrying sandboxes sandboxes between them,
// with templates templates spread over the nodes' layers, snapshots and
// pools, roughly as a busy cluster looks: every node holds some
// templates' layers, a few have pools, snapshots are rarer.
func cluster(rng *rand.Rand, nodes, sandboxes, templates int) []Node {
	ns := make([]Node, nodes)
	for i := range ns {
		n := &ns[i]
		n.ID = fmt.Sprintf("node-%04d", i)
		n.State = Ready
		switch {
		case i%97 == 0:
			n.State = Draining
		case i%89 == 0:
			n.State = Unhealthy
		}
		n.CPUMillis, n.MemoryMiB = 64000, 256*1024
		if i%3 == 0 {
			n.CPUMillis, n.MemoryMiB = 128000, 512*1024
		}
		n.MaxSandboxes = 500
		n.Layers, n.Snapshots, n.Pooled = map[string]struct{}{}, map[string]struct{}{}, map[string]int{}
		for range 8 {
			n.Layers[fmt.Sprintf("sha256:%d", rng.IntN(templates))] = struct{}{}
		}
		if rng.IntN(4) == 0 {
			n.Pooled[fmt.Sprintf("tpl-%d", rng.IntN(templates))] = 1 + rng.IntN(4)
		}
		for range 3 {
			n.Snapshots[fmt.Sprintf("snap-%d", rng.IntN(10*nodes))] = struct{}{}
		}
	}
	// Sandboxes of 250–2000 millicores and 256–2048 MiB, on random nodes
	// with room.
	for range sandboxes {
		cpu, mem := int64(250*(1+rng.IntN(8))), int64(256*(1+rng.IntN(8)))
		for {
			n := &ns[rng.IntN(nodes)]
			if n.ReservedCPUMillis+cpu <= n.CPUMillis*2 && n.ReservedMemoryMiB+mem <= n.MemoryMiB && n.Sandboxes < n.MaxSandboxes {
				n.ReservedCPUMillis += cpu // CPU is overcommitted up to 2x in the simulation
				n.ReservedMemoryMiB += mem
				n.Sandboxes++
				break
			}
		}
	}
	return ns
}

// BenchmarkPlace measures one decision (and its release) on 1,000 nodes
// carrying 100,000 sandboxes. Issue 16's goal: p99 <= 1 ms. It reports
// the p50 and p99 of the per-decision latency.
func BenchmarkPlace(b *testing.B) {
	const nodes, sandboxes, templates = 1000, 100_000, 200
	rng := rand.New(rand.NewPCG(1, 2))
	var src Cached
	src.Set(cluster(rng, nodes, sandboxes, templates))
	p := New(&src, Config{K: 2, Seed: 3})
	reqs := make([]Request, 4096)
	for i := range reqs {
		t := rng.IntN(templates)
		reqs[i] = Request{Team: "team", TemplateID: fmt.Sprintf("tpl-%d", t), BuildDigest: fmt.Sprintf("sha256:%d", t),
			CPUMillis: int64(500 * (1 + rng.IntN(4))), MemoryMiB: int64(512 * (1 + rng.IntN(4)))}
		if i%10 == 0 { // one in ten resumes a snapshot, half of those only held locally
			reqs[i].SnapshotID = fmt.Sprintf("snap-%d", rng.IntN(10*nodes))
			reqs[i].SnapshotInBlobStore = i%20 == 0
		}
		if i%50 == 0 { // a retry after a failure
			reqs[i].Exclude = []string{fmt.Sprintf("node-%04d", rng.IntN(nodes))}
		}
	}
	lat := make([]time.Duration, 0, b.N)
	ctx := b.Context()
	fails := 0
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		d, err := p.Place(ctx, reqs[i%len(reqs)])
		lat = append(lat, time.Since(start))
		if err != nil {
			fails++
			continue
		}
		d.Reservation.Release()
	}
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
		b.ReportMetric(float64(lat[len(lat)*999/1000].Nanoseconds())/1e3, "p99.9-µs")
		b.ReportMetric(float64(fails)/float64(len(lat)), "nofit/op")
	}
}
