package cli

import (
	"testing"

	"github.com/sbxdev/sbx/sdk"
)

// TestClientOptionsConfig checks that the SDK client and the JSON apiClient
// resolve the server and key the same way: flags over E2B_* over defaults.
func TestClientOptionsConfig(t *testing.T) {
	tests := []struct {
		name            string
		env             map[string]string
		opts            clientOptions
		wantBase        string
		wantKey         string
		wantErrNoAPIKey bool
	}{
		{name: "defaults", env: map[string]string{"E2B_API_KEY": "k"}, wantBase: sdk.DefaultURL, wantKey: "k"},
		{name: "env", env: map[string]string{"E2B_API_URL": "http://env:1/", "E2B_API_KEY": "k"}, wantBase: "http://env:1", wantKey: "k"},
		{name: "flags win", env: map[string]string{"E2B_API_URL": "http://env:1", "E2B_API_KEY": "k"},
			opts: clientOptions{apiURL: "http://flag:2", apiKey: "f"}, wantBase: "http://flag:2", wantKey: "f"},
		{name: "no key", env: map[string]string{"E2B_API_KEY": ""}, wantErrNoAPIKey: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("E2B_API_URL", "")
			t.Setenv("E2B_SANDBOX_URL", "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			a, aerr := tt.opts.api()
			_, cerr := tt.opts.client()
			if tt.wantErrNoAPIKey {
				if aerr != errNoAPIKey || cerr != errNoAPIKey {
					t.Fatalf("api() error = %v, client() error = %v; want both %v", aerr, cerr, errNoAPIKey)
				}
				return
			}
			if aerr != nil || cerr != nil {
				t.Fatalf("api() error = %v, client() error = %v", aerr, cerr)
			}
			if a.base != tt.wantBase || a.key != tt.wantKey {
				t.Errorf("api() = base %q key %q, want %q %q", a.base, a.key, tt.wantBase, tt.wantKey)
			}
			cfg, err := tt.opts.config()
			if err != nil || cfg.APIKey != tt.wantKey || cfg.SandboxURL != cfg.APIURL {
				t.Errorf("config() = %+v, %v; want key %q and the sandbox URL equal to the API URL", cfg, err, tt.wantKey)
			}
		})
	}
}
