package auth

// AccessTokenPrefix starts E2B's personal access tokens (sk_e2b_), which
// legacy clients send as "Authorization: Bearer". In sbx an access token
// is an API key of the team that created it, in that format.
const AccessTokenPrefix = "sk_e2b_"

// NewAccessToken returns a fresh access token: sk_e2b_ + 40 lowercase hex.
func NewAccessToken() string { return AccessTokenPrefix + randomHex(20) }
