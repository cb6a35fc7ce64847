package cli

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/app"
	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/sandbox"
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

Running sandboxes survive a restart of the server: they are reattached on start.`,
		Example: `  sudo sbx serve
  sudo sbx serve --listen 127.0.0.1:3000 --data-dir /var/lib/sbx --runtime crun
  # two servers sharing one PostgreSQL database, each with its own data dir:
  sudo sbx serve --database postgres://sbx:secret@db.internal/sbx --node-name host-a
  eval "$(sbx env)"   # in another shell: point SDKs and the CLI at the server`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel, logJSON)
			if err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("sbx serve needs root (namespaces, cgroups, overlay mounts); run it with sudo")
			}
			return app.Run(cmd.Context(), cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", app.DefaultListen, "address of the API, sandbox proxy and dashboard")
	f.StringVar(&cfg.DataDir, "data-dir", app.DefaultDataDir, "directory for the database, API key and sandboxes")
	f.StringVar(&cfg.Database, "database", "", "postgres://user:pass@host/db of a database several sbx servers share (default: SQLite in the data dir)")
	f.StringVar(&cfg.NodeName, "node-name", "", "this server's name among servers sharing a database; its sandboxes are its own (default: hostname:port)")
	f.StringVar(&cfg.Runtime, "runtime", app.DefaultRuntime, "OCI runtime: crun, runc or runsc")
	f.BoolVar(&cfg.UserNS, "userns", app.DefaultUserNS, "run crun and runc sandboxes in user namespaces of their own: root inside is an unprivileged host user (false: root in a sandbox is host root)")
	f.StringArrayVar(&cfg.RuntimeArgs, "runtime-arg", nil, "extra global flag for the OCI runtime, repeatable (e.g. --runtime-arg=--platform=ptrace with runsc)")
	f.StringVar(&cfg.Domain, "domain", "", "enable host routing <port>-<sandboxID>.<domain>")
	f.StringVar(&cfg.AgentDir, "agent-dir", "", "directory holding envd and codeinterp (default: next to the sbx binary)")
	f.StringVar(&cfg.RootfsCache, "rootfs-cache", "", "root filesystem cache shared by data dirs (default /var/cache/sbx/rootfs or $SBX_ROOTFS_CACHE)")
	f.BoolVar(&cfg.Webhooks.AllowPrivate, "webhook-allow-private", false, "allow webhook deliveries to private and loopback addresses (local development)")
	f.StringSliceVar(&cfg.Webhooks.AllowCIDRs, "webhook-allow-cidr", nil, "allow webhook deliveries to these private CIDRs")
	lim := builder.DefaultLimits
	f.IntVar(&cfg.Builds.Limits.MemoryMB, "build-memory", lim.MemoryMB, "memory of one template build step in MiB, the files it writes included")
	f.Float64Var(&cfg.Builds.Limits.CPUs, "build-cpus", lim.CPUs, "CPUs of one template build step")
	f.IntVar(&cfg.Builds.Limits.PidsMax, "build-pids", lim.PidsMax, "processes of one template build step")
	f.IntVar(&cfg.Builds.Limits.DiskMB, "build-disk", lim.DiskMB, "writable layer of one template build step in MiB")
	f.DurationVar(&cfg.Builds.Limits.StepTimeout, "build-step-timeout", lim.StepTimeout, "time one template build step (RUN, COPY, ADD) may take")
	f.IntVar(&cfg.Builds.Concurrency, "build-concurrency", app.DefaultBuildConcurrency, "template builds running at once; more wait, and say so in their log")
	f.IntVar(&cfg.Builds.ConcurrencyPerTeam, "build-concurrency-per-team", app.DefaultBuildConcurrencyPerTeam, "template builds of one team running at once")
	f.BoolVar(&cfg.Registry.AllowPrivate, "registry-allow-private", false, "allow template images (fromImage) from registries on private, loopback and link-local addresses (a local registry)")
	f.StringSliceVar(&cfg.Registry.AllowCIDRs, "registry-allow-cidr", nil, "allow template images from registries in these private CIDRs (the registry, its token service and its blob storage)")
	f.IntVar(&cfg.Registry.MaxImageMB, "registry-max-image", builder.DefaultImageMaxMB, "largest template image (fromImage) in MiB, downloaded and unpacked")
	f.StringArrayVar(&cfg.SandboxAllowCIDRs, "sandbox-allow-cidr", nil, "let sandboxes reach this IPv4 range or address, repeatable; by default their traffic stops at private, reserved and link-local ranges and at this host's own addresses (DNS to the host's resolvers stays open)")
	f.DurationVar(&cfg.PauseDiskAfter, "pause-disk-after", 0, "checkpoint a sandbox paused this long to disk, freeing its memory (runsc only; 0 = never; >0 also at shutdown)")
	f.StringVar(&cfg.SnapshotRuntime, "snapshot-runtime", app.DefaultSnapshotRuntime, "runtime that snapshots templates with a start command so sandboxes start with it running: auto (runsc when installed), runsc, or none (run start commands at sandbox start)")
	f.StringArrayVar(&cfg.SnapshotRuntimeArgs, "snapshot-runtime-arg", nil, "extra global flag for the snapshot runtime when it is not --runtime, repeatable (e.g. --snapshot-runtime-arg=--platform=ptrace)")
	f.StringToStringVar(&cfg.Pools, "pool", nil, "warm pool per template as TEMPLATE=MIN[:MAX], sized by recent demand between MIN and MAX; TEMPLATE * applies to every other template (from its first sandbox on); MAX 0 disables; overrides the defaults per template: "+app.DefaultPoolsText())
	f.IntVar(&cfg.TeamMaxSandboxes, "team-max-sandboxes", sandbox.DefaultTeamMaxSandboxes, "cap on each team's running and paused sandboxes (creates over it answer 429; 0 = no cap); the admin sets a team's own with sbx team update TEAM --max-sandboxes N")
	cfg.Monitoring.AddFlags(f) // --runaway, --price-*, --metrics-public, ... (internal/monitor)
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

func newEnvCmd() *cobra.Command {
	var dataDir, listen string
	var admin bool
	cmd := &cobra.Command{
		Use:   "env",
		Short: "Print the E2B_* environment for a local sbx server",
		Long: `Print export lines that point the E2B SDKs and this CLI at a local sbx server:
E2B_API_URL, E2B_SANDBOX_URL (the same address: sandbox traffic is routed by header)
and E2B_API_KEY (the first team's key, read from the data dir). The address is the one
the server last started on this data dir listens on, unless --listen says otherwise.

With --admin it also prints SBX_ADMIN_KEY, the admin key (teams, every team's keys,
budgets, cluster-wide metrics). Both keys are readable by root only.`,
		Example: `  eval "$(sudo sbx env)"
  eval "$(sudo sbx env --data-dir /tmp/sbx --listen 127.0.0.1:3100)"
  eval "$(sudo sbx env --admin)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := app.ReadKeyFile(app.APIKeyFile(dataDir))
			if err != nil {
				return fmt.Errorf("read the API key: %w (start the server once with 'sbx serve --data-dir %s', and run this as the same user, usually root)", err, dataDir)
			}
			url := "http://" + listen
			if !cmd.Flags().Changed("listen") {
				if u, err := app.ReadKeyFile(app.ServerURLFile(dataDir)); err == nil && u != "" {
					url = u
				}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "export E2B_API_URL=%s\n", url)
			fmt.Fprintf(out, "export E2B_SANDBOX_URL=%s\n", url)
			fmt.Fprintf(out, "export E2B_API_KEY=%s\n", key)
			if admin {
				ak, err := app.ReadKeyFile(app.AdminKeyFile(dataDir))
				if err != nil {
					return fmt.Errorf("read the admin key: %w (it is made when 'sbx serve' starts; run this as root)", err)
				}
				fmt.Fprintf(out, "export SBX_ADMIN_KEY=%s\n", ak)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", app.DefaultDataDir, "the server's data dir")
	cmd.Flags().StringVar(&listen, "listen", app.DefaultListen, "the server's --listen address (default: where the server last started on --data-dir listens)")
	cmd.Flags().BoolVar(&admin, "admin", false, "also print SBX_ADMIN_KEY, the admin key")
	return cmd
}
