// Package envd is the guest agent that runs inside every capsule: an HTTP
// server (Connect RPC for processes and the filesystem, plain HTTP for file
// transfer, init, metrics and pause preparation) guarded by the capsule's
// access token, which also acts as the capsule's init when it runs as PID 1.
// See docs/envd.md for the API.
package envd

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Config is envd's configuration, from its command line.
type Config struct {
	// Host is the address to listen on ("" = all interfaces).
	Host string
	// Port is the TCP port (default 49983).
	Port int
	// Debug turns on debug logging.
	Debug bool
	// Hostname is set as the hostname when envd is init.
	Hostname string
	// Init makes envd mount the userland filesystems and set the hostname
	// even when it is not PID 1. Signalling every process at shutdown stays
	// PID 1's alone: kill(-1) from anywhere else reaches beyond the capsule.
	Init bool
	// Keepalive is the idle interval between keepalive events on streams.
	Keepalive time.Duration
	// ShutdownGrace is how long processes get between SIGTERM and SIGKILL
	// when envd stops.
	ShutdownGrace time.Duration
	// BufferSize is the per-process output replay buffer in bytes.
	BufferSize int
	// MaxProcs, when above 0 and envd is init, bounds the tasks of the
	// processes envd starts (and theirs) with a pids cgroup of the
	// capsule's own kernel, so that a fork loop meets EAGAIN inside
	// before the runtime runs out of host tasks (WRENN_ENVD_MAX_PROCS).
	MaxProcs int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Port:          49983,
		Keepalive:     15 * time.Second,
		ShutdownGrace: 5 * time.Second,
		BufferSize:    1 << 20,
	}
}

// Validate reports the first bad setting.
func (c Config) Validate() error {
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("--port %d: must be 0..65535", c.Port)
	}
	if c.Keepalive <= 0 {
		return errors.New("--keepalive must be positive")
	}
	if c.ShutdownGrace < 0 {
		return errors.New("--shutdown-grace must not be negative")
	}
	if c.BufferSize < 1<<20 {
		return errors.New("--buffer-size must be at least 1 MiB")
	}
	return nil
}

// Addr is the listen address.
func (c Config) Addr() string {
	return net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
}
