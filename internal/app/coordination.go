package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sbxdev/sbx/internal/leader"
	"github.com/sbxdev/sbx/internal/liveness"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// --coordination: how the servers sharing a database elect the leader of
// singleton loops (the node-lost sweep) and where nodes heartbeat.
const (
	CoordinationAuto       = "auto"       // kubernetes in a Pod, else postgres on PostgreSQL, else file
	CoordinationKubernetes = "kubernetes" // coordination.k8s.io Leases (elections and node heartbeats)
	CoordinationPostgres   = "postgres"   // advisory locks; heartbeats in the nodes table
	CoordinationFile       = "file"       // flock on this machine; heartbeats in the nodes table

	DefaultCoordination = CoordinationAuto
)

// Where a Pod's service account token and namespace are mounted.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// fileElectionDir holds the file elector's locks: machine-wide, so several
// servers on one machine (each with its own data dir) elect among
// themselves.
var fileElectionDir = "/run/sbx/leader"

// validateCoordination checks --coordination (called by Config.Validate).
func (c *Config) validateCoordination() error {
	switch c.Coordination {
	case "":
		c.Coordination = DefaultCoordination
	case CoordinationAuto, CoordinationKubernetes, CoordinationFile:
	case CoordinationPostgres:
		if c.Database == "" {
			return fmt.Errorf("--coordination postgres needs a PostgreSQL --database; leave --coordination at auto for one server on SQLite")
		}
	default:
		return fmt.Errorf("--coordination %q: want auto, kubernetes, postgres or file", c.Coordination)
	}
	return nil
}

// podEnv is what tells a process it runs in a Kubernetes Pod.
type podEnv struct {
	getenv   func(string) string
	tokenDir string // the service account mount
}

func hostPodEnv() podEnv { return podEnv{getenv: os.Getenv, tokenDir: serviceAccountDir} }

// inPod reports whether this process runs in a Pod that can reach the API
// server: the service's address in the environment and a service account
// token mounted (a Pod with automountServiceAccountToken off cannot).
func (p podEnv) inPod() bool {
	if p.getenv("KUBERNETES_SERVICE_HOST") == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(p.tokenDir, "token"))
	return err == nil
}

// resolveCoordination turns auto into what this process uses.
func resolveCoordination(mode string, dialect sqldb.Dialect, inPod bool) string {
	if mode != CoordinationAuto && mode != "" {
		return mode
	}
	switch {
	case inPod:
		return CoordinationKubernetes
	case dialect == sqldb.Postgres:
		return CoordinationPostgres
	default:
		return CoordinationFile
	}
}

// elector campaigns for singleton loops (package leader).
type elector interface {
	Campaign(ctx context.Context, name string, lead leader.Lead) error
}

// coordination is what --coordination chose: the elector, and the node
// registry when it is not the database's nodes table.
type coordination struct {
	mode    string
	elector elector
	nodes   store.Nodes // nil: the database
}

// livenessRepo is where heartbeats and sandbox rows go.
func (c coordination) livenessRepo(db liveness.Repo) liveness.Repo {
	if c.nodes == nil {
		return db
	}
	return liveness.WithNodes(db, c.nodes)
}

// newCoordination builds the elector and node registry cfg.Coordination
// names, for a server on data's database.
func newCoordination(cfg Config, data *Data, env podEnv, log *slog.Logger) (coordination, error) {
	mode := resolveCoordination(cfg.Coordination, data.DB.Dialect(), env.inPod())
	c := coordination{mode: mode}
	switch mode {
	case CoordinationKubernetes:
		client, ns, err := kubeClient(env)
		if err != nil {
			return c, fmt.Errorf("--coordination kubernetes: %w", err)
		}
		id := env.getenv("POD_NAME")
		if id == "" {
			id = cfg.NodeName
		}
		c.elector = &leader.Kubernetes{Client: client, Namespace: ns, Identity: id, Log: log}
		c.nodes = &liveness.Leases{Client: client, Namespace: ns, Grace: cfg.Liveness.Grace}
	case CoordinationPostgres:
		if data.DB.Dialect() != sqldb.Postgres {
			return c, fmt.Errorf("--coordination postgres needs a PostgreSQL --database")
		}
		c.elector = &leader.Postgres{DB: data.DB, Log: log}
	case CoordinationFile:
		if err := os.MkdirAll(fileElectionDir, 0o700); err != nil {
			return c, fmt.Errorf("--coordination file: %w", err)
		}
		c.elector = &leader.File{Dir: fileElectionDir, Log: log}
	default:
		return c, fmt.Errorf("--coordination %q: want auto, kubernetes, postgres or file", mode)
	}
	return c, nil
}

// kubeClient returns a client of the API server and the namespace of this
// process's Leases: in a Pod, its service account and its namespace
// (POD_NAMESPACE from the downward API, else the mounted namespace file);
// outside one, $KUBECONFIG or ~/.kube/config and its context's namespace
// (POD_NAMESPACE still wins).
func kubeClient(env podEnv) (kubernetes.Interface, string, error) {
	var (
		cfg *rest.Config
		ns  string
		err error
	)
	if env.inPod() {
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, "", err
		}
		if b, err := os.ReadFile(filepath.Join(env.tokenDir, "namespace")); err == nil {
			ns = strings.TrimSpace(string(b))
		}
	} else {
		kc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil)
		if cfg, err = kc.ClientConfig(); err != nil {
			return nil, "", fmt.Errorf("not in a Pod, and no kubeconfig ($KUBECONFIG or ~/.kube/config): %w", err)
		}
		ns, _, _ = kc.Namespace()
	}
	if v := env.getenv("POD_NAMESPACE"); v != "" {
		ns = v
	}
	if ns == "" {
		return nil, "", fmt.Errorf("no namespace for the Leases: set POD_NAMESPACE (the Helm chart does, from the downward API)")
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", err
	}
	return client, ns, nil
}
