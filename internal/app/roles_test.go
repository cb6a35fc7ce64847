package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateRole(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(good, []byte(strings.Repeat("s", 40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	const pg = "postgres://sbx@db/sbx"
	tests := []struct {
		name    string
		cfg     Config
		env     string // SBX_CLUSTER_SECRET
		wantErr string
	}{
		{"default is one box", Config{}, "", ""},
		{"all needs nothing", Config{Role: RoleAll}, "", ""},
		{"an unknown role", Config{Role: "worker"}, "", "use all (one box), api"},
		{"api without a database", Config{Role: RoleAPI, ClusterSecretFile: good}, "", "needs the cluster's shared PostgreSQL"},
		{"node without a secret", Config{Role: RoleNode, Database: pg}, "", "--cluster-secret-file PATH"},
		{"node with a short secret", Config{Role: RoleNode, Database: pg, ClusterSecretFile: short}, "", "want at least 32"},
		{"node with a secret file", Config{Role: RoleNode, Database: pg, ClusterSecretFile: good}, "", ""},
		{"api with the secret in the environment", Config{Role: RoleAPI, Database: pg}, strings.Repeat("e", 32), ""},
		{"advertise URL on one box", Config{AdvertiseURL: "http://10.0.0.5:3000"}, "", "is for --role node"},
		{"advertise URL on an api replica", Config{Role: RoleAPI, Database: pg, ClusterSecretFile: good, AdvertiseURL: "http://a:1"}, "", "is for --role node"},
		{"an advertise URL with a path", Config{Role: RoleNode, Database: pg, ClusterSecretFile: good, AdvertiseURL: "http://10.0.0.5:3000/x"}, "", "want the node's base URL"},
		{"an advertise URL without a scheme", Config{Role: RoleNode, Database: pg, ClusterSecretFile: good, AdvertiseURL: "10.0.0.5:3000"}, "", "want the node's base URL"},
		{"no overcommit below 1", Config{CPUOvercommit: 0.5}, "", "--cpu-overcommit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("SBX_CLUSTER_SECRET", tt.env)
			err := tt.cfg.validateRole()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validateRole = %v", err)
				}
				if tt.cfg.Role != RoleAll && tt.cfg.clusterSecret.IsZero() {
					t.Errorf("role %s: no cluster secret loaded", tt.cfg.Role)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validateRole = %v; want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
