package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sbxdev/sbx/sdk"
	"github.com/spf13/cobra"
)

func newEventsCmd() *cobra.Command {
	var opts clientOptions
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Read sandbox lifecycle events",
	}
	opts.register(cmd)
	cmd.AddCommand(newEventsTailCmd(&opts), newEventsListCmd(&opts))
	return cmd
}

func printEvent(w io.Writer, ev *sdk.Event, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(ev)
		fmt.Fprintln(w, string(b))
		return
	}
	ts := ev.Timestamp
	if t, err := time.Parse(time.RFC3339Nano, ev.Timestamp); err == nil {
		ts = t.Local().Format("2006-01-02 15:04:05.000")
	}
	line := fmt.Sprintf("%s  %-26s sandbox=%s", ts, ev.Type, ev.SandboxID)
	if ev.SandboxTemplateID != "" {
		line += " template=" + ev.SandboxTemplateID
	}
	if len(ev.EventData) > 0 {
		data, _ := json.Marshal(ev.EventData)
		line += " " + string(data)
	}
	fmt.Fprintln(w, line)
}

func newEventsListCmd(opts *clientOptions) *cobra.Command {
	var sandbox string
	var types []string
	var limit, offset int
	var asc, asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--sandbox ID]",
		Short: "List past events, newest first",
		Example: `  sbx events list --sandbox 0a1b2c3d4e5f --asc
  sbx events list --type sandbox.lifecycle.killed --limit 100 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			list, err := c.ListEvents(cmd.Context(), sdk.EventsOptions{SandboxID: sandbox, Types: types,
				Limit: limit, Offset: offset, Ascending: asc})
			if err != nil {
				return err
			}
			for i := range list {
				printEvent(cmd.OutOrStdout(), &list[i], asJSON)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&sandbox, "sandbox", "", "only this sandbox's events")
	f.StringSliceVar(&types, "type", nil, "only these event types (repeatable)")
	f.IntVar(&limit, "limit", 10, "events to show (1-100)")
	f.IntVar(&offset, "offset", 0, "events to skip")
	f.BoolVar(&asc, "asc", false, "oldest first")
	f.BoolVar(&asJSON, "json", false, "one JSON object per line")
	return cmd
}

func newEventsTailCmd(opts *clientOptions) *cobra.Command {
	var sandbox, since string
	var types []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Follow events live (reconnects and resumes where it left off)",
		Example: `  sbx events tail
  sbx events tail --type sandbox.lifecycle.killed --json | jq .eventData.kill_reason
  sbx events tail --since 0    # replay everything, then follow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			so := sdk.StreamEventsOptions{Types: types, SandboxID: sandbox, After: since}
			for backoff := time.Second; ; {
				err := c.StreamEvents(ctx, so, func(ev sdk.Event, id string) {
					printEvent(cmd.OutOrStdout(), &ev, asJSON)
					if id != "" {
						so.After = id // a reconnect resumes after it
					}
				})
				if ctx.Err() != nil {
					return nil
				}
				var ae *sdk.APIError
				if errors.As(err, &ae) && ae.Status/100 == 4 {
					return err // bad flags or key: reconnecting will not help
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "stream interrupted (%v); reconnecting in %s\n", err, backoff)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 30*time.Second)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&sandbox, "sandbox", "", "only this sandbox's events")
	f.StringSliceVar(&types, "type", nil, "only these event types (repeatable)")
	f.StringVar(&since, "since", "", "replay events after this sequence number (the SSE id) before following")
	f.BoolVar(&asJSON, "json", false, "one JSON object per line")
	return cmd
}
