// Package scheduler decides which host a new capsule goes to. It is pure
// arithmetic over what the store read under lock: the store locks the
// candidate hosts (online, serving the team, having the template), sums what
// their live capsules take, and asks Pick; the answer is only valid inside
// that transaction.
//
// The capacity rule:
//
//   - Memory is not overcommitted: the memory of a host's live capsules plus
//     the new one stays at or below MemoryPercent % of the host's memory (the
//     rest is for the host, the agent and gVisor's own overhead).
//   - A capsule gets at most as many vCPUs as its host has CPUs, and the
//     vCPUs of a host's live capsules add up to at most CPUOvercommit times
//     its CPUs (vCPUs are shares of time; idle capsules are the norm).
//   - Live means pending, starting, running, pausing or resuming; a paused,
//     stopped, failed or missing capsule takes no CPU or memory.
//   - Disk is not overcommitted either: every live or paused capsule may
//     fill its disk_mb and, paused, holds its memory as saved state, so it
//     counts disk_mb + memory_mb; these add up to at most DiskPercent % of
//     the host's disk. A new capsule also needs that much free by the
//     host's last heartbeat, less what was placed there since.
//   - Each live or paused capsule holds an address (a /30) of the host's
//     pool: a new one needs a free address by the last heartbeat, less the
//     capsules placed since.
//   - A resume needs CPU and memory only: the paused capsule already holds
//     its disk and address.
//
// Among the hosts where the capsule fits, the least loaded wins: the lowest
// share of its memory already allocated; ties go to the team's own (BYOC)
// host, then to the lowest id, so that the choice is deterministic.
package scheduler

// Capacity rule parameters (see the package comment).
const (
	MemoryPercent = 90
	CPUOvercommit = 16
	DiskPercent   = 90
)

// Host is a candidate host and what its live capsules take. Safe to copy.
type Host struct {
	ID string
	// BYOC reports whether the host belongs to the requesting team.
	BYOC              bool
	CPUs              int
	MemoryMB          int64
	AllocatedVCPUs    int
	AllocatedMemoryMB int64

	// DiskMB is the host's disk (the file system of its WRENN_DIR);
	// AllocatedDiskMB what its live and paused capsules may take of it
	// (disk_mb + memory_mb each).
	DiskMB          int64
	AllocatedDiskMB int64
	// FreeDiskMB and FreeAddresses are what the host's last heartbeat
	// reported free (-1: not reported); PlacedDiskMB and Placed are the
	// disk (disk_mb + memory_mb) and number of the capsules placed on it
	// since, which that report did not see.
	FreeDiskMB    int64
	FreeAddresses int
	PlacedDiskMB  int64
	Placed        int
}

// Ask is what a capsule needs of a host.
type Ask struct {
	VCPUs    int
	MemoryMB int64
	// DiskMB is the capsule's disk; 0 for a resume, whose capsule already
	// holds its disk, saved state and address. A new capsule also needs
	// an address and MemoryMB of disk for its saved state.
	DiskMB int64
}

// needsPlace reports whether a needs disk and an address (a new capsule).
func (a Ask) needsPlace() bool { return a.DiskMB > 0 }

// diskMB is the disk a new capsule takes: its own and its saved state.
func (a Ask) diskMB() int64 { return a.DiskMB + a.MemoryMB }

// UsableDiskMB is the disk capsules may take on a host of diskMB.
func UsableDiskMB(diskMB int64) int64 { return diskMB * DiskPercent / 100 }

// FreeDisk is the disk a new capsule (its disk and saved state) can still
// take on h.
func (h Host) FreeDisk() int64 {
	free := UsableDiskMB(h.DiskMB) - h.AllocatedDiskMB
	if h.FreeDiskMB >= 0 {
		free = min(free, h.FreeDiskMB-h.PlacedDiskMB)
	}
	return max(0, free)
}

// freeAddress reports whether h has an address for one more capsule.
func (h Host) freeAddress() bool {
	return h.FreeAddresses < 0 || h.FreeAddresses-h.Placed >= 1
}

// UsableMemoryMB is the memory capsules may take on a host of memoryMB.
func UsableMemoryMB(memoryMB int64) int64 { return memoryMB * MemoryPercent / 100 }

// FreeMemoryMB is the memory h can still give to capsules.
func (h Host) FreeMemoryMB() int64 {
	return max(0, UsableMemoryMB(h.MemoryMB)-h.AllocatedMemoryMB)
}

// FreeVCPUs is how many more vCPUs h can give to capsules in total (a
// single capsule still gets at most h.CPUs).
func (h Host) FreeVCPUs() int {
	return max(0, h.CPUs*CPUOvercommit-h.AllocatedVCPUs)
}

// Fits reports whether a capsule asking a fits on h.
func (h Host) Fits(a Ask) bool {
	if a.VCPUs > h.CPUs || a.VCPUs > h.FreeVCPUs() || a.MemoryMB > h.FreeMemoryMB() {
		return false
	}
	return !a.needsPlace() || (a.diskMB() <= h.FreeDisk() && h.freeAddress())
}

// load is the share of h's memory already allocated, as a fraction whose
// comparison needs no floating point: a/b.
func (h Host) load() (a, b int64) { return h.AllocatedMemoryMB, max(1, h.MemoryMB) }

// less reports whether h should be preferred to o.
func (h Host) less(o Host) bool {
	ha, hb := h.load()
	oa, ob := o.load()
	if l, r := ha*ob, oa*hb; l != r {
		return l < r
	}
	if h.BYOC != o.BYOC {
		return h.BYOC
	}
	return h.ID < o.ID
}

// Pick returns the index in hosts of the host a capsule asking a goes to,
// and false when it fits on none.
func Pick(hosts []Host, a Ask) (int, bool) {
	best := -1
	for i, h := range hosts {
		if h.Fits(a) && (best < 0 || h.less(hosts[best])) {
			best = i
		}
	}
	return best, best >= 0
}

// Free returns the most vCPUs any one capsule could still get on any of
// hosts, and the most memory, each taken on its own (they may be on
// different hosts). It tells a refused caller what would fit.
func Free(hosts []Host) (vcpus int, memoryMB int64) {
	for _, h := range hosts {
		vcpus = max(vcpus, min(h.CPUs, h.FreeVCPUs()))
		memoryMB = max(memoryMB, h.FreeMemoryMB())
	}
	return vcpus, memoryMB
}

// Short names what keeps a capsule asking a off every one of hosts when
// CPU and memory would fit on one of them: "disk" or "addresses"; "" when
// CPU or memory is what lacks.
func Short(hosts []Host, a Ask) string {
	cpuMem := Ask{VCPUs: a.VCPUs, MemoryMB: a.MemoryMB}
	lacks := ""
	for _, h := range hosts {
		if !h.Fits(cpuMem) {
			continue
		}
		if a.diskMB() > h.FreeDisk() {
			lacks = "disk"
		} else if !h.freeAddress() && lacks == "" {
			lacks = "addresses"
		}
	}
	return lacks
}
