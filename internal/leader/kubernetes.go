package leader

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Kubernetes elects through a coordination.k8s.io Lease named after the
// election in Namespace, as Kubernetes' own controllers do. A leader that
// stops releases the Lease at once; one that dies is replaced when its
// Lease expires (LeaseDuration).
type Kubernetes struct {
	Client    kubernetes.Interface
	Namespace string
	Identity  string // unique per process: the node name, or the Pod name
	Timing    Timing
	Log       *slog.Logger
}

// Campaign runs lead each time this process holds the Lease for name,
// until ctx ends.
func (k *Kubernetes) Campaign(ctx context.Context, name string, lead Lead) error {
	if err := checkName(name); err != nil {
		return err
	}
	if k.Identity == "" || k.Namespace == "" {
		return fmt.Errorf("leader %s: the Kubernetes elector needs a namespace and an identity", name)
	}
	t := k.Timing.orDefault()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: "sbx-" + name, Namespace: k.Namespace},
		Client:     k.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: k.Identity},
	}
	for ctx.Err() == nil {
		if err := k.term(ctx, name, t, lock, lead); err != nil {
			return err
		}
	}
	return nil
}

// term campaigns once and, if elected, leads until leadership is lost or
// ctx ends. The Lease is released only after lead has returned: client-go
// would release it as soon as ctx ends or a renewal fails, while lead may
// still be running, and a successor could then overlap with it.
func (k *Kubernetes) term(ctx context.Context, name string, t Timing, lock resourcelock.Interface, lead Lead) error {
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	var mu sync.Mutex
	leading, finished := false, false
	stopWatch := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !leading {
			cancelRun() // not leading: stop campaigning now
		}
	})
	defer stopWatch()
	var led sync.WaitGroup
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   t.LeaseDuration,
		RenewDeadline:   t.RenewDeadline,
		RetryPeriod:     t.RetryPeriod,
		ReleaseOnCancel: false, // see release
		Name:            name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(termCtx context.Context) {
				// client-go starts this in a goroutine that may run after
				// Run has returned: then the term is over, lead nothing.
				mu.Lock()
				if finished || termCtx.Err() != nil {
					mu.Unlock()
					return
				}
				leading = true
				led.Add(1)
				mu.Unlock()
				defer led.Done()
				logf(k.Log, "leading", name)
				leadCtx, stop := context.WithCancel(termCtx)
				stopOnCancel := context.AfterFunc(ctx, stop)
				lead(leadCtx)
				stopOnCancel()
				stop()
				cancelRun() // now the Lease may be released
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("leader %s: %w", name, err)
	}
	le.Run(runCtx)
	mu.Lock()
	finished = true
	wasLeading := leading
	mu.Unlock()
	led.Wait() // a lost term's lead has returned before the next campaign
	if wasLeading {
		k.release(name, t)
		logf(k.Log, "stopped leading", name)
	}
	return nil
}

// release gives the Lease up once lead has returned, so a successor need
// not wait for it to expire. client-go's own release (ReleaseOnCancel)
// runs when a renewal fails, before lead is told to stop, and overwrites
// the Lease without checking who holds it now; this one changes it only if
// it still names this process, at the version just read.
func (k *Kubernetes) release(name string, t Timing) {
	ctx, cancel := context.WithTimeout(context.Background(), t.RenewDeadline)
	defer cancel()
	leases := k.Client.CoordinationV1().Leases(k.Namespace)
	l, err := leases.Get(ctx, "sbx-"+name, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != k.Identity {
		return
	}
	none, one := "", int32(1)
	now := metav1.NowMicro()
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &none, &one, &now
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil && k.Log != nil {
		k.Log.Info("leader: the Lease was not released; it expires instead", "leader.name", name, "err", err)
	}
}
