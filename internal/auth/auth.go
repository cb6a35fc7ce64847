// Package auth carries the authenticated team of a control-plane request.
package auth

import (
	"context"

	"github.com/sbxdev/sbx/internal/errdefs"
)

type teamKey struct{}

// Team is the caller of a control-plane request, resolved from its API key.
type Team struct {
	ID   string
	Name string
}

// WithTeam returns a context carrying the authenticated team.
func WithTeam(ctx context.Context, t Team) context.Context {
	return context.WithValue(ctx, teamKey{}, t)
}

// TeamFrom returns the authenticated team, if any.
func TeamFrom(ctx context.Context) (Team, bool) {
	t, ok := ctx.Value(teamKey{}).(Team)
	return t, ok
}

// TeamID returns the authenticated team's ID, or an unauthenticated error
// for a request that reached a handler without one (a wiring mistake or a
// route registered outside the API key middleware).
func TeamID(ctx context.Context) (string, error) {
	t, ok := TeamFrom(ctx)
	if !ok || t.ID == "" {
		return "", errdefs.Unauthenticated("missing API key: set the X-API-Key header")
	}
	return t.ID, nil
}
