package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/sbxdev/sbx/internal/api"
	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/dashboard"
	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/liveness"
	"github.com/sbxdev/sbx/internal/metrics"
	"github.com/sbxdev/sbx/internal/placement"
	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/secret"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/telemetry"
	"github.com/sbxdev/sbx/internal/template"
	"github.com/sbxdev/sbx/internal/webhook"
)

// Roles of `sbx serve --role` (docs/cluster.md, "Roles and routing").
const (
	// RoleAll is one box: API, proxy and runtime in one process.
	RoleAll = "all"
	// RoleAPI is a stateless api replica: auth, placement, events,
	// webhooks; sandbox calls and traffic go to the nodes.
	RoleAPI = "api"
	// RoleNode runs sandboxes for api replicas, never for tenants.
	RoleNode = "node"
)

// validateRole checks the cluster flags and loads the cluster secret.
func (c *Config) validateRole() error {
	switch c.Role {
	case "":
		c.Role = RoleAll
	case RoleAll, RoleAPI, RoleNode:
	default:
		return fmt.Errorf("--role %q: use all (one box), api (api replica of a cluster) or node (runs sandboxes for api replicas)", c.Role)
	}
	if c.CPUOvercommit == 0 {
		c.CPUOvercommit = DefaultCPUOvercommit
	}
	if c.CPUOvercommit < 1 || c.CPUOvercommit > 10_000 {
		return fmt.Errorf("--cpu-overcommit %g: want 1 (a sandbox's CPUs are reserved) to 10000", c.CPUOvercommit)
	}
	if c.Role == RoleAll {
		if c.AdvertiseURL != "" {
			return fmt.Errorf("--advertise-url is for --role node (where api replicas reach the node)")
		}
		return nil
	}
	if c.Database == "" {
		return fmt.Errorf("--role %s needs the cluster's shared PostgreSQL database: give --database postgres://...", c.Role)
	}
	if c.AdvertiseURL != "" {
		if c.Role != RoleNode {
			return fmt.Errorf("--advertise-url is for --role node (where api replicas reach the node)")
		}
		u, err := url.Parse(c.AdvertiseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("--advertise-url %q: want the node's base URL as api replicas reach it, e.g. http://10.0.0.5:3000", c.AdvertiseURL)
		}
		c.AdvertiseURL = strings.TrimSuffix(c.AdvertiseURL, "/")
	}
	s, err := cluster.LoadSecret(c.ClusterSecretFile)
	if err != nil {
		return err
	}
	c.clusterSecret = s
	return nil
}

// advertiseURL is where api replicas reach this node: --advertise-url, or
// the URL it listens on (a wildcard host replaced by the host name).
func advertiseURL(cfg Config, front *frontDoor) string {
	if cfg.AdvertiseURL != "" {
		return cfg.AdvertiseURL
	}
	u, _ := url.Parse(front.url())
	host, port, _ := net.SplitHostPort(u.Host)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil && h != "" {
			u.Host = net.JoinHostPort(h, port)
		}
	}
	return u.String()
}

// DefaultCPUOvercommit is how many millicores of sandbox CPU limits a
// node takes per millicore it has (--cpu-overcommit). A sandbox's CPU
// count is a ceiling (a cgroup quota), not a reservation: idle sandboxes,
// the common case, use next to nothing, and one box holds hundreds.
const DefaultCPUOvercommit = 32

// nodeLoad reports this node's address and how full it is in each
// heartbeat. CPU: the sum of its live sandboxes' CPU limits against its
// cores times the overcommit. Memory: what the host uses (MemTotal -
// MemAvailable) against MemTotal: limits are ceilings too, and the memory
// sandboxes really take is what runs a host out. Builds: the team
// templates' builds whose layers it holds and the sandbox snapshots it
// holds copies of; Pooled: the templates it has ready pooled sandboxes of
// (placement prefers it for those, pools first).
//
// Until ready is set (the API serves), the heartbeat carries no load: the
// node is registered (nobody sweeps it while it reattaches its sandboxes)
// but api replicas do not place on it yet.
func nodeLoad(advertise string, overcommit float64, mgr *sandbox.Manager, reg *template.Registry, ready *atomic.Bool) func() store.NodeLoad {
	cpu := int64(float64(goruntime.NumCPU()) * 1000 * overcommit)
	return func() store.NodeLoad {
		if !ready.Load() {
			return store.NodeLoad{}
		}
		total, avail := hostMemoryMiB()
		snaps := mgr.HeldSnapshots(store.MaxNodeBuilds / 4)
		held := reg.HeldBuilds(store.MaxNodeBuilds - len(snaps))
		for _, id := range snaps {
			held = strings.TrimSpace(held + " " + store.NodeSnapshotPrefix + id)
		}
		l := store.NodeLoad{AdvertiseURL: advertise, CPUMillis: cpu, MemoryMiB: total, ReservedMemoryMiB: max(total-avail, 0),
			Builds: held, Pooled: store.FormatPooled(mgr.PooledReady())}
		for _, sb := range mgr.Live() {
			l.Sandboxes++
			if sb.State == store.StateRunning {
				l.ReservedCPUMillis += int64(sb.CPUCount) * 1000
			}
		}
		return l
	}
}

// hostMemoryMiB is MemTotal and MemAvailable of /proc/meminfo in MiB
// (zeros if unreadable).
func hostMemoryMiB() (total, avail int64) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		switch k {
		case "MemTotal":
			total = kb / 1024
		case "MemAvailable":
			avail = kb / 1024
		}
	}
	return total, avail
}

// startAPIRole wires an api replica: no runtime, manager, pools or
// network; accounts, events, webhooks and the templates list as on one
// box; sandbox calls placed on and forwarded to nodes; sandbox traffic
// forwarded to the owning node's proxy.
func startAPIRole(ctx context.Context, cfg Config, log *slog.Logger, data *Data, tracing *telemetry.Tracing,
	closers *closerList) (http.Handler, error) {
	st, evlog := data.Store, data.Events
	engine, err := webhook.NewEngine(data.DB, evlog, cfg.Webhooks.engineConfig(cfg.NodeName), log)
	if err != nil {
		return nil, err
	}
	runUntilClosed(ctx, closers, "webhook engine", log, engine.Run)

	// The built-in templates, for listing and sizing placements: the
	// nodes prepare and hold their root filesystems.
	reg := template.NewRegistry(log)
	for _, bi := range template.Builtins() {
		reg.Add(bi.Template)("", nil)
	}
	// Nodes, their addresses and load come from where they heartbeat:
	// the nodes table, or their Leases in Kubernetes (--coordination).
	coord, err := newCoordination(cfg, data, hostPodEnv(), log)
	if err != nil {
		return nil, err
	}
	log.Info("coordination", "mode", coord.mode)
	repo := coord.livenessRepo(st)
	nodes := cluster.NewNodes(repo, 3*cfg.Liveness.Interval+cfg.Liveness.Interval/2, log)
	if err := nodes.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("read the cluster's nodes: %w", err)
	}
	runUntilClosed(ctx, closers, "node view", log, nodes.Run)
	signer := cluster.NewSigner(cfg.clusterSecret)
	sbs := cluster.NewSandboxes(st, nodes, placement.New(nodes, placement.Config{}), cluster.NewClient(signer), reg, log)
	// Its own Prometheus series: HTTP, placement, forward errors, and the
	// cluster's nodes, sandboxes and queued builds (docs/observability.md).
	mets := metrics.New(nil, st, log)
	mets.SetWebhookQueue(engine)
	clusterMets := cluster.NewMetrics(nodes, st, log)
	mets.MustRegister(clusterMets.Collectors()...)
	sbs.SetMetrics(clusterMets)
	routing, advertised := cfg.SandboxDomain()
	// Template builds: queued here as jobs a node claims; uploads to the
	// blob store; status, logs and management from the database.
	blobs, err := openBlobs(ctx, cfg, log, closers)
	if err != nil {
		return nil, err
	}
	tplSvc := template.NewService(template.ServiceConfig{DataDir: cfg.DataDir, NodeID: cfg.NodeName}, log,
		template.NewStore(st), reg, nil, evlog)
	wireBuildJobs(cfg, tplSvc, blobs, st, "")
	sbs.SetBuilds(tplSvc)
	// Sandbox snapshots: listed, deleted and placed from the shared
	// table; nodes take them (POST /sandboxes/{id}/snapshots is forwarded).
	snaps := sandbox.SnapshotTable{Store: st}
	sbs.SetSnapshots(snaps)
	tplSvc.SetSnapshots(snaps)
	tplHandler := template.NewHandler(tplSvc)
	tplHandler.SetSpawns(st)
	// Team templates are built and registered on the nodes: list them
	// from the database.
	router := cluster.NewRouter(st, nodes, signer, log)
	router.SetMetrics(clusterMets)
	costs, err := apiReplicaCosts(ctx, cfg, st, evlog, log)
	if err != nil {
		return nil, err
	}
	apiSrv := api.New(log, sbs, tplSvc.Catalog(), st, proxy.New(router, routing, log),
		append([]api.Registrar{events.NewHandler(evlog, log), webhook.NewHandler(engine, log), tplHandler,
			metrics.Endpoint{M: mets, Public: cfg.Monitoring.MetricsPublic}}, costs...)...)
	apiSrv.AddPublic(template.UploadPattern, http.HandlerFunc(tplHandler.Upload))
	apiSrv.SetBuildCanceller(tplSvc)
	apiSrv.SetSnapshotList(snaps)
	apiSrv.OnTeamDeleted("snapshots", snaps.DeleteTeam)
	// Traffic tokens and the sandbox domain; egress policies travel with
	// the create to the node, which applies them.
	apiSrv.SetNetworkingOnNodes(sqlstore.NewNetworks(data.DB), advertised)
	// Team secrets: stored here (every process of the cluster shares the
	// data dir's secrets.key, as the chart mounts it), resolved by the
	// node that runs the sandbox.
	secrets, err := teamSecrets(ctx, cfg, data, log)
	if err != nil {
		return nil, err
	}
	apiSrv.SetSecrets(secrets)
	apiSrv.OnTeamDeleted("secrets", secrets.DeleteTeam)
	// Volumes live on the node that made them: created on a placed node,
	// their content and the sandboxes mounting them sent there.
	vols := cluster.NewVolumes(sqlstore.NewVolumes(data.DB), sbs, signer, log)
	apiSrv.SetVolumes(vols, vols)
	apiSrv.OnTeamDeleted("volumes", vols.DeleteTeam)
	fwd := cluster.NewForwarder(sbs, signer, log)
	fwd.SetMetrics(clusterMets)
	apiSrv.SetSandboxForwarder(fwd)
	// The admin's /nodes: every node of the registry, drains sent to the
	// node signed.
	admin := cluster.NewClient(signer)
	admin.SetMetrics(clusterMets)
	apiSrv.SetClusterNodes(cluster.NewAdmin(nodes, st, admin, log))
	// The dashboard: sandboxes from the database across nodes, live from
	// the events table, and the nodes for the admin key.
	dashboard.Register(apiSrv, apiSrv, log)
	runUntilClosed(ctx, closers, "key revocations", log, func(ctx context.Context) error {
		return data.DB.Listen(ctx, store.KeysChannel, apiSrv.KeysRevoked)
	})
	// The sweep of silent nodes: api replicas campaign for it with the
	// nodes (one leads), so it runs while any process of the cluster does.
	sweeper := liveness.NewSweeper(repo, cfg.Liveness, log)
	runUntilClosed(ctx, closers, "node sweep", log, func(ctx context.Context) error {
		return coord.elector.Campaign(ctx, "node-sweep", sweeper.Run)
	})
	startBlobGC(ctx, cfg, blobs, st, coord.elector, log, closers)
	mw := &telemetry.Middleware{Log: log.With("component", "http"), Tracing: tracing, Observer: mets,
		Quiet: map[string]bool{"GET /health": true, "GET /metrics": true}}
	return mw.Wrap(apiSrv), nil
}

// wireBuildJobs makes template builds cluster jobs (api replicas queue
// them, nodes claim them: node is the claimer's name, "" on an api
// replica) and keeps build uploads in the shared blob store.
func wireBuildJobs(cfg Config, svc *template.Service, b *Blobs, st *sqlstore.Store, node string) {
	svc.SetJobs(&template.Jobs{Queue: st, Node: node})
	svc.SetSharedUploads(&template.SharedUploads{Store: b.Store, Puller: b.puller, Repo: st,
		URLKey: cfg.clusterSecret.Derive("template upload URLs"), MaxTeamBytes: cfg.Builds.TeamMaxUploadMB << 20})
}

// teamSecrets opens the team secrets, sealed with the data dir's
// secrets.key, which every api replica and node of a cluster must share
// (the chart mounts one). A key that does not open the stored secrets is
// logged, not fatal: everything but resolving secrets works.
func teamSecrets(ctx context.Context, cfg Config, data *Data, log *slog.Logger) (*secret.Service, error) {
	repo := sqlstore.NewSecrets(data.DB)
	secrets, err := secret.New(repo, datadir.Layout{Root: cfg.DataDir}.SecretsKey())
	if err != nil {
		return nil, err
	}
	if err := secrets.CheckKey(ctx, repo); err != nil {
		log.Error("team secrets cannot be read by this process", "err", err)
	}
	return secrets, nil
}
