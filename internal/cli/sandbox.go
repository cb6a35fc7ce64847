package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/sdk"
)

func newSandboxCmd() *cobra.Command {
	var opts clientOptions
	cmd := &cobra.Command{
		Use:     "sandbox",
		Aliases: []string{"sb"},
		Short:   "Create, inspect and drive sandboxes on an sbx server",
		Long: `Manage sandboxes through the server's E2B-compatible API.

The server and key come from E2B_API_URL and E2B_API_KEY (set them with
'eval "$(sbx env)"'); --api-url and --api-key override them.`,
		Example: `  eval "$(sbx env)"
  id=$(sbx sandbox create --template base --metadata owner=alice)
  sbx sandbox exec $id -- python3 -c 'print(6*7)'
  sbx sandbox list --metadata owner=alice
  sbx sandbox kill $id`,
	}
	opts.register(cmd)
	cmd.AddCommand(
		newSandboxCreateCmd(&opts),
		newSandboxListCmd(&opts),
		newSandboxInfoCmd(&opts),
		newSandboxKillCmd(&opts),
		newSandboxForkCmd(&opts),
		newSandboxExecCmd(&opts, os.Exit),
		newSandboxTimeoutCmd(&opts),
		newSandboxPauseCmd(&opts),
		newSandboxResumeCmd(&opts),
		newSandboxLogsCmd(&opts),
		newSandboxMetricsCmd(&opts),
		newSandboxNetworkCmd(&opts),
	)
	return cmd
}

// writeJSON prints v indented; a nil slice prints as [] (scripts parse
// an empty list, not null).
func writeJSON(w io.Writer, v any) error {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		v = []struct{}{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newSandboxCreateCmd(opts *clientOptions) *cobra.Command {
	var (
		template, timeout  string
		metadata, envs     []string
		noInternet, asJSON bool
		onTimeout          string
		autoResume         bool
		net                networkFlags
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a sandbox and print its ID",
		Example: `  sbx sandbox create
  sbx sandbox create --template base --timeout 300 --metadata owner=alice --env DEBUG=1
  sbx sandbox create --timeout 1h --no-internet --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := parseTimeout(timeout)
			if err != nil {
				return err
			}
			md, err := parsePairs("metadata", metadata)
			if err != nil {
				return err
			}
			ev, err := parsePairs("env", envs)
			if err != nil {
				return err
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			create := sdk.CreateOptions{Template: template, Timeout: d, Metadata: md, EnvVars: ev}
			if noInternet {
				create.AllowInternetAccess = new(false)
			}
			if err := setOnTimeout(&create, onTimeout, autoResume); err != nil {
				return err
			}
			if err := net.apply(&create); err != nil {
				return err
			}
			s, err := c.Create(cmd.Context(), create)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]string{
					"sandboxID": s.ID, "templateID": s.TemplateID, "envdVersion": s.EnvdVersion,
					"envdAccessToken": s.EnvdAccessToken, "trafficAccessToken": s.TrafficAccessToken, "domain": s.Domain,
				})
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), s.ID)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&template, "template", "t", sdk.DefaultTemplate, "template ID or name")
	f.StringVar(&timeout, "timeout", "300", "lifetime in seconds or as a duration (5m); the sandbox is killed after it")
	f.StringArrayVar(&metadata, "metadata", nil, "metadata KEY=VALUE (repeatable)")
	f.StringArrayVar(&envs, "env", nil, "environment variable KEY=VALUE for every process (repeatable)")
	f.BoolVar(&noInternet, "no-internet", false, "deny outbound network access")
	net.register(cmd)
	f.BoolVar(&asJSON, "json", false, "print the sandbox as JSON")
	f.StringVar(&onTimeout, "on-timeout", "kill", "at the timeout: kill, pause (keeps memory) or pause-files (keeps only the filesystem)")
	f.BoolVar(&autoResume, "auto-resume", false, "resume the paused sandbox when traffic reaches it (with --on-timeout pause)")
	return cmd
}

func newSandboxListCmd(opts *clientOptions) *cobra.Command {
	var (
		metadata    []string
		state       string
		limit       int
		asJSON      bool
		template    string
		oldestFirst bool
	)
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the team's sandboxes",
		Example: `  sbx sandbox list
  sbx sandbox list --metadata owner=alice --state running
  sbx sandbox list --json | jq -r '.[].sandboxID'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			md, err := parsePairs("metadata", metadata)
			if err != nil {
				return err
			}
			var states []string
			for s := range strings.SplitSeq(state, ",") {
				switch s = strings.TrimSpace(s); s {
				case "":
				case sdk.StateRunning, sdk.StatePaused:
					states = append(states, s)
				default:
					return fmt.Errorf("invalid --state %q: want running, paused or both (running,paused)", s)
				}
			}
			if limit < 0 {
				return fmt.Errorf("invalid --limit %d: must not be negative", limit)
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			list, err := c.List(cmd.Context(), sdk.ListOptions{Metadata: md, State: states, Limit: limit,
				Template: template, Ascending: oldestFirst})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), list)
			}
			return printSandboxTable(cmd.OutOrStdout(), list)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&metadata, "metadata", nil, "only sandboxes with this metadata KEY=VALUE (repeatable, all must match)")
	f.StringVar(&state, "state", "", "only sandboxes in these states: running, paused (comma-separated)")
	f.IntVar(&limit, "limit", 0, "at most this many sandboxes (0: all)")
	f.StringVar(&template, "template", "", "only sandboxes of this template (ID or name)")
	f.BoolVar(&oldestFirst, "oldest-first", false, "list the oldest sandboxes first (default: newest first)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printSandboxTable(w io.Writer, list []sdk.SandboxInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTEMPLATE\tSTATE\tSTARTED\tENDS\tMETADATA")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.SandboxID, s.TemplateID, s.State,
			s.StartedAt.Local().Format(time.DateTime), s.EndAt.Local().Format(time.DateTime), formatPairs(s.Metadata))
	}
	return tw.Flush()
}

func formatPairs(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func newSandboxInfoCmd(opts *clientOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:               "info ID",
		Short:             "Show one sandbox",
		Example:           `  sbx sandbox info 0a1b2c3d4e5f --json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: opts.completeIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			s, err := c.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), s)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			state := s.State
			if s.PauseTier != "" {
				state += " (" + s.PauseTier + ")"
			}
			tpl := s.TemplateName()
			if tpl != s.TemplateID {
				tpl += " (" + s.TemplateID + ")"
			}
			fmt.Fprintf(tw, "ID\t%s\nTemplate\t%s\nState\t%s\nStarted\t%s\nEnds\t%s\n",
				s.SandboxID, tpl, state, s.StartedAt.Local().Format(time.RFC3339), s.EndAt.Local().Format(time.RFC3339))
			fmt.Fprintf(tw, "At timeout\t%s\nRuntime\t%s\nInternet\t%s\n", lifecycleText(s.Lifecycle), orDash(s.Runtime), internetText(s.AllowInternetAccess))
			fmt.Fprintf(tw, "CPUs\t%d\nMemory\t%d MiB\nDisk\t%d MiB\nenvd\t%s\nMetadata\t%s\n",
				s.CPUCount, s.MemoryMB, s.DiskSizeMB, s.EnvdVersion, formatPairs(s.Metadata))
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// lifecycleText says what happens at the sandbox's timeout.
func lifecycleText(l *sdk.Lifecycle) string {
	switch {
	case l == nil:
		return "-"
	case l.OnTimeout == "pause" && l.AutoResume:
		return "pause (resumes when used)"
	case l.OnTimeout == "":
		return "kill"
	}
	return l.OnTimeout
}

func internetText(allow *bool) string {
	if allow != nil && !*allow {
		return "blocked"
	}
	return "allowed"
}

func newSandboxKillCmd(opts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "kill ID...",
		Short: "Kill sandboxes",
		Example: `  sbx sandbox kill 0a1b2c3d4e5f
  sbx sandbox list --json | jq -r '.[].sandboxID' | xargs sbx sandbox kill`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: opts.completeIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			return forEachID(cmd, args, "killed", func(id string) error {
				return c.Kill(cmd.Context(), id)
			})
		},
	}
}

func newSandboxTimeoutCmd(opts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "timeout ID DURATION",
		Short: "Set how long from now a sandbox lives",
		Long:  "Set the sandbox's end to now + DURATION (seconds, or a duration like 10m). This may shorten its life.",
		Example: `  sbx sandbox timeout 0a1b2c3d4e5f 600
  sbx sandbox timeout 0a1b2c3d4e5f 2h`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: opts.completeIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseTimeout(args[1])
			if err != nil {
				return err
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			return c.SetTimeout(cmd.Context(), args[0], d)
		},
	}
}

// newSandboxExecCmd runs a command and exits with its exit code through
// exit (os.Exit outside tests): cobra has no way to return a status.
func newSandboxExecCmd(opts *clientOptions, exit func(int)) *cobra.Command {
	var (
		cwd, user, timeout string
		envs               []string
		stdin              bool
	)
	cmd := &cobra.Command{
		Use:   "exec ID -- COMMAND [ARG...]",
		Short: "Run a command in a sandbox, streaming its output",
		Long: `Run a command with bash in the sandbox, stream its stdout and stderr here, and
exit with its exit code. A single COMMAND argument is a shell command line; several
arguments are quoted and joined. Interrupting (Ctrl-C) kills the command.`,
		Example: `  sbx sandbox exec 0a1b2c3d4e5f -- uname -a
  sbx sandbox exec 0a1b2c3d4e5f -- 'cd /tmp && ls | wc -l'
  sbx sandbox exec --user root --cwd /etc --env LANG=C 0a1b2c3d4e5f -- cat hostname
  tar c src | sbx sandbox exec --stdin 0a1b2c3d4e5f -- tar x -C /tmp`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: opts.completeIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, ev, err := commandInputs(timeout, envs)
			if err != nil {
				return err
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			s, err := c.Connect(ctx, args[0], sdk.ConnectOptions{})
			if err != nil {
				return err
			}
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			h, err := s.Commands.Start(ctx, shellJoin(args[1:]), sdk.RunOptions{
				Envs: ev, Cwd: cwd, User: user, Timeout: d, Stdin: stdin,
				OnStdout: func(chunk string) { io.WriteString(stdout, chunk) },
				OnStderr: func(chunk string) { io.WriteString(stderr, chunk) },
			})
			if err != nil {
				return err
			}
			if stdin {
				go forwardStdin(ctx, cmd.InOrStdin(), h, cmd.ErrOrStderr())
			}
			_, err = h.Wait(ctx)
			var exitErr *sdk.CommandExitError
			switch {
			case err == nil:
				return nil
			case errors.As(err, &exitErr):
				exit(exitErr.ExitCode)
				return nil
			case ctx.Err() != nil:
				kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				_ = h.Kill(kctx)
				exit(130)
				return nil
			default:
				return err
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&cwd, "cwd", "", "working directory (default the user's home)")
	f.StringVarP(&user, "user", "u", "", "Linux user (default user)")
	f.StringArrayVarP(&envs, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	f.StringVar(&timeout, "timeout", "", "kill the command after this long (seconds or a duration; default no limit)")
	f.BoolVarP(&stdin, "stdin", "i", false, "forward this terminal's standard input to the command")
	return cmd
}

// forwardStdin copies r to the command's stdin and closes it at EOF.
func forwardStdin(ctx context.Context, r io.Reader, h *sdk.CommandHandle, errOut io.Writer) {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if serr := h.SendStdin(ctx, string(buf[:n])); serr != nil {
				fmt.Fprintln(errOut, "sbx: stdin:", serr)
				return
			}
		}
		if err != nil {
			if cerr := h.CloseStdin(ctx); cerr != nil && ctx.Err() == nil {
				fmt.Fprintln(errOut, "sbx: close stdin:", cerr)
			}
			return
		}
	}
}

// shellJoin makes one bash command line from arguments: a single argument
// is taken as a command line, several are single-quoted where needed.
func shellJoin(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
		}) < 0 {
			quoted[i] = a
			continue
		}
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(quoted, " ")
}

// forEachID runs op on every ID, printing "<done> ID" for each success, and
// returns every failure: one bad ID does not stop the others.
func forEachID(cmd *cobra.Command, ids []string, done string, op func(id string) error) error {
	var errs []error
	for _, id := range ids {
		if err := op(id); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(cmd.OutOrStdout(), done, id)
	}
	return errors.Join(errs...)
}
