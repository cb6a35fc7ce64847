package cli

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/sdk"
)

func newSandboxNetworkCmd(opts *clientOptions) *cobra.Command {
	var allow, deny []string
	var noInternet bool
	cmd := &cobra.Command{
		Use:   "network ID",
		Short: "Replace a running sandbox's egress policy",
		Long: `Replace the egress policy of a running sandbox (flags left out are cleared).
--allow-out takes CIDRs, addresses and domain names (resolved on the server) and wins
over --deny-out, which takes CIDRs and addresses. A policy narrows what the server
allows; it never opens the host or private ranges.`,
		Example: `  sbx sandbox network $id --deny-out 0.0.0.0/0 --allow-out pypi.org --allow-out 1.1.1.1
  sbx sandbox network $id --no-internet
  sbx sandbox network $id            # back to the server's defaults`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.client()
			if err != nil {
				return err
			}
			u := sdk.NetworkUpdate{AllowOut: allow, DenyOut: deny}
			if noInternet {
				u.AllowInternetAccess = new(false)
			}
			return c.UpdateNetwork(cmd.Context(), args[0], u)
		},
	}
	cmd.Flags().StringArrayVar(&allow, "allow-out", nil, "allowed destination: CIDR, address or domain (repeatable)")
	cmd.Flags().StringArrayVar(&deny, "deny-out", nil, "denied destination: CIDR or address (repeatable); 0.0.0.0/0 for all")
	cmd.Flags().BoolVar(&noInternet, "no-internet", false, "deny all egress")
	return cmd
}

// networkFlags are sbx sandbox create's network and volume options.
type networkFlags struct {
	allow, deny, volumes []string
	private              bool
}

func (n *networkFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&n.allow, "allow-out", nil, "allowed egress destination: CIDR, address or domain (repeatable)")
	f.StringArrayVar(&n.deny, "deny-out", nil, "denied egress destination: CIDR or address (repeatable); 0.0.0.0/0 for all")
	f.BoolVar(&n.private, "private", false, "make the sandbox's ports require its traffic access token")
	f.StringArrayVar(&n.volumes, "volume", nil, "mount a volume: NAME:/path (repeatable)")
}

func (n *networkFlags) apply(o *sdk.CreateOptions) error {
	if len(n.allow) > 0 || len(n.deny) > 0 || n.private {
		o.Network = &sdk.NetworkOptions{AllowOut: n.allow, DenyOut: n.deny}
		if n.private {
			o.Network.AllowPublicTraffic = new(false)
		}
	}
	for _, v := range n.volumes {
		name, path, ok := strings.Cut(v, ":")
		if !ok || name == "" || !strings.HasPrefix(path, "/") {
			return usageErrorf("invalid --volume %q: want NAME:/path, e.g. data:/mnt/data", v)
		}
		if o.VolumeMounts == nil {
			o.VolumeMounts = map[string]string{}
		}
		o.VolumeMounts[path] = name
	}
	return nil
}
