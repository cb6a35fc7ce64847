package cluster

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
)

// KillReason is the kill reason of the admin's kill of a team's sandboxes
// (as one box records it).
const KillReason = "admin"

// KillTeamPath is the node route an api replica calls, signed for
// AdminTeam, to kill one team's sandboxes on that node.
func KillTeamPath(teamID string) string {
	return "/admin/teams/" + url.PathEscape(teamID) + "/sandboxes/kill"
}

// killAnswer is the node's answer to KillTeamPath (E2B's
// AdminSandboxKillResult).
type killAnswer struct {
	KilledCount int `json:"killedCount"`
	FailedCount int `json:"failedCount"`
}

// KillTeam kills a team's sandboxes across the cluster: the database says
// which nodes hold some (running or paused), and each of them gets one
// signed kill of the team's sandboxes it runs (all nodes at once); the
// node records each kill and its event as one box does. A lost node's
// sandboxes (paused ones: the node-lost sweep recorded the running ones)
// are recorded killed here, since no process runs them; a node that is
// silent but not declared lost yet cannot be asked, and its sandboxes
// count as failed (ask again once it is back or declared lost).
func (a *Admin) KillTeam(ctx context.Context, teamID string) (killed, failed int, err error) {
	sbs, err := a.st.LiveSandboxes(ctx)
	if err != nil {
		return 0, 0, err
	}
	byNode := map[string][]store.Sandbox{}
	for _, sb := range sbs {
		if sb.TeamID == teamID && sb.State != store.StateKilled {
			byNode[sb.NodeID] = append(byNode[sb.NodeID], sb)
		}
	}
	if len(byNode) == 0 {
		return 0, 0, nil
	}
	views, err := a.Nodes(ctx)
	if err != nil {
		return 0, 0, err
	}
	byID := make(map[string]NodeView, len(views))
	for _, v := range views {
		byID[v.ID] = v
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for node, list := range byNode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, f := a.killOnNode(ctx, byID[node], node, teamID, list)
			mu.Lock()
			killed, failed = killed+k, failed+f
			mu.Unlock()
		}()
	}
	wg.Wait()
	return killed, failed, nil
}

// killOnNode kills the team's sandboxes list of node (v: its registry
// view, zero when it is not in the registry).
func (a *Admin) killOnNode(ctx context.Context, v NodeView, node, teamID string, list []store.Sandbox) (killed, failed int) {
	if v.ID != "" && v.Status == StatusLost {
		return a.recordKilled(ctx, list)
	}
	if v.ID == "" || !offered(v.Node) {
		a.log.WarnContext(ctx, "admin kill: the sandboxes' node cannot be asked", "node", node, "team.id", teamID, "sandboxes", len(list))
		return 0, len(list)
	}
	var ans killAnswer
	if _, err := a.client.Do(ctx, v.ID, v.AdvertiseURL, AdminTeam, http.MethodPost, KillTeamPath(teamID), nil, &ans); err != nil {
		a.log.WarnContext(ctx, "admin kill: the node did not kill the team's sandboxes", "node", node, "team.id", teamID, "err", err)
		return 0, len(list)
	}
	return ans.KilledCount, ans.FailedCount
}

// recordKilled records sandboxes of a lost node killed (with their
// killed events). The write is refused for one another node adopted
// meanwhile (resumed from the blob store): that node runs it now, and it
// counts as failed.
func (a *Admin) recordKilled(ctx context.Context, list []store.Sandbox) (killed, failed int) {
	now := time.Now().UTC()
	for _, sb := range list {
		k, change := sandbox.KilledChange(sb, KillReason, now)
		change.Data["node_id"] = sb.NodeID
		if err := a.st.UpdateSandbox(ctx, k, change); err != nil {
			a.log.WarnContext(ctx, "admin kill: record a sandbox of a lost node killed", "sandbox.id", sb.ID, "node", sb.NodeID, "err", err)
			failed++
			continue
		}
		killed++
	}
	return killed, failed
}
