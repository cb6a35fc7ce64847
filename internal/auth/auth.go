// Package auth carries the authenticated team of a control-plane request.
package auth

import "context"

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
