package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/sdk"
	whsig "github.com/sbxdev/sbx/sdk/webhook"
)

func newWebhookCmd() *cobra.Command {
	var opts clientOptions
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Manage webhooks that receive sandbox lifecycle events",
		Long: `Webhooks POST each event (sandbox created, killed, paused, ...) to your URL, signed
with your secret in two schemes: E2B's e2b-signature and Standard Webhooks'
webhook-signature. Failed deliveries are retried for more than a day.

Try it locally in one minute:
  sbx webhook listen --port 8787 --secret s3cret &
  sbx webhook create --name local --url http://127.0.0.1:8787/ --secret s3cret
  sbx sandbox create   # the listener prints sandbox.lifecycle.created
(a server reaching 127.0.0.1 needs 'sbx serve --webhook-allow-private').`,
	}
	opts.register(cmd)
	cmd.AddCommand(
		newWebhookCreateCmd(&opts), newWebhookListCmd(&opts), newWebhookGetCmd(&opts),
		newWebhookUpdateCmd(&opts), newWebhookDeleteCmd(&opts), newWebhookTestCmd(&opts),
		newWebhookDeliveriesCmd(&opts), newWebhookRedeliverCmd(&opts), newWebhookListenCmd(),
	)
	return cmd
}

// newSecret returns a random Standard Webhooks secret.
func newSecret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

func printWebhooks(w io.Writer, list []sdk.Webhook) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tENABLED\tURL\tEVENTS")
	for _, h := range list {
		enabled := strconv.FormatBool(h.Enabled)
		if !h.Enabled && h.DisabledReason != "" {
			enabled += " (" + h.DisabledReason + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.ID, h.Name, enabled, h.URL, strings.Join(h.Events, ","))
	}
	return tw.Flush()
}

func newWebhookCreateCmd(opts *clientOptions) *cobra.Command {
	var name, target, secret string
	var types []string
	var disabled, asJSON bool
	cmd := &cobra.Command{
		Use:   "create --name NAME --url URL [--event TYPE]... [--secret S]",
		Short: "Register a webhook",
		Example: `  sbx webhook create --name costs --url https://example.com/hooks/e2b --secret "$SECRET"
  sbx webhook create --name all --url https://example.com/h --event sandbox.lifecycle.created --event template.build.failed`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			generated := secret == ""
			if generated {
				secret = newSecret()
			}
			enabled := !disabled
			d, err := c.CreateWebhook(cmd.Context(), sdk.WebhookOptions{Name: &name, URL: &target, Events: types, Enabled: &enabled, Secret: &secret})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), d)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Created webhook %s\n", d.ID)
			if generated {
				fmt.Fprintf(cmd.OutOrStdout(), "Signing secret (shown once, store it now): %s\n", secret)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "name of the webhook (required)")
	f.StringVar(&target, "url", "", "URL that receives the POSTs (required)")
	f.StringSliceVar(&types, "event", []string{events.SandboxCreated, events.SandboxKilled}, "event type to deliver (repeatable); one of: "+strings.Join(events.Types, ", "))
	f.StringVar(&secret, "secret", "", "signing secret (default: a random whsec_ secret, printed once)")
	f.BoolVar(&disabled, "disabled", false, "register without delivering yet")
	f.BoolVar(&asJSON, "json", false, "print the webhook as JSON")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("url")
	return cmd
}

// webhookID resolves a webhook given by ID or by name (names need not be
// unique: an ambiguous one is an error listing the IDs to choose from).
func webhookID(ctx context.Context, c *sdk.Client, ref string) (string, error) {
	list, err := c.ListWebhooks(ctx)
	if err != nil {
		return "", err
	}
	var ids []string
	for _, d := range list {
		if d.ID == ref {
			return d.ID, nil
		}
		if d.Name == ref {
			ids = append(ids, d.ID)
		}
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("no webhook has the ID or name %q (see 'sbx webhook list')", ref)
	case 1:
		return ids[0], nil
	}
	return "", fmt.Errorf("%d webhooks are named %q: pass one of their IDs: %s", len(ids), ref, strings.Join(ids, ", "))
}

func newWebhookListCmd(opts *clientOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List your webhooks",
		Example: `  sbx webhook list --json | jq -r '.[].id'`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			list, err := c.ListWebhooks(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), list)
			}
			return printWebhooks(cmd.OutOrStdout(), list)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newWebhookGetCmd(opts *clientOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "get ID|NAME",
		Short:   "Show one webhook (never its secret)",
		Example: `  sbx webhook get 3f1c... --json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			id, err := webhookID(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			d, err := c.GetWebhook(cmd.Context(), id)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), d)
			}
			return printWebhooks(cmd.OutOrStdout(), []sdk.Webhook{*d})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newWebhookUpdateCmd(opts *clientOptions) *cobra.Command {
	var name, target, secret string
	var types []string
	var enable, disable, asJSON bool
	cmd := &cobra.Command{
		Use:   "update ID|NAME [--name N] [--url U] [--event T]... [--secret S] [--enable|--disable]",
		Short: "Change a webhook; only the given flags change",
		Example: `  sbx webhook update 3f1c... --enable      # resume after an auto-disable
  sbx webhook update 3f1c... --event sandbox.lifecycle.killed`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if enable && disable {
				return usageErrorf("--enable and --disable exclude each other")
			}
			c, err := opts.client()
			if err != nil {
				return err
			}
			id, err := webhookID(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			var in sdk.WebhookOptions
			f := cmd.Flags()
			if f.Changed("name") {
				in.Name = &name
			}
			if f.Changed("url") {
				in.URL = &target
			}
			if f.Changed("event") {
				in.Events = types
			}
			if f.Changed("secret") {
				in.Secret = &secret
			}
			if enable || disable {
				in.Enabled = &enable
			}
			d, err := c.UpdateWebhook(cmd.Context(), id, in)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), d)
			}
			return printWebhooks(cmd.OutOrStdout(), []sdk.Webhook{*d})
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "new name")
	f.StringVar(&target, "url", "", "new URL")
	f.StringSliceVar(&types, "event", nil, "new event types (repeatable; replaces the list)")
	f.StringVar(&secret, "secret", "", "new signing secret")
	f.BoolVar(&enable, "enable", false, "enable (also clears an auto-disable and sends parked deliveries)")
	f.BoolVar(&disable, "disable", false, "stop delivering; deliveries wait until --enable")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newWebhookDeleteCmd(opts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "delete ID|NAME...",
		Short:   "Delete webhooks with their delivery log",
		Example: `  sbx webhook delete 3f1c...`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			for _, ref := range args {
				id, err := webhookID(cmd.Context(), c, ref)
				if err != nil {
					return err
				}
				if err := c.DeleteWebhook(cmd.Context(), id); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted %s\n", id)
			}
			return nil
		},
	}
}

func describeAttempt(a *sdk.WebhookAttempt) string {
	s := fmt.Sprintf("attempt %d %s in %.1f ms", a.Attempt, a.Status, a.DurationMs)
	if a.ResponseHTTPStatusCode != nil {
		s += fmt.Sprintf(", HTTP %d", *a.ResponseHTTPStatusCode)
	}
	if a.ErrorClass != nil {
		s += fmt.Sprintf(", %s: %s", *a.ErrorClass, *a.ErrorMessage)
	}
	return s
}

func newWebhookTestCmd(opts *clientOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "test ID|NAME",
		Short:   "Send a signed test event (type webhook.test) and show the result",
		Example: `  sbx webhook test 3f1c...`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			id, err := webhookID(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			a, err := c.TestWebhook(cmd.Context(), id)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), a)
			}
			fmt.Fprintln(cmd.OutOrStdout(), describeAttempt(a))
			if a.Status != "success" {
				return errors.New("the test delivery failed")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the attempt as JSON")
	return cmd
}

func newWebhookDeliveriesCmd(opts *clientOptions) *cobra.Command {
	var limit int
	var status []string
	var cursor string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "deliveries ID|NAME",
		Short: "Show a webhook's deliveries with every attempt, newest first",
		Example: `  sbx webhook deliveries my-hook --status failed
  sbx webhook deliveries 3f1c... --json | jq '.data[].attempts[-1].errorMessage'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			id, err := webhookID(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			data, next, err := c.WebhookDeliveries(cmd.Context(), id, sdk.DeliveriesOptions{Limit: limit, Status: status, Cursor: cursor})
			if err != nil {
				return err
			}
			if asJSON {
				page := map[string]any{"data": data, "nextCursor": nil}
				if next != "" {
					page["nextCursor"] = next
				}
				return writeJSON(cmd.OutOrStdout(), page)
			}
			out := cmd.OutOrStdout()
			for _, g := range data {
				fmt.Fprintf(out, "%s  %-26s %-8s sandbox=%s event=%s\n", g.DeliveryID, g.EventType, g.Status, g.SandboxID, g.EventID)
				for _, a := range g.Attempts {
					fmt.Fprintf(out, "    %s  %s\n", a.Timestamp.Local().Format(time.DateTime), describeAttempt(a))
				}
				if g.NextAttemptAt != nil {
					fmt.Fprintf(out, "    next attempt at %s\n", g.NextAttemptAt.Local().Format(time.DateTime))
				}
			}
			if next != "" {
				fmt.Fprintf(out, "more: --cursor %s\n", next)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 25, "deliveries per page (1-100)")
	f.StringSliceVar(&status, "status", nil, "only deliveries in these states: success, failed, pending")
	f.StringVar(&cursor, "cursor", "", "page cursor printed by the previous page")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newWebhookRedeliverCmd(opts *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "redeliver WEBHOOK DELIVERY_ID",
		Short:   "Send a delivery once more (DELIVERY_ID: webhook-id or e2b-delivery-id header value)",
		Example: `  sbx webhook redeliver 3f1c... 9b2e...`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			id, err := webhookID(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			delivery, err := c.RedeliverWebhook(cmd.Context(), id, args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Queued delivery %s; see 'sbx webhook deliveries %s'\n", delivery, args[0])
			return nil
		},
	}
}

func newWebhookListenCmd() *cobra.Command {
	var port int
	var host, secret string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "listen --port N [--secret S]",
		Short: "Run a local receiver that verifies signatures and prints each event",
		Example: `  sbx webhook listen --port 8787 --secret s3cret
  sbx webhook listen --port 8787 --json | jq .type`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err != nil {
				return fmt.Errorf("listen on %s:%d: %w", host, port, err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Listening on http://%s/ (Ctrl-C to stop)\n", ln.Addr())
			if secret == "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "No --secret: signatures are shown but not verified.")
			}
			srv := &http.Server{Handler: listenHandler(cmd.OutOrStdout(), secret, asJSON), ReadHeaderTimeout: 10 * time.Second}
			go func() { <-ctx.Done(); _ = srv.Close() }()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&port, "port", 8787, "port to listen on")
	f.StringVar(&host, "host", "127.0.0.1", "address to listen on")
	f.StringVar(&secret, "secret", "", "signing secret; deliveries with a bad signature get 401")
	f.BoolVar(&asJSON, "json", false, "print each verified body as one JSON line")
	return cmd
}

// listenHandler verifies both signatures of each delivery and prints it.
func listenHandler(out io.Writer, secret string, asJSON bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil || r.Method != http.MethodPost {
			http.Error(w, "POST a webhook delivery", http.StatusBadRequest)
			return
		}
		e2b, std := "unchecked", "unchecked"
		ok := true
		if secret != "" {
			e2b, std = "ok", "ok"
			if err := whsig.VerifyE2B(secret, body, r.Header.Get(whsig.HeaderE2BSignature)); err != nil {
				e2b, ok = "BAD ("+err.Error()+")", false
			}
			if err := whsig.VerifyStandard(secret, r.Header, body, 0); err != nil {
				std, ok = "BAD ("+err.Error()+")", false
			}
		}
		var ev events.JSON
		_ = json.Unmarshal(body, &ev)
		if asJSON && ok {
			fmt.Fprintln(out, strings.TrimSpace(string(body)))
		} else if !asJSON {
			fmt.Fprintf(out, "%s  %-26s sandbox=%s team=%s e2b-signature=%s webhook-signature=%s\n",
				time.Now().Format(time.TimeOnly), ev.Type, ev.SandboxID, ev.SandboxTeamID, e2b, std)
			if len(ev.EventData) > 0 {
				data, _ := json.Marshal(ev.EventData)
				fmt.Fprintf(out, "    eventData: %s\n", data)
			}
		}
		if !ok {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
