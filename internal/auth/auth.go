// Package auth carries the authenticated caller of a control-plane request.
package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/sbxdev/sbx/internal/errdefs"
)

type teamKey struct{}

// Team is the caller of a control-plane request, resolved from its API key:
// a team, or the server's admin. The admin manages teams, keys, budgets and
// cluster-wide metrics; it acts on one team's resources only when it names
// the team (X-Team-ID), and then ID is that team.
type Team struct {
	ID    string // the team acted on; "" for the admin without X-Team-ID
	Name  string
	KeyID string // the API key's ID, for revocation and audit
	Admin bool   // authenticated with the admin key
}

// WithTeam returns a context carrying the authenticated caller.
func WithTeam(ctx context.Context, t Team) context.Context {
	return context.WithValue(ctx, teamKey{}, t)
}

// TeamFrom returns the authenticated caller, if any.
func TeamFrom(ctx context.Context) (Team, bool) {
	t, ok := ctx.Value(teamKey{}).(Team)
	return t, ok
}

// TeamID returns the authenticated team's ID, or an unauthenticated error
// for a request that reached a handler without one (a wiring mistake or a
// route registered outside the API key middleware), or a permission error
// for the admin key used without naming a team.
func TeamID(ctx context.Context) (string, error) {
	t, ok := TeamFrom(ctx)
	if ok && t.Admin && t.ID == "" {
		return "", ErrAdminNeedsTeam
	}
	if !ok || t.ID == "" {
		return "", errdefs.Unauthenticated("missing API key: set the X-API-Key header")
	}
	return t.ID, nil
}

// ErrAdminNeedsTeam answers a team-scoped request made with the admin key
// and no team.
var ErrAdminNeedsTeam = errdefs.Denied(
	"this is the admin key: it manages teams, keys, budgets and cluster metrics; " +
		"to act on one team's resources send X-Team-ID: <team ID>, or use that team's API key")

// RequireAdmin returns a permission error unless the caller is the admin.
func RequireAdmin(ctx context.Context, what string) error {
	if t, ok := TeamFrom(ctx); ok && t.Admin {
		return nil
	}
	return errdefs.Denied(
		"%s needs the admin key (in <data-dir>/admin-key, printed by `sbx env --admin`); a team's API key cannot do it", what)
}

// NewAPIKey returns a fresh team key in E2B's format: e2b_ + 40 lowercase
// hex (160 random bits; the E2B SDKs check the format).
func NewAPIKey() string { return "e2b_" + randomHex(20) }

// AdminKeyPrefix starts every admin key; the E2B SDKs refuse it as a team
// key, so it cannot be used for sandboxes by mistake.
const AdminKeyPrefix = "sbx_admin_"

// NewAdminKey returns a fresh admin key: sbx_admin_ + 40 lowercase hex.
func NewAdminKey() string { return AdminKeyPrefix + randomHex(20) }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never on Linux ≥ 3.17
	}
	return hex.EncodeToString(b)
}
