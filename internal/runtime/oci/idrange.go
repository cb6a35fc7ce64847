package oci

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// User namespaces: root in a crun or runc sandbox is an unprivileged host
// user. Each live sandbox gets a range of idSize host uids (and the same
// gids) of its own, so that a process escaping one sandbox owns nothing of
// another sandbox and nothing of the host.
//
// Ranges start far above real users (Debian gives users uids below 60000,
// /etc/subuid ranges start at 100000) and end below 2^31, so that no tool
// that stores a uid in a signed 32-bit integer sees a negative one and
// net.ipv4.ping_group_range (at most 2^31-1) can cover every sandbox's gids.
const (
	idBase  = 1 << 30 // host uid/gid of root in slot 0
	idSize  = 1 << 16 // ids 0..65535 inside, nobody (65534) included
	idSlots = 8192    // the last range ends at 1<<30 + 8192<<16 = 1.5 billion
)

// idRange is a sandbox's user namespace mapping: ids 0..Size-1 inside are
// UID.. (GID..) on the host. It is persisted in handle.json, so a restarted
// server knows every sandbox's range.
type idRange struct {
	Slot int    `json:"slot"`
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Size uint32 `json:"size"`
}

func slotRange(slot int) idRange {
	base := uint32(idBase + slot*idSize)
	return idRange{Slot: slot, UID: base, GID: base, Size: idSize}
}

// DefaultIDLeaseDir holds one lease file per uid range in use on this
// machine. Several sbx servers (tests, CI, a developer's server) share the
// machine and must never give two live sandboxes the same range. A lease
// names the sandbox directory that owns it; a lease whose directory is gone
// is stale and may be taken over. /run is a tmpfs, so leases end with a
// reboot, as do the sandboxes.
const DefaultIDLeaseDir = "/run/sbx/userns"

// idLeaseGrace protects a lease whose owner directory is about to be made.
const idLeaseGrace = 30 * time.Second

// idRanges allocates ranges through lease files. Slots this process freed
// are reused first: their user namespaces are cached (see usernsCache).
type idRanges struct {
	dir string

	mu   sync.Mutex
	free []int // released by this process, most recent last
	next int   // where the next scan starts
}

// take leases a free range for owner (a sandbox directory, which must exist
// or be created within idLeaseGrace).
func (r *idRanges) take(owner string) (idRange, error) {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return idRange{}, fmt.Errorf("create uid range lease dir: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.free) > 0 {
		slot := r.free[len(r.free)-1]
		r.free = r.free[:len(r.free)-1]
		if ok, err := r.lease(slot, owner); err != nil {
			return idRange{}, err
		} else if ok {
			return slotRange(slot), nil
		}
	}
	for i := range idSlots {
		slot := (r.next + i) % idSlots
		ok, err := r.lease(slot, owner)
		if err != nil {
			return idRange{}, err
		}
		if ok {
			r.next = (slot + 1) % idSlots
			return slotRange(slot), nil
		}
	}
	return idRange{}, fmt.Errorf("all %d uid ranges of %s are in use: delete sandboxes or look for stale leases", idSlots, r.dir)
}

// lease creates slot's lease file for owner, or takes over a stale one.
func (r *idRanges) lease(slot int, owner string) (bool, error) {
	p := filepath.Join(r.dir, strconv.Itoa(slot))
	for range 2 {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, werr := f.WriteString(owner)
			if err := errors.Join(werr, f.Close()); err != nil {
				_ = os.Remove(p)
				return false, fmt.Errorf("write uid range lease %s: %w", p, err)
			}
			return true, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return false, fmt.Errorf("lease uid range %d: %w", slot, err)
		}
		cur, rerr := os.ReadFile(p)
		if rerr == nil && len(cur) > 0 {
			if _, serr := os.Stat(string(cur)); serr == nil {
				return false, nil // a live sandbox of some server
			}
		}
		if fi, serr := os.Stat(p); serr == nil && time.Since(fi.ModTime()) < idLeaseGrace {
			return false, nil // just taken; its sandbox dir is being made
		}
		// Stale (owner gone) or a half-written lease: take it over.
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("remove stale uid range lease %s: %w", p, err)
		}
	}
	return false, nil
}

// release drops the lease of slot if owner holds it.
func (r *idRanges) release(slot int, owner string) {
	p := filepath.Join(r.dir, strconv.Itoa(slot))
	cur, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(cur, []byte(owner)) {
		return
	}
	if os.Remove(p) != nil {
		return
	}
	r.mu.Lock()
	r.free = append(r.free, slot)
	r.mu.Unlock()
}
