//go:build !linux

package agent

import (
	"errors"
	"fmt"
)

// statDisk is only implemented on Linux, the one system wrenn-agent runs on.
func statDisk(path string) (diskUsage, error) {
	return diskUsage{}, fmt.Errorf("statfs %s: %w", path, errors.ErrUnsupported)
}
