package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/network"
	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/internal/store"
)

// NetworkPolicies applies sandbox egress policies (network.Manager).
type NetworkPolicies interface {
	SetPolicy(ctx context.Context, id string, p network.Policy) error
}

// pausedEgress records a policy set while a sandbox is paused without its
// memory where its resume reads it (sandbox.Manager).
type pausedEgress interface {
	SetPausedEgress(ctx context.Context, id string, p network.Policy) error
}

// NetworkStore keeps each sandbox's network settings (sqlstore.Networks).
type NetworkStore interface {
	PutNetwork(ctx context.Context, sandboxID, config, trafficToken string) error
	Network(ctx context.Context, sandboxID string) (config, trafficToken string, err error)
}

// TrafficTokenHeader carries a sandbox's traffic access token to its
// ports when public traffic is off (E2B's header name).
const TrafficTokenHeader = "E2b-Traffic-Access-Token"

// networking is the API's part of sandbox networks: egress policies,
// the traffic access token and the sandbox domain.
type networking struct {
	policies NetworkPolicies // nil: policies refused, unless onNodes
	onNodes  bool            // an api replica: the node that runs the sandbox applies its policy
	store    NetworkStore
	domain   string // what create/connect return as `domain`; "" = null

	mu     sync.Mutex
	tokens map[string]string // sandbox ID → traffic token ("" = public), read through
}

// SetNetworking enables network settings. domain is the sandbox domain
// clients build host names from (<port>-<id>.<domain>).
func (s *Server) SetNetworking(p NetworkPolicies, st NetworkStore, domain string) {
	s.net = &networking{policies: p, store: st, domain: domain, tokens: map[string]string{}}
}

// SetNetworkingOnNodes is SetNetworking for an api replica: creates carry
// their network settings to the node, which applies and stores them
// (api.Server.createOnNode); this server checks them and reads them back.
func (s *Server) SetNetworkingOnNodes(st NetworkStore, domain string) {
	s.SetNetworking(nil, st, domain)
	s.net.onNodes = true
}

// networkJSON is E2B's SandboxNetworkConfig. The fields sbx cannot honour
// are refused with a 400 naming them rather than dropped.
type networkJSON struct {
	AllowOut           []string        `json:"allowOut,omitempty"`
	DenyOut            []string        `json:"denyOut,omitempty"`
	AllowPublicTraffic *bool           `json:"allowPublicTraffic,omitempty"`
	EgressProxy        json.RawMessage `json:"egressProxy,omitempty"`
	Rules              json.RawMessage `json:"rules,omitempty"`
	MaskRequestHost    string          `json:"maskRequestHost,omitempty"`
	HTTPSPorts         []int           `json:"httpsPorts,omitempty"`
}

// networkUpdate is E2B's SandboxNetworkUpdateConfig.
type networkUpdate struct {
	AllowOut            []string        `json:"allowOut"`
	DenyOut             []string        `json:"denyOut"`
	EgressProxy         json.RawMessage `json:"egressProxy"`
	Rules               json.RawMessage `json:"rules"`
	AllowInternetAccess *bool           `json:"allow_internet_access"`
}

var allTraffic = []string{"0.0.0.0/0"}

func unsupported(egressProxy, rules json.RawMessage) error {
	if len(egressProxy) > 0 && string(egressProxy) != "null" {
		return errdefs.Invalid("network.egressProxy is not supported by sbx (no SOCKS5 tunnelling); leave it out")
	}
	if len(rules) > 0 && string(rules) != "null" && string(rules) != "{}" {
		return errdefs.Invalid("network.rules is not supported by sbx (it has no egress proxy to inject headers); leave it out and send the headers from the sandbox")
	}
	return nil
}

// plan turns a create body's network settings into a policy, a traffic
// token and what to store. allowInternet false is E2B's denyOut 0.0.0.0/0:
// with allowOut entries the sandbox then needs its interface after all.
func (n *networking) plan(raw *networkJSON, allowInternet *bool) (network.Policy, *networkJSON, string, bool, error) {
	internet := allowInternet == nil || *allowInternet
	if raw == nil {
		return network.Policy{}, nil, "", internet, nil
	}
	if err := unsupported(raw.EgressProxy, raw.Rules); err != nil {
		return network.Policy{}, nil, "", false, err
	}
	if raw.MaskRequestHost != "" {
		return network.Policy{}, nil, "", false, errdefs.Invalid("network.maskRequestHost is not supported by sbx; leave it out")
	}
	if len(raw.HTTPSPorts) > 0 {
		return network.Policy{}, nil, "", false, errdefs.Invalid("network.httpsPorts is not supported by sbx (the proxy reaches sandbox ports over plain HTTP); leave it out")
	}
	deny := raw.DenyOut
	if !internet {
		deny = append(slices.Clone(deny), allTraffic...)
	}
	p, err := network.ParsePolicy(raw.AllowOut, deny)
	if err != nil {
		return network.Policy{}, nil, "", false, err
	}
	if !p.Empty() && n.policies == nil && !n.onNodes {
		return network.Policy{}, nil, "", false, errdefs.Precondition("network.allowOut/denyOut: this server applies no egress policies")
	}
	token := ""
	if raw.AllowPublicTraffic != nil && !*raw.AllowPublicTraffic {
		token = randomToken()
	}
	// Without internet but with allowed destinations the sandbox needs its
	// interface, its egress then closed by the policy.
	return p, &networkJSON{AllowOut: raw.AllowOut, DenyOut: deny, AllowPublicTraffic: raw.AllowPublicTraffic},
		token, internet || len(raw.AllowOut) > 0, nil
}

// apply sets a new sandbox's policy and stores its settings.
func (n *networking) apply(ctx context.Context, id string, p network.Policy, cfg *networkJSON, token string) error {
	if !p.Empty() {
		if err := n.policies.SetPolicy(ctx, id, p); err != nil {
			return err
		}
	}
	if cfg == nil {
		return nil
	}
	b, _ := json.Marshal(cfg)
	if err := n.store.PutNetwork(ctx, id, string(b), token); err != nil {
		return err
	}
	n.mu.Lock()
	n.tokens[id] = token
	n.mu.Unlock()
	return nil
}

// settings returns a sandbox's stored settings (nil when none).
func (n *networking) settings(ctx context.Context, id string) (*networkJSON, string, error) {
	raw, token, err := n.store.Network(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	var cfg networkJSON
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return nil, "", err
	}
	return &cfg, token, nil
}

// trafficToken returns the token a sandbox's ports require ("" = none),
// cached: it is fixed at create.
func (n *networking) trafficToken(ctx context.Context, id string) (string, error) {
	n.mu.Lock()
	tok, ok := n.tokens[id]
	n.mu.Unlock()
	if ok {
		return tok, nil
	}
	_, tok, err := n.settings(ctx, id)
	if err != nil {
		return "", err
	}
	n.mu.Lock()
	if len(n.tokens) > 100_000 { // IDs of gone sandboxes: start over
		clear(n.tokens)
	}
	n.tokens[id] = tok
	n.mu.Unlock()
	return tok, nil
}

// gate checks the traffic access token of a request to a sandbox port
// other than the agent's (which has its own access token). It answers
// and returns false when the request may not pass.
func (s *Server) gate(w http.ResponseWriter, r *http.Request, t proxy.Target) bool {
	if s.net == nil || t.Port == proxy.EnvdPort {
		return true
	}
	want, err := s.net.trafficToken(r.Context(), t.SandboxID)
	if err != nil {
		s.fail(w, err)
		return false
	}
	if want == "" {
		return true
	}
	got := r.Header.Get(TrafficTokenHeader)
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 {
		return true
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusForbidden)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": http.StatusForbidden, "sandboxId": t.SandboxID,
		"message": "this sandbox's public traffic is off: send its trafficAccessToken in the " + TrafficTokenHeader + " header"})
	return false
}

// updateNetwork is PUT /sandboxes/{id}/network: the whole egress policy is
// replaced; omitted fields are cleared.
func (s *Server) updateNetwork(w http.ResponseWriter, r *http.Request) {
	var body networkUpdate
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	if s.net == nil || s.net.policies == nil {
		s.fail(w, errdefs.Precondition("this server applies no egress policies"))
		return
	}
	if err := unsupported(body.EgressProxy, body.Rules); err != nil {
		s.fail(w, err)
		return
	}
	sb, err := s.sandboxes.Get(r.Context(), team(r).ID, r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	if sb.State == store.StateKilled {
		s.fail(w, errdefs.NotFound("sandbox %s not found", sb.ID))
		return
	}
	deny := body.DenyOut
	if body.AllowInternetAccess != nil && !*body.AllowInternetAccess {
		deny = append(slices.Clone(deny), allTraffic...)
	}
	p, err := network.ParsePolicy(body.AllowOut, deny)
	if err != nil {
		s.fail(w, err)
		return
	}
	if !sb.AllowInternet && (len(body.AllowOut) > 0 || len(deny) == 0) {
		s.fail(w, errdefs.Precondition("sandbox %s was created without internet access and has no network interface to open; "+
			"create it with network.denyOut [\"0.0.0.0/0\"] instead to change its egress later", sb.ID))
		return
	}
	if err := s.net.policies.SetPolicy(r.Context(), sb.ID, p); err != nil {
		s.fail(w, err)
		return
	}
	if ps, ok := s.sandboxes.(pausedEgress); ok && sb.State == store.StatePaused {
		if err := ps.SetPausedEgress(r.Context(), sb.ID, p); err != nil {
			s.fail(w, err)
			return
		}
	}
	cfg, token, err := s.net.settings(r.Context(), sb.ID)
	if err != nil {
		s.fail(w, err)
		return
	}
	if cfg == nil {
		cfg = &networkJSON{}
	}
	cfg.AllowOut, cfg.DenyOut = body.AllowOut, deny
	b, _ := json.Marshal(cfg)
	if err := s.net.store.PutNetwork(r.Context(), sb.ID, string(b), token); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// domain is what create and connect return as the sandbox domain.
func (s *Server) domain() *string {
	if s.net == nil || s.net.domain == "" {
		return nil
	}
	d := s.net.domain
	return &d
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// connected is the connect/resume answer: the sandbox with its domain and
// traffic token, which a client that did not create it needs too.
func (s *Server) connected(ctx context.Context, sb store.Sandbox) sandboxJSON {
	out := toSandboxJSON(sb)
	out.Domain = s.domain()
	if s.net != nil {
		if tok, err := s.net.trafficToken(ctx, sb.ID); err == nil && tok != "" {
			out.TrafficAccessToken = &tok
		}
	}
	return out
}
