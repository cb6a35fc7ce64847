// Package security is sbx's red-team suite: each test performs one attack
// against a real `bin/sbx serve` (the harness in tests/harness), as a
// tenant holding an API key or as code running inside a sandbox (as
// "user", and as root through sudo), and checks that it fails. Every test
// here was seen failing against the server it was written for, before the
// fix it covers; docs/security.md lists them next to the threat model.
//
// Network traffic in these tests goes only to loopback, to addresses of
// this host, and to sbx's own sandbox addresses.
//
// The tests need root and crun; they skip without them, unless
// SBX_REQUIRE_INTEGRATION=1 (set by CI) turns the skip into a failure.
package security
