package placement

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// node builds a ready node with cpu millicores and mem MiB of capacity,
// then applies the options.
func node(id string, cpu, mem int64, opts ...func(*Node)) Node {
	n := Node{ID: id, State: Ready, CPUMillis: cpu, MemoryMiB: mem}
	for _, o := range opts {
		o(&n)
	}
	return n
}

func reserved(cpu, mem int64) func(*Node) {
	return func(n *Node) { n.ReservedCPUMillis, n.ReservedMemoryMiB = cpu, mem }
}
func state(s State) func(*Node) { return func(n *Node) { n.State = s } }
func sandboxes(c, max int) func(*Node) {
	return func(n *Node) { n.Sandboxes, n.MaxSandboxes = c, max }
}
func pooled(tpl string, c int) func(*Node) {
	return func(n *Node) { n.Pooled = map[string]int{tpl: c} }
}
func layers(d string) func(*Node) {
	return func(n *Node) { n.Layers = map[string]struct{}{d: {}} }
}
func snapshot(id string) func(*Node) {
	return func(n *Node) { n.Snapshots = map[string]struct{}{id: {}} }
}

func placer(t testing.TB, cfg Config, nodes ...Node) (*Placer, *Cached) {
	t.Helper()
	var src Cached
	src.Set(nodes)
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	return New(&src, cfg), &src
}

// req is a 1 CPU / 1 GiB request for template "base" built as "sha256:b".
func req(opts ...func(*Request)) Request {
	r := Request{Team: "team-1", TemplateID: "base", BuildDigest: "sha256:b", CPUMillis: 1000, MemoryMiB: 1024}
	for _, o := range opts {
		o(&r)
	}
	return r
}

// pin makes the request need node id (the node that holds its volumes).
func pin(id string) func(*Request) {
	return func(r *Request) { r.Node, r.PinnedBy = id, "volume data" }
}

// TestPlaceRules checks each preference with K covering every node, so
// the choice is the rule's, not the sample's.
func TestPlaceRules(t *testing.T) {
	t.Parallel()
	snap := func(id string, inBlob bool) func(*Request) {
		return func(r *Request) { r.SnapshotID, r.SnapshotInBlobStore = id, inBlob }
	}
	tests := []struct {
		name     string
		nodes    []Node
		req      Request
		want     string
		affinity Affinity
	}{
		{"the freest node wins",
			[]Node{node("a", 8000, 8192, reserved(4000, 4096)), node("b", 8000, 8192, reserved(2000, 2048))},
			req(), "b", AffinityNone},
		{"the scarcer resource decides the score",
			[]Node{node("a", 8000, 8192, reserved(0, 6144)), node("b", 8000, 8192, reserved(4000, 4096))},
			req(), "b", AffinityNone},
		{"capacity is relative: a big node half full beats a small empty one",
			[]Node{node("small", 2000, 2048), node("big", 64000, 65536, reserved(16000, 16384))},
			req(), "big", AffinityNone},
		{"a pooled sandbox of the template beats a freer node",
			[]Node{node("a", 8000, 8192, reserved(7000, 7168), pooled("base", 1)), node("b", 8000, 8192)},
			req(), "a", AffinityPool},
		{"a pooled sandbox needs no new room",
			[]Node{node("a", 8000, 8192, reserved(8000, 8192), pooled("base", 2)), node("b", 8000, 8192)},
			req(), "a", AffinityPool},
		{"another template's pool does not count",
			[]Node{node("a", 8000, 8192, reserved(4000, 4096), pooled("other", 3)), node("b", 8000, 8192)},
			req(), "b", AffinityNone},
		{"a pool does not serve a snapshot start",
			[]Node{node("a", 8000, 8192, reserved(4000, 4096), pooled("base", 3)), node("b", 8000, 8192)},
			req(snap("snap-1", true)), "b", AffinityNone},
		{"the snapshot's holder beats a freer node",
			[]Node{node("a", 8000, 8192, reserved(6000, 6144), snapshot("snap-1")), node("b", 8000, 8192)},
			req(snap("snap-1", false)), "a", AffinitySnapshot},
		{"a snapshot in the blob store can start anywhere with room",
			[]Node{node("a", 8000, 8192, reserved(8000, 8192), snapshot("snap-1")), node("b", 8000, 8192)},
			req(snap("snap-1", true)), "b", AffinityNone},
		{"the template's layers beat a freer node",
			[]Node{node("a", 8000, 8192, reserved(6000, 6144), layers("sha256:b")), node("b", 8000, 8192)},
			req(), "a", AffinityLayers},
		{"the snapshot beats the layers",
			[]Node{node("a", 8000, 8192, layers("sha256:b")), node("b", 8000, 8192, reserved(4000, 4096), snapshot("s")),
				node("c", 8000, 8192)},
			req(snap("s", true)), "b", AffinitySnapshot},
		{"the pool beats the layers",
			[]Node{node("a", 8000, 8192, layers("sha256:b")), node("b", 8000, 8192, reserved(4000, 4096), pooled("base", 1))},
			req(), "b", AffinityPool},
		{"pool, then layers, then room: all three tiers present",
			[]Node{node("free", 64000, 65536), node("layers", 8000, 8192, reserved(2000, 2048), layers("sha256:b")),
				node("pool", 8000, 8192, reserved(6000, 6144), pooled("base", 1))},
			req(), "pool", AffinityPool},
		{"a create that cannot take a pooled sandbox goes by layers",
			[]Node{node("layers", 8000, 8192, reserved(2000, 2048), layers("sha256:b")),
				node("pool", 8000, 8192, reserved(1000, 1024), pooled("base", 4))},
			req(func(r *Request) { r.NoPool = true }), "layers", AffinityLayers},
		{"a draining node's pool does not attract",
			[]Node{node("a", 8000, 8192, state(Draining), pooled("base", 4)), node("b", 8000, 8192, reserved(6000, 6144))},
			req(), "b", AffinityNone},
		{"an excluded node is skipped even when it is the best",
			[]Node{node("a", 8000, 8192, pooled("base", 1)), node("b", 8000, 8192, reserved(4000, 4096))},
			req(func(r *Request) { r.Exclude = []string{"a"} }), "b", AffinityNone},
		{"draining and unhealthy nodes are skipped",
			[]Node{node("a", 64000, 65536, state(Draining)), node("b", 64000, 65536, state(Unhealthy)),
				node("c", 64000, 65536, state("rebooting")), node("d", 8000, 8192, reserved(6000, 6144))},
			req(), "d", AffinityNone},
		{"a node at its sandbox limit is skipped",
			[]Node{node("a", 64000, 65536, sandboxes(10, 10)), node("b", 8000, 8192, sandboxes(50, 0))},
			req(), "b", AffinityNone},
		{"a node whose free room equals the request fits",
			[]Node{node("a", 8000, 8192, reserved(7000, 7168))},
			req(), "a", AffinityNone},
		{"a tie goes to fewer sandboxes",
			[]Node{node("a", 8000, 8192, sandboxes(5, 0)), node("b", 8000, 8192, sandboxes(3, 0))},
			req(), "b", AffinityNone},
		{"a pinned request takes its node, not a freer one",
			[]Node{node("a", 8000, 8192, reserved(6000, 6144)), node("b", 8000, 8192, layers("sha256:b"))},
			req(pin("a")), "a", AffinityNone},
		{"a full tie goes to the smaller id",
			[]Node{node("n2", 8000, 8192), node("n1", 8000, 8192)},
			req(), "n1", AffinityNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := placer(t, Config{K: len(tt.nodes)}, tt.nodes...)
			d, err := p.Place(t.Context(), tt.req)
			if err != nil {
				t.Fatalf("Place: %v", err)
			}
			if d.NodeID != tt.want || d.Affinity != tt.affinity {
				t.Fatalf("placed on %s (affinity %s), want %s (affinity %s)", d.NodeID, d.Affinity, tt.want, tt.affinity)
			}
			if d.Reservation.NodeID() != d.NodeID || p.Pending(d.NodeID) != 1 {
				t.Fatalf("reservation on %s, pending %d: want one on %s", d.Reservation.NodeID(), p.Pending(d.NodeID), d.NodeID)
			}
		})
	}
}

// TestPlaceErrors checks every reason a request does not fit, the whole
// message, and its category and hint.
func TestPlaceErrors(t *testing.T) {
	t.Parallel()
	big := func(r *Request) { r.CPUMillis, r.MemoryMiB = 2000, 4096 }
	tests := []struct {
		name  string
		nodes []Node
		req   Request
		msg   string
		kind  error
		hint  string
	}{
		{"no nodes", nil, req(),
			"cannot place sandbox: no nodes registered", errdefs.ErrUnavailable, "start at least one node"},
		{"memory, with draining and excluded nodes",
			[]Node{node("node-a", 8000, 8192, reserved(0, 7168)), node("node-b", 8000, 8192, reserved(0, 6144)),
				node("d1", 8000, 8192, state(Draining)), node("d2", 8000, 8192, state(Draining)),
				node("d3", 8000, 8192, state(Draining)), node("x", 8000, 8192)},
			req(big, func(r *Request) { r.Exclude = []string{"x"} }),
			"cannot place sandbox: no node has 4096 MiB memory free (largest free: 2048 MiB on node-b); 3 nodes draining; 1 excluded after failure",
			errdefs.ErrResourceExhausted, "ask for less CPU or memory"},
		{"cpu",
			[]Node{node("node-a", 4000, 8192, reserved(2500, 0)), node("node-b", 4000, 8192, reserved(3500, 0))},
			req(big),
			"cannot place sandbox: no node has 2000 millicores CPU free (largest free: 1500 millicores on node-a)",
			errdefs.ErrResourceExhausted, "ask for less CPU or memory"},
		{"some nodes short of memory, others of CPU",
			[]Node{node("node-a", 4000, 8192, reserved(3500, 0)), node("node-b", 8000, 8192, reserved(0, 7168)),
				node("node-c", 8000, 8192, reserved(0, 8192))},
			req(big),
			"cannot place sandbox: 2 nodes lack 4096 MiB memory free (largest free among them: 1024 MiB on node-b); " +
				"1 node lacks 2000 millicores CPU free (largest free among them: 500 millicores on node-a)",
			errdefs.ErrResourceExhausted, "ask for less CPU or memory"},
		{"short of both on one node counts under both",
			[]Node{node("node-a", 1000, 1024, reserved(500, 512))},
			req(big),
			"cannot place sandbox: no node has 4096 MiB memory free (largest free: 512 MiB on node-a); " +
				"no node has 2000 millicores CPU free (largest free: 500 millicores on node-a)",
			errdefs.ErrResourceExhausted, "ask for less CPU or memory"},
		{"sandbox limit",
			[]Node{node("a", 8000, 8192, sandboxes(4, 4)), node("b", 8000, 8192, sandboxes(9, 8)), node("c", 8000, 8192, state(Unhealthy))},
			req(),
			"cannot place sandbox: 2 nodes at their sandbox limit; 1 node unhealthy",
			errdefs.ErrResourceExhausted, "end idle sandboxes or add nodes"},
		{"snapshot only on a draining node",
			[]Node{node("a", 8000, 8192, state(Draining), snapshot("snap-1")), node("b", 8000, 8192), node("c", 8000, 8192)},
			req(func(r *Request) { r.SnapshotID = "snap-1" }),
			"cannot place sandbox: snapshot snap-1 is not in the blob store and 2 available nodes lack it; 1 node draining",
			errdefs.ErrUnavailable, "keep snapshots in a shared blob store"},
		{"snapshot holder full",
			[]Node{node("a", 8000, 8192, reserved(8000, 8192), snapshot("snap-1")), node("b", 8000, 8192)},
			req(func(r *Request) { r.SnapshotID = "snap-1" }),
			"cannot place sandbox: no node has 1024 MiB memory free (largest free: 0 MiB on a); " +
				"no node has 1000 millicores CPU free (largest free: 0 millicores on a); " +
				"snapshot snap-1 is not in the blob store and 1 available node lacks it",
			errdefs.ErrResourceExhausted, "ask for less CPU or memory"},
		{"the pinned node is gone",
			[]Node{node("node-b", 8000, 8192), node("node-c", 8000, 8192)},
			req(pin("node-a")),
			"cannot place sandbox: the node that holds volume data (node-a) is not in the cluster (gone, or never started)",
			errdefs.ErrUnavailable, "bring that node back"},
		{"the pinned node is full",
			[]Node{node("node-a", 8000, 8192, reserved(8000, 0)), node("node-b", 8000, 8192)},
			req(pin("node-a")),
			"cannot place sandbox: only node-a holds volume data; no node has 1000 millicores CPU free (largest free: 0 millicores on node-a)",
			errdefs.ErrResourceExhausted, "which is full"},
		{"the pinned node is draining",
			[]Node{node("node-a", 8000, 8192, state(Draining)), node("node-b", 8000, 8192)},
			req(pin("node-a")),
			"cannot place sandbox: only node-a holds volume data; 1 node draining",
			errdefs.ErrUnavailable, "takes no sandboxes right now"},
		{"every node down or excluded",
			[]Node{node("a", 8000, 8192, state(Unhealthy)), node("b", 8000, 8192, state(Draining)), node("c", 8000, 8192)},
			req(func(r *Request) { r.Exclude = []string{"c"} }),
			"cannot place sandbox: 1 node draining; 1 node unhealthy; 1 excluded after failure",
			errdefs.ErrUnavailable, "retry shortly"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := placer(t, Config{}, tt.nodes...)
			_, err := p.Place(t.Context(), tt.req)
			var nf *NoFitError
			if !errors.As(err, &nf) {
				t.Fatalf("Place = %v, want a *NoFitError", err)
			}
			if err.Error() != tt.msg {
				t.Fatalf("message\n got: %s\nwant: %s", err, tt.msg)
			}
			if !errors.Is(err, tt.kind) || errdefs.HTTPStatus(err) != errdefs.HTTPStatus(tt.kind) {
				t.Fatalf("category: errors.Is(%v) false or status %d", tt.kind, errdefs.HTTPStatus(err))
			}
			if !strings.Contains(nf.Hint(), tt.hint) {
				t.Fatalf("hint %q does not contain %q", nf.Hint(), tt.hint)
			}
		})
	}
}

type failingSource struct{}

func (failingSource) Nodes(context.Context) ([]Node, error) {
	return nil, errors.New("connection refused")
}

func TestPlaceBadInput(t *testing.T) {
	t.Parallel()
	p, _ := placer(t, Config{}, node("a", 8000, 8192))
	for _, tt := range []struct {
		req  Request
		want string
	}{
		{req(func(r *Request) { r.CPUMillis = 0 }), "cpu must be positive (got 0 millicores)"},
		{req(func(r *Request) { r.MemoryMiB = -1 }), "memory must be positive (got -1 MiB)"},
		{req(func(r *Request) { r.TemplateID = "" }), "a template or a snapshot is required"},
	} {
		_, err := p.Place(t.Context(), tt.req)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Place = %v, want an invalid-argument error saying %q", err, tt.want)
		}
	}
	_, err := New(failingSource{}, Config{}).Place(t.Context(), req())
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Place with a failing source = %v, want unavailable wrapping the cause", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := p.Place(ctx, req()); !errors.Is(err, context.Canceled) {
		t.Errorf("Place with a cancelled context = %v", err)
	}
}

// TestReservations checks that decisions see each other until the node
// itself reports the sandbox.
func TestReservations(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	p, src := placer(t, Config{Now: clock}, node("a", 2000, 2048, func(n *Node) { n.Observed = t0 }))

	first, err := p.Place(t.Context(), req())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Place(t.Context(), req()); err != nil {
		t.Fatalf("second 1 GiB request on a 2 GiB node: %v", err)
	}
	_, err = p.Place(t.Context(), req())
	if err == nil || !strings.Contains(err.Error(), "largest free: 0 MiB on a") {
		t.Fatalf("third request = %v, want no room left on a", err)
	}

	// Released, but the node has not reported since: still counted.
	now = now.Add(time.Second)
	first.Reservation.Release()
	first.Reservation.Release() // idempotent
	if _, err := p.Place(t.Context(), req()); err == nil {
		t.Fatal("a released reservation stopped counting before the node reported")
	}
	// The node reports (now including the sandbox): the released one
	// stops counting, its resources are in the node's own figures.
	now = now.Add(time.Second)
	src.Set([]Node{node("a", 2000, 2048, reserved(1000, 1024), func(n *Node) { n.Observed = now })})
	if got := p.Pending("a"); got != 2 {
		t.Fatalf("pending before the next decision = %d, want 2 (pruned lazily)", got)
	}
	if _, err := p.Place(t.Context(), req()); err == nil {
		t.Fatal("placed beyond capacity: node 1 GiB reserved + 1 pending + 1 new on 2 GiB")
	}
	if got := p.Pending("a"); got != 1 {
		t.Fatalf("pending after the node reported = %d, want 1 (the unreleased one)", got)
	}

	// A holder that never releases stops counting after MaxReservationAge.
	now = now.Add(6 * time.Minute)
	if _, err := p.Place(t.Context(), req()); err != nil {
		t.Fatalf("after the reservation aged out: %v", err)
	}
}

func TestReservationWithoutObservedTime(t *testing.T) {
	t.Parallel()
	p, _ := placer(t, Config{}, node("a", 1000, 1024))
	d, err := p.Place(t.Context(), req())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Place(t.Context(), req()); err == nil {
		t.Fatal("placed twice on room for one")
	}
	d.Reservation.Release()
	if _, err := p.Place(t.Context(), req()); err != nil {
		t.Fatalf("node without an observed time: a released reservation should stop counting at once: %v", err)
	}
}

func TestPoolClaims(t *testing.T) {
	t.Parallel()
	p, _ := placer(t, Config{K: 3},
		node("a", 8000, 8192, reserved(4000, 4096), pooled("base", 2)), node("b", 8000, 8192))
	var got []string
	for range 3 {
		d, err := p.Place(t.Context(), req())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s/%s", d.NodeID, d.Affinity))
	}
	want := "a/pool a/pool b/none"
	if strings.Join(got, " ") != want {
		t.Fatalf("placements %v, want %s: each pooled sandbox serves one request", got, want)
	}
}

func TestSeededDecisionsRepeat(t *testing.T) {
	t.Parallel()
	var nodes []Node
	for i := range 50 {
		nodes = append(nodes, node(fmt.Sprintf("n%02d", i), 16000, 16384))
	}
	run := func(seed uint64) string {
		p, _ := placer(t, Config{K: 2, Seed: seed}, nodes...)
		var out []string
		for range 40 {
			d, err := p.Place(t.Context(), req())
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, d.NodeID)
		}
		return strings.Join(out, ",")
	}
	if a, b := run(7), run(7); a != b {
		t.Fatalf("same seed, different decisions:\n%s\n%s", a, b)
	}
	if a, b := run(7), run(8); a == b {
		t.Fatalf("different seeds, same 40 decisions: the seed is not used")
	}
}

// TestSpread checks what power-of-K choices is for: equal nodes filled
// one request at a time end up nearly even, where K=1 (one random pick)
// does not.
func TestSpread(t *testing.T) {
	t.Parallel()
	spread := func(k int) int {
		var nodes []Node
		for i := range 20 {
			nodes = append(nodes, node(fmt.Sprintf("n%02d", i), 64000, 65536))
		}
		p, _ := placer(t, Config{K: k, Seed: 42}, nodes...)
		count := map[string]int{}
		for range 400 {
			d, err := p.Place(t.Context(), req())
			if err != nil {
				t.Fatal(err)
			}
			count[d.NodeID]++
		}
		lo, hi := 400, 0
		for _, n := range nodes {
			lo, hi = min(lo, count[n.ID]), max(hi, count[n.ID])
		}
		return hi - lo
	}
	two, one := spread(2), spread(1)
	t.Logf("max-min sandboxes per node: K=2 %d, K=1 %d", two, one)
	if two > 5 {
		t.Errorf("K=2: most and least loaded nodes differ by %d sandboxes over 20 nodes, want at most 5", two)
	}
	if one <= two {
		t.Errorf("K=1 spread %d is not worse than K=2 spread %d: sampling is not comparing", one, two)
	}
}
