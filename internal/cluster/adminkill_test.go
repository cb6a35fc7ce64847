package cluster

import (
	"net/http"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// TestKillTeam: the admin's kill of a team through an api replica sends
// one kill, signed for the cluster admin, to each live node that holds
// some of the team's sandboxes (none to a node holding only other teams'),
// records a lost node's paused sandbox killed with its event, and counts a
// silent node's sandboxes as failed.
func TestKillTeam(t *testing.T) {
	st := newStore(t)
	kills := func(n int) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			errdefs.WriteJSON(w, http.StatusOK, map[string]int{"killedCount": n, "failedCount": 0})
		}
	}
	na, nb, nc := newNode(t, "a", kills(2)), newNode(t, "b", kills(1)), newNode(t, "c", kills(9))
	now := time.Now().UTC()
	register(t, st, "a", na.srv.URL, 8000, now)
	register(t, st, "b", nb.srv.URL, 8000, now)
	register(t, st, "c", nc.srv.URL, 8000, now)
	register(t, st, "silent", "http://127.0.0.1:1", 8000, now.Add(-10*time.Second))
	register(t, st, "lost", "http://127.0.0.1:1", 8000, now.Add(-time.Hour))
	if _, err := st.MarkLost(t.Context(), now.Add(-time.Minute), now); err != nil {
		t.Fatal(err)
	}
	insert(t, st, "a1", "t1", "a")
	insert(t, st, "a2", "t1", "a")
	insert(t, st, "a3", "t2", "a")
	insert(t, st, "b1", "t1", "b")
	insert(t, st, "c1", "t2", "c")
	insert(t, st, "s1", "t1", "silent")
	insert(t, st, "l1", "t1", "lost")
	insert(t, st, "l2", "t2", "lost")
	for _, id := range []string{"l1", "l2"} { // paused: the sweep keeps them
		sb, _ := st.Sandbox(t.Context(), id)
		sb.State = store.StatePaused
		if err := st.UpdateSandbox(t.Context(), sb, nil); err != nil {
			t.Fatal(err)
		}
	}
	admin := NewAdmin(NewNodes(st, 3500*time.Millisecond, quiet), st, NewClient(NewSigner(testSecret)), quiet)
	killed, failed, err := admin.KillTeam(t.Context(), "t1")
	if err != nil || killed != 4 || failed != 1 {
		t.Fatalf("KillTeam(t1) = %d killed, %d failed, %v; want 4 (2 on a, 1 on b, the lost node's paused one), 1 (the silent node's)",
			killed, failed, err)
	}
	for _, n := range []*node{na, nb} {
		got := n.requests()
		if len(got) != 1 || got[0].method != http.MethodPost || got[0].uri != KillTeamPath("t1") || got[0].team != AdminTeam {
			t.Errorf("node got %+v; want one POST %s signed for %s", got, KillTeamPath("t1"), AdminTeam)
		}
	}
	if got := nc.requests(); len(got) != 0 {
		t.Errorf("node c, which holds none of t1's sandboxes, was asked: %+v", got)
	}
	if sb, _ := st.Sandbox(t.Context(), "l1"); sb.State != store.StateKilled || sb.KillReason != KillReason {
		t.Errorf("the lost node's paused sandbox of t1: %s (%s); want killed (%s)", sb.State, sb.KillReason, KillReason)
	}
	for _, id := range []string{"l2", "a3", "c1", "s1"} {
		if sb, _ := st.Sandbox(t.Context(), id); sb.State == store.StateKilled {
			t.Errorf("sandbox %s (another team's, or on the silent node) was recorded killed", id)
		}
	}
	if k, f, err := admin.KillTeam(t.Context(), "t3"); k != 0 || f != 0 || err != nil {
		t.Errorf("KillTeam of a team without sandboxes = %d, %d, %v", k, f, err)
	}
}
