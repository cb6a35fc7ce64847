package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/sdk"
)

// clientOptions are the flags of every command that talks to a server. They
// override the E2B_* environment variables that `sbx env` prints.
type clientOptions struct {
	apiURL string
	apiKey string
}

// register adds --api-url and --api-key to cmd and all its subcommands.
func (o *clientOptions) register(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&o.apiURL, "api-url", "", "server URL (default $E2B_API_URL, else "+sdk.DefaultURL+")")
	f.StringVar(&o.apiKey, "api-key", "", "API key (default $E2B_API_KEY)")
}

// errNoAPIKey is what both clients say when there is no key to send.
var errNoAPIKey = errors.New(`no API key: run 'eval "$(sbx env)"' to use the local server's key, or pass --api-key`)

// config resolves the server URLs and the key from the environment and the
// flags; it serves both the SDK client and the JSON apiClient. An
// --api-url also becomes the sandbox URL: `sbx serve` serves both on one
// listener, and a user who points the CLI elsewhere means all of it.
func (o *clientOptions) config() (sdk.Config, error) {
	cfg := sdk.ConfigFromEnv()
	if o.apiURL != "" {
		cfg.APIURL = o.apiURL
		cfg.SandboxURL = o.apiURL
	}
	if o.apiKey != "" {
		cfg.APIKey = o.apiKey
	}
	if cfg.APIKey == "" {
		return cfg, errNoAPIKey
	}
	return cfg, nil
}

// client builds an SDK client from the environment and the flags.
func (o *clientOptions) client() (*sdk.Client, error) {
	cfg, err := o.config()
	if err != nil {
		return nil, err
	}
	cfg.HTTPClient = &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialWithHint,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     90 * time.Second,
	}}
	return sdk.NewClient(cfg)
}

// parsePairs turns repeated K=V flag values into a map.
func parsePairs(flag string, values []string) (map[string]string, error) {
	if len(values) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(values))
	for _, v := range values {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, usageErrorf("invalid --%s %q: want KEY=VALUE", flag, v)
		}
		m[k] = val
	}
	return m, nil
}

// parseTimeout accepts whole seconds ("300", as the E2B API counts) or a Go
// duration ("5m", "1h30m").
func parseTimeout(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, usageErrorf("invalid timeout %q: must not be negative", s)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, usageErrorf("invalid timeout %q: want seconds (300) or a duration (5m, 1h)", s)
	}
	return d, nil
}

// dialWithHint explains the most common first-run failure: no server.
func dialWithHint(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("%w (is `sbx serve` running at %s? set E2B_API_URL or --api-url to its address)", err, addr)
	}
	return conn, err
}

// completeIDs completes the first argument with the team's sandbox IDs.
func (o *clientOptions) completeIDs(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := o.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
	defer cancel()
	list, err := c.List(ctx, sdk.ListOptions{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ids := make([]string, 0, len(list))
	for _, s := range list {
		ids = append(ids, s.SandboxID+"\t"+s.TemplateID+" "+s.State)
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}

// commandInputs parses what `sandbox exec` and `run-code` share: an
// optional timeout ("" = none) and --env KEY=VALUE pairs.
func commandInputs(timeout string, envs []string) (time.Duration, map[string]string, error) {
	var d time.Duration
	if timeout != "" {
		var err error
		if d, err = parseTimeout(timeout); err != nil {
			return 0, nil, err
		}
	}
	ev, err := parsePairs("env", envs)
	if err != nil {
		return 0, nil, err
	}
	return d, ev, nil
}
