// Package app wires sbx's components together for `sbx serve`. Wiring is
// by hand, in one place; closers run in reverse order at shutdown.
package app

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/liveness"
	"github.com/sbxdev/sbx/internal/monitor"
	"github.com/sbxdev/sbx/internal/netguard"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/telemetry"
	"github.com/sbxdev/sbx/internal/webhook"
)

// Config is the server configuration, parsed once in the CLI and validated
// at start-up.
type Config struct {
	Listen  string // host:port of the API, proxy and dashboard
	TLS     TLSConfig
	Version string // of this binary, for the log (sbx version)
	DataDir string // state: SQLite, API key, sandboxes
	// Database is a postgres:// URL of a database several servers share;
	// "" = the SQLite file of the data dir.
	Database string
	// NodeName names this server among those sharing a database: the
	// sandboxes it runs are its own, and only those does its start-up
	// recovery touch. "" = the hostname and listen port.
	NodeName string
	// Coordination: auto, kubernetes, postgres or file (coordination.go).
	Coordination string
	// Liveness times the heartbeats of servers sharing a PostgreSQL
	// database and how long a silent one is given (--node-grace).
	Liveness    liveness.Config
	Runtime     string   // crun, runc or runsc
	RuntimeArgs []string // extra global flags for the runtime, e.g. --platform=ptrace for runsc
	Domain      string   // optional: host routing <port>-<id>.<domain>
	AgentDir    string   // where envd and codeinterp binaries are found ("" = next to sbx)
	RootfsCache string   // root filesystem cache shared by data dirs ("" = default)
	Webhooks    WebhookConfig
	Builds      BuildConfig
	Registry    RegistryConfig
	// Pools maps a template to its warm pool size as "min" or "min:max";
	// a min of 0 with no max disables the pool.
	Pools map[string]string
	// Monitoring: cost rates, runaway policies, metrics exposure (issue 7).
	Monitoring monitor.Config
	// PauseDiskAfter moves a sandbox paused this long from memory to disk
	// (checkpoint; runsc only); 0 = never, > 0 also checkpoints paused
	// sandboxes at shutdown.
	PauseDiskAfter time.Duration
	// SnapshotRuntime takes and restores template snapshots (a template's
	// start command running, saved at the end of its build): "auto" = runsc
	// when installed, "runsc", or "none" to run start commands at sandbox
	// start instead. SnapshotRuntimeArgs are its extra global flags when it
	// is not the server's runtime.
	SnapshotRuntime     string
	SnapshotRuntimeArgs []string
	// SandboxAllowCIDRs opens IPv4 ranges (or single addresses) to sandbox
	// egress, which by default stops at private and reserved ranges and
	// at this host's own addresses (sbx serve --sandbox-allow-cidr).
	SandboxAllowCIDRs []string
	// TeamMaxSandboxes caps each team's running and paused sandboxes
	// (0 = no cap); the admin sets a team's own cap (sbx team update).
	TeamMaxSandboxes int
	// TeamMaxSnapshots caps each team's sandbox snapshots (0 = no cap):
	// each holds a copy of a sandbox's writable layer on this disk.
	TeamMaxSnapshots int
	// UserNS runs crun and runc sandboxes in user namespaces: root inside
	// is an unprivileged host user (DefaultUserNS; runsc is its own kernel).
	UserNS bool
	// Telemetry says where traces go (--otlp-endpoint).
	Telemetry telemetry.Config
	// Pprof serves Go's profiles on this loopback host:port ("" = off).
	Pprof string
	// Blob is the blob store templates and paused sandboxes are published
	// to (--blob-store; blob.go).
	Blob BlobConfig
	// Role is what this process runs in a cluster (roles.go): RoleAll
	// (one box), RoleAPI or RoleNode.
	Role string
	// ClusterSecretFile holds the secret api replicas and nodes sign
	// their requests with ("" = $SBX_CLUSTER_SECRET); --role api/node.
	ClusterSecretFile string
	// AdvertiseURL is where api replicas reach this node ("" = its
	// listen URL); --role node.
	AdvertiseURL string
	// CPUOvercommit is how many millicores of sandbox CPU limits a node
	// takes per millicore of the host, for placement (roles.go).
	CPUOvercommit float64
	// clusterSecret is loaded from ClusterSecretFile by Validate.
	clusterSecret cluster.Secret
}

// defaultAgentDir finds envd for the sbx binary at exe: beside it (a
// build tree's bin/), else in ../lib/sbx (what `make install` and the
// Debian package lay out: /usr/bin/sbx, /usr/lib/sbx/envd, since envd is
// not a command users run on the host).
func defaultAgentDir(exe string) string {
	dir := filepath.Dir(exe)
	if _, err := os.Stat(filepath.Join(dir, "envd")); err == nil {
		return dir
	}
	lib := filepath.Join(filepath.Dir(dir), "lib", "sbx")
	if _, err := os.Stat(filepath.Join(lib, "envd")); err == nil {
		return lib
	}
	return dir // the error then names where envd was expected first
}

// DefaultPools keeps two ready sandboxes of each built-in template from
// start-up, and gives any other template a pool sized by demand (0 to 4)
// from its first sandbox on.
func DefaultPools() map[string]string {
	return map[string]string{"base": "2:16", "code-interpreter": "2:4", sandbox.AnyTemplate: "0:4"}
}

// DefaultPoolsText lists DefaultPools for help texts.
func DefaultPoolsText() string {
	d := DefaultPools()
	keys := slices.Sorted(maps.Keys(d))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + d[k]
	}
	return strings.Join(parts, ",")
}

// PoolSizes parses Pools.
func (c *Config) PoolSizes() (map[string]sandbox.PoolSize, error) {
	out := map[string]sandbox.PoolSize{}
	for tpl, spec := range c.Pools {
		minS, maxS, hasMax := strings.Cut(spec, ":")
		lo, err := strconv.Atoi(minS)
		if err != nil || lo < 0 {
			return nil, fmt.Errorf("--pool %s=%s: want min or min:max, e.g. base=2:8", tpl, spec)
		}
		hi := lo
		if hasMax {
			if hi, err = strconv.Atoi(maxS); err != nil || hi < lo {
				return nil, fmt.Errorf("--pool %s=%s: max must be a number ≥ min", tpl, spec)
			}
		}
		out[tpl] = sandbox.PoolSize{Min: lo, Max: hi}
	}
	return out, nil
}

// WebhookConfig is the webhook delivery part of the configuration.
type WebhookConfig struct {
	AllowPrivate bool     // allow deliveries to private/loopback addresses (local development)
	AllowCIDRs   []string // extra destinations allowed despite being private
	Workers      int      // deliveries in flight over all webhooks (0: webhook.DefaultWorkers)
	Concurrency  int      // deliveries in flight to one webhook (0: webhook.DefaultPerWebhook)
}

// engineConfig is the webhook engine's configuration on server node.
func (w WebhookConfig) engineConfig(node string) webhook.Config {
	return webhook.Config{AllowPrivate: w.AllowPrivate, AllowCIDRs: w.AllowCIDRs, Node: node,
		Workers: w.Workers, PerWebhook: w.Concurrency}
}

// validate checks the delivery concurrency flags.
func (w WebhookConfig) validate() error {
	if w.Workers < 0 || w.Concurrency < 0 {
		return fmt.Errorf("--webhook-workers %d, --webhook-concurrency %d: want positive numbers", w.Workers, w.Concurrency)
	}
	workers, per := cmp.Or(w.Workers, webhook.DefaultWorkers), cmp.Or(w.Concurrency, webhook.DefaultPerWebhook)
	if per > workers {
		return fmt.Errorf("--webhook-concurrency %d exceeds --webhook-workers %d: one webhook cannot have more deliveries in flight than all of them", per, workers)
	}
	return nil
}

// BuildConfig bounds template builds: each build sandbox, and how many
// builds run at once.
type BuildConfig struct {
	Limits             builder.Limits
	Concurrency        int // builds running at once; the rest wait
	ConcurrencyPerTeam int // builds of one team running at once
	// TeamMaxUploadMB caps the build-context uploads one team holds in the
	// shared blob store (cluster roles), in MiB; 0: no cap.
	TeamMaxUploadMB int64
}

// Default build concurrency: two builds at once, one per team, so one
// team's builds never keep another's waiting for a slot.
const (
	DefaultBuildConcurrency        = 2
	DefaultBuildConcurrencyPerTeam = 1
	// DefaultTeamMaxUploadMB: 10 GiB of build context per team, kept 48 h;
	// a normal team's uploads are far below (each step's is at most 2 GiB).
	DefaultTeamMaxUploadMB = 10 << 10
)

// RegistryConfig guards and bounds the image pulls of templates built FROM
// an image (fromImage).
type RegistryConfig struct {
	AllowPrivate bool     // allow registries on private, loopback and link-local addresses
	AllowCIDRs   []string // allow these ranges only
	MaxImageMB   int      // cap of one image, downloaded and unpacked
}

// Guard is the SSRF guard every connection of a pull goes through.
func (r RegistryConfig) Guard() (*netguard.Guard, error) {
	allow, err := netguard.ParsePrefixes("--registry-allow-cidr", r.AllowCIDRs)
	if err != nil {
		return nil, err
	}
	return &netguard.Guard{AllowAll: r.AllowPrivate, Allow: allow, Hint: builder.RegistryGuardHint}, nil
}

// Defaults.
const (
	DefaultListen  = "127.0.0.1:3000"
	DefaultDataDir = "/var/lib/sbx"
	DefaultRuntime = "crun"
	DefaultUserNS  = true
	// DefaultSnapshotRuntime picks runsc when it is installed.
	DefaultSnapshotRuntime = "auto"
	// DefaultTeamMaxSnapshots bounds the disk one team's snapshots take.
	DefaultTeamMaxSnapshots = 100
)

// Validate checks the configuration and fills derived defaults.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen %q: want host:port, e.g. 127.0.0.1:3000: %w", c.Listen, err)
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if c.DataDir == "" {
		return fmt.Errorf("--data-dir must not be empty")
	}
	if err := c.Telemetry.Validate(); err != nil {
		return err
	}
	if err := validatePprof(c.Pprof); err != nil {
		return err
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("--data-dir %q: %w", c.DataDir, err)
	}
	c.DataDir = abs
	if c.Database != "" && !sqldb.IsPostgres(c.Database) {
		return fmt.Errorf("--database %q: want a postgres:// URL (e.g. postgres://sbx:secret@db.internal/sbx); leave it out to use SQLite in the data dir", c.Database)
	}
	if c.Liveness == (liveness.Config{}) {
		c.Liveness = liveness.DefaultConfig
	}
	if err := c.Liveness.Validate(); err != nil {
		return fmt.Errorf("--node-grace: %w", err)
	}
	if err := c.validateCoordination(); err != nil {
		return err
	}
	if len(c.NodeName) > 128 || strings.ContainsAny(c.NodeName, " \t\n") {
		return fmt.Errorf("--node-name %q: use up to 128 characters without spaces (e.g. host-a:3000)", c.NodeName)
	}
	switch c.Runtime {
	case "crun", "runc", "runsc":
	default:
		return fmt.Errorf("--runtime %q: use crun, runc or runsc", c.Runtime)
	}
	switch c.SnapshotRuntime {
	case "":
		c.SnapshotRuntime = DefaultSnapshotRuntime
	case "auto", "runsc", "none":
	default:
		return fmt.Errorf("--snapshot-runtime %q: use auto, runsc or none (only runsc can checkpoint here)", c.SnapshotRuntime)
	}
	c.Domain = strings.Trim(c.Domain, ".")
	if c.AgentDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("locate the sbx binary: %w", err)
		}
		c.AgentDir = defaultAgentDir(exe)
	}
	// --pool overrides the defaults template by template: asking for a
	// bigger base pool must not drop the code interpreter's. A * given
	// by the operator outranks the built-in defaults of named templates
	// too (they are guesses, the flag is a decision): --pool '*=0:0'
	// turns every pool off, base's included, unless another --pool names
	// a template.
	pools := DefaultPools()
	if _, ok := c.Pools[sandbox.AnyTemplate]; ok {
		pools = map[string]string{}
	}
	maps.Copy(pools, c.Pools)
	c.Pools = pools
	if _, err := c.PoolSizes(); err != nil {
		return err
	}
	if c.TeamMaxSandboxes < 0 {
		return fmt.Errorf("--team-max-sandboxes %d: want 0 (no cap) or more", c.TeamMaxSandboxes)
	}
	if c.TeamMaxSnapshots < 0 {
		return fmt.Errorf("--team-max-snapshots %d: want 0 (no cap) or more", c.TeamMaxSnapshots)
	}
	if err := c.Monitoring.Validate(); err != nil {
		return err
	}
	if err := c.Builds.Limits.Validate(); err != nil {
		return err
	}
	if c.Builds.Concurrency < 0 || c.Builds.ConcurrencyPerTeam < 0 {
		return fmt.Errorf("--build-concurrency and --build-concurrency-per-team must not be negative")
	}
	if c.Builds.TeamMaxUploadMB < 0 {
		return fmt.Errorf("--team-max-upload-mb %d: want a size in MiB, or 0 for no cap", c.Builds.TeamMaxUploadMB)
	}
	if _, err := c.Registry.Guard(); err != nil {
		return err
	}
	if c.Registry.MaxImageMB < 0 {
		return fmt.Errorf("--registry-max-image %d: want a size in MiB", c.Registry.MaxImageMB)
	}
	if err := c.Webhooks.validate(); err != nil {
		return err
	}
	for _, cidr := range c.Webhooks.AllowCIDRs {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			return fmt.Errorf("--webhook-allow-cidr %q: %w", cidr, err)
		}
	}
	if _, err := c.SandboxAllow(); err != nil {
		return err
	}
	if err := c.Blob.Validate(c.DataDir); err != nil {
		return err
	}
	return c.validateRole()
}

// SandboxAllow parses SandboxAllowCIDRs.
func (c *Config) SandboxAllow() ([]netip.Prefix, error) {
	ps, err := netguard.ParsePrefixes("--sandbox-allow-cidr", c.SandboxAllowCIDRs)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("--sandbox-allow-cidr %s: sandboxes have IPv4 only; give an IPv4 range such as 10.1.0.0/16", p)
		}
	}
	return ps, nil
}

// APIKeyFile is where the first team's API key is kept (mode 0600).
func APIKeyFile(dataDir string) string { return datadir.Layout{Root: dataDir}.APIKey() }

// AdminKeyFile is where the admin key is kept (mode 0600).
func AdminKeyFile(dataDir string) string { return datadir.Layout{Root: dataDir}.AdminKey() }

// ServerURLFile records the URL of the server last started on the data dir.
func ServerURLFile(dataDir string) string { return datadir.Layout{Root: dataDir}.ServerURL() }

// DBFile is the SQLite database of a data dir.
func DBFile(dataDir string) string { return datadir.Layout{Root: dataDir}.DB() }
