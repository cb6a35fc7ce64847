package cli

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/sdk"
)

func newVolumeCmd() *cobra.Command {
	var opts clientOptions
	cmd := &cobra.Command{
		Use:     "volume",
		Aliases: []string{"vol"},
		Short:   "Persistent volumes: file systems that outlive sandboxes",
		Long: `Manage your team's volumes and their files. A volume is mounted into sandboxes at
create (sbx sandbox create --volume NAME:/path, or the SDKs' volumeMounts) and keeps
its files after they end. Its size is its cap.`,
		Example: `  sbx volume create data
  sbx volume put data /input.csv ./input.csv
  sbx sandbox create --volume data:/mnt/data
  sbx volume ls data / --depth 2
  sbx volume cat data /results.txt
  sbx volume delete data`,
	}
	opts.register(cmd)
	get := func(cmd *cobra.Command, ref string) (*sdk.Volume, error) {
		c, err := opts.client()
		if err != nil {
			return nil, err
		}
		return c.GetVolume(cmd.Context(), ref)
	}
	cmd.AddCommand(
		&cobra.Command{Use: "create NAME", Short: "Create a volume and print its ID", Args: cobra.ExactArgs(1),
			Example: "  sbx volume create data",
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := opts.client()
				if err != nil {
					return err
				}
				v, err := c.CreateVolume(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), v.ID)
				return err
			}},
		newVolumeListCmd(&opts),
		&cobra.Command{Use: "delete NAME|ID", Aliases: []string{"rm"}, Short: "Delete a volume and its files", Args: cobra.ExactArgs(1),
			Example: "  sbx volume delete data",
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := opts.client()
				if err != nil {
					return err
				}
				return c.DeleteVolume(cmd.Context(), args[0])
			}},
		&cobra.Command{Use: "cat NAME|ID PATH", Short: "Print a file of a volume", Args: cobra.ExactArgs(2),
			Example: "  sbx volume cat data /results.txt",
			RunE: func(cmd *cobra.Command, args []string) error {
				v, err := get(cmd, args[0])
				if err != nil {
					return err
				}
				b, err := v.ReadFile(cmd.Context(), args[1])
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}},
		&cobra.Command{Use: "put NAME|ID PATH [FILE]", Short: "Write a file of a volume from FILE or stdin", Args: cobra.RangeArgs(2, 3),
			Example: "  sbx volume put data /input.csv ./input.csv\n  echo hi | sbx volume put data /hello.txt",
			RunE: func(cmd *cobra.Command, args []string) error {
				var r io.Reader = cmd.InOrStdin()
				if len(args) == 3 {
					f, err := os.Open(args[2])
					if err != nil {
						return err
					}
					defer f.Close()
					r = f
				}
				data, err := io.ReadAll(r)
				if err != nil {
					return err
				}
				v, err := get(cmd, args[0])
				if err != nil {
					return err
				}
				return v.WriteFile(cmd.Context(), args[1], data)
			}},
		newVolumeLsCmd(get),
		&cobra.Command{Use: "remove NAME|ID PATH", Short: "Remove a file or a directory tree of a volume", Args: cobra.ExactArgs(2),
			Example: "  sbx volume remove data /tmp",
			RunE: func(cmd *cobra.Command, args []string) error {
				v, err := get(cmd, args[0])
				if err != nil {
					return err
				}
				return v.Remove(cmd.Context(), args[1])
			}},
	)
	return cmd
}

func newVolumeListCmd(opts *clientOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the team's volumes",
		Example: "  sbx volume list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			list, err := c.ListVolumes(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME")
			for _, v := range list {
				fmt.Fprintf(tw, "%s\t%s\n", v.ID, v.Name)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the volumes as JSON")
	return cmd
}

func newVolumeLsCmd(get func(*cobra.Command, string) (*sdk.Volume, error)) *cobra.Command {
	var depth int
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls NAME|ID [PATH]",
		Short:   "List files of a volume",
		Example: "  sbx volume ls data\n  sbx volume ls data /results --depth 3 --json",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := "/"
			if len(args) == 2 {
				p = args[1]
			}
			v, err := get(cmd, args[0])
			if err != nil {
				return err
			}
			list, err := v.List(cmd.Context(), p, depth)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			for _, e := range list {
				fmt.Fprintf(tw, "%s\t%04o\t%d:%d\t%d\t%s\t%s\n", e.Type, e.Mode, e.UID, e.GID, e.Size,
					e.Mtime.Local().Format(time.DateTime), e.Path)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&depth, "depth", 1, "how many levels to descend")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the entries as JSON")
	return cmd
}
