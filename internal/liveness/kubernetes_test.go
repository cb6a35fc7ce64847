package liveness

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/kubetest"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/store/storetest"
)

// TestLeases runs the node registry on Kubernetes Leases against a real
// kube-apiserver and etcd (envtest), started once for all its cases.
func TestLeases(t *testing.T) {
	api := kubetest.Start(t)
	var namespaces atomic.Int32
	// Each case gets a namespace of its own: its Leases are its nodes.
	newLeases := func(t *testing.T, grace time.Duration) *Leases {
		ns := api.Namespace(t, fmt.Sprintf("sbx-liveness-%d", namespaces.Add(1)))
		return &Leases{Client: api.Client, Namespace: ns, Grace: grace}
	}

	t.Run("Conformance", func(t *testing.T) {
		storetest.RunNodeRegistry(t, func(t *testing.T) store.Nodes { return newLeases(t, 10*time.Second) })
	})
	t.Run("SweepRecordsLostNodesSandboxes", func(t *testing.T) { testSweepOverLeases(t, newLeases(t, 10*time.Second)) })
	t.Run("SilentNodeIsLostBeatingNodeIsNot", func(t *testing.T) { testLeasesRealTime(t, newLeases(t, 2*time.Second)) })
	t.Run("LeaseNames", testLeaseNames)
	t.Run("DrainSurvivesRestart", func(t *testing.T) {
		testDrainSurvivesRestart(t, WithNodes(sqlstore.New(sqldbtest.Open(t, sqldb.SQLite), nil), newLeases(t, 10*time.Second)))
	})
}

// testSweepOverLeases: the sweep, on Leases for the registry and SQLite
// for the sandbox rows, declares the silent node lost, records its running
// sandbox killed (node_lost), leaves the other node's alone, and fences
// the lost process once; the Lease says so for kubectl readers.
func testSweepOverLeases(t *testing.T, leases *Leases) {
	st := sqlstore.New(sqldbtest.Open(t, sqldb.SQLite), nil)
	repo := WithNodes(st, leases)
	log := slog.New(slog.DiscardHandler)
	ctx := t.Context()
	clock := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	cfg := Config{Interval: time.Second, Grace: 10 * time.Second}
	fenced := 0
	a := NewBeater(repo, "node-a", "http://10.0.0.1:3100", cfg, log, func(context.Context) { fenced++ })
	b := NewBeater(repo, "node-b", "http://10.0.0.2:3100", cfg, log, nil)
	a.now, b.now = now, now
	for _, x := range []*Beater{a, b} {
		if err := x.Beat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	team, err := st.CreateTeam(ctx, "t", "e2b_1111111111111111111111111111111111111111")
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range []store.Sandbox{{ID: "a-run", NodeID: "node-a", State: store.StateRunning},
		{ID: "a-paused", NodeID: "node-a", State: store.StatePaused}, {ID: "b-run", NodeID: "node-b", State: store.StateRunning}} {
		sb.TeamID, sb.TemplateID, sb.StartedAt, sb.EndAt = team.ID, "base", clock, clock.Add(time.Hour)
		if err := st.InsertSandbox(ctx, sb, nil); err != nil {
			t.Fatal(err)
		}
	}
	sw := NewSweeper(repo, cfg, log)
	sw.now = now
	if err := sw.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(8 * time.Second)
	if err := b.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sw.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if lost, _ := st.Sandbox(ctx, "a-run"); lost.State != store.StateRunning {
		t.Fatalf("a sandbox of a node silent for 8 s of a 10 s grace is %s", lost.State)
	}
	clock = clock.Add(5 * time.Second) // node-a silent 13 s, node-b beat 5 s ago
	if err := sw.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for id, state := range map[string]store.SandboxState{"a-run": store.StateKilled, "a-paused": store.StatePaused, "b-run": store.StateRunning} {
		sb, err := st.Sandbox(ctx, id)
		if err != nil || sb.State != state {
			t.Errorf("%s after the sweep: %s (%v), want %s", id, sb.State, err, state)
		}
		if id == "a-run" && sb.KillReason != ReasonNodeLost {
			t.Errorf("a-run kill reason %q, want %q", sb.KillReason, ReasonNodeLost)
		}
	}
	nodes, err := leases.Nodes(ctx)
	if err != nil || len(nodes) != 2 || nodes[0].State != store.NodeLost || nodes[1].State != store.NodeReady ||
		nodes[1].Address != "http://10.0.0.2:3100" {
		t.Errorf("nodes from the Leases: %+v, %v; want node-a lost, node-b ready at its address", nodes, err)
	}
	for range 2 {
		if err := a.Beat(ctx); err == nil {
			t.Fatal("the lost process's heartbeat was accepted")
		}
	}
	if fenced != 1 {
		t.Errorf("the fenced callback ran %d times, want once", fenced)
	}
}

// testLeasesRealTime runs beaters and the sweep on the wall clock: a node
// whose process stops renewing its Lease is declared lost after the grace;
// the one that keeps renewing never is.
func testLeasesRealTime(t *testing.T, leases *Leases) {
	log := slog.New(slog.DiscardHandler)
	cfg := Config{Interval: 250 * time.Millisecond, Grace: 2 * time.Second}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	repo := WithNodes(nil, leases) // no sandbox rows: NodeSandboxes is not reached for nodes without any
	alive := NewBeater(repo, "alive", "http://10.0.0.1:3100", cfg, log, nil)
	doomed := NewBeater(repo, "doomed", "http://10.0.0.2:3100", cfg, log, nil)
	doomedCtx, stopDoomed := context.WithCancel(ctx)
	for _, b := range []*Beater{alive, doomed} {
		if err := b.Beat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{}, 3)
	go func() { alive.Run(ctx); done <- struct{}{} }()
	go func() { doomed.Run(doomedCtx); done <- struct{}{} }()
	sweepRepo := &lostOnly{Repo: repo}
	go func() { NewSweeper(sweepRepo, cfg, log).Run(ctx); done <- struct{}{} }()
	defer func() { cancel(); stopDoomed(); <-done; <-done; <-done }()

	time.Sleep(cfg.Grace + 4*cfg.Interval) // a grace for the new sweeper, then some
	if lost, err := leases.LostNodes(ctx); err != nil || len(lost) != 0 {
		t.Fatalf("with both nodes renewing, LostNodes = %v, %v; want none", lost, err)
	}
	stopDoomed()
	stopped := time.Now()
	deadline := stopped.Add(cfg.Grace + 20*time.Second) // generous: the machine is shared
	for {
		lost, err := leases.LostNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(lost, []string{"doomed"}) {
			t.Logf("the node that stopped renewing was declared lost %s later (grace %s)", time.Since(stopped).Round(10*time.Millisecond), cfg.Grace)
			break
		}
		if len(lost) != 0 {
			t.Fatalf("LostNodes = %v; want only the node that stopped renewing", lost)
		}
		if time.Now().After(deadline) {
			t.Fatal("the node that stopped renewing was not declared lost")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lostOnly lets a sweep run without a sandbox database: lost nodes have
// no sandboxes.
type lostOnly struct{ Repo }

func (lostOnly) NodeSandboxes(context.Context, string) ([]store.Sandbox, error) { return nil, nil }

func testLeaseNames(t *testing.T) {
	for _, c := range []struct{ id, want string }{
		{"worker-1", "sbx-node-worker-1"},
		{"ip-10-0-3-7.ec2.internal", "sbx-node-ip-10-0-3-7.ec2.internal"},
		{"host:3000", ""},
		{"Node_With.UPPER", ""},
	} {
		got := LeaseName(c.id)
		if c.want != "" && got != c.want {
			t.Errorf("LeaseName(%q) = %q, want %q", c.id, got, c.want)
		}
		if len(got) > 253 || !dnsSubdomain.MatchString(got) {
			t.Errorf("LeaseName(%q) = %q: not a valid name", c.id, got)
		}
	}
	if LeaseName("host:3000") == LeaseName("host-3000") {
		t.Error("two node names map to one Lease")
	}
}
