package app

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/sandbox"
)

// --pool overrides the default pools per template and keeps the others.
func TestPoolsOverrideDefaultsPerTemplate(t *testing.T) {
	tests := []struct {
		name  string
		pools map[string]string
		want  map[string]sandbox.PoolSize
	}{
		{"defaults", nil, map[string]sandbox.PoolSize{
			"base": {Min: 2, Max: 16}, "code-interpreter": {Min: 2, Max: 4}, sandbox.AnyTemplate: {Min: 0, Max: 4}}},
		{"bigger base keeps the code interpreter's", map[string]string{"base": "50:60"}, map[string]sandbox.PoolSize{
			"base": {Min: 50, Max: 60}, "code-interpreter": {Min: 2, Max: 4}, sandbox.AnyTemplate: {Min: 0, Max: 4}}},
		{"one disabled", map[string]string{"code-interpreter": "0", "mine": "1:3"}, map[string]sandbox.PoolSize{
			"base": {Min: 2, Max: 16}, "code-interpreter": {Min: 0, Max: 0}, sandbox.AnyTemplate: {Min: 0, Max: 4}, "mine": {Min: 1, Max: 3}}},
		// A reported bug: base's default pool outranked an explicit *, so
		// --pool '*=0:0' still refilled base pools.
		{"any turns the defaults off", map[string]string{sandbox.AnyTemplate: "0:0"}, map[string]sandbox.PoolSize{
			sandbox.AnyTemplate: {Min: 0, Max: 0}}},
		{"named templates outrank any", map[string]string{sandbox.AnyTemplate: "0:2", "base": "1:3"}, map[string]sandbox.PoolSize{
			"base": {Min: 1, Max: 3}, sandbox.AnyTemplate: {Min: 0, Max: 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Listen: DefaultListen, DataDir: t.TempDir(), Runtime: DefaultRuntime, AgentDir: t.TempDir(), Pools: tt.pools}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			got, err := cfg.PoolSizes()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("pools = %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("pool %q = %+v, want %+v", k, got[k], v)
				}
			}
		})
	}
}

func TestInvalidConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"bad pool", func(c *Config) { c.Pools = map[string]string{"base": "x"} }, "--pool base=x"},
		{"bad snapshot runtime", func(c *Config) { c.SnapshotRuntime = "crun" }, "--snapshot-runtime"},
		{"bad runtime", func(c *Config) { c.Runtime = "docker" }, "--runtime"},
		{"bad registry cidr", func(c *Config) { c.Registry.AllowCIDRs = []string{"10.0.0.0/33"} }, "--registry-allow-cidr"},
		{"tiny build memory", func(c *Config) { c.Builds.Limits.MemoryMB = 8 }, "--build-memory"},
		{"negative build cpus", func(c *Config) { c.Builds.Limits.CPUs = -1 }, "--build-cpus"},
		{"negative build concurrency", func(c *Config) { c.Builds.Concurrency = -1 }, "--build-concurrency"},
		{"bad sandbox allow", func(c *Config) { c.SandboxAllowCIDRs = []string{"10.0.0.0/33"} }, "--sandbox-allow-cidr"},
		{"IPv6 sandbox allow", func(c *Config) { c.SandboxAllowCIDRs = []string{"fd00::/8"} }, "IPv4 only"},
		{"negative webhook workers", func(c *Config) { c.Webhooks.Workers = -1 }, "--webhook-workers"},
		{"webhook concurrency above workers", func(c *Config) { c.Webhooks.Workers, c.Webhooks.Concurrency = 4, 8 }, "--webhook-concurrency 8 exceeds --webhook-workers 4"},
		{"default webhook concurrency above workers", func(c *Config) { c.Webhooks.Workers = 2 }, "--webhook-concurrency 8 exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Listen: DefaultListen, DataDir: t.TempDir(), Runtime: DefaultRuntime, AgentDir: t.TempDir()}
			tt.edit(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestSandboxAllow(t *testing.T) {
	cfg := Config{Listen: DefaultListen, DataDir: t.TempDir(), Runtime: DefaultRuntime, AgentDir: t.TempDir(),
		SandboxAllowCIDRs: []string{"10.1.2.3/16", "192.0.2.7"}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := cfg.SandboxAllow()
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.0.2.7/32")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("SandboxAllow() = %v, %v; want %v", got, err, want)
	}
}
