package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbxdev/sbx/internal/kubetest"
	"github.com/sbxdev/sbx/internal/leader"
	"github.com/sbxdev/sbx/internal/liveness"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

func TestResolveCoordination(t *testing.T) {
	for _, c := range []struct {
		mode    string
		dialect sqldb.Dialect
		inPod   bool
		want    string
	}{
		{"auto", sqldb.Postgres, true, CoordinationKubernetes},
		{"auto", sqldb.SQLite, true, CoordinationKubernetes},
		{"auto", sqldb.Postgres, false, CoordinationPostgres},
		{"auto", sqldb.SQLite, false, CoordinationFile},
		{"", sqldb.Postgres, false, CoordinationPostgres},
		{"postgres", sqldb.Postgres, true, CoordinationPostgres}, // explicit wins over the Pod
		{"file", sqldb.Postgres, true, CoordinationFile},
		{"kubernetes", sqldb.Postgres, false, CoordinationKubernetes}, // outside a Pod: $KUBECONFIG
	} {
		if got := resolveCoordination(c.mode, c.dialect, c.inPod); got != c.want {
			t.Errorf("resolveCoordination(%q, %s, inPod=%v) = %q, want %q", c.mode, c.dialect, c.inPod, got, c.want)
		}
	}
}

func TestValidateCoordination(t *testing.T) {
	for _, c := range []struct {
		mode, database string
		ok             bool
	}{
		{"", "", true}, {"auto", "", true}, {"kubernetes", "", true}, {"file", "postgres://db/sbx", true},
		{"postgres", "postgres://db/sbx", true},
		{"postgres", "", false}, // no PostgreSQL to lock in
		{"etcd", "", false},
	} {
		cfg := Config{Coordination: c.mode, Database: c.database}
		err := cfg.validateCoordination()
		if (err == nil) != c.ok {
			t.Errorf("--coordination %q with --database %q: %v, want ok=%v", c.mode, c.database, err, c.ok)
		}
		if c.mode == "" && cfg.Coordination != CoordinationAuto {
			t.Errorf("default --coordination = %q, want auto", cfg.Coordination)
		}
	}
}

// A Pod is told by the service's address and a mounted service account
// token; either alone is not one (a Pod without a token cannot reach the
// API server).
func TestInPod(t *testing.T) {
	withToken := t.TempDir()
	if err := os.WriteFile(filepath.Join(withToken, "token"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		host, dir string
		want      bool
	}{{"10.0.0.1", withToken, true}, {"", withToken, false}, {"10.0.0.1", t.TempDir(), false}} {
		env := podEnv{getenv: func(k string) string {
			if k == "KUBERNETES_SERVICE_HOST" {
				return c.host
			}
			return ""
		}, tokenDir: c.dir}
		if got := env.inPod(); got != c.want {
			t.Errorf("KUBERNETES_SERVICE_HOST=%q, token in %s: inPod = %v, want %v", c.host, c.dir, got, c.want)
		}
	}
}

// TestCoordinationWiring builds what each mode wires into the node sweep
// and, for kubernetes, uses it on a real kube-apiserver (envtest): the
// sweep's election holds Lease sbx-node-sweep as POD_NAME in
// POD_NAMESPACE, and a heartbeat goes to the node's Lease, not the nodes
// table.
func TestCoordinationWiring(t *testing.T) {
	db := sqldbtest.Open(t, sqldb.SQLite)
	data := &Data{DB: db, Store: sqlstore.New(db, nil)}
	log := slog.New(slog.DiscardHandler)
	outside := podEnv{getenv: os.Getenv, tokenDir: t.TempDir()}

	t.Run("File", func(t *testing.T) {
		old := fileElectionDir
		fileElectionDir = filepath.Join(t.TempDir(), "leader")
		t.Cleanup(func() { fileElectionDir = old })
		c, err := newCoordination(Config{Coordination: "auto", NodeName: "n1"}, data, outside, log)
		if err != nil {
			t.Fatal(err)
		}
		if f, ok := c.elector.(*leader.File); !ok || f.Dir != fileElectionDir || c.nodes != nil {
			t.Errorf("auto on SQLite outside a Pod: %+v, want the file elector in %s and the nodes table", c, fileElectionDir)
		}
	})
	t.Run("PostgresNeedsPostgres", func(t *testing.T) {
		if _, err := newCoordination(Config{Coordination: "postgres"}, data, outside, log); err == nil {
			t.Error("--coordination postgres on SQLite was accepted")
		}
	})
	t.Run("Kubernetes", func(t *testing.T) {
		t.Setenv("KUBECONFIG", kubetest.Start(t).Kubeconfig)
		t.Setenv("POD_NAMESPACE", "sbx-system")
		t.Setenv("POD_NAME", "sbx-node-x7k2p")

		c, err := newCoordination(Config{Coordination: "kubernetes", NodeName: "worker-1",
			Liveness: liveness.DefaultConfig}, data, outside, log)
		if err != nil {
			t.Fatal(err)
		}
		k, ok := c.elector.(*leader.Kubernetes)
		if !ok || k.Namespace != "sbx-system" || k.Identity != "sbx-node-x7k2p" {
			t.Fatalf("elector %+v, want Leases in sbx-system as sbx-node-x7k2p", c.elector)
		}
		client := k.Client
		if _, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sbx-system"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}

		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		led, done := make(chan string, 1), make(chan struct{})
		go func() {
			defer close(done)
			c.elector.Campaign(ctx, "node-sweep", func(ctx context.Context) {
				l, err := client.CoordinationV1().Leases("sbx-system").Get(ctx, "sbx-node-sweep", metav1.GetOptions{})
				if err != nil || l.Spec.HolderIdentity == nil {
					led <- fmt.Sprintf("unreadable: %+v, %v", l, err)
				} else {
					led <- *l.Spec.HolderIdentity
				}
				<-ctx.Done()
			})
		}()
		select {
		case holder := <-led:
			if holder != "sbx-node-x7k2p" {
				t.Errorf("Lease sbx-node-sweep held by %q, want the Pod's name", holder)
			}
		case <-ctx.Done():
			t.Fatal("the node sweep's election never led")
		}
		cancel()
		<-done

		repo := c.livenessRepo(data.Store)
		b := liveness.NewBeater(repo, "worker-1", "http://10.1.2.3:3100", liveness.DefaultConfig, log, nil)
		if err := b.Beat(t.Context()); err != nil {
			t.Fatal(err)
		}
		l, err := client.CoordinationV1().Leases("sbx-system").Get(t.Context(), liveness.LeaseName("worker-1"), metav1.GetOptions{})
		if err != nil || l.Annotations["sbx.dev/address"] != "http://10.1.2.3:3100" {
			t.Errorf("the node's Lease after a heartbeat: %+v, %v; want its address annotated", l, err)
		}
		if rows, err := data.Store.Nodes(t.Context()); err != nil || len(rows) != 0 {
			t.Errorf("the nodes table holds %+v (%v); in Kubernetes heartbeats go to Leases", rows, err)
		}
	})
}
