package envd

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
)

// metricsSampler computes CPU use from /proc/stat between two samples. It is
// safe for concurrent use.
type metricsSampler struct {
	mu                sync.Mutex
	lastBusy, lastAll uint64
	lastAt            time.Time
}

// minCPUWindow is the shortest interval a CPU percentage is computed over.
const minCPUWindow = 100 * time.Millisecond

func (m *metricsSampler) sample() (*envdclient.Metrics, error) {
	out := &envdclient.Metrics{CPUCount: runtime.NumCPU(), Timestamp: time.Now().UTC().Format(time.RFC3339Nano)}
	m.mu.Lock()
	defer m.mu.Unlock()
	busy, all, err := readCPU()
	if err != nil {
		return nil, err
	}
	if m.lastAt.IsZero() || time.Since(m.lastAt) < minCPUWindow && all == m.lastAll {
		// No earlier sample to compare with: take one over a short window.
		time.Sleep(minCPUWindow)
		m.lastBusy, m.lastAll = busy, all
		if busy, all, err = readCPU(); err != nil {
			return nil, err
		}
	}
	if all > m.lastAll {
		out.CPUUsedPercent = 100 * float64(busy-m.lastBusy) / float64(all-m.lastAll)
	}
	m.lastBusy, m.lastAll, m.lastAt = busy, all, time.Now()

	if err := readMemory(out); err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return nil, fmt.Errorf("reading disk usage: %w", err)
	}
	out.DiskTotalBytes = st.Blocks * uint64(st.Bsize)
	out.DiskUsedBytes = (st.Blocks - st.Bfree) * uint64(st.Bsize)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			out.Load1, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	return out, nil
}

// readCPU returns the busy and total jiffies of all CPUs from /proc/stat.
func readCPU() (busy, all uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("reading cpu usage: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("reading cpu usage: unexpected /proc/stat line %q", line)
	}
	for i, f := range fields[1:] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("reading cpu usage: %w", err)
		}
		if i >= 8 { // guest time is already counted in user time
			break
		}
		all += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, all, nil
}

// readMemory fills in memory use from /proc/meminfo.
func readMemory(out *envdclient.Metrics) error {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return fmt.Errorf("reading memory usage: %w", err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "MemTotal":
			out.MemTotalBytes = v << 10
		case "MemAvailable":
			out.MemAvailableBytes = v << 10
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading memory usage: %w", err)
	}
	out.MemUsedBytes = out.MemTotalBytes - min(out.MemAvailableBytes, out.MemTotalBytes)
	return nil
}
