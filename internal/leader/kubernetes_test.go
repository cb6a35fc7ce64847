package leader_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sbxdev/sbx/internal/kubetest"
	"github.com/sbxdev/sbx/internal/leader"
	"github.com/sbxdev/sbx/internal/leader/leadertest"
)

func clientFor(t testing.TB, kubeconfig string) kubernetes.Interface {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKubernetesElector runs the contract through Leases on a real
// kube-apiserver, then kills a leader with SIGKILL (no release) and logs
// how long its successor took: the cluster issue asks for 2 s.
func TestKubernetesElector(t *testing.T) {
	api := kubetest.Start(t)
	kubeconfig, ns := api.Kubeconfig, api.Namespace(t, "sbx-leader-test")
	leadertest.Run(t, func(t *testing.T, id string) leadertest.Campaigner {
		return &leader.Kubernetes{Client: clientFor(t, kubeconfig), Namespace: ns, Identity: id}
	})

	t.Run("FailOverAfterKill", func(t *testing.T) {
		// The first leader is another process (this test binary, see
		// TestMain), so it can die for real.
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "SBX_LEADER_HELPER_KUBECONFIG="+kubeconfig, "SBX_LEADER_HELPER_NAMESPACE="+ns)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		led := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if strings.TrimSpace(sc.Text()) == "LEADING" {
					close(led)
					break
				}
			}
			for sc.Scan() {
			}
		}()
		select {
		case <-led:
		case <-time.After(60 * time.Second):
			t.Fatal("the helper process did not lead within 60 s")
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		mine := make(chan time.Time, 1)
		survivor := &leader.Kubernetes{Client: clientFor(t, kubeconfig), Namespace: ns, Identity: "survivor"}
		go survivor.Campaign(ctx, "failover", func(ctx context.Context) {
			mine <- time.Now()
			<-ctx.Done()
		})
		select {
		case <-mine:
			t.Fatal("the survivor led while the leader was alive")
		case <-time.After(2 * leader.DefaultTiming.LeaseDuration):
		}
		killed := time.Now()
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		select {
		case at := <-mine:
			t.Logf("leader killed with SIGKILL; the survivor led %s later (lease %s, retry %s)",
				at.Sub(killed).Round(time.Millisecond), leader.DefaultTiming.LeaseDuration, leader.DefaultTiming.RetryPeriod)
		case <-time.After(30 * time.Second):
			t.Fatal("no fail-over within 30 s of the leader's death")
		}
	})
}

// TestMain doubles as the leader process TestKubernetesElector kills (its
// own binary started with SBX_LEADER_HELPER_KUBECONFIG set).
func TestMain(m *testing.M) {
	if kc := os.Getenv("SBX_LEADER_HELPER_KUBECONFIG"); kc != "" {
		campaignUntilKilled(kc, os.Getenv("SBX_LEADER_HELPER_NAMESPACE"))
		return
	}
	os.Exit(m.Run())
}

func campaignUntilKilled(kubeconfig, namespace string) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	e := &leader.Kubernetes{Client: kubernetes.NewForConfigOrDie(cfg), Namespace: namespace, Identity: "doomed"}
	e.Campaign(context.Background(), "failover", func(ctx context.Context) {
		fmt.Println("LEADING")
		<-ctx.Done()
	})
}
