package network

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// DefaultLeaseDir holds one file per address in use on this machine. Several
// sbx servers (each with its own data dir: tests, CI, a developer's server)
// share the bridge and its subnet, so an allocator that only knows its own
// sandboxes would hand out the same address twice and break outbound
// traffic for both. A lease file, created exclusively, names the network
// namespace that owns the address; a lease whose namespace is gone is stale
// and may be taken over. /run is a tmpfs, so leases do not outlive a reboot
// (and neither do the namespaces).
const DefaultLeaseDir = "/run/sbx/ipam"

// leaseGrace protects a fresh lease whose namespace does not exist yet.
const leaseGrace = 30 * time.Second

type leases struct{ dir string }

func (l leases) path(a netip.Addr) string { return filepath.Join(l.dir, a.String()) }

// take leases a for owner (a namespace path). It reports false when another
// live namespace holds the address.
func (l leases) take(a netip.Addr, owner string) (bool, error) {
	if l.dir == "" {
		return true, nil
	}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return false, fmt.Errorf("create lease dir: %w", err)
	}
	p := l.path(a)
	for range 2 {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			_, werr := f.WriteString(owner)
			cerr := f.Close()
			return true, errors.Join(werr, cerr)
		}
		if !errors.Is(err, os.ErrExist) {
			return false, fmt.Errorf("lease %s: %w", a, err)
		}
		cur, rerr := os.ReadFile(p)
		if rerr == nil && string(cur) == owner {
			return true, nil
		}
		if rerr == nil && len(cur) > 0 {
			if _, serr := os.Stat(string(cur)); serr == nil {
				return false, nil // held by a live namespace of some server
			}
		}
		if fi, serr := os.Stat(p); serr == nil && time.Since(fi.ModTime()) < leaseGrace {
			return false, nil // just taken: its namespace is being created
		}
		// Stale (owner gone) or unreadable half-written lease: take it over.
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("remove stale lease %s: %w", a, err)
		}
	}
	return false, nil
}

// put records a lease for an address found in use at recovery.
func (l leases) put(a netip.Addr, owner string) error {
	if l.dir == "" {
		return nil
	}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(l.path(a), []byte(owner), 0o644)
}

// drop removes the lease of a if owner holds it.
func (l leases) drop(a netip.Addr, owner string) {
	if l.dir == "" {
		return
	}
	if cur, err := os.ReadFile(l.path(a)); err == nil && bytes.Equal(cur, []byte(owner)) {
		_ = os.Remove(l.path(a))
	}
}
