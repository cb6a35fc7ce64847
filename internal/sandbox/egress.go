package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/network"
	"github.com/sbxdev/sbx/internal/store"
)

// egressPolicies is a Network that applies egress policies
// (network.Manager).
type egressPolicies interface {
	SetPolicy(ctx context.Context, id string, p network.Policy) error
	PolicyOf(id string) network.Policy
}

// applyEgress puts a new sandbox's egress policy in force. startWith calls
// it once the sandbox's link exists and before the runtime starts anything
// in it: the firewall lets established connections through, so a policy
// set after the sandbox ran would leave open whatever it connected to
// meanwhile (a fork's clone resumes the source's processes at once; a
// template's start command runs before the create returns).
func (m *Manager) applyEgress(ctx context.Context, id string, p network.Policy) error {
	if p.Empty() {
		return nil
	}
	n, ok := m.network.(egressPolicies)
	if !ok {
		return errdefs.Precondition("network.allowOut/denyOut: this server applies no egress policies")
	}
	if err := n.SetPolicy(ctx, id, p); err != nil {
		return fmt.Errorf("apply the egress policy of sandbox %s: %w", id, err)
	}
	return nil
}

// egressOf is a running sandbox's egress policy (zero when it has none).
func (m *Manager) egressOf(id string) network.Policy {
	if n, ok := m.network.(egressPolicies); ok {
		return n.PolicyOf(id)
	}
	return network.Policy{}
}

// savedLifecycle is the lifecycle file with the egress policy of a sandbox
// paused without its memory: the file is published with the paused
// sandbox's layers, so a node that takes it over boots it with its policy.
type savedLifecycle struct {
	Lifecycle
	Egress network.Policy `json:"egress,omitzero"`
}

// keepEgress writes the lifecycle file of a sandbox being paused without
// its memory with its current egress policy (or without one, dropping a
// stale policy an earlier pause wrote).
func (m *Manager) keepEgress(id string, lc Lifecycle, p network.Policy) error {
	path := filepath.Join(m.layersDir(id), lifecycleFile)
	if p.Empty() && lc == (Lifecycle{}) {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	b, _ := json.Marshal(savedLifecycle{Lifecycle: lc, Egress: p})
	return replaceFile(path, b, 0o600)
}

// SetPausedEgress records a new egress policy for a sandbox paused without
// its memory, in its pause marker and its lifecycle file (published again
// to the blob store), so that the boot that resumes it, here or on the
// node that takes it over, applies this policy and not the one it had at
// the pause. For any other sandbox it does nothing: the network manager's
// policy is the one in force.
func (m *Manager) SetPausedEgress(ctx context.Context, id string, p network.Policy) error {
	l := m.lookup(id)
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := m.fsPausedState(id)
	if !ok {
		return nil
	}
	st.Egress = p
	b, _ := json.Marshal(st)
	marker := filepath.Join(m.layersDir(id), fsPausedFile)
	// Replaced, not rewritten: a torn marker would lose the sandbox.
	if err := replaceFile(marker, b, 0o600); err != nil {
		return fmt.Errorf("record the egress policy of paused sandbox %s: %w", id, err)
	}
	if err := m.keepEgress(id, l.lifecycle, p); err != nil {
		return fmt.Errorf("record the egress policy of paused sandbox %s: %w", id, err)
	}
	if m.blobs == nil {
		return nil
	}
	if err := m.publishLifecycle(ctx, id); err != nil {
		// Fail closed: another node must not take it over with the old one.
		_ = m.blobs.Layers.DeleteLayers(context.WithoutCancel(ctx), store.LayerOwnerSandbox, id)
		return fmt.Errorf("publish the egress policy of paused sandbox %s: %w", id, err)
	}
	return nil
}
