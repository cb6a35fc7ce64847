// Package e2e holds end-to-end tests of sbx: they start the real `bin/sbx
// serve` (built by `make build`) and drive it through the Go SDK and plain
// HTTP. They need root and crun; without them they skip, unless
// SBX_REQUIRE_INTEGRATION=1 (set by CI) turns the skip into a failure.
package e2e
