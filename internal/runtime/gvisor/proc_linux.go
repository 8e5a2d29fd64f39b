package gvisor

import "syscall"

// detachedProcAttr puts runsc in its own session, so that signals sent to
// the agent's process group (Ctrl-C in a terminal) do not reach capsules.
func detachedProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true}
}
