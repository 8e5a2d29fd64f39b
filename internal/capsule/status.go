// Package capsule holds what every layer means by a capsule's status: one
// typed set of names, used by the store, the REST API, the host agent and
// (as the CapsuleStatus enum) the agent's RPCs.
package capsule

// Status is a capsule's status. The control plane records the statuses a
// user sees; the agent reports the subset a host can observe.
type Status string

// Statuses as the control plane records them (and the API shows them).
const (
	// Pending: created, not yet placed on a host.
	Pending Status = "pending"
	// Starting: placed; its host is starting it.
	Starting Status = "starting"
	// Running: its sandbox runs and envd answers.
	Running Status = "running"
	// Pausing: its memory and files are being saved to disk.
	Pausing Status = "pausing"
	// Paused: saved to disk, not running; a resume continues it.
	Paused Status = "paused"
	// Resuming: being restored from what its pause saved.
	Resuming Status = "resuming"
	// Stopped: destroyed, or ended on its own; it never runs again.
	Stopped Status = "stopped"
	// Error: a start failed; the reason says why.
	Error Status = "error"
	// Missing: its host has not been heard from; the host's next
	// heartbeat says what became of it.
	Missing Status = "missing"
)

// Pooled is a status only the agent uses, in its own records: a capsule of
// the warm pool, booted ahead and waiting to be handed out. It is never
// reported to the control plane.
const Pooled Status = "pooled"
