package sdk

import (
	"context"
	"net/http"
)

// AllTraffic is every IPv4 destination, for DenyOut.
const AllTraffic = "0.0.0.0/0"

// NetworkOptions is a sandbox's network at create (E2B's
// SandboxNetworkConfig). AllowOut entries (CIDRs, addresses or domain
// names) win over DenyOut entries (CIDRs or addresses); a policy narrows
// what the server allows, never widens it.
type NetworkOptions struct {
	AllowOut []string `json:"allowOut,omitempty"`
	DenyOut  []string `json:"denyOut,omitempty"`
	// AllowPublicTraffic false makes the sandbox's ports require its
	// TrafficAccessToken; nil means public.
	AllowPublicTraffic *bool `json:"allowPublicTraffic,omitempty"`
}

// NetworkUpdate replaces a running sandbox's egress policy; omitted
// fields are cleared.
type NetworkUpdate struct {
	AllowOut []string `json:"allowOut,omitempty"`
	DenyOut  []string `json:"denyOut,omitempty"`
	// AllowInternetAccess false denies all egress (DenyOut AllTraffic).
	AllowInternetAccess *bool `json:"allow_internet_access,omitempty"`
}

// UpdateNetwork replaces the sandbox's egress policy.
func (s *Sandbox) UpdateNetwork(ctx context.Context, u NetworkUpdate) error {
	return s.client.UpdateNetwork(ctx, s.ID, u)
}

// UpdateNetwork replaces the egress policy of the sandbox id.
func (c *Client) UpdateNetwork(ctx context.Context, id string, u NetworkUpdate) error {
	if err := checkID(id); err != nil {
		return err
	}
	_, err := c.apiDo(ctx, http.MethodPut, "/sandboxes/"+id+"/network", nil, u, nil)
	return err
}
