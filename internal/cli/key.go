package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/app"
	"github.com/sbxdev/sbx/sdk"
)

func newKeyCmd() *cobra.Command {
	var opts accountOptions
	var team string
	cmd := &cobra.Command{
		Use:   "key",
		Short: "List, create, rotate and revoke a team's API keys",
		Long: `Manage the API keys of your team (the one of $E2B_API_KEY or --api-key), or with
--team and the admin key, of any team. Keys are stored hashed: a key is shown once,
when it is created; lists show its first and last characters. A revoked key stops
working within a second. A team's last key is only revoked with --force.`,
		Example: `  sbx key list
  sbx key create ci
  sbx key rotate                 # replace the key in use: prints the new one
  sbx key revoke 2f1c…           # by ID, from 'sbx key list'
  sudo sbx key list --team research
  sudo sbx key rotate --admin    # a new admin key, on the server's host`,
	}
	opts.register(cmd)
	cmd.PersistentFlags().StringVar(&team, "team", "", "act on this team (ID or name) with the admin key")
	client := func(ctx context.Context) (*sdk.Client, error) {
		if team == "" {
			return opts.team()
		}
		c, err := opts.admin("")
		if err != nil {
			return nil, err
		}
		t, err := findTeam(ctx, c, team)
		if err != nil {
			return nil, err
		}
		return opts.admin(t.TeamID)
	}
	cmd.AddCommand(newKeyListCmd(client), newKeyCreateCmd(client), newKeyRevokeCmd(client),
		newKeyRenameCmd(client), newKeyRotateCmd(client, &opts), newKeyTokenCmd(client))
	return cmd
}

type keyClient func(ctx context.Context) (*sdk.Client, error)

func newKeyListCmd(client keyClient) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the team's API keys (* marks the one in use)",
		Example: "  sbx key list\n  sbx key list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd.Context())
			if err != nil {
				return err
			}
			keys, err := c.ListAPIKeys(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), keys)
			}
			return printKeys(cmd.OutOrStdout(), keys)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the keys as JSON")
	return cmd
}

func printKeys(w io.Writer, keys []sdk.APIKey) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\tKEY ID\tNAME\tKEY\tCREATED\tLAST USED")
	for _, k := range keys {
		mark, used := "", "never"
		if k.Current {
			mark = "*"
		}
		if k.LastUsed != nil {
			used = k.LastUsed.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", mark, k.ID, k.Name, k.Mask, k.CreatedAt.Local().Format(time.DateTime), used)
	}
	return tw.Flush()
}

func printCreated(w io.Writer, k *sdk.CreatedAPIKey, asJSON bool) error {
	if asJSON {
		return writeJSON(w, k)
	}
	fmt.Fprintf(w, "key %s (%s)\nexport E2B_API_KEY=%s\n", k.ID, k.Name, k.Key)
	return nil
}

func newKeyCreateCmd(client keyClient) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "create [NAME]",
		Short:   "Create an API key for the team and print it (once)",
		Example: "  sbx key create ci\n  sbx key create deploy --json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "key " + time.Now().UTC().Format("2006-01-02 15:04")
			if len(args) == 1 {
				name = args[0]
			}
			c, err := client(cmd.Context())
			if err != nil {
				return err
			}
			k, err := c.CreateAPIKey(cmd.Context(), name)
			if err != nil {
				return err
			}
			return printCreated(cmd.OutOrStdout(), k, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the new key as JSON (E2B's CreatedTeamAPIKey)")
	return cmd
}

func newKeyRevokeCmd(client keyClient) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "revoke KEY_ID...",
		Aliases: []string{"delete", "rm"},
		Short:   "Revoke API keys by ID: they stop working within a second",
		Example: "  sbx key revoke 2f1c9a0e-…\n  sbx key revoke --force 2f1c9a0e-…   # even the team's last key",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd.Context())
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := c.DeleteAPIKey(cmd.Context(), id, force); err != nil {
					return fmt.Errorf("revoke key %s: %w", id, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked key %s\n", id)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "also revoke the team's last key (which locks the team out until the admin makes it a new one)")
	return cmd
}

func newKeyRenameCmd(client keyClient) *cobra.Command {
	return &cobra.Command{
		Use:     "rename KEY_ID NAME",
		Short:   "Rename an API key",
		Example: "  sbx key rename 2f1c9a0e-… production",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd.Context())
			if err != nil {
				return err
			}
			return c.RenameAPIKey(cmd.Context(), args[0], args[1])
		},
	}
}

func newKeyRotateCmd(client keyClient, opts *accountOptions) *cobra.Command {
	var asJSON, admin bool
	cmd := &cobra.Command{
		Use:   "rotate [KEY_ID]",
		Short: "Replace a key: create a new one, then revoke the old one",
		Long: `Create a key named like the old one, print it, then revoke the old one (the key in
use when no KEY_ID is given). Switch your clients to the printed key: the old one stops
working within a second.

With --admin, replace the admin key instead: this works on the data dir (run as root
on the server's host) and writes the new key to <data-dir>/admin-key.`,
		Example: "  sbx key rotate\n  sbx key rotate 2f1c9a0e-… --json\n  sudo sbx key rotate --admin",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if admin {
				return rotateAdmin(cmd, opts, asJSON)
			}
			c, err := client(cmd.Context())
			if err != nil {
				return err
			}
			keys, err := c.ListAPIKeys(cmd.Context())
			if err != nil {
				return err
			}
			var old *sdk.APIKey
			for i, k := range keys {
				if (len(args) == 1 && k.ID == args[0]) || (len(args) == 0 && k.Current) {
					old = &keys[i]
				}
			}
			if old == nil {
				if len(args) == 0 {
					return fmt.Errorf("name the key to rotate: sbx key rotate KEY_ID (see sbx key list)")
				}
				return fmt.Errorf("no key %s in the team (see sbx key list)", args[0])
			}
			k, err := c.CreateAPIKey(cmd.Context(), old.Name)
			if err != nil {
				return err
			}
			if err := c.DeleteAPIKey(cmd.Context(), old.ID, false); err != nil {
				return fmt.Errorf("the new key %s was created but the old one %s was not revoked: %w\nexport E2B_API_KEY=%s", k.ID, old.ID, err, k.Key)
			}
			return printCreated(cmd.OutOrStdout(), k, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the new key as JSON")
	cmd.Flags().BoolVar(&admin, "admin", false, "replace the admin key (on the server's host, as root)")
	return cmd
}

func rotateAdmin(cmd *cobra.Command, opts *accountOptions, asJSON bool) error {
	st, _, err := app.OpenStore(cmd.Context(), opts.dataDir, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer st.Close()
	key, err := app.RotateAdminKey(cmd.Context(), st, opts.dataDir)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(cmd.OutOrStdout(), map[string]string{"key": key, "file": app.AdminKeyFile(opts.dataDir)})
	}
	fmt.Fprintf(cmd.OutOrStdout(), "new admin key in %s\nexport SBX_ADMIN_KEY=%s\n", app.AdminKeyFile(opts.dataDir), key)
	return nil
}
