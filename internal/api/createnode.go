package api

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
)

// NodeCreator is an api replica's Sandboxes (cluster.Sandboxes): the
// create goes to a node with the settings the node applies itself.
type NodeCreator interface {
	CreateOnNode(ctx context.Context, req sandbox.CreateRequest, nc cluster.NodeCreate) (store.Sandbox, string, error)
}

// createOnNode is an api replica's create. What one box does here the
// node does, with its own services and as one box would: it resolves
// the envVars' secret references (so a secret's value never crosses the
// network or reaches the api replica), applies the egress policy (its
// nftables) and mounts the volumes (its images). The api replica checks
// what it can first, so a bad body is refused before any placement: the
// network settings, the mount paths, and that each volume is the team's
// and that they all live on one node, to which the sandbox is pinned.
func (s *Server) createOnNode(ctx context.Context, nc NodeCreator, req sandbox.CreateRequest, body newSandbox) (store.Sandbox, string, error) {
	if body.Secure != nil {
		req.Secure = *body.Secure
	}
	n := s.net
	if n == nil {
		n = &networking{}
	}
	if _, _, _, _, err := n.plan(body.Network, body.AllowInternetAccess); err != nil {
		return store.Sandbox{}, "", err
	}
	spec := cluster.NodeCreate{AllowInternetAccess: body.AllowInternetAccess}
	if body.Network != nil {
		raw, err := json.Marshal(body.Network)
		if err != nil {
			return store.Sandbox{}, "", err
		}
		spec.Network = raw
	}
	if err := s.volumesOnNode(ctx, req.TeamID, body.VolumeMounts, &spec); err != nil {
		return store.Sandbox{}, "", err
	}
	req.AutoPauseMemory = body.AutoPauseMemory
	if body.AutoResume != nil {
		req.AutoResume = body.AutoResume.Enabled
	}
	sb, traffic, err := nc.CreateOnNode(ctx, req, spec)
	if err != nil {
		s.creates.failed.Add(1)
		return store.Sandbox{}, "", err
	}
	return sb, traffic, nil
}

// volumesOnNode resolves a create's volumeMounts to the team's volumes
// (another team's is not found) and pins the sandbox to their node.
func (s *Server) volumesOnNode(ctx context.Context, teamID string, vms []volumeMount, spec *cluster.NodeCreate) error {
	if len(vms) == 0 {
		return nil
	}
	if s.volumes == nil {
		return errdefs.Precondition("volumeMounts: this server keeps no volumes")
	}
	paths, err := mountPaths(vms)
	if err != nil {
		return err
	}
	var names []string
	for i, vm := range vms {
		v, err := s.volumes.Get(ctx, teamID, vm.Name)
		if err != nil {
			return err
		}
		if v.NodeID == "" {
			return errdefs.Precondition("volume %s was made by a single server (sbx serve --role all), not on a cluster node: no node holds it", v.Name)
		}
		if spec.Node != "" && v.NodeID != spec.Node {
			return errdefs.Invalid("volumeMounts: volumes %s and %s are kept on different nodes, and a sandbox runs on one: "+
				"mount volumes created together, or copy the data into one volume", strings.Join(names, ", "), v.Name)
		}
		spec.Node = v.NodeID
		names = append(names, v.Name)
		spec.VolumeMounts = append(spec.VolumeMounts, cluster.VolumeMount{Name: v.ID, Path: paths[i]})
	}
	spec.PinnedBy = "volume " + strings.Join(names, ", ")
	return nil
}
