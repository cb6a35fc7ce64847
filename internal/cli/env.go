package cli

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/app"
	"github.com/sbxdev/sbx/internal/datadir"
)

func newEnvCmd() *cobra.Command {
	var dataDir, listen string
	var admin bool
	cmd := &cobra.Command{
		Use:   "env",
		Short: "Print the E2B_* environment for a local sbx server",
		Long: `Print export lines that point the E2B SDKs and this CLI at a local sbx server:
E2B_API_URL, E2B_SANDBOX_URL (the same address: sandbox traffic is routed by header),
E2B_DOMAIN (the sandbox domain: sandbox.getHost(port) is <port>-<id>.<domain>, by default
<port>-<id>.localhost:<server port>, which reaches the server on this machine)
and E2B_API_KEY (the first team's key, read from the data dir). The address is the one
the server last started on this data dir listens on, unless --listen says otherwise.

When the server serves HTTPS (--tls-cert) with a self-signed certificate or one from
a private CA (--tls-ca), it also prints what the SDKs need to trust it:
NODE_EXTRA_CA_CERTS (the JavaScript SDK; adds to Node's roots) and SSL_CERT_FILE
(Go, Python, curl; a bundle of the system's roots plus that CA, since it replaces
the roots rather than adding to them). A certificate from a public CA needs neither.

With --admin it also prints SBX_ADMIN_KEY, the admin key (teams, every team's keys,
budgets, cluster-wide metrics). Both keys are readable by root only.`,
		Example: `  eval "$(sudo sbx env)"
  eval "$(sudo sbx env --data-dir /tmp/sbx --listen 127.0.0.1:3100)"
  eval "$(sudo sbx env --admin)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := app.ReadKeyFile(app.APIKeyFile(dataDir))
			if err != nil {
				return fmt.Errorf("read the API key: %w (start the server once with 'sbx serve --data-dir %s', and run this as the same user, usually root)", err, dataDir)
			}
			recorded, _ := app.ReadKeyFile(app.ServerURLFile(dataDir))
			url := recorded
			if url == "" || cmd.Flags().Changed("listen") {
				scheme := "http"
				if strings.HasPrefix(recorded, "https://") {
					scheme = "https" // --listen names the address, not the protocol
				}
				url = scheme + "://" + listen
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "export E2B_API_URL=%s\n", url)
			fmt.Fprintf(out, "export E2B_SANDBOX_URL=%s\n", url)
			fmt.Fprintf(out, "export E2B_API_KEY=%s\n", key)
			// The SDK's Volume class reaches the content API at
			// https://api.<domain> unless told otherwise.
			fmt.Fprintf(out, "export E2B_VOLUME_API_URL=%s\n", url)
			if d := sandboxDomain(dataDir, url, cmd.Flags().Changed("listen")); d != "" {
				fmt.Fprintf(out, "export E2B_DOMAIN=%s\n", d)
			}
			if strings.HasPrefix(url, "https://") {
				l := datadir.Layout{Root: dataDir}
				if _, err := os.Stat(l.TLSTrust()); err == nil {
					fmt.Fprintf(out, "export NODE_EXTRA_CA_CERTS=%s\n", l.TLSTrust())
					fmt.Fprintf(out, "export SSL_CERT_FILE=%s\n", l.TLSBundle())
				}
			}
			if admin {
				ak, err := app.ReadKeyFile(app.AdminKeyFile(dataDir))
				if err != nil {
					return fmt.Errorf("read the admin key: %w (it is made when 'sbx serve' starts; run this as root)", err)
				}
				fmt.Fprintf(out, "export SBX_ADMIN_KEY=%s\n", ak)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", app.DefaultDataDir, "the server's data dir")
	cmd.Flags().StringVar(&listen, "listen", app.DefaultListen, "the server's --listen address (default: where the server last started on --data-dir listens)")
	cmd.Flags().BoolVar(&admin, "admin", false, "also print SBX_ADMIN_KEY, the admin key")
	return cmd
}

// sandboxDomain is the domain the server recorded at start, or, for an
// address given with --listen, localhost:<port> when that address is local.
func sandboxDomain(dataDir, url string, listenGiven bool) string {
	if !listenGiven {
		if d, err := app.ReadKeyFile(datadir.Layout{Root: dataDir}.SandboxDomain()); err == nil && d != "" {
			return d
		}
	}
	scheme, addr, _ := strings.Cut(url, "://")
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !(ip.IsLoopback() || ip.IsUnspecified())) {
		return ""
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		return "localhost"
	}
	return "localhost:" + port
}
