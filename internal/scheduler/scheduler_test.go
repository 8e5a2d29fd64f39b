package scheduler_test

import (
	"testing"

	"github.com/wrenn-dev/wrenn/internal/scheduler"
)

// roomy gives h plenty of disk and addresses, so that a test of CPU and
// memory is not decided by them.
func roomy(h scheduler.Host) scheduler.Host {
	h.DiskMB, h.FreeDiskMB, h.FreeAddresses = 1<<30, 1<<30, 1000
	return h
}

func TestPick(t *testing.T) {
	hosts := []scheduler.Host{
		roomy(scheduler.Host{ID: "a", CPUs: 4, MemoryMB: 10000, AllocatedMemoryMB: 5000, AllocatedVCPUs: 4}),
		roomy(scheduler.Host{ID: "b", CPUs: 2, MemoryMB: 4000, AllocatedMemoryMB: 1000, AllocatedVCPUs: 2*scheduler.CPUOvercommit - 1}),
		roomy(scheduler.Host{ID: "c", CPUs: 8, MemoryMB: 20000, AllocatedMemoryMB: 10000, AllocatedVCPUs: 0}),
		roomy(scheduler.Host{ID: "d", BYOC: true, CPUs: 8, MemoryMB: 20000, AllocatedMemoryMB: 10000, AllocatedVCPUs: 0}),
	}
	tests := []struct {
		name     string
		vcpus    int
		memoryMB int64
		want     string // "" for no host
	}{
		{"least loaded", 1, 100, "b"},
		{"b's vCPUs are all given", 2, 100, "d"}, // c and d tie at 50 %: the team's own host
		{"more vCPUs than a's CPUs", 5, 100, "d"},
		{"memory up to 90 %", 1, 8000, "d"},
		{"memory beyond 90 % everywhere", 1, 8001, ""},
		{"more vCPUs than any host has", 9, 100, ""},
	}
	for _, tt := range tests {
		for _, disk := range []int64{0, 256} { // a resume, a new capsule
			i, ok := scheduler.Pick(hosts, scheduler.Ask{VCPUs: tt.vcpus, MemoryMB: tt.memoryMB, DiskMB: disk})
			got := ""
			if ok {
				got = hosts[i].ID
			}
			if got != tt.want {
				t.Errorf("%s: Pick(%d vCPUs, %d MB, disk %d) = %q, want %q", tt.name, tt.vcpus, tt.memoryMB, disk, got, tt.want)
			}
		}
	}
	if v, m := scheduler.Free(hosts); v != 8 || m != 8000 {
		t.Errorf("Free: got %d vCPUs and %d MB, want 8 and 8000", v, m)
	}
}

// TestPickDiskAndAddresses: a new capsule needs its disk_mb plus its
// memory (saved state) of disk, by the host's committed disk and by what
// the last heartbeat reported less what was placed since, and an address;
// a resume needs neither.
func TestPickDiskAndAddresses(t *testing.T) {
	base := scheduler.Host{ID: "h", CPUs: 8, MemoryMB: 64000, DiskMB: 10000, FreeDiskMB: 10000, FreeAddresses: 10}
	with := func(f func(*scheduler.Host)) scheduler.Host {
		h := base
		f(&h)
		return h
	}
	newCapsule := scheduler.Ask{VCPUs: 1, MemoryMB: 1000, DiskMB: 1000} // takes 2000 MB of disk
	resume := scheduler.Ask{VCPUs: 1, MemoryMB: 1000}
	tests := []struct {
		name  string
		host  scheduler.Host
		ask   scheduler.Ask
		fits  bool
		short string
	}{
		{"empty host", base, newCapsule, true, ""},
		{"committed disk up to 90 %", with(func(h *scheduler.Host) { h.AllocatedDiskMB = 7000 }), newCapsule, true, ""},
		{"committed disk past 90 % (paused capsules count)", with(func(h *scheduler.Host) { h.AllocatedDiskMB = 7001 }), newCapsule, false, "disk"},
		{"reported free disk too small", with(func(h *scheduler.Host) { h.FreeDiskMB = 1999 }), newCapsule, false, "disk"},
		{"reported free disk taken by capsules placed since", with(func(h *scheduler.Host) { h.FreeDiskMB, h.PlacedDiskMB = 3000, 1001 }), newCapsule, false, "disk"},
		{"free disk not reported: committed disk decides", with(func(h *scheduler.Host) { h.FreeDiskMB = -1 }), newCapsule, true, ""},
		{"no address free", with(func(h *scheduler.Host) { h.FreeAddresses = 0 }), newCapsule, false, "addresses"},
		{"last address taken by a capsule placed since", with(func(h *scheduler.Host) { h.FreeAddresses, h.Placed = 3, 3 }), newCapsule, false, "addresses"},
		{"addresses not reported", with(func(h *scheduler.Host) { h.FreeAddresses = -1 }), newCapsule, true, ""},
		{"resume on a full disk and pool", with(func(h *scheduler.Host) { h.AllocatedDiskMB, h.FreeDiskMB, h.FreeAddresses = 10000, 0, 0 }), resume, true, ""},
		{"memory lacks: not disk's fault", with(func(h *scheduler.Host) { h.AllocatedMemoryMB = 57000 }), newCapsule, false, ""},
	}
	for _, tt := range tests {
		_, ok := scheduler.Pick([]scheduler.Host{tt.host}, tt.ask)
		if ok != tt.fits {
			t.Errorf("%s: fits = %v, want %v", tt.name, ok, tt.fits)
		}
		if !ok {
			if got := scheduler.Short([]scheduler.Host{tt.host}, tt.ask); got != tt.short {
				t.Errorf("%s: Short = %q, want %q", tt.name, got, tt.short)
			}
		}
	}
}
