// Package cli builds the sbx command tree. Each command is made by a
// constructor; there are no package-level command variables.
package cli

import (
	"github.com/spf13/cobra"
)

// Version is the sbx version, set at build time with -ldflags from the
// VERSION file (see the Makefile); "0.0.0-dev" marks a plain `go build`.
var Version = "0.0.0-dev"

// NewRoot returns the root `sbx` command with every subcommand attached.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "sbx",
		Short: "Self-hosted sandboxes for AI-generated code, compatible with the E2B SDKs",
		Long: `sbx runs isolated Linux sandboxes on this machine and speaks E2B's wire protocol,
so the official E2B SDKs work against it with only E2B_API_URL, E2B_SANDBOX_URL and
E2B_API_KEY set.

Start a server with 'sbx serve', then 'eval "$(sbx env)"' to point SDKs and this CLI at it.`,
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		// One line per command group; keep this list sorted by group.
		newServeCmd(),
		newMigrateCmd(),
		newBackupCmd(),
		newEnvCmd(),
		newTeamCmd(),
		newKeyCmd(),
		newSandboxCmd(),
		newSnapshotCmd(),
		newSecretCmd(),
		newVolumeCmd(),
		newBenchCmd(),
		newRunCodeCmd(),
		newRefineCmd(),
		newWebhookCmd(),
		newEventsCmd(),
		newBudgetCmd(),
		newMonitorCmd(),
		newNodeCmd(),
		newTemplateCmd(),
		newVersionCmd(),
	)
	markUsageErrors(root)
	return root
}
