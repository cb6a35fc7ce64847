package sandbox

import (
	"context"
	"fmt"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/network"
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
