package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/sdk"
)

func newSandboxPauseCmd(opts *clientOptions) *cobra.Command {
	var disk, noMemory bool
	cmd := &cobra.Command{
		Use:   "pause ID...",
		Short: "Pause sandboxes, keeping their memory and files",
		Long: `Pause sandboxes: their processes stop, memory and files are kept, and
'sbx sandbox resume' (or any E2B connect) brings them back as they were.

A paused sandbox is frozen in memory; with --disk (runsc only) it is
checkpointed to disk at once and its memory freed. 'sbx serve
--pause-disk-after' moves idle paused sandboxes to disk by itself.

With --no-memory only the filesystem is kept: processes end, memory is freed
at once, and resume boots the sandbox again from its files (the template's
start command runs again), on every runtime.`,
		Example: `  sbx sandbox pause 0a1b2c3d4e5f
  sbx sandbox pause --disk 0a1b2c3d4e5f
  sbx sandbox pause --no-memory 0a1b2c3d4e5f`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: opts.completeIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if disk && noMemory {
				return usageErrorf("--disk and --no-memory exclude each other")
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			var errs []error
			for _, id := range args {
				pause, where := c.Pause, "paused"
				if disk {
					pause, where = c.PauseToDisk, "paused to disk"
				}
				if noMemory {
					pause, where = c.PauseWithoutMemory, "paused (filesystem only)"
				}
				if err := pause(cmd.Context(), id); err != nil {
					if sdk.IsConflict(err) {
						err = fmt.Errorf("%w (it is already %s)", err, where)
					}
					errs = append(errs, err)
					continue
				}
				fmt.Fprintln(cmd.OutOrStdout(), where, id)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVar(&disk, "disk", false, "checkpoint to disk and free the memory now (runsc only)")
	cmd.Flags().BoolVar(&noMemory, "no-memory", false, "keep only the filesystem; resume boots the sandbox again")
	return cmd
}

func newSandboxResumeCmd(opts *clientOptions) *cobra.Command {
	var (
		timeout string
		reboot  bool
	)
	cmd := &cobra.Command{
		Use:   "resume ID...",
		Short: "Resume paused sandboxes (from memory or disk)",
		Long: `Resume paused sandboxes with a fresh timeout (default 5m), whichever tier
they are paused in. A running sandbox only gets its timeout extended.`,
		Example: `  sbx sandbox resume 0a1b2c3d4e5f
  sbx sandbox resume --timeout 1h 0a1b2c3d4e5f`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: opts.completeIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d := 5 * time.Minute
			if timeout != "" {
				var err error
				if d, err = parseTimeout(timeout); err != nil {
					return err
				}
			}
			if reboot {
				return rebootSandboxes(cmd, opts, args, d)
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			return forEachID(cmd, args, "resumed", func(id string) error {
				_, err := c.Resume(cmd.Context(), id, sdk.ConnectOptions{Timeout: d})
				return err
			})
		},
	}
	cmd.Flags().StringVar(&timeout, "timeout", "", "new timeout from now (seconds, or a duration like 10m; default 5m)")
	cmd.Flags().BoolVar(&reboot, "reboot", false, "boot the sandbox again from its files, dropping the memory its pause kept")
	return cmd
}
