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
//     stopped, failed or missing capsule takes nothing.
//
// Among the hosts where the capsule fits, the least loaded wins: the lowest
// share of its memory already allocated; ties go to the team's own (BYOC)
// host, then to the lowest id, so that the choice is deterministic.
package scheduler

// Capacity rule parameters (see the package comment).
const (
	MemoryPercent = 90
	CPUOvercommit = 16
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

// Fits reports whether a capsule of vcpus and memoryMB fits on h.
func (h Host) Fits(vcpus int, memoryMB int64) bool {
	return vcpus <= h.CPUs && vcpus <= h.FreeVCPUs() && memoryMB <= h.FreeMemoryMB()
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

// Pick returns the index in hosts of the host a capsule of vcpus and
// memoryMB goes to, and false when it fits on none.
func Pick(hosts []Host, vcpus int, memoryMB int64) (int, bool) {
	best := -1
	for i, h := range hosts {
		if h.Fits(vcpus, memoryMB) && (best < 0 || h.less(hosts[best])) {
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
