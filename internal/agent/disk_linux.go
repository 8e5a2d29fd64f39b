package agent

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// statDisk reports the size of the filesystem holding path and the space an
// unprivileged writer could still use on it (f_bavail, not f_bfree, so the
// blocks reserved for root do not count as free).
func statDisk(path string) (diskUsage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return diskUsage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	return diskUsage{total: st.Blocks * bs, free: st.Bavail * bs}, nil
}
