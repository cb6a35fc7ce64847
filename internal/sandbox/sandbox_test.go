package sandbox

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

func TestCreateRequestValidate(t *testing.T) {
	tests := []struct {
		name    string
		req     CreateRequest
		wantErr string
	}{
		{"ok", CreateRequest{Template: "base", Timeout: time.Minute}, ""},
		{"default timeout", CreateRequest{Template: "base"}, ""},
		{"no template", CreateRequest{}, "templateID is required"},
		{"negative timeout", CreateRequest{Template: "base", Timeout: -time.Second}, "timeout must be"},
		{"timeout too long", CreateRequest{Template: "base", Timeout: 25 * time.Hour}, "between 0 and 86400 seconds"},
		{"bad env name", CreateRequest{Template: "base", EnvVars: map[string]string{"A=B": "x"}}, "envVars: invalid variable name"},
		{"empty env name", CreateRequest{Template: "base", EnvVars: map[string]string{"": "x"}}, "envVars: invalid variable name"},
		{"NUL in env value", CreateRequest{Template: "base", EnvVars: map[string]string{"A": "x\x00y"}}, "NUL"},
		{"long env name", CreateRequest{Template: "base", EnvVars: map[string]string{strings.Repeat("A", MaxEnvNameLen+1): "x"}}, "limit of 256"},
		{"long env value", CreateRequest{Template: "base", EnvVars: map[string]string{"A": strings.Repeat("x", MaxEnvValueLen+1)}}, "limit of 32768"},
		{"env total", CreateRequest{Template: "base", EnvVars: bigEnv(10, MaxEnvValueLen)}, "envVars total"},
		{"too many env vars", CreateRequest{Template: "base", EnvVars: bigEnv(MaxEnvVars+1, 1)}, "more than the limit of 512"},
		{"env at the limits", CreateRequest{Template: "base", EnvVars: bigEnv(7, MaxEnvValueLen)}, ""},
		{"too much metadata", CreateRequest{Template: "base", Metadata: bigEnv(MaxMetadata+1, 1)}, "metadata has 101 entries"},
		{"NUL in metadata", CreateRequest{Template: "base", Metadata: map[string]string{"k\x00": "v"}}, "metadata: invalid key"},
		{"long metadata value", CreateRequest{Template: "base", Metadata: map[string]string{"k": strings.Repeat("v", MaxMetadataValueLen+1)}}, "metadata: the value"},
		{"template traversal", CreateRequest{Template: "../../etc"}, "templateID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Validate() = %v, want an invalid-argument error containing %q", err, tt.wantErr)
			}
		})
	}
}

func bigEnv(n, size int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprintf("V%d", i)] = strings.Repeat("x", size)
	}
	return m
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv(map[string]string{"A": "tpl", "B": "tpl"}, map[string]string{"B": "req", "C": "req"})
	want := map[string]string{"A": "tpl", "B": "req", "C": "req"}
	if len(got) != len(want) {
		t.Fatalf("mergeEnv = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("mergeEnv[%s] = %q, want %q (request overrides template)", k, got[k], v)
		}
	}
	if got := mergeEnv(nil, map[string]string{"X": "1"}); got["X"] != "1" || len(got) != 1 {
		t.Fatalf("mergeEnv without template env = %v", got)
	}
}

// The pool's target follows claims in the demand window, between its bounds.
func TestPoolTarget(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		size   PoolSize
		claims []time.Duration // claim times as offsets from t0
		at     time.Duration
		want   int
	}{
		{"idle keeps the minimum", PoolSize{Min: 2, Max: 8}, nil, 0, 2},
		{"demand raises it", PoolSize{Min: 2, Max: 8}, []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second}, 5 * time.Second, 5},
		{"capped at max", PoolSize{Min: 2, Max: 4}, []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second, 5 * time.Second}, 6 * time.Second, 4},
		{"old claims expire", PoolSize{Min: 1, Max: 8}, []time.Duration{0, time.Second, 2 * time.Second}, demandWindow + 3*time.Second, 1},
		{"on-demand pool shrinks to zero", PoolSize{Min: 0, Max: 4}, []time.Duration{0}, demandWindow + time.Second, 0},
		{"max below min is raised", PoolSize{Min: 3, Max: 1}, nil, 0, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(tt.size)
			for _, c := range tt.claims {
				p.noteClaim(t0.Add(c))
			}
			if got := p.target(t0.Add(tt.at)); got != tt.want {
				t.Fatalf("target = %d, want %d", got, tt.want)
			}
		})
	}
}
