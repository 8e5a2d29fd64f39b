package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Runtime names accepted in WRENN_RUNTIME, besides "auto".
const (
	RuntimeGVisor      = "gvisor"
	RuntimeFirecracker = "firecracker"
)

// Agent is the configuration of wrenn-agent.
type Agent struct {
	// CPURL is the control plane's base URL (WRENN_CP_URL), without a
	// trailing slash.
	CPURL string
	// Dir is the agent's working directory (WRENN_DIR), absolute.
	Dir string
	// ListenAddr is where the RPC server for the control plane listens
	// (WRENN_HOST_LISTEN_ADDR).
	ListenAddr string
	// HeartbeatInterval is the time between two heartbeats
	// (WRENN_HEARTBEAT_INTERVAL).
	HeartbeatInterval time.Duration
	// Runtime is the resolved runtime driver: RuntimeGVisor or
	// RuntimeFirecracker, never "auto".
	Runtime string
	// FirecrackerBin is the Firecracker binary (WRENN_FIRECRACKER_BIN).
	FirecrackerBin string
	// FirecrackerJailer is Firecracker's jailer (WRENN_FIRECRACKER_JAILER);
	// "" runs Firecracker without it.
	FirecrackerJailer string
	// FirecrackerDiffSnapshots lets a restored VM's next pause write only
	// the memory it changed (WRENN_FIRECRACKER_DIFF_SNAPSHOTS, default
	// true; needs Firecracker 1.6 or later).
	FirecrackerDiffSnapshots bool
	// FirecrackerUIDBase is the first of the FirecrackerUIDCount uids the
	// jailer runs VMs as, one each (WRENN_FIRECRACKER_UID_BASE), and
	// FirecrackerGID the group all of them run in, which may attach to
	// the capsules' taps (WRENN_FIRECRACKER_GID). Unused without a jailer.
	FirecrackerUIDBase int
	FirecrackerGID     int
	// Runsc is gVisor's runsc binary (WRENN_RUNSC).
	Runsc string
	// CapsuleCIDR is the IPv4 pool capsule addresses come from, one /30
	// per capsule (WRENN_CAPSULE_CIDR).
	CapsuleCIDR netip.Prefix
	// NetworkPrefix starts the names of the agent's network namespaces,
	// host-side veths and firewall table (WRENN_NETWORK_PREFIX), so that
	// two agents on one machine (tests) keep apart.
	NetworkPrefix string
	// CapsuleDNSUpstreams are the resolvers the agent's DNS forwarder
	// asks for capsules (WRENN_CAPSULE_DNS_UPSTREAMS, "ip" or "ip:port",
	// comma-separated); empty: the nameservers of /etc/resolv.conf.
	CapsuleDNSUpstreams []netip.AddrPort
	// CapsuleOpenRanges are private IPv4 ranges capsules may reach despite
	// the fixed protections (WRENN_CAPSULE_OPEN_RANGES), subject to each
	// capsule's egress policy.
	CapsuleOpenRanges []netip.Prefix
	// WarmPool is how many booted capsules the agent keeps waiting per
	// template and size, so that a create does not wait for a boot
	// (WRENN_WARM_POOL; 0 turns it off).
	WarmPool int
	// Per-capsule limits the runtime enforces on the host; 0 leaves the
	// driver's default. CapsuleConsoleBytes bounds what the host keeps
	// of a capsule's console (WRENN_CAPSULE_CONSOLE_BYTES), CapsulePids
	// the host tasks of its sandbox (WRENN_CAPSULE_PIDS), CapsuleNoFile
	// the open files limit of its processes (WRENN_CAPSULE_NOFILE).
	CapsuleConsoleBytes int64
	CapsulePids         int64
	CapsuleNoFile       uint64
	// CapsuleHostFDs bounds the host file descriptors of each capsule's
	// sandbox and gofer (WRENN_CAPSULE_HOST_FDS).
	CapsuleHostFDs int
	// LogLevel and LogFormat ("text" or "json") shape the agent's log
	// (WRENN_LOG_LEVEL, WRENN_LOG_FORMAT).
	LogLevel  slog.Level
	LogFormat string
}

// FirecrackerUIDCount is how many uids from FirecrackerUIDBase jailed VMs
// take, one each: as many VMs as a host can run at once.
const FirecrackerUIDCount = 65536

// DefaultFirecrackerID is the default of WRENN_FIRECRACKER_UID_BASE and of
// WRENN_FIRECRACKER_GID: in the ids systemd leaves unused
// (1879048192–2147352575, docs/runtime.md), so far from regular users
// (1000–60000), from systemd's dynamic users and from the ranges useradd
// hands out in /etc/subuid (100000 up to 600100000) and systemd-nspawn picks
// for containers (524288–1879048191), and below 2^31, which some tools
// take for a negative id.
const DefaultFirecrackerID = 2_000_000_000

// maxFirecrackerUIDBase keeps the last uid of the range below 2^32-1,
// which the kernel reads as "no uid".
const maxFirecrackerUIDBase int64 = 1<<32 - 2 - (FirecrackerUIDCount - 1)

// networkPrefix is what WRENN_NETWORK_PREFIX may be: short enough that
// "<prefix>-<slot>" fits a 15-byte interface name.
var networkPrefix = regexp.MustCompile(`^[a-z][a-z0-9]{0,4}$`)

// agentProbe holds the files that decide WRENN_RUNTIME=auto, so that tests
// can point them at fixtures instead of this machine's /dev and /proc.
type agentProbe struct {
	kvm     string
	cpuinfo string
}

// LoadAgent reads wrenn-agent's settings from getenv. WRENN_RUNTIME=auto is
// resolved here by looking at this machine.
func LoadAgent(getenv func(string) string) (Agent, error) {
	return loadAgent(getenv, agentProbe{kvm: "/dev/kvm", cpuinfo: "/proc/cpuinfo"})
}

// AgentRuntime is the runtime an agent started with this environment runs:
// WRENN_RUNTIME resolved as LoadAgent does (auto → firecracker on a host
// that can, gvisor elsewhere), without needing the rest of its settings.
// `wrenn-agent runtime` prints it, so that set-up scripts build what that
// runtime needs.
func AgentRuntime(getenv func(string) string) (string, error) {
	return agentRuntime(getenv, agentProbe{kvm: "/dev/kvm", cpuinfo: "/proc/cpuinfo"})
}

func agentRuntime(getenv func(string) string, probe agentProbe) (string, error) {
	r := &reader{getenv: getenv}
	rt := r.runtime(probe, r.string("WRENN_FIRECRACKER_BIN", "/usr/local/bin/firecracker"))
	return rt, r.err
}

// runtime resolves WRENN_RUNTIME; bin is the Firecracker binary auto
// looks for.
func (r *reader) runtime(probe agentProbe, bin string) string {
	switch rt := strings.ToLower(r.string("WRENN_RUNTIME", "auto")); rt {
	case "auto":
		if firecrackerUsable(probe, bin) {
			return RuntimeFirecracker
		}
		return RuntimeGVisor
	case RuntimeGVisor, RuntimeFirecracker:
		return rt
	default:
		r.fail("WRENN_RUNTIME", rt, "must be auto, gvisor or firecracker")
		return ""
	}
}

func loadAgent(getenv func(string) string, probe agentProbe) (Agent, error) {
	r := &reader{getenv: getenv}
	var c Agent

	c.CPURL = r.url("WRENN_CP_URL")
	c.Dir = r.dir("WRENN_DIR", "/var/lib/wrenn")
	c.ListenAddr = r.listenAddr("WRENN_HOST_LISTEN_ADDR", ":50051")
	c.HeartbeatInterval = r.duration("WRENN_HEARTBEAT_INTERVAL", 30*time.Second)
	c.FirecrackerBin = r.string("WRENN_FIRECRACKER_BIN", "/usr/local/bin/firecracker")
	c.FirecrackerJailer = r.string("WRENN_FIRECRACKER_JAILER", "")
	c.FirecrackerDiffSnapshots = r.bool("WRENN_FIRECRACKER_DIFF_SNAPSHOTS", true)
	c.FirecrackerUIDBase = r.int("WRENN_FIRECRACKER_UID_BASE", DefaultFirecrackerID)
	if c.FirecrackerUIDBase < 1 || int64(c.FirecrackerUIDBase) > maxFirecrackerUIDBase {
		r.fail("WRENN_FIRECRACKER_UID_BASE", strconv.Itoa(c.FirecrackerUIDBase),
			fmt.Sprintf("must be 1..%d: never root, and its %d uids below 2^32-1", maxFirecrackerUIDBase, FirecrackerUIDCount))
	}
	c.FirecrackerGID = r.int("WRENN_FIRECRACKER_GID", DefaultFirecrackerID)
	if c.FirecrackerGID < 1 || int64(c.FirecrackerGID) > 1<<32-2 {
		r.fail("WRENN_FIRECRACKER_GID", strconv.Itoa(c.FirecrackerGID), "must be 1..4294967294: never root's group")
	}
	c.Runsc = r.string("WRENN_RUNSC", "/usr/local/bin/runsc")
	c.CapsuleCIDR = r.prefix("WRENN_CAPSULE_CIDR", "10.88.0.0/16")
	c.NetworkPrefix = r.string("WRENN_NETWORK_PREFIX", "wr")
	c.CapsuleDNSUpstreams = r.addrPorts("WRENN_CAPSULE_DNS_UPSTREAMS", 53)
	c.CapsuleOpenRanges = r.prefixes("WRENN_CAPSULE_OPEN_RANGES")
	for _, p := range c.CapsuleOpenRanges {
		if !p.Addr().Is4() {
			r.fail("WRENN_CAPSULE_OPEN_RANGES", p.String(), "must list IPv4 networks only: capsules have no IPv6")
		}
	}
	c.WarmPool = r.int("WRENN_WARM_POOL", 2)
	if c.WarmPool < 0 || c.WarmPool > 64 {
		r.fail("WRENN_WARM_POOL", strconv.Itoa(c.WarmPool), "must be 0..64")
	}
	if !networkPrefix.MatchString(c.NetworkPrefix) {
		r.fail("WRENN_NETWORK_PREFIX", c.NetworkPrefix, "must be 1 to 5 lowercase letters or digits, starting with a letter")
	}
	c.CapsuleConsoleBytes = int64(r.intIn("WRENN_CAPSULE_CONSOLE_BYTES", 4<<20, 64<<10, 1<<30))
	c.CapsulePids = int64(r.intIn("WRENN_CAPSULE_PIDS", 1024, 128, 1<<22))
	c.CapsuleNoFile = uint64(r.intIn("WRENN_CAPSULE_NOFILE", 65536, 64, 1<<20))
	c.CapsuleHostFDs = r.intIn("WRENN_CAPSULE_HOST_FDS", 16384, 1024, 1<<20)
	c.LogLevel = r.logLevel("WRENN_LOG_LEVEL")
	c.LogFormat = r.logFormat("WRENN_LOG_FORMAT")

	c.Runtime = r.runtime(probe, c.FirecrackerBin)

	if r.err != nil {
		return Agent{}, r.err
	}
	return c, nil
}

// firecrackerUsable reports whether this machine can run Firecracker
// microVMs: /dev/kvm alone is not enough, because a kernel may offer a
// paravirtual KVM without the CPU's VMX/SVM extensions, and Firecracker needs
// the hardware ones.
func firecrackerUsable(probe agentProbe, bin string) bool {
	if _, err := os.Stat(probe.kvm); err != nil {
		return false
	}
	info, err := os.ReadFile(probe.cpuinfo)
	if err != nil || !hasVirtFlag(info) {
		return false
	}
	fi, err := os.Stat(bin)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// hasVirtFlag reports whether a /proc/cpuinfo "flags" line lists vmx (Intel)
// or svm (AMD).
func hasVirtFlag(cpuinfo []byte) bool {
	for line := range bytes.Lines(cpuinfo) {
		key, flags, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(bytes.TrimSpace(key)) != "flags" {
			continue
		}
		for _, f := range bytes.Fields(flags) {
			if string(f) == "vmx" || string(f) == "svm" {
				return true
			}
		}
	}
	return false
}
