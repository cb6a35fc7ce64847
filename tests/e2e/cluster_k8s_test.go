package e2e

import (
	"context"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sbxdev/sbx/internal/kubetest"
	"github.com/sbxdev/sbx/sdk"
)

// clusterNamespace holds the Leases of TestClusterOnKubernetes.
const clusterNamespace = "sbx-e2e"

// startKubeAPI starts a real kube-apiserver and etcd (envtest), creates
// clusterNamespace and points this process's children at it as a
// cluster outside Pods is: KUBECONFIG and POD_NAMESPACE.
func startKubeAPI(t *testing.T) {
	t.Helper()
	api := kubetest.Start(t)
	api.Namespace(t, clusterNamespace)
	t.Setenv("KUBECONFIG", api.Kubeconfig)
	t.Setenv("POD_NAMESPACE", clusterNamespace)
}

// kubeClient reaches the API server startKubeAPI started.
func kubeClient(t testing.TB) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leaseOffers counts the node Leases whose heartbeat carries a load: the
// nodes that offer themselves to api replicas.
func leaseOffers(t testing.TB) func() int {
	client := kubeClient(t)
	return func() int {
		list, err := client.CoordinationV1().Leases(clusterNamespace).List(context.Background(),
			metav1.ListOptions{LabelSelector: "sbx.dev/component=node"})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range list.Items {
			if strings.Contains(l.Annotations["sbx.dev/load"], `"AdvertiseURL":"http`) {
				n++
			}
		}
		return n
	}
}

// TestClusterOnKubernetes (cluster issue, Kubernetes): with
// --coordination kubernetes and a real kube-apiserver, nodes heartbeat to
// Leases only; the api replica finds them there (addresses and load),
// places sandboxes on both, and its node sweep, elected on a Lease,
// records the sandboxes of a SIGKILLed node killed (node_lost) while the
// other node's keep running.
func TestClusterOnKubernetes(t *testing.T) {
	startKubeAPI(t)
	c := startCluster(t, "--coordination", "kubernetes", "--node-grace", "3s")
	if got := tableOffers(t, c.dsn)(); got != 0 {
		t.Errorf("%d nodes offer themselves in the nodes table; with --coordination kubernetes they heartbeat to Leases", got)
	}
	client := c.api.Client(t)
	var sbs []*sdk.Sandbox
	on := map[int][]string{}
	for len(sbs) < 6 {
		s, err := client.Create(opCtx(t), sdk.CreateOptions{Timeout: 10 * time.Minute})
		if err != nil {
			t.Fatalf("create %d through the api replica: %v\napi log:\n%s", len(sbs), err, c.api.Log())
		}
		createdIDs.Store(s.ID, true)
		sbs = append(sbs, s)
		i := c.nodeOf(t, s.ID)
		on[i] = append(on[i], s.ID)
	}
	if len(on[0]) == 0 || len(on[1]) == 0 {
		t.Fatalf("6 sandboxes placed %v; want both nodes used (the api replica reads them from Leases)", on)
	}
	for _, s := range sbs[:2] {
		if res, err := s.Commands.Run(opCtx(t), "echo k8s", sdk.RunOptions{}); err != nil || res.Stdout != "k8s\n" {
			t.Fatalf("command in %s: %+v, %v", s.ID, res, err)
		}
	}
	if l, err := kubeClient(t).CoordinationV1().Leases(clusterNamespace).Get(t.Context(), "sbx-node-sweep", metav1.GetOptions{}); err != nil ||
		l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		t.Errorf("the node sweep's Lease: %+v, %v; want it held", l, err)
	}

	seen := streamEvents(t, c.api)
	c.nodes[0].Stop(syscall.SIGKILL)
	killed := map[string]bool{}
	deadline := time.After(30 * time.Second)
	for len(killed) < len(on[0]) {
		select {
		case ev := <-seen:
			if ev.Type != "sandbox.lifecycle.killed" {
				continue
			}
			if slices.Contains(on[1], ev.SandboxID) {
				t.Errorf("sandbox %s of the live node-2 was reported killed", ev.SandboxID)
			}
			if slices.Contains(on[0], ev.SandboxID) {
				killed[ev.SandboxID] = true
			}
		case <-deadline:
			t.Fatalf("30 s after node-1's SIGKILL, %d of its %d sandboxes reported killed\napi log:\n%s", len(killed), len(on[0]), c.api.Log())
		}
	}
	for _, id := range on[0] {
		r := c.api.Raw(t, "GET", "/events/sandboxes/"+id, "", map[string]string{"X-API-Key": c.api.APIKey})
		if !strings.Contains(r.Body, `"node_lost"`) {
			t.Errorf("events of %s: %s; want a kill with reason node_lost", id, r.Body)
		}
	}
	for _, id := range on[1] {
		if sb, err := client.Get(opCtx(t), id); err != nil || sb.State != "running" {
			t.Errorf("node-2's sandbox %s after node-1 died: %+v, %v; want running", id, sb, err)
		}
	}
	// Creates keep working, on the node that is left.
	s, err := client.Create(opCtx(t), sdk.CreateOptions{Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatalf("create after node-1 died: %v", err)
	}
	createdIDs.Store(s.ID, true)
	if c.nodeOf(t, s.ID) != 1 {
		t.Errorf("sandbox %s created after node-1 died is not on node-2", s.ID)
	}
	_ = s.Kill(opCtx(t))
}
