// Package leader elects one process among those sharing a cluster to run
// a singleton loop (the dead-node sweep, pruning, webhook fan-out): through
// Kubernetes Leases when sbx runs in Kubernetes, through a PostgreSQL
// advisory lock when several servers share a database outside it, and
// through a file lock on one machine.
//
// Every implementation has the same contract, checked by leadertest.Run:
// at most one campaigner leads a name at a time, lead's context ends when
// leadership is lost, and a leader that stops (or dies) is replaced.
package leader

import (
	"context"
	"time"
)

// Lead is the work a leader does. Its context is cancelled when this
// process stops leading; it must return promptly then.
type Lead func(ctx context.Context)

// Timing bounds how fast a dead leader is replaced and how often
// campaigners ask. A leader that cannot confirm its leadership within
// RenewDeadline stops leading; a leader that died is replaced after at most
// LeaseDuration plus RetryPeriod. LeaseDuration must exceed RetryPeriod +
// RenewDeadline: it is how long a successor waits for a leader that lost
// its lock to notice.
type Timing struct {
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// DefaultTiming replaces a dead leader in about two seconds (the cluster
// issue's goal) and costs each campaigner four requests a second. A 1 s
// Lease with a 0.6 s renew deadline made leaders step down on a loaded
// 2-core machine (CI) when one renewal was slow. LeaseDuration is whole
// seconds because a Lease records it in seconds (client-go truncates).
var DefaultTiming = Timing{LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond,
	RetryPeriod: 250 * time.Millisecond}

func (t Timing) orDefault() Timing {
	if t.RenewDeadline <= 0 || t.RetryPeriod <= 0 || t.LeaseDuration <= t.RetryPeriod+t.RenewDeadline {
		return DefaultTiming
	}
	return t
}
