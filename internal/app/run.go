package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sbxdev/sbx/internal/api"
	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/liveness"
	"github.com/sbxdev/sbx/internal/monitor"
	"github.com/sbxdev/sbx/internal/network"
	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/refine"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/internal/rootfs"
	"github.com/sbxdev/sbx/internal/runtime/oci"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/telemetry"
	"github.com/sbxdev/sbx/internal/template"
	"github.com/sbxdev/sbx/internal/timerslack"
	"github.com/sbxdev/sbx/internal/volume"
	"github.com/sbxdev/sbx/internal/webhook"
)

// Run starts the server and blocks until ctx is cancelled. The phases run
// in order; each registers its closers, which run in reverse at the end.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	// Every line logged with a request's context carries its ID (and its
	// trace's, when tracing is on).
	log = slog.New(telemetry.LogHandler(log.Handler()))
	// Nothing sbx creates is group- or world-writable, whatever umask it
	// was started with. Not 0077: children inherit it (crun, runsc and the
	// processes of every sandbox, debootstrap and tar building root
	// filesystems), and sandbox-visible files must stay readable; secrets
	// are created 0600 and 0700 explicitly instead (internal/datadir).
	syscall.Umask(0o022)
	timerslack.RelaxSysmon(log)
	var closers closerList
	// A closure: `defer closers.run(log)` would evaluate the (still empty)
	// list now and run none of the closers added below.
	defer func() { closers.run(log) }()

	tracing, err := telemetry.Setup(ctx, cfg.Telemetry, log)
	if err != nil {
		return err
	}
	closers.add("tracing", func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return tracing.Shutdown(sctx)
	})

	// The data dir is this server's alone (see datadir.LockServer): taken
	// before anything in it is read, so a second server started on it by
	// mistake stops here instead of removing this one's sandboxes as
	// orphans. Released after everything that uses the dir has closed.
	dirLock, err := datadir.LockServer(cfg.DataDir, fmt.Sprintf("pid %d, --listen %s", os.Getpid(), cfg.Listen))
	if err != nil {
		return err
	}
	closers.add("data dir lock", dirLock.Release)

	if cfg.Pprof != "" {
		if err := startPprof(cfg.Pprof, &closers, log); err != nil {
			return err
		}
	}
	data, err := OpenData(ctx, cfg.DataDir, cfg.Database, log)
	if err != nil {
		return err
	}
	closers.add("database", data.Close)
	st := data.Store
	// Events appended by other servers sharing a PostgreSQL database wake
	// this one's SSE streams and webhook engine (LISTEN/NOTIFY).
	runUntilClosed(ctx, &closers, "event notifications", log, data.Events.Follow)
	if err := EnsureKeys(ctx, st, cfg.DataDir, log); err != nil {
		return err
	}
	var certs *certReloader
	if cfg.TLS.Enabled() {
		if certs, err = newCertReloader(cfg.TLS, cfg.DataDir, log); err != nil {
			return err
		}
		if routing, _ := cfg.SandboxDomain(); routing == hostCAName {
			if err := certs.withHostCA(); err != nil {
				return fmt.Errorf("sandbox host names over HTTPS: %w", err)
			}
		}
	}
	// Caught even without TLS: `systemctl reload` sends SIGHUP, whose
	// default action would otherwise stop the server.
	watchSIGHUP(ctx, certs, log)
	// Listen before the slow parts so /health answers within seconds.
	front, err := listen(cfg.Listen, certs, log)
	if err != nil {
		return err
	}
	if err := WriteServerURL(cfg.DataDir, front.url()); err != nil {
		return fmt.Errorf("record the server's address in the data dir: %w", err)
	}
	if cfg.NodeName == "" {
		cfg.NodeName = defaultNodeName(front.addr)
	}
	if cfg.Role == RoleNode {
		cfg.AdvertiseURL = advertiseURL(cfg, front)
	}
	log.Info("sbx listening", "version", cfg.Version, "url", front.url(), "data_dir", cfg.DataDir, "runtime", cfg.Runtime,
		"database", data.DB.Dialect(), "node", cfg.NodeName, "role", cfg.Role, "advertise_url", cfg.AdvertiseURL)

	var handler http.Handler
	var c *core
	if cfg.Role == RoleAPI {
		handler, err = startAPIRole(ctx, cfg, log, data, tracing, &closers)
	} else {
		if c, err = startCore(ctx, cfg, log, data, &closers); err != nil {
			return err
		}
		handler, err = startServices(ctx, cfg, log, data, c, front, tracing, &closers)
	}
	if err != nil {
		return err
	}
	front.handler.Store(&handler)
	if c != nil {
		c.serving.Store(true)
	}
	log.Info("sbx ready", "addr", front.addr)

	select {
	case <-ctx.Done():
	case err := <-front.errc:
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("shutting down; running sandboxes keep running and are reattached on the next start")
	shCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = front.srv.Shutdown(shCtx)
	return nil
}

// defaultNodeName names a server by its host and listen port: unique among
// servers sharing a database, and the same across restarts, so a restarted
// server recovers the sandboxes it ran.
func defaultNodeName(addr string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	_, port, _ := net.SplitHostPort(addr)
	return host + ":" + port
}

// frontDoor is the listener, serving `starting` until the API is wired.
type frontDoor struct {
	addr    string
	certs   *certReloader // nil: plain HTTP
	srv     *http.Server
	errc    chan error
	handler atomic.Pointer[http.Handler]
}

// url is the server's base URL as reached from this host.
func (f *frontDoor) url() string {
	scheme := "http"
	if f.certs != nil {
		scheme = "https"
	}
	return scheme + "://" + f.addr
}

// selfClient reaches the server's own API (refinements loop back through
// it): over TLS it trusts exactly the certificate being served.
func (f *frontDoor) selfClient() *http.Client {
	if f.certs == nil {
		return nil
	}
	return f.certs.selfClient()
}

func listen(addr string, certs *certReloader, log *slog.Logger) (*frontDoor, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	f := &frontDoor{addr: ln.Addr().String(), certs: certs, errc: make(chan error, 1)}
	var initial http.Handler = starting{}
	f.handler.Store(&initial)
	// No ReadTimeout or WriteTimeout: they bound whole requests and
	// responses, and the event stream, command streams and WebSockets
	// through the proxy live for hours. Slow clients are bounded instead
	// by: ReadHeaderTimeout for headers, request.BodyDeadline for bodies
	// (10 s grace, then 1 KiB/s on average and no pause over 30 s),
	// IdleTimeout for keep-alive connections between requests, and
	// MaxHeaderBytes (64 KiB: E2B's headers are small; browsers reaching
	// sandbox web apps through the proxy send cookies well under that).
	f.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		Handler: request.BodyDeadline(request.DefaultDeadlines,
			http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*f.handler.Load()).ServeHTTP(w, r) })),
	}
	if certs != nil {
		// One listener, so the API, the sandbox proxy and the dashboard
		// all speak TLS; ServeTLS adds HTTP/2 to what is offered.
		f.srv.TLSConfig = certs.tlsConfig()
		go func() { f.errc <- f.srv.ServeTLS(ln, "", "") }()
		return f, nil
	}
	go func() { f.errc <- f.srv.Serve(ln) }()
	return f, nil
}

// core is what runs sandboxes: the runtime, network, templates, manager.
type core struct {
	drv    *oci.Driver
	netw   *network.Manager
	reg    *template.Registry
	mgr    *sandbox.Manager
	tplSvc *template.Service
	beat   *liveness.Beater // nil on SQLite (one server)
	blobs  *Blobs
	// mon is the monitoring: its budgets admit the manager's creates and
	// its metrics observe them, so it is built first.
	mon *monitor.Server
	// serving is set once the API serves: a node's heartbeat offers it
	// to api replicas from then on (roles.go).
	serving atomic.Bool
}

// startCore prepares the host, reattaches running sandboxes, prepares the
// built-in templates in the background and starts the warm pools.
func startCore(ctx context.Context, cfg Config, log *slog.Logger, data *Data, closers *closerList) (*core, error) {
	st, evlog := data.Store, data.Events
	agentDir, err := installAgent(cfg)
	if err != nil {
		return nil, err
	}
	if err := oci.PrepareHost(log); err != nil {
		return nil, fmt.Errorf("prepare host for sandboxes: %w", err)
	}
	c := &core{reg: template.NewRegistry(log)}
	lay := datadir.Layout{Root: cfg.DataDir}
	if c.blobs, err = openBlobs(ctx, cfg, log, closers); err != nil {
		return nil, err
	}
	c.drv, err = oci.New(oci.Config{Runtime: cfg.Runtime, ExtraArgs: cfg.RuntimeArgs, UserNS: cfg.UserNS,
		StateDir:   lay.RuntimeState(cfg.Runtime),
		SandboxDir: lay.Sandboxes()}, log)
	if err != nil {
		if cfg.UserNS && errors.Is(err, errdefs.ErrFailedPrecondition) {
			return nil, fmt.Errorf("%w\nFix the host as said, or start sbx with --userns=false to run sandboxes "+
				"without user namespaces (root in a sandbox is then root on the host: any kernel escape lands as host root)", err)
		}
		return nil, err
	}
	if !cfg.UserNS && cfg.Runtime != "runsc" {
		log.Warn("user namespaces are off (--userns=false): root in a sandbox is root on the host")
	}
	allow, _ := cfg.SandboxAllow() // validated by Config.Validate
	if c.netw, err = network.New(network.Config{NetnsDir: lay.Netns(), AllowCIDRs: allow}, log); err != nil {
		return nil, err
	}
	// Monitoring (issue 7): usage and cost, budgets (admission), runaway
	// detection, analytics, Prometheus metrics, dashboard.
	if c.mon, err = monitor.ForServer(ctx, cfg.Monitoring, st, evlog, st, log); err != nil {
		return nil, err
	}
	snapDrv, err := snapshotRuntime(cfg, c.drv, log)
	if err != nil {
		return nil, err
	}
	opts := []sandbox.Option{
		sandbox.WithAdmission(c.mon.Budgets), sandbox.WithObserver(c.mon.Metrics),
		sandbox.WithPauseDiskAfter(cfg.PauseDiskAfter),
		sandbox.WithTeamCap(cfg.TeamMaxSandboxes, st),
		sandbox.WithSlotStore(st), // the cap counts every server's sandboxes (several may share a PostgreSQL)
		// before Recover, which sweeps sandboxes other nodes took over
		sandbox.WithBlobs(c.blobs.forSandboxes(data)),
	}
	if snapDrv != nil {
		opts = append(opts, sandbox.WithSnapshotRuntime(snapDrv))
	}
	c.mgr = sandbox.New(sandbox.Config{Data: lay, AgentDir: agentDir, NodeID: cfg.NodeName,
		SoleServer: data.DB.Dialect() != sqldb.Postgres}, log, st, c.drv, c.netw, c.reg, opts...)
	c.mon.Attach(c.mgr)
	if err := startLiveness(ctx, cfg, log, data, c, closers); err != nil {
		return nil, err
	}
	if err := c.mgr.Recover(ctx); err != nil {
		return nil, err
	}
	c.reg.PrepareBuiltins(ctx, rootfs.NewBuilder(cfg.RootfsCache, log))

	// Template builds (issue 5): Dockerfile steps run in build sandboxes;
	// built templates are re-registered from the database here.
	tplStore := template.NewStore(data.Store)
	tplExec := builder.NewExecutor(builder.Config{DataDir: cfg.DataDir,
		SandboxDir: lay.Sandboxes(), Limits: cfg.Builds.Limits}, log, c.drv, c.netw)
	c.tplSvc = template.NewService(template.ServiceConfig{DataDir: cfg.DataDir, MaxBuilds: cfg.Builds.Concurrency,
		MaxBuildsPerTeam: cfg.Builds.ConcurrencyPerTeam, NodeID: cfg.NodeName}, log, tplStore, c.reg, tplExec, evlog)
	guard, err := cfg.Registry.Guard() // validated by Config.Validate
	if err != nil {
		return nil, err
	}
	c.tplSvc.SetImages(builder.NewImages(lay.Images(),
		builder.ImagesConfig{Guard: guard, MaxBytes: int64(cfg.Registry.MaxImageMB) << 20}, log))
	c.tplSvc.SetLiveSandboxes(liveWithSnapshots{st, c.mgr})
	c.blobs.wireTemplates(c.tplSvc, data)
	if cfg.Role == RoleNode {
		wireBuildJobs(cfg, c.tplSvc, c.blobs, data.Store, cfg.NodeName)
	}
	if err := c.mgr.SetSnapshotRegistry(ctx, c.reg, data.Store); err != nil {
		return nil, err
	}
	c.tplSvc.SetSnapshots(c.mgr)
	// Copies of snapshots deleted or retaken through another server.
	runUntilClosed(ctx, closers, "snapshot copies", log, c.mgr.SweepSnapshotCopies)
	if snapDrv != nil {
		c.tplSvc.SetSnapshotter(c.mgr.TemplateSnapshots())
	}
	if err := c.tplSvc.Load(ctx); err != nil {
		return nil, err
	}
	closers.add("template builds", func() error { c.tplSvc.Close(); return nil })

	sizes, _ := cfg.PoolSizes() // validated by Config.Validate
	poolCtx, stopPools := context.WithCancel(context.WithoutCancel(ctx))
	c.mgr.StartPools(poolCtx, sizes)
	closers.add("warm pools", func() error {
		stopPools()
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c.mgr.Close(cctx)
		return nil
	})
	return c, nil
}

// snapshotRuntime returns the driver that takes template snapshots: the
// server's own when it is runsc, else a runsc driver of its own (state and
// sandbox dirs apart, so each driver lists only its sandboxes), or nil
// when snapshots are off or runsc is missing under "auto".
func snapshotRuntime(cfg Config, main *oci.Driver, log *slog.Logger) (*oci.Driver, error) {
	switch {
	case cfg.SnapshotRuntime == "none":
		return nil, nil
	case cfg.Runtime == "runsc":
		return main, nil
	}
	d, err := oci.New(oci.Config{Runtime: "runsc", ExtraArgs: cfg.SnapshotRuntimeArgs,
		StateDir:   datadir.Layout{Root: cfg.DataDir}.RuntimeState("runsc"),
		SandboxDir: datadir.Layout{Root: cfg.DataDir}.SandboxesOf("runsc")}, log)
	if err != nil {
		if cfg.SnapshotRuntime == "auto" {
			log.Warn("template snapshots are off: runsc is not usable; start commands run when sandboxes start",
				"err", err, "hint", "install runsc (scripts/install-deps.sh) or pass --snapshot-runtime none to silence this")
			return nil, nil
		}
		return nil, fmt.Errorf("--snapshot-runtime runsc: %w", err)
	}
	return d, nil
}

// startServices starts the webhook engine and monitoring and returns the
// API (with the sandbox proxy in front of it).
func startServices(ctx context.Context, cfg Config, log *slog.Logger, data *Data,
	c *core, front *frontDoor, tracing *telemetry.Tracing, closers *closerList) (http.Handler, error) {
	st, evlog := data.Store, data.Events
	engine, err := webhook.NewEngine(data.DB, evlog, cfg.Webhooks.engineConfig(cfg.NodeName), log)
	if err != nil {
		return nil, err
	}
	runUntilClosed(ctx, closers, "webhook engine", log, engine.Run)

	mon := c.mon
	c.tplSvc.SetBuildObserver(mon.Metrics)
	mon.Metrics.SetWebhookQueue(engine)
	monCtx, stopMon := context.WithCancel(context.WithoutCancel(ctx))
	monDone := mon.Start(monCtx)
	closers.add("monitoring", func() error { stopMon(); <-monDone; return nil })

	tplHandler := template.NewHandler(c.tplSvc)
	tplHandler.SetSpawns(st)
	refiner := refine.NewHandler(front.url(), data.Store, log)
	refiner.SetHTTPClient(front.selfClient())
	routing, advertised := cfg.SandboxDomain()
	if ns, err := os.ReadFile("/etc/nsswitch.conf"); routing == hostCAName && err == nil && !localhostResolves(ns) {
		log.Warn("sandbox host names (<port>-<id>.localhost, sandbox.getHost) do not resolve on this host: " +
			"install libnss-myhostname (apt-get install libnss-myhostname), or give --domain with wildcard DNS")
	}
	apiSrv := api.New(log, c.mgr, c.reg, st, proxy.New(c.mgr, routing, log),
		events.NewHandler(evlog, log), webhook.NewHandler(engine, log),
		refiner, mon, tplHandler)
	if cfg.Role == RoleNode {
		apiSrv.SetClusterVerifier(cluster.NewVerifier(cfg.clusterSecret, cfg.NodeName))
	}
	apiSrv.SetBuildCanceller(c.tplSvc)
	apiSrv.SetSnapshotCap(cfg.TeamMaxSnapshots)
	mon.AddPublic(apiSrv)
	apiSrv.SetNetworking(c.netw, sqlstore.NewNetworks(data.DB), advertised)
	secrets, err := teamSecrets(ctx, cfg, data, log)
	if err != nil {
		return nil, err
	}
	apiSrv.SetSecrets(secrets)
	volCfg := volume.Config{Dir: datadir.Layout{Root: cfg.DataDir}.Volumes()}
	if cfg.Role == RoleNode {
		volCfg.Node = cfg.NodeName // its volumes are recorded as this node's
	}
	vols, err := volume.New(volCfg, sqlstore.NewVolumes(data.DB), log)
	if err != nil {
		return nil, err
	}
	apiSrv.SetVolumes(vols, volume.NewContentHandler(vols, log))
	apiSrv.OnTeamDeleted("snapshots", func(ctx context.Context, teamID string) error {
		snaps, err := c.mgr.ListSnapshots(ctx, teamID, "", "")
		if err != nil {
			return err
		}
		for _, s := range snaps {
			if _, err := c.mgr.DeleteSnapshot(ctx, teamID, s.ID); err != nil {
				return err
			}
		}
		return nil
	})
	apiSrv.OnTeamDeleted("secrets", secrets.DeleteTeam)
	apiSrv.OnTeamDeleted("volumes", vols.DeleteTeam)
	apiSrv.OnTeamDeleted("webhooks", func(ctx context.Context, teamID string) error {
		hooks, err := engine.List(ctx, teamID)
		if err != nil {
			return err
		}
		for _, h := range hooks {
			if err := engine.Delete(ctx, teamID, h.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				return err
			}
		}
		return nil
	})
	if err := writeSecret(datadir.Layout{Root: cfg.DataDir}.SandboxDomain(), advertised); err != nil {
		log.Warn("record the sandbox domain for sbx env", "err", err)
	}
	// Keys revoked through another server sharing the database stop
	// working here at once, not only when their cache entry expires.
	runUntilClosed(ctx, closers, "key revocations", log, func(ctx context.Context) error {
		return data.DB.Listen(ctx, store.KeysChannel, apiSrv.KeysRevoked)
	})
	apiSrv.AddPublic(template.UploadPattern, http.HandlerFunc(tplHandler.Upload))
	// The access log, request IDs, HTTP metrics and server spans.
	mw := &telemetry.Middleware{Log: log.With("component", "http"), Tracing: tracing, Observer: mon.Metrics,
		Quiet: map[string]bool{"GET /health": true, "GET /metrics": true}}
	return mw.Wrap(apiSrv), nil
}

// runUntilClosed runs fn in the background until the closers run.
func runUntilClosed(ctx context.Context, closers *closerList, name string, log *slog.Logger, fn func(context.Context) error) {
	done := make(chan struct{})
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(done)
		if err := fn(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error(name+" stopped", "err", err)
		}
	}()
	closers.add(name, func() error { stop(); <-done; return nil })
}

// liveWithSnapshots is what template pruning must keep: the builds of
// live sandboxes and those under sandbox snapshots' layers.
type liveWithSnapshots struct {
	store.Store
	mgr *sandbox.Manager
}

func (l liveWithSnapshots) LiveSandboxes(ctx context.Context) ([]store.Sandbox, error) {
	sbs, err := l.Store.LiveSandboxes(ctx)
	if err != nil {
		return nil, err
	}
	builds, err := l.mgr.SnapshotBuilds(ctx)
	if err != nil {
		return nil, err
	}
	for _, b := range builds {
		sbs = append(sbs, store.Sandbox{BuildID: b})
	}
	return sbs, nil
}

// startLiveness registers this server as a node of a shared PostgreSQL
// database (before recovery, so no other node's sweep takes its sandboxes
// for lost while it reattaches them), heartbeats, and campaigns to run the
// sweep that records the sandboxes of silent nodes killed (node_lost). On
// SQLite the server is alone: nobody sweeps it.
func startLiveness(ctx context.Context, cfg Config, log *slog.Logger, data *Data, c *core, closers *closerList) error {
	if data.DB.Dialect() != sqldb.Postgres {
		startBlobGC(ctx, cfg, c.blobs, data.Store, nil, log, closers) // alone on its database
		return nil
	}
	coord, err := newCoordination(cfg, data, hostPodEnv(), log)
	if err != nil {
		return err
	}
	repo := coord.livenessRepo(data.Store) // Leases in Kubernetes, else the nodes table
	log.Info("coordination", "mode", coord.mode)
	c.beat = liveness.NewBeater(repo, cfg.NodeName, cfg.Listen, cfg.Liveness, log, func(ctx context.Context) {
		c.mgr.SetDraining(true) // refuse new sandboxes: the others count this node as gone
		for _, sb := range c.mgr.Live() {
			_ = c.mgr.KillWithReason(ctx, sb.ID, liveness.ReasonNodeLost)
		}
	})
	c.beat.SetLoad(nodeLoad(cfg.AdvertiseURL, cfg.CPUOvercommit, c.mgr, c.reg, &c.serving))
	c.beat.SetDraining(c.mgr.Draining) // api replicas stop placing on a draining node
	// A drain outlives a restart, as a cordon does: the admin undoes it.
	if was, err := c.beat.WasDraining(ctx); err != nil {
		return err
	} else if was {
		c.mgr.SetDraining(true)
		log.Info(`this node was draining before it started and stays draining; POST /nodes/{id} {"status": "ready"} (admin key) makes it take sandboxes again`,
			"node", cfg.NodeName)
	}
	if err := c.beat.Beat(ctx); err != nil {
		return fmt.Errorf("register node %s in the database: %w", cfg.NodeName, err)
	}
	runUntilClosed(ctx, closers, "node heartbeat", log, c.beat.Run)
	sweeper := liveness.NewSweeper(repo, cfg.Liveness, log)
	runUntilClosed(ctx, closers, "node sweep", log, func(ctx context.Context) error {
		return coord.elector.Campaign(ctx, "node-sweep", sweeper.Run)
	})
	startBlobGC(ctx, cfg, c.blobs, data.Store, coord.elector, log, closers)
	return nil
}
