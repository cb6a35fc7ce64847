package cli

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/sdk"
)

// Snapshots and forks (issue 13): 'sbx snapshot ...' and 'sbx sandbox fork'.

func newSnapshotCmd() *cobra.Command {
	opts := &clientOptions{}
	cmd := &cobra.Command{
		Use:     "snapshot",
		Aliases: []string{"snap"},
		Short:   "Snapshot sandboxes and start new ones from the snapshots",
		Long: `A snapshot is a sandbox's filesystem, kept after the sandbox is gone: start
sandboxes from it as from a template ('sbx sandbox create --template <snapshot ID>').
A snapshot of a sandbox under runsc also holds its running processes and memory; any
other holds its files, and the template's start command runs again in every sandbox
started from it ('sbx snapshot list --json' says which: "memory"). Snapshots belong to
your team alone.`,
		Example: `  id=$(sbx sandbox create)
  snap=$(sbx snapshot create $id --name my-state)
  sbx sandbox create --template $snap
  sbx snapshot list --sandbox $id
  sbx snapshot delete $snap`,
	}
	opts.register(cmd)
	cmd.AddCommand(newSnapshotCreateCmd(opts), newSnapshotListCmd(opts), newSnapshotDeleteCmd(opts))
	return cmd
}

func newSnapshotCreateCmd(opts *clientOptions) *cobra.Command {
	var (
		name   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "create SANDBOX_ID",
		Short: "Snapshot a sandbox and print the snapshot ID",
		Long: `Snapshot a running or paused sandbox. A running one is frozen while its files
are copied, then keeps running. With --name the snapshot is reachable as NAME:default,
and snapshotting again with the same name gives that name the new content.`,
		Example: `  sbx snapshot create 0a1b2c3d4e5f
  sbx snapshot create 0a1b2c3d4e5f --name my-state --json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: opts.completeIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			s, err := c.CreateSnapshot(cmd.Context(), args[0], name)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), s)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), s.ID)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name the snapshot (lowercase letters, digits, '.', '_', '-')")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the snapshot as JSON")
	return cmd
}

func newSnapshotListCmd(opts *clientOptions) *cobra.Command {
	var (
		sandboxID, name string
		asJSON          bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List your team's snapshots, newest first",
		Example: `  sbx snapshot list
  sbx snapshot list --sandbox 0a1b2c3d4e5f --json | jq -r '.[].snapshotID'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			snaps, err := c.ListSnapshots(cmd.Context(), sdk.SnapshotListOptions{SandboxID: sandboxID, Name: name})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), snaps)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SNAPSHOT ID\tFROM SANDBOX")
			for _, s := range snaps {
				fmt.Fprintf(tw, "%s\t%s\n", s.ID, s.SandboxID)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&sandboxID, "sandbox", "", "only snapshots of this sandbox")
	cmd.Flags().StringVar(&name, "name", "", "only the snapshot with this name or ID")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSnapshotDeleteCmd(opts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "delete SNAPSHOT_ID...",
		Short: "Delete snapshots (sandboxes started from them keep running)",
		Example: `  sbx snapshot delete my-state:default
  sbx snapshot delete $(sbx snapshot list --sandbox 0a1b2c3d4e5f --json | jq -r '.[].snapshotID')`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			return forEachID(cmd, args, "deleted", func(id string) error {
				return c.DeleteSnapshot(cmd.Context(), id)
			})
		},
	}
}

func newSandboxForkCmd(opts *clientOptions) *cobra.Command {
	var (
		count   int
		timeout string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "fork ID",
		Short: "Clone a running sandbox and print the clones' IDs",
		Long: `Clone a running sandbox COUNT times. The source is frozen while its files are
copied once, then keeps running. Each clone has its own ID, network and access token, the
source's metadata and env vars, and a copy of its files. A source under runsc is
checkpointed, so its clones also get its running processes and memory; otherwise the
template's start command runs again in each clone (--json says which: "memory").`,
		Example: `  sbx sandbox fork 0a1b2c3d4e5f
  sbx sandbox fork 0a1b2c3d4e5f --count 3 --timeout 10m --json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: opts.completeIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseTimeout(timeout)
			if err != nil {
				return err
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			res, err := c.Fork(cmd.Context(), args[0], count, d)
			if err != nil {
				return err
			}
			type clone struct {
				SandboxID string `json:"sandboxID,omitempty"`
				Memory    bool   `json:"memory"`
				Error     string `json:"error,omitempty"`
			}
			var out []clone
			var errs []error
			for _, r := range res {
				if r.Err != nil {
					errs = append(errs, r.Err)
					out = append(out, clone{Error: r.Err.Error()})
					continue
				}
				out = append(out, clone{SandboxID: r.Sandbox.ID, Memory: r.Memory})
			}
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), out); err != nil {
					return err
				}
			} else {
				for _, o := range out {
					if o.SandboxID != "" {
						fmt.Fprintln(cmd.OutOrStdout(), o.SandboxID)
					}
				}
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().IntVar(&count, "count", 1, "number of clones (1-20)")
	cmd.Flags().StringVar(&timeout, "timeout", "300", "lifetime of each clone in seconds or as a duration (5m)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the clones as JSON")
	return cmd
}

// setOnTimeout applies 'sbx sandbox create --on-timeout/--auto-resume'.
func setOnTimeout(o *sdk.CreateOptions, onTimeout string, autoResume bool) error {
	switch onTimeout {
	case "", "kill":
	case "pause":
		o.AutoPause = true
	case "pause-files":
		o.AutoPause, o.AutoPauseDropMemory = true, true
	default:
		return usageErrorf("invalid --on-timeout %q: use kill, pause or pause-files", onTimeout)
	}
	if autoResume {
		if !o.AutoPause || o.AutoPauseDropMemory {
			return usageErrorf("--auto-resume needs --on-timeout pause (a sandbox paused without memory is resumed explicitly)")
		}
		o.AutoResume = true
	}
	return nil
}

// rebootSandboxes is 'sbx sandbox resume --reboot': each sandbox boots
// again from its files, whatever memory its pause kept.
func rebootSandboxes(cmd *cobra.Command, opts *clientOptions, ids []string, timeout time.Duration) error {
	c, err := opts.client()
	if err != nil {
		return err
	}
	return forEachID(cmd, ids, "rebooted", func(id string) error {
		_, err := c.Reboot(cmd.Context(), id, timeout)
		return err
	})
}
