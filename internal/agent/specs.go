package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/wrenn-dev/wrenn/internal/version"
)

// Specs is what a host is: the fixed facts sent at registration.
type Specs struct {
	Arch          string
	CPUs          int
	MemoryMB      int64
	DiskMB        int64
	Hostname      string
	Runtime       string
	KernelVersion string
	AgentVersion  string
}

// Capacity is what a host has free right now, sent with every heartbeat.
type Capacity struct {
	FreeCPUs     int
	FreeMemoryMB int64
	FreeDiskMB   int64
}

const mib = 1 << 20

// ReadSpecs reads this machine's specs. Disk is that of the filesystem
// holding dir (WRENN_DIR), where capsule disks and snapshots will live.
func ReadSpecs(dir, runtimeName string) (Specs, error) {
	mem, err := readMeminfo()
	if err != nil {
		return Specs{}, fmt.Errorf("reading specs: %w", err)
	}
	disk, err := statDisk(dir)
	if err != nil {
		return Specs{}, fmt.Errorf("reading specs: %w", err)
	}
	hostname, err := os.Hostname()
	if err != nil {
		return Specs{}, fmt.Errorf("reading specs: hostname: %w", err)
	}
	return Specs{
		Arch:          runtime.GOARCH,
		CPUs:          runtime.NumCPU(),
		MemoryMB:      mem.totalKB * 1024 / mib,
		DiskMB:        int64(disk.total / mib),
		Hostname:      hostname,
		Runtime:       runtimeName,
		KernelVersion: kernelVersion(),
		AgentVersion:  version.Version,
	}, nil
}

// ReadCapacity reads what this machine has free now. Until capsules exist
// every CPU counts as free.
func ReadCapacity(dir string) (Capacity, error) {
	mem, err := readMeminfo()
	if err != nil {
		return Capacity{}, fmt.Errorf("reading capacity: %w", err)
	}
	disk, err := statDisk(dir)
	if err != nil {
		return Capacity{}, fmt.Errorf("reading capacity: %w", err)
	}
	return Capacity{
		FreeCPUs:     runtime.NumCPU(),
		FreeMemoryMB: mem.availableKB * 1024 / mib,
		FreeDiskMB:   int64(disk.free / mib),
	}, nil
}

// diskUsage is a filesystem's size and the space still usable on it, in
// bytes; statDisk fills it on each system.
type diskUsage struct {
	total, free uint64
}

type meminfo struct {
	totalKB, availableKB int64
}

func readMeminfo() (meminfo, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return meminfo{}, fmt.Errorf("reading meminfo: %w", err)
	}
	return parseMeminfo(b)
}

// parseMeminfo picks MemTotal and MemAvailable out of /proc/meminfo. Both are
// required: MemAvailable (not MemFree) is what the kernel can hand out
// without swapping, which is what capacity means for new capsules.
func parseMeminfo(b []byte) (meminfo, error) {
	var m meminfo
	var seenTotal, seenAvail bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "MemTotal":
			dst, seenTotal = &m.totalKB, true
		case "MemAvailable":
			dst, seenAvail = &m.availableKB, true
		default:
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return meminfo{}, fmt.Errorf("parsing meminfo %s: %w", key, err)
		}
		*dst = n
	}
	if !seenTotal || !seenAvail {
		return meminfo{}, fmt.Errorf("parsing meminfo: MemTotal or MemAvailable missing")
	}
	return m, nil
}

// kernelVersion returns the running kernel's release, or "" where the
// system does not say.
func kernelVersion() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// uptimeSeconds returns how long the machine has been up, or 0 where the
// system does not say.
func uptimeSeconds() int64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), " ")
	f, err := strconv.ParseFloat(first, 64)
	if err != nil {
		return 0
	}
	return int64(f)
}
