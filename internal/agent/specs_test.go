package agent

import (
	"os"
	"runtime"
	"testing"
)

func TestReadSpecsFromThisMachine(t *testing.T) {
	dir := t.TempDir()
	got, err := ReadSpecs(dir, "gvisor")
	if err != nil {
		t.Fatalf("ReadSpecs: %v", err)
	}
	host, _ := os.Hostname()
	if got.Arch != runtime.GOARCH || got.Hostname != host || got.Runtime != "gvisor" {
		t.Errorf("ReadSpecs = %+v, want arch %s, hostname %s, runtime gvisor", got, runtime.GOARCH, host)
	}
	if got.CPUs < 1 || got.CPUs != runtime.NumCPU() {
		t.Errorf("cpus = %d, want %d", got.CPUs, runtime.NumCPU())
	}
	// Any machine that runs the tests has between 256 MiB and 64 TiB.
	if got.MemoryMB < 256 || got.MemoryMB > 64<<20 {
		t.Errorf("memory_mb = %d, not a plausible amount", got.MemoryMB)
	}
	if got.DiskMB < 1 {
		t.Errorf("disk_mb = %d, want > 0", got.DiskMB)
	}
	if got.KernelVersion == "" || got.AgentVersion == "" {
		t.Errorf("kernel %q, agent version %q: want both set", got.KernelVersion, got.AgentVersion)
	}

	free, err := ReadCapacity(dir)
	if err != nil {
		t.Fatalf("ReadCapacity: %v", err)
	}
	if free.FreeCPUs != got.CPUs {
		t.Errorf("free cpus = %d, want %d (no capsules run yet)", free.FreeCPUs, got.CPUs)
	}
	if free.FreeMemoryMB <= 0 || free.FreeMemoryMB > got.MemoryMB {
		t.Errorf("free memory %d MB of %d MB", free.FreeMemoryMB, got.MemoryMB)
	}
	if free.FreeDiskMB < 0 || free.FreeDiskMB > got.DiskMB {
		t.Errorf("free disk %d MB of %d MB", free.FreeDiskMB, got.DiskMB)
	}
	if up := uptimeSeconds(); up <= 0 {
		t.Errorf("uptime = %d s, want > 0", up)
	}
}

func TestReadSpecsMissingDir(t *testing.T) {
	if _, err := ReadSpecs(t.TempDir()+"/nope", "gvisor"); err == nil {
		t.Error("ReadSpecs of a missing WRENN_DIR succeeded")
	}
}

func TestParseMeminfo(t *testing.T) {
	const sample = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20480000 kB\nBuffers:  1 kB\n"
	got, err := parseMeminfo([]byte(sample))
	if err != nil {
		t.Fatalf("parseMeminfo: %v", err)
	}
	if got.totalKB != 24576000 || got.availableKB != 20480000 {
		t.Errorf("parseMeminfo = %+v", got)
	}
	for _, bad := range []string{"", "MemTotal: 1 kB\n", "MemTotal: x kB\nMemAvailable: 1 kB\n"} {
		if _, err := parseMeminfo([]byte(bad)); err == nil {
			t.Errorf("parseMeminfo(%q) succeeded", bad)
		}
	}
}
