package firecracker

import (
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"

	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// Names the driver gives a VM's devices and files. The disk is named
// relative to Firecracker's working directory (the capsule's directory, or
// the jail's root): a snapshot records drive paths as given, so a relative
// one finds the restored capsule's own disk in its own directory.
const (
	rootDrive = "rootfs"
	diskFile  = "rootfs.ext4"
	netIface  = "eth0"
	// maxVCPUs is Firecracker's limit.
	maxVCPUs = 32
)

// machine is the whole configuration the driver sends Firecracker for a
// capsule, in the order it is sent (see boot). It is a pure function of
// the spec (machineFor), so that what a VM gets is tested where no VM
// runs.
type machine struct {
	Machine models.MachineConfiguration
	Boot    models.BootSource
	Drives  []models.Drive
	// Net is nil for a capsule without a network.
	Net *models.NetworkInterface
}

// machineFor is the configuration of capsule spec. kernel is the guest
// kernel as Firecracker opens it (an absolute path, or "vmlinux" inside a
// jail); serial keeps the guest's serial console.
func machineFor(spec runtime.Spec, kernel string, serial bool) (machine, error) {
	if err := validate(spec); err != nil {
		return machine{}, err
	}
	args, err := bootArgs(spec, serial)
	if err != nil {
		return machine{}, err
	}
	m := machine{
		Machine: models.MachineConfiguration{
			VcpuCount:  ptr(int64(spec.VCPUs)),
			MemSizeMib: ptr(int64(spec.MemoryMB)),
			Smt:        ptr(false),
		},
		Boot: models.BootSource{KernelImagePath: ptr(kernel), BootArgs: args},
		Drives: []models.Drive{{
			DriveID:      ptr(rootDrive),
			PathOnHost:   ptr(diskFile),
			IsRootDevice: ptr(true),
			IsReadOnly:   ptr(false),
		}},
	}
	if spec.Network.NetnsPath != "" {
		m.Net = &models.NetworkInterface{
			IfaceID:     ptr(netIface),
			HostDevName: ptr(spec.Network.Device),
			GuestMac:    guestMAC(spec),
		}
	}
	return m, nil
}

// bootArgs is the guest kernel's command line: root on the first virtio
// block device, read-write; envd as init; the sandbox's address (with a
// tap peer the fixed network.GuestAddr, which the capsule's namespace
// translates to the capsule's) and hostname on eth0 from ip= (the kernel's
// IP autoconfiguration, CONFIG_IP_PNP, which also sets the hostname), so
// the guest answers before envd starts; no PCI (virtio-mmio only). Nothing goes after
// a "--": the VMM (Firecracker, QEMU's microvm) appends the virtio-mmio
// devices to the command line, and after "--" they would be init's
// arguments instead of the kernel's.
func bootArgs(spec runtime.Spec, serial bool) (string, error) {
	args := []string{"reboot=k", "panic=1", "pci=off", "rw", "root=/dev/vda", "rootfstype=ext4"}
	if serial {
		args = append(args, "console=ttyS0")
	} else {
		args = append(args, "8250.nr_uarts=0", "quiet")
	}
	if spec.Hostname != "" && !hostnameRe.MatchString(spec.Hostname) {
		return "", fmt.Errorf("hostname %q cannot go on a kernel command line", spec.Hostname)
	}
	if spec.Network.NetnsPath != "" {
		n := spec.Network
		if !n.Address.IsValid() || !n.Address.Addr().Is4() || !n.Gateway.Is4() {
			return "", fmt.Errorf("capsule network %v via %v: a microVM needs an IPv4 address and gateway", n.Address, n.Gateway)
		}
		mask := net.IP(net.CIDRMask(n.Address.Bits(), 32)).String()
		// client::gateway:netmask:hostname:device:autoconf
		args = append(args, fmt.Sprintf("ip=%s::%s:%s:%s:%s:off", n.Address.Addr(), n.Gateway, mask, spec.Hostname, netIface))
	}
	args = append(args, "init="+runtime.EnvdPath)
	return strings.Join(args, " "), nil
}

var hostnameRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// guestMAC is a locally administered MAC made of the guest's address
// (06:00:a9:fe:00:02 for network.GuestAddr), the same in every capsule, as
// a saved guest expects it.
func guestMAC(spec runtime.Spec) string {
	a := spec.Network.Address.Addr().As4()
	return fmt.Sprintf("06:00:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3])
}

// validate reports what makes spec unusable for a microVM.
func validate(spec runtime.Spec) error {
	switch {
	case !validID(spec.ID):
		return fmt.Errorf("invalid capsule id %q", spec.ID)
	case spec.Dir == "" || spec.Dir[0] != '/':
		return fmt.Errorf("capsule dir %q is not absolute", spec.Dir)
	case spec.VCPUs < 1 || spec.VCPUs > maxVCPUs:
		return fmt.Errorf("vcpus %d: a microVM has 1 to %d", spec.VCPUs, maxVCPUs)
	case spec.MemoryMB < 1 || spec.DiskMB < 1:
		return fmt.Errorf("memory and disk must be positive (got %d MB, %d MB)", spec.MemoryMB, spec.DiskMB)
	}
	return nil
}

// validID reports whether id can name a VM, a jail and a directory
// without escaping anything: the jailer takes ids of letters, digits and
// dashes, at most 64 long.
func validID(id string) bool {
	return idRe.MatchString(id)
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,63}$`)

func ptr[T any](v T) *T { return &v }
