package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/events"
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

func printEvent(w io.Writer, ev *events.JSON, asJSON bool) {
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
			c, err := opts.api()
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}, "offset": {strconv.Itoa(offset)}, "orderAsc": {strconv.FormatBool(asc)}}
			for _, t := range types {
				q.Add("types", t)
			}
			path := "/events/sandboxes"
			if sandbox != "" {
				path += "/" + url.PathEscape(sandbox)
			}
			var list []events.JSON
			if err := c.do(cmd.Context(), "GET", path+"?"+q.Encode(), nil, &list); err != nil {
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
			c, err := opts.api()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			q := url.Values{}
			for _, t := range types {
				q.Add("types", t)
			}
			if sandbox != "" {
				q.Set("sandboxId", sandbox)
			}
			last := since
			for backoff := time.Second; ; {
				err := c.tail(ctx, q, &last, func(ev *events.JSON) { printEvent(cmd.OutOrStdout(), ev, asJSON) })
				if ctx.Err() != nil {
					return nil
				}
				if err != nil && strings.Contains(err.Error(), "HTTP 4") {
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

// tail reads the SSE stream until it ends, updating *last with each
// event's id so a reconnect resumes with Last-Event-ID.
func (c *apiClient) tail(ctx context.Context, q url.Values, last *string, emit func(*events.JSON)) error {
	q2 := url.Values{}
	for k, v := range q {
		q2[k] = v
	}
	if *last != "" {
		q2.Set("lastEventId", *last)
	}
	resp, err := c.request(ctx, "GET", "/events/stream?"+q2.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var id, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != "" {
				var ev events.JSON
				if err := json.Unmarshal([]byte(data), &ev); err == nil {
					emit(&ev)
				}
				if id != "" {
					*last = id
				}
			}
			id, data = "", ""
		case strings.HasPrefix(line, "id:"):
			id = strings.TrimSpace(line[3:])
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimSpace(line[5:])
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("server closed the stream")
}
