package agent

import (
	"context"
	"errors"
)

// Errors of pause, resume and snapshots.
var (
	errWrongState   = errors.New("capsule is not in a state that allows this")
	errBaseTemplate = errors.New("base templates cannot be deleted")
)

// TemplateInfo is a template as the agent reports it.
type TemplateInfo struct {
	Name      string
	Kind      string
	VCPUs     int
	MemoryMB  int
	DiskMB    int
	SizeBytes int64
}

var errLifecycleWIP = errors.New("pause, resume and snapshots are being built")

// Pause saves a running capsule and stops it.
func (c *Capsules) Pause(ctx context.Context, id string) (CapsuleInfo, error) {
	return CapsuleInfo{}, errLifecycleWIP
}

// Resume restores a paused capsule.
func (c *Capsules) Resume(ctx context.Context, id string) (CapsuleInfo, error) {
	return CapsuleInfo{}, errLifecycleWIP
}

// Snapshot makes a template of a capsule's saved state.
func (c *Capsules) Snapshot(ctx context.Context, id, template string, resume bool) (CapsuleInfo, TemplateInfo, error) {
	return CapsuleInfo{}, TemplateInfo{}, errLifecycleWIP
}

// DeleteTemplate removes a snapshot template.
func (c *Capsules) DeleteTemplate(ctx context.Context, name string) error {
	return errLifecycleWIP
}
