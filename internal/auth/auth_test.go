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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TeamID(tt.ctx)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("TeamID = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
			if err != nil && !errors.Is(err, errdefs.ErrUnauthenticated) {
				t.Fatalf("error %v is not unauthenticated", err)
			}
		})
	}
}
