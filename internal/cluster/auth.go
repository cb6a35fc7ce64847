// Package cluster is how the processes of an sbx cluster talk to each
// other: api replicas (sbx serve --role api) forward sandbox calls and
// sandbox traffic to the node that runs the sandbox (--role node), and a
// node serves them only when they carry the cluster's signature.
//
// The scheme (docs/cluster.md, "Roles and routing"): every request from an
// api replica to a node carries X-Sbx-Cluster-Auth, an HMAC-SHA256 keyed by
// the cluster secret over a timestamp, a random nonce, the name of the
// node it is sent to (--node-name), the method, the request URI, the team
// the replica acts for and the sandbox routing headers (E2b-Sandbox-Id,
// E2b-Sandbox-Port). A node refuses a signature older or newer than
// MaxSkew, one whose nonce it has already seen (a replay), and one made
// for another node, request, team or sandbox; it then acts for the signed
// team without any API key lookup. Nonces are remembered per node, so the
// node name is what keeps a signature used at one node from being
// replayed at another. Tenants never talk to nodes: their API keys are
// refused there.
//
// The format is versioned (Version); a node refuses any other version, so
// every api replica and node of a cluster must run the same sbx release.
package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/proxy"
)

// Header carries the signature of a request from an api replica to a node.
// The node's proxy drops it before sandbox traffic reaches the sandbox.
const Header = proxy.ClusterAuthHeader

// MaxSkew is how far a signature's time may be from the node's clock. It
// also bounds how long a node remembers nonces (twice this).
const MaxSkew = 60 * time.Second

// MinSecretLen is the shortest cluster secret accepted, in bytes.
const MinSecretLen = 32

// SecretEnv is the environment variable a cluster secret may come from.
const SecretEnv = "SBX_CLUSTER_SECRET"

// Secret is the key api replicas and nodes share. It never prints itself.
type Secret struct{ b []byte }

// NewSecret checks s (at least MinSecretLen bytes) and wraps it.
func NewSecret(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	if len(s) < MinSecretLen {
		return Secret{}, fmt.Errorf("the cluster secret has %d bytes: want at least %d random ones "+
			"(e.g. openssl rand -hex 32 > /etc/sbx/cluster-secret), the same on every api replica and node", len(s), MinSecretLen)
	}
	return Secret{b: []byte(s)}, nil
}

// LoadSecret reads the secret from file, or when file is "" from the
// SBX_CLUSTER_SECRET environment variable.
func LoadSecret(file string) (Secret, error) {
	if file == "" {
		v := os.Getenv(SecretEnv)
		if v == "" {
			return Secret{}, fmt.Errorf("--role api and --role node need the cluster secret: give --cluster-secret-file PATH " +
				"(a file holding at least 32 random bytes, e.g. from openssl rand -hex 32, the same on every api replica and node) " +
				"or set " + SecretEnv)
		}
		s, err := NewSecret(v)
		if err != nil {
			return Secret{}, fmt.Errorf("%s: %w", SecretEnv, err)
		}
		return s, nil
	}
	v, err := os.ReadFile(file)
	if err != nil {
		return Secret{}, fmt.Errorf("--cluster-secret-file: %w", err)
	}
	s, err := NewSecret(string(v))
	if err != nil {
		return Secret{}, fmt.Errorf("--cluster-secret-file %s: %w", file, err)
	}
	return s, nil
}

// IsZero tells whether the secret is unset.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

// Derive returns a key for one purpose of its own (an HMAC of the purpose
// under the secret), so keys derived for other uses cannot forge the
// cluster's signatures or each other's.
func (s Secret) Derive(purpose string) []byte {
	h := hmac.New(sha256.New, s.b)
	h.Write([]byte("sbx-cluster-derive\n" + purpose))
	return h.Sum(nil)
}

// LogValue keeps the secret out of logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// String keeps the secret out of formatted output.
func (s Secret) String() string { return "[redacted]" }

// teamPattern is what a signed team ID may look like: it sits in a header
// between separators.
var teamPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{0,128}$`)

// Version is the signature format. v1 (before 2026-12-03) was not bound
// to a node or a sandbox and is refused.
const Version = "v2"

// Routing headers of sandbox traffic: which sandbox and port a node's
// proxy sends the request to. They are signed, so a signature cannot be
// moved to another sandbox.
const (
	SandboxIDHeader   = "E2b-Sandbox-Id"
	SandboxPortHeader = "E2b-Sandbox-Port"
)

// signedFields is what a signature covers.
type signedFields struct {
	ts                int64
	nonce, node       string
	method, uri, team string
	sandbox, port     string
}

// mac is the signature of one request. Each field is length-prefixed:
// node names and URIs cannot make two requests encode alike.
func (s Secret) mac(f signedFields) []byte {
	h := hmac.New(sha256.New, s.b)
	h.Write([]byte("sbx-cluster-" + Version))
	for _, v := range []string{strconv.FormatInt(f.ts, 10), f.nonce, f.node, f.method, f.uri, f.team, f.sandbox, f.port} {
		fmt.Fprintf(h, "\n%d:%s", len(v), v)
	}
	return h.Sum(nil)
}

// Signer signs requests of an api replica.
type Signer struct {
	secret Secret
	now    func() time.Time
}

// NewSigner returns a signer with the cluster secret.
func NewSigner(s Secret) *Signer { return &Signer{secret: s, now: time.Now} }

// Sign sets r's cluster signature for node (its --node-name, as in the
// nodes' heartbeats) and team ("" for sandbox traffic, which the
// sandbox's own tokens authorize). r.URL and the sandbox routing headers
// must be final: the node checks the request URI and headers it receives.
func (g *Signer) Sign(r *http.Request, node, team string) error {
	return g.SignAt(r, node, team, g.now())
}

// SignAt is Sign with the signature's time given (tests of the window).
func (g *Signer) SignAt(r *http.Request, node, team string, at time.Time) error {
	if !teamPattern.MatchString(team) {
		return fmt.Errorf("cluster signature: team ID %q has characters a signature cannot carry", team)
	}
	if node == "" {
		return errors.New("cluster signature: no node name to sign for")
	}
	var n [16]byte
	_, _ = rand.Read(n[:])
	f := signedFields{ts: at.Unix(), nonce: hex.EncodeToString(n[:]), node: node, method: r.Method, uri: r.URL.RequestURI(),
		team: team, sandbox: r.Header.Get(SandboxIDHeader), port: r.Header.Get(SandboxPortHeader)}
	r.Header.Set(Header, fmt.Sprintf("%s;t=%d;n=%s;team=%s;sig=%s", Version, f.ts, f.nonce, team, hex.EncodeToString(g.secret.mac(f))))
	return nil
}

// Verifier checks the signatures a node receives.
type Verifier struct {
	secret Secret
	node   string // this node's name: signatures for others are refused
	now    func() time.Time

	mu     sync.Mutex
	seen   map[string]time.Time // nonce → when it may be forgotten
	sweeps time.Time
}

// NewVerifier returns the verifier of node (its --node-name) with the
// cluster secret.
func NewVerifier(s Secret, node string) *Verifier {
	return &Verifier{secret: s, node: node, now: time.Now, seen: map[string]time.Time{}}
}

// ErrNoSignature is returned for a request without the cluster header.
var ErrNoSignature = errors.New("no cluster signature")

// Verify checks r's signature and returns the team it was made for. The
// errors are errdefs.ErrUnauthenticated; their text says what was wrong
// (a node's clients are api replicas, run by the operator).
func (v *Verifier) Verify(r *http.Request) (team string, err error) {
	raw := r.Header.Get(Header)
	if raw == "" {
		return "", ErrNoSignature
	}
	ts, nonce, team, sig, err := parse(raw)
	if err != nil {
		return "", errdefs.Unauthenticated("invalid %s header: %v", Header, err)
	}
	now := v.now()
	if d := now.Sub(time.Unix(ts, 0)); d > MaxSkew || d < -MaxSkew {
		return "", errdefs.Unauthenticated("%s is %s away from this node's clock (at most %s): a replayed request, "+
			"or clocks out of sync (run NTP on every api replica and node)", Header, d.Round(time.Second).Abs(), MaxSkew)
	}
	want := v.secret.mac(signedFields{ts: ts, nonce: nonce, node: v.node, method: r.Method, uri: r.RequestURI, team: team,
		sandbox: r.Header.Get(SandboxIDHeader), port: r.Header.Get(SandboxPortHeader)})
	if !hmac.Equal(sig, want) {
		return "", errdefs.Unauthenticated("%s does not match this request: signed for another node (this is node %q), "+
			"request, team or sandbox, or the api replica and this node have different cluster secrets", Header, v.node)
	}
	if !v.remember(nonce, now) {
		return "", errdefs.Unauthenticated("%s was already used: a replayed request", Header)
	}
	return team, nil
}

// remember records nonce and tells whether it was new. Nonces are kept
// past the skew window on both sides, after which their signatures fail
// on time anyway.
func (v *Verifier) remember(nonce string, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if now.Sub(v.sweeps) > MaxSkew {
		for n, until := range v.seen {
			if now.After(until) {
				delete(v.seen, n)
			}
		}
		v.sweeps = now
	}
	if _, ok := v.seen[nonce]; ok {
		return false
	}
	v.seen[nonce] = now.Add(2*MaxSkew + time.Second)
	return true
}

func parse(raw string) (ts int64, nonce, team string, sig []byte, err error) {
	parts := strings.Split(raw, ";")
	if parts[0] != Version && strings.HasPrefix(parts[0], "v") && len(parts[0]) <= 4 {
		return 0, "", "", nil, fmt.Errorf("signature format %q, this node takes only %s: every api replica and node "+
			"of a cluster must run the same sbx release", truncate(parts[0]), Version)
	}
	if len(parts) != 5 || parts[0] != Version {
		return 0, "", "", nil, errors.New("want " + Version + ";t=<unix seconds>;n=<nonce>;team=<team ID>;sig=<hex>")
	}
	vals := map[string]string{}
	for _, p := range parts[1:] {
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			return 0, "", "", nil, fmt.Errorf("field %q has no value", truncate(p))
		}
		vals[k] = val
	}
	if ts, err = strconv.ParseInt(vals["t"], 10, 64); err != nil {
		return 0, "", "", nil, errors.New("t is not a Unix time")
	}
	nonce, team = vals["n"], vals["team"]
	if len(nonce) != 32 {
		return 0, "", "", nil, errors.New("n is not a 16-byte hex nonce")
	}
	if _, err := hex.DecodeString(nonce); err != nil {
		return 0, "", "", nil, errors.New("n is not a 16-byte hex nonce")
	}
	if !teamPattern.MatchString(team) {
		return 0, "", "", nil, errors.New("team is not a team ID")
	}
	if sig, err = hex.DecodeString(vals["sig"]); err != nil || len(sig) != sha256.Size {
		return 0, "", "", nil, errors.New("sig is not a hex HMAC-SHA256")
	}
	return ts, nonce, team, sig, nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
