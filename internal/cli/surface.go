package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/sdk"
)

// Commands for the rest of E2B's API surface: sandbox logs and metrics,
// template publishing, access tokens and the admin's nodes.

func newSandboxLogsCmd(opts *clientOptions) *cobra.Command {
	var (
		level, search string
		limit         int
		since         time.Duration
		asJSON        bool
	)
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Show a sandbox's log: its start command's output and envd's log",
		Example: `  sbx sandbox logs 0a1b2c3d4e5f
  sbx sandbox logs 0a1b2c3d4e5f --level error --since 10m
  sbx sandbox logs 0a1b2c3d4e5f --search listening --json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: opts.completeIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			o := sdk.LogsOptions{Level: level, Search: search, Limit: limit}
			if since > 0 {
				o.Cursor = time.Now().Add(-since)
			}
			logs, err := c.SandboxLogs(cmd.Context(), args[0], o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), logs)
			}
			return printLogs(cmd.OutOrStdout(), logs)
		},
	}
	f := cmd.Flags()
	f.StringVar(&level, "level", "", "only lines at this level or above: debug, info, warn, error")
	f.StringVar(&search, "search", "", "only lines containing this text (case-insensitive)")
	f.IntVar(&limit, "limit", 0, "at most this many lines (server default 1000)")
	f.DurationVar(&since, "since", 0, "only lines of this last while, e.g. 10m")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printLogs(w io.Writer, logs []sdk.LogEntry) error {
	for _, e := range logs {
		src := e.Fields["source"]
		if src == "" {
			src = e.Step
		}
		if _, err := fmt.Fprintf(w, "%s %-5s %-13s %s\n", e.Timestamp.Local().Format("15:04:05.000"), e.Level, src, e.Message); err != nil {
			return err
		}
	}
	return nil
}

func newSandboxMetricsCmd(opts *clientOptions) *cobra.Command {
	var (
		since  time.Duration
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "metrics ID",
		Short: "Show a sandbox's CPU, memory and disk use over time",
		Example: `  sbx sandbox metrics 0a1b2c3d4e5f
  sbx sandbox metrics 0a1b2c3d4e5f --since 5m --json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: opts.completeIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			var start time.Time
			if since > 0 {
				start = time.Now().Add(-since)
			}
			ms, err := c.MetricsRange(cmd.Context(), args[0], start, time.Time{})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), ms)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tCPU\tMEMORY\tDISK")
			for _, m := range ms {
				fmt.Fprintf(tw, "%s\t%.1f%% of %d\t%d / %d MiB\t%d / %d MiB\n", m.Timestamp.Local().Format("15:04:05"),
					m.CPUUsedPct, m.CPUCount, m.MemUsed>>20, m.MemTotal>>20, m.DiskUsed>>20, m.DiskTotal>>20)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().DurationVar(&since, "since", 0, "only samples of this last while, e.g. 5m (default: all the server keeps)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newTemplatePublishCmd(opts *clientOptions, public bool) *cobra.Command {
	use, short, example := "publish TEMPLATE...", "Make templates usable by every team on the server", "  sbx template publish my-app"
	if !public {
		use, short, example = "unpublish TEMPLATE...", "Make published templates usable only by their team again", "  sbx template unpublish my-app"
	}
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			for _, ref := range args {
				if err := c.SetTemplatePublic(cmd.Context(), ref, public); err != nil {
					return err
				}
				state := "public"
				if !public {
					state = "private"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "template %s is %s\n", ref, state)
			}
			return nil
		},
	}
}

func newTemplateBuildLogsCmd(opts *clientOptions) *cobra.Command {
	var (
		level  string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:     "logs TEMPLATE BUILD_ID",
		Short:   "Show a template build's log",
		Example: `  sbx template logs my-app 9b2f…  --level warn`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			var all []sdk.LogEntry
			o := sdk.LogsOptions{Level: level, Limit: 100}
			for { // pages of 100, by time
				page, err := c.TemplateBuildLogs(cmd.Context(), args[0], args[1], o)
				if err != nil {
					return err
				}
				if len(all) > 0 && len(page) > 0 { // the cursor's line came again
					page = page[1:]
				}
				all = append(all, page...)
				if len(page) < o.Limit-1 {
					break
				}
				o.Cursor = all[len(all)-1].Timestamp
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), all)
			}
			return printLogs(cmd.OutOrStdout(), all)
		},
	}
	cmd.Flags().StringVar(&level, "level", "", "only lines at this level or above: debug, info, warn, error")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newKeyTokenCmd(client keyClient) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create and revoke access tokens (sk_e2b_…, sent as Authorization: Bearer)",
		Long: `Access tokens are API keys of your team in E2B's access-token format, for clients
that authenticate with "Authorization: Bearer sk_e2b_…" (E2B's CLI and legacy SDKs).
They are listed by 'sbx key list' with the sk_e2b_ prefix.`,
		Example: `  sbx key token create laptop
  sbx key token revoke 2f1c…`,
	}
	var asJSON bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an access token and print it (once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd.Context())
			if err != nil {
				return err
			}
			t, err := c.CreateAccessToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), t)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "access token %s (%s)\n%s\n", t.Name, t.ID, t.Token)
			return nil
		},
	}
	create.Flags().BoolVar(&asJSON, "json", false, "print JSON (E2B's CreatedAccessToken)")
	revoke := &cobra.Command{
		Use:     "revoke TOKEN_ID...",
		Aliases: []string{"delete", "rm"},
		Short:   "Revoke access tokens by ID",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd.Context())
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := c.DeleteAccessToken(cmd.Context(), id); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked access token %s\n", id)
			}
			return nil
		},
	}
	cmd.AddCommand(create, revoke)
	return cmd
}

func newNodeCmd() *cobra.Command {
	var opts accountOptions
	cmd := &cobra.Command{
		Use:   "node",
		Short: "List the server's nodes and drain them; needs the admin key",
		Long: `A node is an sbx server. A draining node starts no new sandboxes (creates answer
503); its running and paused sandboxes are untouched. 'ready' takes new ones again.`,
		Example: `  sudo sbx node list
  sudo sbx node drain NODE_ID
  sudo sbx node ready NODE_ID`,
	}
	opts.register(cmd)
	var asJSON bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List nodes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.admin("")
			if err != nil {
				return err
			}
			nodes, err := c.Nodes(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), nodes)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tSANDBOXES\tCPU (ALLOCATED/HOST)\tMEMORY (ALLOCATED/HOST)\tVERSION")
			for _, n := range nodes {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d/%d\t%d/%d MiB\t%s\n", n.ID, n.Status, n.SandboxCount, n.Metrics.AllocatedCPU,
					n.Metrics.CPUCount, n.Metrics.AllocatedMemoryBytes>>20, n.Metrics.MemoryTotalBytes>>20, n.Version)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	status := func(use, status, short string) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NODE_ID",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := opts.admin("")
				if err != nil {
					return err
				}
				if err := c.SetNodeStatus(cmd.Context(), args[0], status); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %s is %s\n", args[0], status)
				return nil
			},
		}
	}
	cmd.AddCommand(list, status("drain", "draining", "Stop starting new sandboxes on a node"),
		status("ready", "ready", "Start new sandboxes on a node again"))
	return cmd
}
