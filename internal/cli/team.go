package cli

import (
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/sbxdev/sbx/sdk"
	"github.com/spf13/cobra"
)

func newTeamCmd() *cobra.Command {
	var opts accountOptions
	cmd := &cobra.Command{
		Use:   "team",
		Short: "Manage teams (each has its own API keys, sandboxes and limits); needs the admin key",
		Long: `Teams are tenants: a team sees only its own sandboxes, templates, events and
webhooks. Managing them needs the admin key, which 'sbx serve' keeps in
<data-dir>/admin-key: run these commands as root on the server's host (the data dir
also tells the server's address), or pass --admin-key or set SBX_ADMIN_KEY
('sudo sbx env --admin' prints it) and --api-url.`,
		Example: `  sudo sbx team create research
  sudo sbx team list
  sudo sbx team update research --max-sandboxes 20
  sudo sbx team delete research`,
	}
	opts.register(cmd)
	cmd.AddCommand(newTeamCreateCmd(&opts), newTeamListCmd(&opts), newTeamUpdateCmd(&opts), newTeamDeleteCmd(&opts))
	return cmd
}

func newTeamCreateCmd(opts *accountOptions) *cobra.Command {
	var asJSON bool
	var max int
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a team and print its first API key",
		Long: `Create a team with its own API key. The key is printed once; keep it (the team can
create more with 'sbx key create').`,
		Example: `  sudo sbx team create research
  sudo sbx team create ci --max-sandboxes 10 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.admin("")
			if err != nil {
				return err
			}
			var maxp *int
			if cmd.Flags().Changed("max-sandboxes") {
				maxp = &max
			}
			t, err := c.CreateTeam(cmd.Context(), args[0], sdk.TeamOptions{MaxSandboxes: maxp})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"id": t.TeamID, "name": t.Name, "apiKey": t.APIKey,
					"createdAt": t.CreatedAt, "maxSandboxes": t.MaxSandboxes})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "team %s (%s)\nexport E2B_API_KEY=%s\n", t.Name, t.TeamID, t.APIKey)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {id, name, apiKey, createdAt, maxSandboxes} as JSON")
	cmd.Flags().IntVar(&max, "max-sandboxes", 0, "cap on the team's running and paused sandboxes (0 = no cap; default: the server's --team-max-sandboxes)")
	return cmd
}

func newTeamListCmd(opts *accountOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List teams",
		Example: "  sudo sbx team list\n  sudo sbx team list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.admin("")
			if err != nil {
				return err
			}
			teams, err := c.ListTeams(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), teams)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TEAM ID\tNAME\tMAX SANDBOXES\tCREATED")
			for _, t := range teams {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.TeamID, t.Name, maxText(t.MaxSandboxes), t.CreatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the teams as JSON")
	return cmd
}

func newTeamUpdateCmd(opts *accountOptions) *cobra.Command {
	var max string
	cmd := &cobra.Command{
		Use:   "update TEAM --max-sandboxes N|default",
		Short: "Change a team's limits",
		Long: `Change a team's cap on running and paused sandboxes: a number (0 = no cap), or
"default" for the server's --team-max-sandboxes. Creates over the cap answer 429.
Spending limits are budgets: sbx budget set --team TEAM.`,
		Example: `  sudo sbx team update research --max-sandboxes 50
  sudo sbx team update research --max-sandboxes default`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("max-sandboxes") {
				return usageErrorf("nothing to change: pass --max-sandboxes N (or default)")
			}
			var maxp *int
			if max != "default" {
				n, err := strconv.Atoi(max)
				if err != nil || n < 0 {
					return usageErrorf("--max-sandboxes %q: want a number ≥ 0 (0 = no cap) or default", max)
				}
				maxp = &n
			}
			c, err := opts.admin("")
			if err != nil {
				return err
			}
			t, err := findTeam(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			u, err := c.UpdateTeam(cmd.Context(), t.TeamID, sdk.TeamOptions{MaxSandboxes: maxp})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "team %s: max sandboxes %s\n", u.Name, maxText(u.MaxSandboxes))
			return nil
		},
	}
	cmd.Flags().StringVar(&max, "max-sandboxes", "", "cap on running and paused sandboxes: N (0 = no cap) or default")
	return cmd
}

func newTeamDeleteCmd(opts *accountOptions) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:     "delete TEAM",
		Aliases: []string{"rm"},
		Short:   "Delete a team: its keys stop working and its sandboxes are killed",
		Long: `Delete a team by ID or name. Its API keys stop working at once and its running and
paused sandboxes are killed; its secrets, volumes (with their content) and webhooks are
removed. Its events and usage history stay, and so do its templates and snapshots (delete
them first with 'sbx template delete' / 'sbx snapshot delete' and the team's key to free
their disk).`,
		Example: `  sudo sbx team delete research --yes`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usageErrorf("deleting team %s kills its sandboxes and revokes its keys: pass --yes to confirm", args[0])
			}
			c, err := opts.admin("")
			if err != nil {
				return err
			}
			t, err := findTeam(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			if err := c.DeleteTeam(cmd.Context(), t.TeamID); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted team %s (%s)\n", t.Name, t.TeamID)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "confirm the deletion")
	return cmd
}
