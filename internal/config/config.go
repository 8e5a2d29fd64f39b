// Package config loads the settings of each Wrenn binary from environment
// variables, once, at start-up. Load functions take getenv so that tests can
// pass their own; a bad value fails fast with an error naming the variable.
package config

import (
	"fmt"
	"strconv"
	"time"
)

// reader reads typed values from getenv and remembers the first error.
type reader struct {
	getenv func(string) string
	err    error
}

func (r *reader) fail(name, value, why string) {
	if r.err == nil {
		r.err = fmt.Errorf("config: %s=%q: %s", name, value, why)
	}
}

func (r *reader) string(name, def string) string {
	if v := r.getenv(name); v != "" {
		return v
	}
	return def
}

func (r *reader) required(name string) string {
	v := r.getenv(name)
	if v == "" && r.err == nil {
		r.err = fmt.Errorf("config: %s is required", name)
	}
	return v
}

func (r *reader) duration(name string, def time.Duration) time.Duration {
	v := r.getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(name, v, "not a duration (examples: 90s, 5m, 24h)")
		return def
	}
	if d <= 0 {
		r.fail(name, v, "must be positive")
		return def
	}
	return d
}

func (r *reader) int(name string, def int) int {
	v := r.getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.fail(name, v, "not an integer")
		return def
	}
	return n
}

func (r *reader) bool(name string, def bool) bool {
	v := r.getenv(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, v, "not a boolean (true or false)")
		return def
	}
	return b
}
