package cluster

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sbxdev/sbx/internal/placement"
	"github.com/sbxdev/sbx/internal/store"
)

// TestNodeStatuses: each registry row gets the status the admin sees and
// the state placement uses; a draining node takes nothing new.
func TestNodeStatuses(t *testing.T) {
	st := newStore(t)
	now := time.Now().UTC()
	register(t, st, "ready", "http://10.0.0.1:3100", 8000, now)
	register(t, st, "silent", "http://10.0.0.2:3100", 8000, now.Add(-10*time.Second))
	register(t, st, "starting", "", 0, now) // registered, not serving yet
	err := st.Heartbeat(t.Context(), store.Node{ID: "drained", Boot: "b", StartedAt: now, HeartbeatAt: now, State: store.NodeDraining,
		NodeLoad: store.NodeLoad{AdvertiseURL: "http://10.0.0.3:3100", CPUMillis: 64000, MemoryMiB: 16384}})
	if err != nil {
		t.Fatal(err)
	}
	register(t, st, "gone", "http://10.0.0.4:3100", 8000, now.Add(-time.Hour))
	if _, err := st.MarkLost(t.Context(), now.Add(-time.Minute), now); err != nil {
		t.Fatal(err)
	}
	nodes := NewNodes(st, 3500*time.Millisecond, quiet)
	views, err := NewAdmin(nodes, st, nil, quiet).Nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ready": StatusReady, "silent": StatusUnhealthy, "starting": StatusConnecting,
		"drained": StatusDraining, "gone": StatusLost}
	for _, v := range views {
		if want[v.ID] != v.Status {
			t.Errorf("node %s: status %q, want %q", v.ID, v.Status, want[v.ID])
		}
		delete(want, v.ID)
	}
	if len(want) != 0 {
		t.Errorf("nodes missing from the view: %v", want)
	}
	placed, _ := nodes.Nodes(t.Context())
	for _, n := range placed {
		if n.ID == "drained" && n.State != placement.Draining {
			t.Errorf("placement sees the drained node as %s", n.State)
		}
	}
	// The freest node is the drained one (64 cores): never chosen.
	p := placement.New(nodes, placement.Config{Seed: 1})
	for range 4 { // reservations hold until the node reports: 4 of its 8 cores
		d, err := p.Place(t.Context(), placement.Request{TemplateID: "base", CPUMillis: 1000, MemoryMiB: 256})
		if err != nil {
			t.Fatal(err)
		}
		d.Reservation.Release()
		if d.NodeID != "ready" {
			t.Fatalf("placed on %s; want only the ready node", d.NodeID)
		}
	}

	// The nodes by status as an api replica's /metrics gives them.
	m := NewMetrics(nodes, st, quiet)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byStatus := map[string]float64{}
	var queued float64 = -1
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			switch mf.GetName() {
			case "sbx_cluster_nodes":
				byStatus[mt.GetLabel()[0].GetValue()] = mt.GetGauge().GetValue()
			case "sbx_build_jobs_queued":
				queued = mt.GetGauge().GetValue()
			}
		}
	}
	for _, s := range []string{StatusReady, StatusUnhealthy, StatusConnecting, StatusDraining, StatusLost} {
		if byStatus[s] != 1 {
			t.Errorf("sbx_cluster_nodes{status=%q} = %v; want 1 (all: %v)", s, byStatus[s], byStatus)
		}
	}
	if queued != 0 {
		t.Errorf("sbx_build_jobs_queued = %v; want 0", queued)
	}
}
