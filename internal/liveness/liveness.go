// Package liveness keeps the nodes sharing a database honest about who is
// alive: each node heartbeats; one of them (elected) declares lost the
// nodes whose heartbeats stopped and records their running sandboxes
// killed with reason node_lost, so events and webhooks say so; a node that
// was declared lost while it still ran is fenced and destroys what it no
// longer owns.
package liveness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sbxdev/sbx/internal/periodic"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
)

// ReasonNodeLost is the kill reason of a sandbox whose node stopped.
const ReasonNodeLost = "node_lost"

// Repo is what liveness needs from the store.
type Repo interface {
	store.Nodes
	NodeSandboxes(ctx context.Context, node string) ([]store.Sandbox, error)
	UpdateSandbox(ctx context.Context, sb store.Sandbox, change *store.Change) error
}

// Config says how often nodes beat and how long a silent one is given.
type Config struct {
	Interval time.Duration // between heartbeats and sweeps
	Grace    time.Duration // silence after which a node is lost
}

// DefaultConfig declares a node lost after 15 s without a heartbeat (the
// cluster issue asks for its sandboxes to be reported within 30 s).
var DefaultConfig = Config{Interval: time.Second, Grace: 15 * time.Second}

// Validate checks that a node beats several times within its grace.
func (c Config) Validate() error {
	if c.Interval <= 0 || c.Grace < 3*c.Interval {
		return fmt.Errorf("node grace %s: want at least three heartbeat intervals (%s)", c.Grace, c.Interval)
	}
	return nil
}

// Beater heartbeats for one node process.
type Beater struct {
	repo    Repo
	node    store.Node
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	fenced  func(ctx context.Context) // destroys what the node no longer owns
	isFence bool
	load    func() store.NodeLoad // nil: the heartbeat carries no load (load.go)
	// draining tells whether the node takes no new sandboxes (nil: it
	// always takes them).
	draining func() bool
}

// NewBeater returns the heartbeat of node (its ID and address), with a
// boot of its own. fenced runs once if the node learns it was declared
// lost.
func NewBeater(repo Repo, id, address string, cfg Config, log *slog.Logger, fenced func(ctx context.Context)) *Beater {
	var b [8]byte
	rand.Read(b[:])
	now := time.Now().UTC()
	return &Beater{repo: repo, cfg: cfg, log: log, now: time.Now, fenced: fenced,
		node: store.Node{ID: id, Boot: hex.EncodeToString(b[:]), Address: address, StartedAt: now}}
}

// Beat records one heartbeat.
func (b *Beater) Beat(ctx context.Context) error {
	n := b.node
	n.HeartbeatAt = b.now().UTC()
	if b.load != nil {
		n.NodeLoad = b.load()
	}
	if b.draining != nil && b.draining() {
		n.State = store.NodeDraining
	}
	err := b.repo.Heartbeat(ctx, n)
	if errors.Is(err, store.ErrFenced) && !b.isFence {
		b.isFence = true
		b.log.ErrorContext(ctx, "this node was declared lost by the others (no heartbeat within the grace): "+
			"destroying its sandboxes, which were recorded killed (node_lost); restart sbx to rejoin",
			"node", n.ID, "grace", b.cfg.Grace)
		if b.fenced != nil {
			b.fenced(ctx)
		}
	}
	return err
}

// Run heartbeats until ctx ends.
func (b *Beater) Run(ctx context.Context) error {
	periodic.Run(ctx, b.cfg.Interval, func(ctx context.Context) error {
		if err := b.Beat(ctx); !errors.Is(err, store.ErrFenced) {
			return err
		}
		return nil // Beat has told whoever needs to know
	}, b.log, "node heartbeat failed; trying again", "node", b.node.ID)
	return nil
}

// Sweeper declares silent nodes lost and records their running sandboxes
// killed. One node runs it at a time (package leader).
type Sweeper struct {
	repo Repo
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	// reachedSince is when this sweeper's unbroken run of successful
	// sweeps began (zero: the last one failed, or none ran yet).
	reachedSince time.Time
}

// NewSweeper returns a sweeper over repo.
func NewSweeper(repo Repo, cfg Config, log *slog.Logger) *Sweeper {
	return &Sweeper{repo: repo, cfg: cfg, log: log, now: time.Now}
}

// Sweep runs once: nodes silent for longer than the grace become lost,
// and every lost node's running sandboxes are recorded killed (paused ones
// stay paused: their disk is on the node, which may come back).
//
// Nobody is declared lost until this sweeper has reached the database
// without a break for a whole grace: after an outage of the database (or
// of this leader's link to it) every node's last heartbeat is old, and
// they all need a grace to beat again before silence means anything.
func (s *Sweeper) Sweep(ctx context.Context) error {
	err := s.sweep(ctx)
	if err != nil {
		s.reachedSince = time.Time{}
	}
	return err
}

func (s *Sweeper) sweep(ctx context.Context) error {
	now := s.now().UTC()
	if _, err := s.repo.LostNodes(ctx); err != nil {
		return err
	}
	if s.reachedSince.IsZero() {
		s.reachedSince = now
	}
	if now.Sub(s.reachedSince) < s.cfg.Grace {
		return nil
	}
	lost, err := s.repo.MarkLost(ctx, now.Add(-s.cfg.Grace), now)
	if err != nil {
		return err
	}
	for _, id := range lost {
		s.log.WarnContext(ctx, "node lost: no heartbeat within the grace; its running sandboxes are recorded killed",
			"node", id, "grace", s.cfg.Grace)
	}
	// Every lost node, not only the new ones: a sweep cut short (the
	// leader died) is finished by the next.
	nodes, err := s.repo.LostNodes(ctx)
	if err != nil {
		return err
	}
	for _, node := range nodes {
		sbs, err := s.repo.NodeSandboxes(ctx, node)
		if err != nil {
			return err
		}
		for _, sb := range sbs {
			if sb.NodeID != node || sb.State != store.StateRunning {
				continue
			}
			killed, change := sandbox.KilledChange(sb, ReasonNodeLost, now)
			change.Data["node_id"] = node
			if err := s.repo.UpdateSandbox(ctx, killed, change); err != nil {
				return fmt.Errorf("record sandbox %s of lost node %s killed: %w", sb.ID, node, err)
			}
			s.log.InfoContext(ctx, "sandbox killed: its node is lost", "sandbox.id", sb.ID, "node", node, "reason", ReasonNodeLost)
		}
	}
	return nil
}

// Run sweeps until ctx ends (the lead of an election). A new term waits a
// grace before declaring anyone lost, as after an outage.
func (s *Sweeper) Run(ctx context.Context) {
	s.reachedSince = time.Time{}
	periodic.Run(ctx, s.cfg.Interval, s.Sweep, s.log, "node sweep failed; trying again")
}
