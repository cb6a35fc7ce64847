package cli

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/app"
	"github.com/sbxdev/sbx/internal/blob/blobgc"
	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/liveness"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/webhook"
)

func newServeCmd() *cobra.Command {
	cfg := app.Config{}
	var logLevel string
	var logJSON bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the sbx server: REST API, sandbox proxy and sandbox runtime",
		Long: `Run the sbx server in the foreground.

On first start it creates the data dir, a team called "default" and its API key
(printed by 'sbx env'), the admin key (printed by 'sbx env --admin': teams, keys,
budgets, cluster-wide metrics), and prepares the built-in templates (base, code-interpreter)
from Debian packages in the background; progress is in this log. GET /health answers
at once; creating a sandbox from a template still being prepared waits for it.

Running sandboxes survive a restart of the server: they are reattached on start.

Roles (--role; docs/cluster.md, "Roles and routing"):
  all   one box: the API, the sandbox proxy and the runtime in one process (default)
  api   an api replica of a cluster: API keys, placement, events, webhooks; it
        forwards sandbox calls and sandbox traffic to the node that runs the sandbox
  node  runs sandboxes for the api replicas only: it refuses API keys and serves
        requests signed with the cluster secret (GET /health stays open)
api and node need the cluster's PostgreSQL (--database) and the same cluster secret
(--cluster-secret-file, or SBX_CLUSTER_SECRET).`,
		Example: `  sudo sbx serve
  sudo sbx serve --listen 127.0.0.1:3000 --data-dir /var/lib/sbx --runtime crun
  sudo sbx serve --listen 0.0.0.0:3443 --tls-cert /etc/sbx/tls.crt --tls-key /etc/sbx/tls.key
  # two servers sharing one PostgreSQL database, each with its own data dir:
  sudo sbx serve --database postgres://sbx:secret@db.internal/sbx --node-name host-a
  # ... sharing templates and paused sandboxes through an S3 bucket too:
  sudo AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... sbx serve --database postgres://... \
    --blob-store 's3://sbx-blobs?endpoint=http://s3.internal:8333&region=us-east-1'
  eval "$(sbx env)"   # in another shell: point SDKs and the CLI at the server
  # a cluster: api replicas in front, nodes behind, one database and secret
  openssl rand -hex 32 > /etc/sbx/cluster-secret
  sudo sbx serve --role node --database postgres://... --cluster-secret-file /etc/sbx/cluster-secret \
    --node-name node-a --listen 0.0.0.0:3100 --advertise-url http://10.0.0.5:3100
  sbx serve --role api --database postgres://... --cluster-secret-file /etc/sbx/cluster-secret --listen 0.0.0.0:3000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel, logJSON)
			if err != nil {
				return err
			}
			if os.Geteuid() != 0 && cfg.Role != app.RoleAPI { // an api replica runs no sandboxes
				return fmt.Errorf("sbx serve needs root (namespaces, cgroups, overlay mounts); run it with sudo")
			}
			cfg.Version = Version
			if !cmd.Flags().Changed("database") {
				// The DSN holds a password: from the environment (a Kubernetes
				// Secret, a systemd credential) it stays out of argv and ps.
				cfg.Database = os.Getenv("SBX_DATABASE")
			}
			return app.Run(cmd.Context(), cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", app.DefaultListen, "address of the API, sandbox proxy and dashboard")
	f.StringVar(&cfg.DataDir, "data-dir", app.DefaultDataDir, "directory for the database, API key and sandboxes")
	f.StringVar(&cfg.TLS.CertFile, "tls-cert", "", "serve the API, sandbox proxy and dashboard over HTTPS with this PEM certificate chain (reloaded on SIGHUP and when the file changes)")
	f.StringVar(&cfg.TLS.KeyFile, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&cfg.TLS.CAFile, "tls-ca", "", "PEM CA certificate clients should trust when --tls-cert comes from a private CA (printed by 'sbx env'; default: --tls-cert's last certificate when it is self-signed)")
	f.StringVar(&cfg.Database, "database", "", "postgres://user:pass@host/db of a database several sbx servers share (default: $SBX_DATABASE, else SQLite in the data dir)")
	cfg.Liveness = liveness.DefaultConfig
	f.DurationVar(&cfg.Liveness.Grace, "node-grace", liveness.DefaultConfig.Grace, "with a PostgreSQL --database: how long a server may go without a heartbeat before the others declare it lost and record its running sandboxes killed (node_lost)")
	f.StringVar(&cfg.Coordination, "coordination", app.DefaultCoordination, "with a PostgreSQL --database: how servers elect the one that sweeps lost nodes, and where nodes heartbeat: kubernetes (Leases in POD_NAMESPACE; in a Pod, its service account, else $KUBECONFIG), postgres (advisory locks, the nodes table), file (a lock on this machine), or auto (kubernetes in a Pod, else postgres)")
	f.StringVar(&cfg.Blob.URL, "blob-store", "", "where template layers and paused sandboxes are published, so servers sharing --database start and resume each other's: file:///DIR or s3://BUCKET?endpoint=http://HOST:PORT&region=R&prefix=P (default file://<data-dir>/blobs)")
	f.StringVar(&cfg.Blob.S3AccessKey, "blob-s3-access-key", "", "access key of an s3:// --blob-store (default: $AWS_ACCESS_KEY_ID or $MINIO_ACCESS_KEY)")
	f.StringVar(&cfg.Blob.S3SecretKeyFile, "blob-s3-secret-key-file", "", "file holding the secret key of --blob-s3-access-key (default: $AWS_SECRET_ACCESS_KEY or $MINIO_SECRET_KEY)")
	f.DurationVar(&cfg.Blob.GCGrace, "blob-gc-grace", blobgc.DefaultGrace, "keep a blob nothing references this long after it was stored or last reused before garbage collection deletes it (at least 10m; negative turns collection off, for a --blob-store shared with another database's cluster)")
	f.IntVar(&cfg.Blob.CacheMB, "blob-cache-size", app.DefaultBlobCacheMB, "MiB of blobs pulled from --blob-store kept in the data dir's cache")
	f.StringVar(&cfg.Role, "role", app.RoleAll, "all (one box), api (api replica of a cluster: places and forwards to nodes) or node (runs sandboxes for api replicas only); api and node need a PostgreSQL --database and the cluster secret")
	f.StringVar(&cfg.ClusterSecretFile, "cluster-secret-file", "", "with --role api or node: file holding the secret (at least 32 bytes, the same on every api replica and node) that signs requests from api replicas to nodes (default: $SBX_CLUSTER_SECRET)")
	f.StringVar(&cfg.AdvertiseURL, "advertise-url", "", "with --role node: the base URL api replicas reach this node at, recorded in its heartbeat (default: its --listen URL)")
	f.Float64Var(&cfg.CPUOvercommit, "cpu-overcommit", app.DefaultCPUOvercommit, "with --role node: sandbox CPU limits placed on this node per host CPU (a sandbox's CPUs are a ceiling, and idle sandboxes use next to none); 1 reserves them")
	f.StringVar(&cfg.NodeName, "node-name", "", "this server's name among servers sharing a database; its sandboxes are its own (default: hostname:port)")
	f.StringVar(&cfg.Runtime, "runtime", app.DefaultRuntime, "OCI runtime: crun, runc or runsc")
	f.BoolVar(&cfg.UserNS, "userns", app.DefaultUserNS, "run crun and runc sandboxes in user namespaces of their own: root inside is an unprivileged host user (false: root in a sandbox is host root)")
	f.StringArrayVar(&cfg.RuntimeArgs, "runtime-arg", nil, "extra global flag for the OCI runtime, repeatable (e.g. --runtime-arg=--platform=ptrace with runsc)")
	f.StringVar(&cfg.Domain, "domain", "", "enable host routing <port>-<sandboxID>.<domain>")
	f.StringVar(&cfg.AgentDir, "agent-dir", "", "directory holding envd and codeinterp (default: next to the sbx binary, else ../lib/sbx from it)")
	f.StringVar(&cfg.RootfsCache, "rootfs-cache", "", "root filesystem cache shared by data dirs (default /var/cache/sbx/rootfs or $SBX_ROOTFS_CACHE)")
	f.BoolVar(&cfg.Webhooks.AllowPrivate, "webhook-allow-private", false, "allow webhook deliveries to private and loopback addresses (local development)")
	f.StringSliceVar(&cfg.Webhooks.AllowCIDRs, "webhook-allow-cidr", nil, "allow webhook deliveries to these private CIDRs")
	f.IntVar(&cfg.Webhooks.Workers, "webhook-workers", webhook.DefaultWorkers, "webhook deliveries in flight at once over all webhooks")
	f.IntVar(&cfg.Webhooks.Concurrency, "webhook-concurrency", webhook.DefaultPerWebhook, "webhook deliveries in flight at once to one webhook (1: one at a time, in event order while the endpoint is healthy)")
	lim := builder.DefaultLimits
	f.IntVar(&cfg.Builds.Limits.MemoryMB, "build-memory", lim.MemoryMB, "memory of one template build step in MiB, the files it writes included")
	f.Float64Var(&cfg.Builds.Limits.CPUs, "build-cpus", lim.CPUs, "CPUs of one template build step")
	f.IntVar(&cfg.Builds.Limits.PidsMax, "build-pids", lim.PidsMax, "processes of one template build step")
	f.IntVar(&cfg.Builds.Limits.DiskMB, "build-disk", lim.DiskMB, "writable layer of one template build step in MiB")
	f.DurationVar(&cfg.Builds.Limits.StepTimeout, "build-step-timeout", lim.StepTimeout, "time one template build step (RUN, COPY, ADD) may take")
	f.IntVar(&cfg.Builds.Concurrency, "build-concurrency", app.DefaultBuildConcurrency, "template builds running at once; more wait, and say so in their log")
	f.IntVar(&cfg.Builds.ConcurrencyPerTeam, "build-concurrency-per-team", app.DefaultBuildConcurrencyPerTeam, "template builds of one team running at once")
	f.Int64Var(&cfg.Builds.TeamMaxUploadMB, "team-max-upload-mb", app.DefaultTeamMaxUploadMB, "build-context uploads one team may hold in the shared blob store (cluster roles; kept 48 h), in MiB unpacked; 0 = no cap")
	f.BoolVar(&cfg.Registry.AllowPrivate, "registry-allow-private", false, "allow template images (fromImage) from registries on private, loopback and link-local addresses (a local registry)")
	f.StringSliceVar(&cfg.Registry.AllowCIDRs, "registry-allow-cidr", nil, "allow template images from registries in these private CIDRs (the registry, its token service and its blob storage)")
	f.IntVar(&cfg.Registry.MaxImageMB, "registry-max-image", builder.DefaultImageMaxMB, "largest template image (fromImage) in MiB, downloaded and unpacked")
	f.StringArrayVar(&cfg.SandboxAllowCIDRs, "sandbox-allow-cidr", nil, "let sandboxes reach this IPv4 range or address, repeatable; by default their traffic stops at private, reserved and link-local ranges and at this host's own addresses (DNS to the host's resolvers stays open)")
	f.DurationVar(&cfg.PauseDiskAfter, "pause-disk-after", 0, "checkpoint a sandbox paused this long to disk, freeing its memory (runsc only; 0 = never; >0 also at shutdown)")
	f.StringVar(&cfg.SnapshotRuntime, "snapshot-runtime", app.DefaultSnapshotRuntime, "runtime that snapshots templates with a start command so sandboxes start with it running: auto (runsc when installed), runsc, or none (run start commands at sandbox start)")
	f.StringArrayVar(&cfg.SnapshotRuntimeArgs, "snapshot-runtime-arg", nil, "extra global flag for the snapshot runtime when it is not --runtime, repeatable (e.g. --snapshot-runtime-arg=--platform=ptrace)")
	f.StringToStringVar(&cfg.Pools, "pool", nil, "warm pool per template as TEMPLATE=MIN[:MAX], sized by recent demand between MIN and MAX; TEMPLATE * applies to every template no --pool names (from its first sandbox on), and a * given here replaces all the defaults (--pool '*=0:0' turns every pool off); MAX 0 disables; otherwise overrides the defaults per template: "+app.DefaultPoolsText())
	f.IntVar(&cfg.TeamMaxSandboxes, "team-max-sandboxes", sandbox.DefaultTeamMaxSandboxes, "cap on each team's running and paused sandboxes (creates over it answer 429; 0 = no cap); the admin sets a team's own with sbx team update TEAM --max-sandboxes N")
	f.IntVar(&cfg.TeamMaxSnapshots, "team-max-snapshots", app.DefaultTeamMaxSnapshots, "cap on each team's sandbox snapshots, which hold copies of sandbox disks (creating one over it answers 429; 0 = no cap)")
	cfg.Monitoring.AddFlags(f) // --runaway, --price-*, --metrics-public, ... (internal/monitor)
	f.StringVar(&cfg.Telemetry.OTLPEndpoint, "otlp-endpoint", "", "export traces of API calls, sandbox creates and proxied requests to this OTLP/HTTP collector, e.g. http://127.0.0.1:4318 (default: the standard OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variables; none set = no tracing)")
	f.StringVar(&cfg.Pprof, "pprof", "", "serve Go's CPU, heap and goroutine profiles (net/http/pprof) on this loopback address, e.g. 127.0.0.1:6060 (default: off)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.BoolVar(&logJSON, "log-json", false, "log as JSON lines")
	return cmd
}

func newLogger(level string, asJSON bool) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if asJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}
