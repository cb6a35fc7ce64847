package liveness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sbxdev/sbx/internal/store"
)

// Leases is the node registry kept in Kubernetes: each node holds a
// coordination.k8s.io Lease sbx-node-<name> in Namespace, renewed at each
// heartbeat, whose annotations say what the other processes need (the
// node's address, its boot, whether it was declared lost). It implements
// store.Nodes, so Beater and Sweeper run on it unchanged (see WithNodes):
// in Kubernetes, `kubectl get leases -l sbx.dev/component=node` lists the
// nodes and when each last beat.
//
// Every change is a compare-and-swap on the Lease's resourceVersion: a
// sweep that declares a node lost and that node's renewal cannot both
// win, so a node is never declared lost by a sweep that missed a renewal,
// and a lost boot learns it at its next heartbeat (store.ErrFenced).
type Leases struct {
	Client    kubernetes.Interface
	Namespace string
	// Grace is recorded as the Leases' duration, for people reading them;
	// the sweep applies its own.
	Grace time.Duration

	mu      sync.Mutex
	written map[string]*coordinationv1.Lease // by name: what this process last wrote
}

var _ store.Nodes = (*Leases)(nil)

// Lease labels and annotations.
const (
	leaseSelector    = "sbx.dev/component=node"
	annotationNodeID = "sbx.dev/node-id"
	annotationBoot   = "sbx.dev/boot"
	annotationAddr   = "sbx.dev/address"
	annotationState  = "sbx.dev/state"
	annotationLostAt = "sbx.dev/lost-at"
	// annotationLoad holds the node's store.NodeLoad as JSON: where api
	// replicas reach it and how full it is, for placement.
	annotationLoad = "sbx.dev/load"
)

// LeaseName is the Lease of node id: sbx-node-<id> when that is a valid
// object name (a Kubernetes node's name always is), else a readable
// prefix and a hash (the default node name, host:port, has a colon).
func LeaseName(id string) string {
	name := "sbx-node-" + id
	if len(name) <= 253 && dnsSubdomain.MatchString(name) {
		return name
	}
	sum := sha256.Sum256([]byte(id))
	clean := strings.Trim(invalidLabel.ReplaceAllString(strings.ToLower(id), "-"), "-")
	if len(clean) > 30 {
		clean = strings.TrimRight(clean[:30], "-")
	}
	return "sbx-node-" + clean + "-" + hex.EncodeToString(sum[:6])
}

var (
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	invalidLabel = regexp.MustCompile(`[^a-z0-9-]+`)
)

// Heartbeat records that n.Boot of node n.ID is alive at n.HeartbeatAt.
func (l *Leases) Heartbeat(ctx context.Context, n store.Node) error {
	leases := l.Client.CoordinationV1().Leases(l.Namespace)
	name := LeaseName(n.ID)
	// The Lease this process wrote last is renewed without reading it
	// first: one request per heartbeat. If anyone changed it since (a
	// sweep declaring the node lost), the update conflicts, and the Lease
	// is read again and judged.
	cur := l.lastWritten(name)
	for range 5 {
		if cur == nil {
			got, err := leases.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				created, err := leases.Create(ctx, l.lease(n, &coordinationv1.Lease{}), metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					continue
				}
				l.remember(name, created, err)
				return l.wrap("register node "+n.ID, err)
			}
			if err != nil {
				return l.wrap("read the Lease of node "+n.ID, err)
			}
			if got.Annotations[annotationState] == store.NodeLost && got.Annotations[annotationBoot] == n.Boot {
				return store.ErrFenced
			}
			cur = got
		}
		updated, err := leases.Update(ctx, l.lease(n, cur), metav1.UpdateOptions{})
		l.remember(name, updated, err)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			cur = nil
			continue
		}
		return l.wrap("renew the Lease of node "+n.ID, err)
	}
	return fmt.Errorf("renew the Lease of node %s: it kept changing under this heartbeat; trying again at the next", n.ID)
}

func (l *Leases) lastWritten(name string) *coordinationv1.Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.written[name]
}

// remember keeps the Lease a write returned, or forgets it when the write
// failed (what the API server holds is then unknown).
func (l *Leases) remember(name string, lease *coordinationv1.Lease, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.written == nil {
		l.written = map[string]*coordinationv1.Lease{}
	}
	if err != nil || lease == nil {
		delete(l.written, name)
		return
	}
	l.written[name] = lease
}

// lease returns cur (a copy) holding n's heartbeat: a new boot makes the
// node ready again.
func (l *Leases) lease(n store.Node, cur *coordinationv1.Lease) *coordinationv1.Lease {
	lease := cur.DeepCopy()
	lease.Name, lease.Namespace = LeaseName(n.ID), l.Namespace
	if lease.Labels == nil {
		lease.Labels = map[string]string{}
	}
	lease.Labels["sbx.dev/component"] = "node"
	lease.Labels["app.kubernetes.io/managed-by"] = "sbx"
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	a := lease.Annotations
	a[annotationNodeID], a[annotationBoot], a[annotationAddr], a[annotationState] = n.ID, n.Boot, n.Address, store.BeatState(n)
	delete(a, annotationLostAt)
	delete(a, annotationLoad)
	if n.NodeLoad != (store.NodeLoad{}) {
		b, _ := json.Marshal(n.NodeLoad) // plain strings and integers: cannot fail
		a[annotationLoad] = string(b)
	}
	holder, secs := n.ID, int32(max(l.Grace/time.Second, 1))
	started, renewed := metav1.NewMicroTime(n.StartedAt), metav1.NewMicroTime(n.HeartbeatAt)
	lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds = &holder, &secs
	lease.Spec.AcquireTime, lease.Spec.RenewTime = &started, &renewed
	return lease
}

// Nodes lists every node holding a Lease, by ID.
func (l *Leases) Nodes(ctx context.Context) ([]store.Node, error) {
	list, err := l.list(ctx)
	if err != nil {
		return nil, err
	}
	nodes := make([]store.Node, 0, len(list))
	for _, lease := range list {
		nodes = append(nodes, leaseNode(lease))
	}
	return nodes, nil
}

func leaseNode(lease coordinationv1.Lease) store.Node {
	a := lease.Annotations
	n := store.Node{ID: a[annotationNodeID], Boot: a[annotationBoot], Address: a[annotationAddr], State: a[annotationState]}
	if t := lease.Spec.AcquireTime; t != nil {
		n.StartedAt = t.UTC()
	}
	if t := lease.Spec.RenewTime; t != nil {
		n.HeartbeatAt = t.UTC()
	}
	if t, err := time.Parse(time.RFC3339Nano, a[annotationLostAt]); err == nil {
		n.LostAt = t
	}
	if v := a[annotationLoad]; v != "" {
		// A Lease anyone with write access to the namespace edited may
		// hold anything: a load that does not parse is no load (the node
		// is not placed on until its next heartbeat rewrites it).
		var load store.NodeLoad
		if json.Unmarshal([]byte(v), &load) == nil {
			n.NodeLoad = load
		}
	}
	return n
}

// MarkLost declares lost, at now, every ready or draining node whose Lease was last
// renewed before staleBefore, and returns their IDs. A node that renews
// between the list and the update keeps its Lease: the update conflicts
// and the node is not declared lost.
func (l *Leases) MarkLost(ctx context.Context, staleBefore, now time.Time) ([]string, error) {
	list, err := l.list(ctx)
	if err != nil {
		return nil, err
	}
	var lost []string
	for _, lease := range list {
		n := leaseNode(lease)
		if n.State == store.NodeLost || !n.HeartbeatAt.Before(staleBefore) {
			continue
		}
		marked := lease.DeepCopy()
		marked.Annotations[annotationState] = store.NodeLost
		marked.Annotations[annotationLostAt] = now.UTC().Format(time.RFC3339Nano)
		_, err := l.Client.CoordinationV1().Leases(l.Namespace).Update(ctx, marked, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue // it beat (or was removed) meanwhile; the next sweep looks again
		}
		if err != nil {
			return lost, l.wrap("mark node "+n.ID+" lost", err)
		}
		lost = append(lost, n.ID)
	}
	return lost, nil
}

// LostNodes lists the IDs of nodes whose Lease says they are lost.
func (l *Leases) LostNodes(ctx context.Context) ([]string, error) {
	nodes, err := l.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, n := range nodes {
		if n.State == store.NodeLost {
			ids = append(ids, n.ID)
		}
	}
	return ids, nil
}

// list returns the node Leases sorted by node ID; Leases without a node
// ID (not written by sbx) are ignored.
func (l *Leases) list(ctx context.Context) ([]coordinationv1.Lease, error) {
	res, err := l.Client.CoordinationV1().Leases(l.Namespace).List(ctx, metav1.ListOptions{LabelSelector: leaseSelector})
	if err != nil {
		return nil, l.wrap("list node Leases", err)
	}
	items := slices.DeleteFunc(res.Items, func(x coordinationv1.Lease) bool { return x.Annotations[annotationNodeID] == "" })
	slices.SortFunc(items, func(a, b coordinationv1.Lease) int {
		return strings.Compare(a.Annotations[annotationNodeID], b.Annotations[annotationNodeID])
	})
	return items, nil
}

// wrap says what failed, and what to do when the API server refused the
// service account.
func (l *Leases) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%s in namespace %s: %w (the service account needs get, list, create and update on "+
			"coordination.k8s.io leases there: the Helm chart's Role grants them)", what, l.Namespace, err)
	}
	return fmt.Errorf("%s in namespace %s: %w", what, l.Namespace, err)
}

// WithNodes returns repo with its node registry replaced by nodes (the
// Leases in Kubernetes); sandbox rows stay in repo's database.
func WithNodes(repo Repo, nodes store.Nodes) Repo {
	return withNodes{registry: nodes, Repo: repo}
}

type withNodes struct {
	registry store.Nodes
	Repo     // the sandbox rows; its node methods are shadowed below
}

func (w withNodes) Heartbeat(ctx context.Context, n store.Node) error {
	return w.registry.Heartbeat(ctx, n)
}
func (w withNodes) Nodes(ctx context.Context) ([]store.Node, error) { return w.registry.Nodes(ctx) }
func (w withNodes) LostNodes(ctx context.Context) ([]string, error) { return w.registry.LostNodes(ctx) }
func (w withNodes) MarkLost(ctx context.Context, staleBefore, now time.Time) ([]string, error) {
	return w.registry.MarkLost(ctx, staleBefore, now)
}
