package firecracker

import (
	"fmt"
)

// reserveUID takes the uid a new jailed VM runs as: the lowest of the
// configured range that no VM record holds and no other launch has taken.
// The uid stays taken until release is called, which the launch does once
// the VM's record (with the uid) is written, or removed after a failure;
// from then on the record holds it, until Destroy removes the record. So
// two VMs never share a uid, even when they start at the same time.
// Without a jailer it returns 0 and a release that does nothing.
//
// A record that cannot be read (records logs it) holds no uid; records
// are written durably, so that takes a damaged file system.
//
// A uid is reused as soon as its VM is destroyed: its process is dead and
// every file it owned (its root, disk and socket) removed with it.
func (d *Driver) reserveUID() (uid int, release func(), err error) {
	if d.cfg.Jailer == "" {
		return 0, func() {}, nil
	}
	d.uidMu.Lock()
	defer d.uidMu.Unlock()
	recs, err := d.records()
	if err != nil {
		return 0, nil, err
	}
	taken := make(map[int]bool, len(recs)+len(d.reserved))
	for _, r := range recs {
		taken[r.UID] = true
	}
	for u := range d.reserved {
		taken[u] = true
	}
	for u := d.cfg.UIDBase; u < d.cfg.UIDBase+d.cfg.UIDCount; u++ {
		if !taken[u] {
			d.reserved[u] = true
			return u, func() {
				d.uidMu.Lock()
				defer d.uidMu.Unlock()
				delete(d.reserved, u)
			}, nil
		}
	}
	return 0, nil, fmt.Errorf("no free uid for the VM: all %d uids from %d (WRENN_FIRECRACKER_UID_BASE) are held by VMs; destroy some, or widen the range",
		d.cfg.UIDCount, d.cfg.UIDBase)
}
