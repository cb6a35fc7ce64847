package auth

import (
	"context"
	"errors"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
)

func TestTeamID(t *testing.T) {
	tests := []struct {
		name    string
		ctx     context.Context
		want    string
		wantErr bool
	}{
		{"authenticated", WithTeam(context.Background(), Team{ID: "t1", Name: "one"}), "t1", false},
		{"no team", context.Background(), "", true},
		{"team without ID", WithTeam(context.Background(), Team{Name: "nameless"}), "", true},
		{"admin acting as a team", WithTeam(context.Background(), Team{ID: "t2", Admin: true}), "t2", false},
		{"admin without a team", WithTeam(context.Background(), Team{Admin: true}), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TeamID(tt.ctx)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("TeamID = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
			admin := tt.name == "admin without a team"
			if err != nil && !admin && !errors.Is(err, errdefs.ErrUnauthenticated) {
				t.Fatalf("error %v is not unauthenticated", err)
			}
			if admin && !errors.Is(err, errdefs.ErrPermissionDenied) {
				t.Fatalf("the admin without a team: %v, want permission denied", err)
			}
		})
	}
}

func TestRequireAdmin(t *testing.T) {
	if err := RequireAdmin(WithTeam(context.Background(), Team{ID: "t1"}), "x"); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("a team: %v, want permission denied", err)
	}
	if err := RequireAdmin(context.Background(), "x"); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("nobody: %v, want permission denied", err)
	}
	if err := RequireAdmin(WithTeam(context.Background(), Team{Admin: true}), "x"); err != nil {
		t.Errorf("the admin: %v", err)
	}
}

func TestNewKeys(t *testing.T) {
	if k := NewAPIKey(); len(k) != 44 || k[:4] != "e2b_" || k == NewAPIKey() {
		t.Errorf("NewAPIKey() = %q", k)
	}
	if k := NewAdminKey(); len(k) != len(AdminKeyPrefix)+40 || k[:len(AdminKeyPrefix)] != AdminKeyPrefix {
		t.Errorf("NewAdminKey() = %q", k)
	}
}
