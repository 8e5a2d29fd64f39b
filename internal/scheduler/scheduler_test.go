package scheduler_test

import (
	"testing"

	"github.com/wrenn-dev/wrenn/internal/scheduler"
)

func TestPick(t *testing.T) {
	hosts := []scheduler.Host{
		{ID: "a", CPUs: 4, MemoryMB: 10000, AllocatedMemoryMB: 5000, AllocatedVCPUs: 4},
		{ID: "b", CPUs: 2, MemoryMB: 4000, AllocatedMemoryMB: 1000, AllocatedVCPUs: 2*scheduler.CPUOvercommit - 1},
		{ID: "c", CPUs: 8, MemoryMB: 20000, AllocatedMemoryMB: 10000, AllocatedVCPUs: 0},
		{ID: "d", BYOC: true, CPUs: 8, MemoryMB: 20000, AllocatedMemoryMB: 10000, AllocatedVCPUs: 0},
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
		i, ok := scheduler.Pick(hosts, tt.vcpus, tt.memoryMB)
		got := ""
		if ok {
			got = hosts[i].ID
		}
		if got != tt.want {
			t.Errorf("%s: Pick(%d vCPUs, %d MB) = %q, want %q", tt.name, tt.vcpus, tt.memoryMB, got, tt.want)
		}
	}
	if v, m := scheduler.Free(hosts); v != 8 || m != 8000 {
		t.Errorf("Free: got %d vCPUs and %d MB, want 8 and 8000", v, m)
	}
}
