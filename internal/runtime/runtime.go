// Package runtime is the narrow interface between the host agent and the
// isolation technology that runs capsules (gVisor's runsc, Firecracker).
// Drivers do lifecycle only; exec and files go to envd over the capsule
// network, the same way on every driver. docs/runtime.md maps each method
// onto gVisor and Firecracker.
package runtime

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// EnvdPath is where every template carries envd; drivers start it as the
// capsule's init.
const EnvdPath = "/usr/bin/envd"

// EnvdPort is the TCP port envd listens on inside a capsule.
const EnvdPort = 49983

// Errors returned by drivers, checked with errors.Is.
var (
	// ErrNotFound: the driver knows no capsule with that id.
	ErrNotFound = errors.New("capsule not found")
	// ErrExists: a capsule with that id already exists.
	ErrExists = errors.New("capsule already exists")
)

// Spec is what a driver needs to start a capsule. The agent prepares the
// network namespace and the capsule directory before calling Create.
type Spec struct {
	// ID is the capsule id (a UUID chosen by the control plane).
	ID string
	// Dir is the capsule's own directory ($WRENN_DIR/sandboxes/<id>),
	// created by the agent; the driver keeps its bundle, writable layer and
	// logs there.
	Dir string
	// Image is the template's directory ($WRENN_DIR/images/<template>). A
	// driver never writes to it: many capsules share it.
	Image string
	// Hostname is the capsule's hostname.
	Hostname string
	// VCPUs and MemoryMB bound the capsule's CPU and memory.
	VCPUs    int
	MemoryMB int
	// DiskMB bounds the capsule's writable layer.
	DiskMB int
	// Network is the capsule's network, already set up by the agent.
	Network Network
}

// Network describes a capsule's network as the agent set it up.
type Network struct {
	// NetnsPath is the capsule's network namespace
	// ($WRENN_DIR/netns/<prefix>-<id>).
	NetnsPath string
	// Device is the interface inside that namespace the capsule's traffic
	// goes through: the capsule end of a veth pair, which gVisor's netstack
	// takes over ("eth0"), or the tap device a VM's virtio-net is backed by.
	Device string
	// Address and Gateway are what the sandbox configures itself with
	// (network.Config.Sandbox). With a veth they are the capsule's address
	// and prefix (e.g. 10.88.0.2/30) and the host end of its veth, which
	// gVisor takes from the namespace. With a tap they are the guest's
	// fixed link address and the tap's, which Firecracker passes to the
	// guest kernel; the namespace translates the guest's address to the
	// capsule's, so a saved guest comes back in any capsule.
	Address netip.Prefix
	Gateway netip.Addr
}

// State is what a driver reports about a capsule.
type State string

// States a driver reports.
const (
	StateRunning State = "running"
	// StateStopped: the capsule exited on its own and was not destroyed.
	StateStopped State = "stopped"
	// StateFrozen: the capsule's processes are stopped in place, as
	// Checkpoint leaves them; Thaw continues them.
	StateFrozen State = "frozen"
)

// Info is a capsule as the driver sees it.
type Info struct {
	ID        string
	State     State
	StartedAt time.Time
}

// Driver runs capsules. Implementations are safe for concurrent use. The
// agent never runs two lifecycle methods (Create, Destroy, and later pause
// and resume) on one capsule at the same time; Info and List may run
// alongside them and report what they see.
type Driver interface {
	// Name is the driver's name as configured ("gvisor", "firecracker").
	Name() string
	// Create starts a capsule with envd as its init and returns once the
	// capsule runs; it does not wait for envd to answer. On error nothing
	// of the capsule is left running. Errors: ErrExists.
	Create(ctx context.Context, spec Spec) (Info, error)
	// Destroy stops the capsule and removes the driver's own state of it
	// (the capsule's Dir belongs to the agent, which removes it after).
	// Destroying an unknown capsule returns nil.
	Destroy(ctx context.Context, id string) error
	// Info reports one capsule. Errors: ErrNotFound.
	Info(ctx context.Context, id string) (Info, error)
	// List reports every capsule the driver has, including ones started by
	// an earlier agent process, so that the agent can re-adopt or remove them.
	List(ctx context.Context) ([]Info, error)
	// UsableTemplate reports whether the template directory dir
	// ($WRENN_DIR/images/<name>) holds what this driver boots a capsule
	// from — a root filesystem for gVisor, a disk image for a VM — and why
	// not when it does not. Snapshot templates are the agent's business,
	// not the driver's.
	UsableTemplate(dir string) error
}

// What a capsule's sandbox attaches to inside its network namespace.
const (
	// PeerVeth: the capsule end of the veth pair, taken over by a user-space
	// network stack such as gVisor's.
	PeerVeth = "veth"
	// PeerTap: a tap device routed to the veth, backing a microVM's
	// virtio-net; the guest kernel holds a fixed address that the
	// namespace translates to the capsule's.
	PeerTap = "tap"
)

// NetworkPeerer is a driver that says which peer its capsules attach to
// (PeerVeth or PeerTap); a driver without the method gets PeerVeth. The
// agent sets up every capsule network with it, and Network.Device names it.
type NetworkPeerer interface {
	NetworkPeer() string
}

// PeerOf is the peer driver d's capsules attach to.
func PeerOf(d Driver) string {
	if p, ok := d.(NetworkPeerer); ok && p.NetworkPeer() != "" {
		return p.NetworkPeer()
	}
	return PeerVeth
}

// TapGrouper is a PeerTap driver whose VMMs attach to their tap without
// root's privileges: TapGroup is the gid they run in, which the network
// manager makes the group of every capsule's tap (0: root only).
type TapGrouper interface {
	TapGroup() int
}

// TapGroupOf is the group that must be able to attach to driver d's taps;
// 0 (root only) for a driver without TapGroup.
func TapGroupOf(d Driver) int {
	if g, ok := d.(TapGrouper); ok {
		return g.TapGroup()
	}
	return 0
}

// TemplateImager is a driver that boots a template from a file made out of
// its rootfs rather than from the directory itself (Firecracker: an ext4
// image). The agent calls it for a template it has just imported, or
// received from another host without such a file, before UsableTemplate.
type TemplateImager interface {
	// MakeTemplateImage writes the boot file of the template directory dir
	// (whose rootfs is complete) beside it, as dir+suffix, whole or not at
	// all, and returns suffix; the agent moves it along with dir.
	MakeTemplateImage(ctx context.Context, dir string) (suffix string, err error)
}

// Checkpointer is a driver that can save a capsule whole — memory,
// processes, open files and its writable layer — and start a capsule again
// from what it saved. Pause, resume and snapshots need it; the agent
// refuses them on a driver without it.
type Checkpointer interface {
	// Checkpoint freezes the capsule and writes its whole state into
	// imageDir (created by the caller, empty), synced to disk before it
	// returns. The capsule is left frozen, so that the caller decides what
	// happens next: Destroy once the saved state is recorded, or Thaw. On
	// error the capsule runs on as before.
	Checkpoint(ctx context.Context, id, imageDir string) error
	// Thaw continues a frozen capsule.
	Thaw(ctx context.Context, id string) error
	// Restore starts a capsule from the state saved in imageDir. spec may
	// differ from the saved capsule's in ID, Dir, Hostname and Network —
	// how a snapshot becomes many capsules — but not in Image or size.
	// imageDir is only read, so one saved state can be restored many
	// times. On error nothing of the capsule is left running.
	Restore(ctx context.Context, spec Spec, imageDir string) (Info, error)
}
