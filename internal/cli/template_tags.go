package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// Tags name builds of a template (E2B's Template.assignTags, getTags and
// removeTags). "NAME" alone, or NAME:default, is the latest build.

func newTemplateTagCmd(opts *clientOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tag NAME[:TAG] NEWTAG...",
		Short: "Give the build NAME:TAG designates more tags (NAME alone: the latest build)",
		Long: `Tag points tags at one build of a template. Sandboxes then start from that build with
Sandbox.create('NAME:NEWTAG') or 'sbx sandbox create -t NAME:NEWTAG', however often the template
is rebuilt later. A tag that points elsewhere moves. The source may also be a build ID
(NAME:<buildID>). The tag "default" always means the latest build and cannot be assigned.`,
		Example: `  sbx template tag my-app production          # tag the latest build
  sbx template tag my-app:v1 stable rollback   # tag the build tagged v1`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, hc, err := opts.rawConfig()
			if err != nil {
				return err
			}
			var out struct {
				Tags    []string `json:"tags"`
				BuildID string   `json:"buildID"`
			}
			if err := apiCall(cmd.Context(), hc, cfg, http.MethodPost, "/templates/tags",
				map[string]any{"target": args[0], "tags": args[1:]}, &out); err != nil {
				return fmt.Errorf("tag %s: %w", args[0], err)
			}
			if asJSON {
				return printJSON(cmd, out)
			}
			name, _, _ := strings.Cut(args[0], ":")
			fmt.Fprintf(cmd.OutOrStdout(), "Tagged build %s as %s\n", out.BuildID, strings.Join(out.Tags, ", "))
			fmt.Fprintf(cmd.OutOrStdout(), "Start a sandbox from it: sbx sandbox create -t %s:%s\n", name, out.Tags[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newTemplateUntagCmd(opts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "untag NAME TAG...",
		Short: "Remove tags from a template (its builds stay; running sandboxes keep running)",
		Long: `Untag removes tags of a template. Nothing is removed when one of them does not exist.
The tag "default" (the latest build) cannot be removed.`,
		Example: `  sbx template untag my-app staging`,
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, hc, err := opts.rawConfig()
			if err != nil {
				return err
			}
			if err := apiCall(cmd.Context(), hc, cfg, http.MethodDelete, "/templates/tags",
				map[string]any{"name": args[0], "tags": args[1:]}, nil); err != nil {
				return fmt.Errorf("untag %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed tags %s from %s\n", strings.Join(args[1:], ", "), args[0])
			return nil
		},
	}
}

func newTemplateTagsCmd(opts *clientOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tags NAME",
		Short: "List a template's tags and the builds they designate",
		Example: `  sbx template tags my-app
  sbx template tags my-app --json | jq -r '.[] | select(.tag=="production") | .buildID'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, hc, err := opts.rawConfig()
			if err != nil {
				return err
			}
			var tags []struct {
				Tag       string    `json:"tag"`
				BuildID   string    `json:"buildID"`
				CreatedAt time.Time `json:"createdAt"`
			}
			if err := apiCall(cmd.Context(), hc, cfg, http.MethodGet, "/templates/"+url.PathEscape(args[0])+"/tags", nil, &tags); err != nil {
				return fmt.Errorf("tags of %s: %w", args[0], err)
			}
			if asJSON {
				return printJSON(cmd, tags)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "TAG\tBUILD ID\tCREATED")
			for _, t := range tags {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Tag, t.BuildID, t.CreatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
