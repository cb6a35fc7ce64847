package cli

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/app"
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
(printed by 'sbx env'), and prepares the built-in templates (base, code-interpreter)
from Debian packages in the background; progress is in this log. GET /health answers
at once; creating a sandbox from a template still being prepared waits for it.

Running sandboxes survive a restart of the server: they are reattached on start.`,
		Example: `  sudo sbx serve
  sudo sbx serve --listen 127.0.0.1:3000 --data-dir /var/lib/sbx --runtime crun
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
	f.StringVar(&cfg.Runtime, "runtime", app.DefaultRuntime, "OCI runtime: crun, runc or runsc")
	f.BoolVar(&cfg.UserNS, "userns", app.DefaultUserNS, "run crun and runc sandboxes in user namespaces of their own: root inside is an unprivileged host user (false: root in a sandbox is host root)")
	f.StringArrayVar(&cfg.RuntimeArgs, "runtime-arg", nil, "extra global flag for the OCI runtime, repeatable (e.g. --runtime-arg=--platform=ptrace with runsc)")
	f.StringVar(&cfg.Domain, "domain", "", "enable host routing <port>-<sandboxID>.<domain>")
	f.StringVar(&cfg.AgentDir, "agent-dir", "", "directory holding envd and codeinterp (default: next to the sbx binary)")
	f.StringVar(&cfg.RootfsCache, "rootfs-cache", "", "root filesystem cache shared by data dirs (default /var/cache/sbx/rootfs or $SBX_ROOTFS_CACHE)")
	f.BoolVar(&cfg.Webhooks.AllowPrivate, "webhook-allow-private", false, "allow webhook deliveries to private and loopback addresses (local development)")
	f.StringSliceVar(&cfg.Webhooks.AllowCIDRs, "webhook-allow-cidr", nil, "allow webhook deliveries to these private CIDRs")
	f.DurationVar(&cfg.PauseDiskAfter, "pause-disk-after", 0, "checkpoint a sandbox paused this long to disk, freeing its memory (runsc only; 0 = never; >0 also at shutdown)")
	f.StringVar(&cfg.SnapshotRuntime, "snapshot-runtime", app.DefaultSnapshotRuntime, "runtime that snapshots templates with a start command so sandboxes start with it running: auto (runsc when installed), runsc, or none (run start commands at sandbox start)")
	f.StringArrayVar(&cfg.SnapshotRuntimeArgs, "snapshot-runtime-arg", nil, "extra global flag for the snapshot runtime when it is not --runtime, repeatable (e.g. --snapshot-runtime-arg=--platform=ptrace)")
	f.StringToStringVar(&cfg.Pools, "pool", nil, "warm pool per template as TEMPLATE=MIN[:MAX], sized by recent demand between MIN and MAX; TEMPLATE * applies to every other template (from its first sandbox on); MAX 0 disables; overrides the defaults per template: "+app.DefaultPoolsText())
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
	cmd := &cobra.Command{
		Use:   "env",
		Short: "Print the E2B_* environment for a local sbx server",
		Long: `Print export lines that point the E2B SDKs and this CLI at a local sbx server:
E2B_API_URL, E2B_SANDBOX_URL (the same address: sandbox traffic is routed by header)
and E2B_API_KEY (the first team's key, read from the data dir).`,
		Example: `  eval "$(sbx env)"
  eval "$(sbx env --data-dir /tmp/sbx --listen 127.0.0.1:3100)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := os.ReadFile(app.APIKeyFile(dataDir))
			if err != nil {
				return fmt.Errorf("read the API key: %w (start the server once with 'sbx serve --data-dir %s', and run this as the same user, usually root)", err, dataDir)
			}
			url := "http://" + listen
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "export E2B_API_URL=%s\n", url)
			fmt.Fprintf(out, "export E2B_SANDBOX_URL=%s\n", url)
			fmt.Fprintf(out, "export E2B_API_KEY=%s\n", strings.TrimSpace(string(b)))
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", app.DefaultDataDir, "the server's data dir")
	cmd.Flags().StringVar(&listen, "listen", app.DefaultListen, "the server's --listen address")
	return cmd
}

func newTeamCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "team", Short: "Manage teams (each has its own API key and sandboxes)"}
	var dataDir string
	var asJSON bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a team and print its API key",
		Long: `Create a team with its own API key. A team sees only its own sandboxes, events and
webhooks. The key is printed once; keep it. Works while the server runs.`,
		Example: `  sbx team create research
  sbx team create ci --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if len(name) > 64 || strings.TrimSpace(name) == "" {
				return fmt.Errorf("team name must be 1–64 characters")
			}
			log := slog.New(slog.DiscardHandler)
			st, _, err := app.OpenStore(cmd.Context(), dataDir, log)
			if err != nil {
				return err
			}
			defer st.Close()
			key := app.NewAPIKey()
			t, err := st.CreateTeam(cmd.Context(), name, key)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]string{"id": t.ID, "name": t.Name, "apiKey": key})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "team %s (%s)\nexport E2B_API_KEY=%s\n", t.Name, t.ID, key)
			return nil
		},
	}
	create.Flags().StringVar(&dataDir, "data-dir", app.DefaultDataDir, "the server's data dir")
	create.Flags().BoolVar(&asJSON, "json", false, "print {id, name, apiKey} as JSON")
	cmd.AddCommand(create)
	return cmd
}
