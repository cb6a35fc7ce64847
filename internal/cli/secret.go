package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/sdk"
)

func newSecretCmd() *cobra.Command {
	var opts clientOptions
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Store team secrets that sandboxes receive in their environment",
		Long: `Manage your team's secrets. Values are write-only: stored encrypted, never shown
again. A sandbox gets one by naming it in an env var value: ${e2b.secrets.<name>}
(the SDKs' Secret.fill), resolved when the sandbox is created.`,
		Example: `  printf %s "$OPENAI_KEY" | sbx secret create openai-key
  sbx sandbox create --env 'OPENAI_API_KEY=${e2b.secrets.openai-key}'
  sbx secret list --json
  sbx secret update openai-key --value-file new.txt
  sbx secret delete openai-key`,
	}
	opts.register(cmd)
	cmd.AddCommand(newSecretSetCmd(&opts, false), newSecretSetCmd(&opts, true), newSecretListCmd(&opts),
		newSecretInfoCmd(&opts), newSecretDeleteCmd(&opts))
	return cmd
}

// readValue reads a secret's value from a file, or stdin when "" or "-";
// one trailing newline (from echo or a terminal) is dropped.
func readValue(cmd *cobra.Command, file string) (string, error) {
	var r io.Reader = cmd.InOrStdin()
	if file != "" && file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return "", err
	}
	v := strings.TrimSuffix(string(b), "\n")
	if v == "" {
		return "", errors.New("empty secret value: pipe it on stdin or give --value-file")
	}
	return v, nil
}

func newSecretSetCmd(opts *clientOptions, update bool) *cobra.Command {
	var file string
	var metadata []string
	use, short := "create NAME", "Create a secret, its value read from stdin or --value-file"
	if update {
		use, short = "update NAME|ID", "Store a new version of a secret's value"
	}
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Example: "  printf %s \"$TOKEN\" | sbx secret " + strings.Fields(use)[0] + " api-token",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			md, err := parsePairs("metadata", metadata)
			if err != nil {
				return err
			}
			v, err := readValue(cmd, file)
			if err != nil {
				return err
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			var s *sdk.Secret
			if update {
				s, err = c.UpdateSecret(cmd.Context(), args[0], v, md)
			} else {
				s, err = c.CreateSecret(cmd.Context(), args[0], v, md)
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\tversion %d\n", s.ID, s.Name, s.Version)
			return err
		},
	}
	cmd.Flags().StringVar(&file, "value-file", "", "read the value from this file (default: stdin)")
	cmd.Flags().StringArrayVar(&metadata, "metadata", nil, "metadata KEY=VALUE (repeatable)")
	return cmd
}

func newSecretListCmd(opts *clientOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the team's secrets (never their values)",
		Example: "  sbx secret list\n  sbx secret list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			list, err := c.ListSecrets(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tVERSION\tUPDATED")
			for _, s := range list {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", s.ID, s.Name, s.Version, s.UpdatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the secrets as JSON")
	return cmd
}

func newSecretInfoCmd(opts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "info NAME|ID",
		Short:   "Show a secret's metadata as JSON",
		Example: "  sbx secret info openai-key",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			s, err := c.GetSecret(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return writeJSON(cmd.OutOrStdout(), s)
		},
	}
}

func newSecretDeleteCmd(opts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME|ID",
		Aliases: []string{"rm"},
		Short:   "Delete a secret and every version of it",
		Example: "  sbx secret delete openai-key",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			return c.DeleteSecret(cmd.Context(), args[0])
		},
	}
}
