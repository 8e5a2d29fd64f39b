package store

import (
	"context"
	"encoding/json"
	"time"
)

// Capsule states (DESIGN §5). Every change of state is a compare-and-set.
const (
	CapsulePending  = "pending"
	CapsuleStarting = "starting"
	CapsuleRunning  = "running"
	CapsulePausing  = "pausing"
	CapsulePaused   = "paused"
	CapsuleResuming = "resuming"
	CapsuleStopped  = "stopped"
	CapsuleError    = "error"
	CapsuleMissing  = "missing"
)

// Capsule is a capsule as the control plane records it.
type Capsule struct {
	ID           string
	TeamID       string
	HostID       string // "" before it is placed, or after its host was deleted
	Template     string
	Status       string
	StatusReason string
	VCPUs        int
	MemoryMB     int
	DiskMB       int
	TimeoutSec   int
	Metadata     map[string]string
	Address      string // private address on its host; never shown to users
	CreatedBy    string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	StartedAt    *time.Time
	StoppedAt    *time.Time
	LastActiveAt time.Time
}

const capsuleColumns = `id::text, team_id::text, coalesce(host_id::text, ''), template, status, status_reason,
	vcpus, memory_mb, disk_mb, timeout_sec, metadata, address, created_by, created_at, updated_at,
	started_at, stopped_at, last_active_at`

// scanCapsule reads one row of capsuleColumns.
func scanCapsule(row interface{ Scan(...any) error }) (Capsule, error) {
	var c Capsule
	var meta []byte
	err := row.Scan(&c.ID, &c.TeamID, &c.HostID, &c.Template, &c.Status, &c.StatusReason,
		&c.VCPUs, &c.MemoryMB, &c.DiskMB, &c.TimeoutSec, &meta, &c.Address, &c.CreatedBy,
		&c.CreatedAt, &c.UpdatedAt, &c.StartedAt, &c.StoppedAt, &c.LastActiveAt)
	if err != nil {
		return Capsule{}, err
	}
	if err := json.Unmarshal(meta, &c.Metadata); err != nil {
		return Capsule{}, err
	}
	return c, nil
}

// GetCapsule returns the capsule id (a UUID) of team teamID. A capsule of
// another team is ErrNotFound.
func (s *Store) GetCapsule(ctx context.Context, teamID, id string) (Capsule, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+capsuleColumns+` FROM capsules WHERE id = $1 AND team_id = $2`, id, teamID)
	c, err := scanCapsule(row)
	if err != nil {
		return Capsule{}, notFound("getting capsule", err)
	}
	return c, nil
}
