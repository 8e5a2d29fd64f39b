package config

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// noFirecracker is a probe that never finds hardware virtualization.
func noFirecracker(t *testing.T) agentProbe {
	dir := t.TempDir()
	return agentProbe{kvm: filepath.Join(dir, "kvm"), cpuinfo: filepath.Join(dir, "cpuinfo")}
}

func TestLoadAgentDefaults(t *testing.T) {
	got, err := loadAgent(envOf(map[string]string{"WRENN_CP_URL": "https://cp.example.com/"}), noFirecracker(t))
	if err != nil {
		t.Fatalf("loadAgent: %v", err)
	}
	want := Agent{
		CPURL:                    "https://cp.example.com",
		Dir:                      "/var/lib/wrenn",
		ListenAddr:               ":50051",
		HeartbeatInterval:        30 * time.Second,
		Runtime:                  RuntimeGVisor,
		FirecrackerBin:           "/usr/local/bin/firecracker",
		FirecrackerDiffSnapshots: true,
		FirecrackerUIDBase:       2000000000,
		FirecrackerGID:           2000000000,
		Runsc:                    "/usr/local/bin/runsc",
		CapsuleCIDR:              netip.MustParsePrefix("10.88.0.0/16"),
		NetworkPrefix:            "wr",
		WarmPool:                 2,
		CapsuleConsoleBytes:      4 << 20,
		CapsulePids:              1024,
		CapsuleNoFile:            65536,
		CapsuleHostFDs:           16384,
		LogLevel:                 slog.LevelInfo,
		LogFormat:                "text",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loadAgent = %+v, want %+v", got, want)
	}
}

func TestLoadAgentSet(t *testing.T) {
	got, err := loadAgent(envOf(map[string]string{
		"WRENN_CP_URL":                "http://127.0.0.1:8000",
		"WRENN_DIR":                   "/srv/wrenn",
		"WRENN_HOST_LISTEN_ADDR":      "10.0.0.5:6000",
		"WRENN_HEARTBEAT_INTERVAL":    "300ms",
		"WRENN_RUNTIME":               "firecracker",
		"WRENN_FIRECRACKER_BIN":       "/opt/fc",
		"WRENN_FIRECRACKER_JAILER":    "/opt/jailer",
		"WRENN_FIRECRACKER_UID_BASE":  "300000",
		"WRENN_FIRECRACKER_GID":       "299999",
		"WRENN_RUNSC":                 "/opt/runsc",
		"WRENN_CAPSULE_CIDR":          "172.30.0.0/20",
		"WRENN_NETWORK_PREFIX":        "w2",
		"WRENN_WARM_POOL":             "0",
		"WRENN_CAPSULE_CONSOLE_BYTES": "1048576",
		"WRENN_CAPSULE_PIDS":          "4096",
		"WRENN_CAPSULE_NOFILE":        "1024",
		"WRENN_CAPSULE_HOST_FDS":      "4096",
		"WRENN_LOG_LEVEL":             "debug",
		"WRENN_LOG_FORMAT":            "JSON",
		"WRENN_CAPSULE_DNS_UPSTREAMS": "192.0.2.53, 192.0.2.54:5353",
		"WRENN_CAPSULE_OPEN_RANGES":   "10.20.0.0/16,192.168.7.7",
	}), noFirecracker(t))
	if err != nil {
		t.Fatalf("loadAgent: %v", err)
	}
	want := Agent{
		CPURL:                    "http://127.0.0.1:8000",
		Dir:                      "/srv/wrenn",
		ListenAddr:               "10.0.0.5:6000",
		HeartbeatInterval:        300 * time.Millisecond,
		Runtime:                  RuntimeFirecracker,
		FirecrackerBin:           "/opt/fc",
		FirecrackerJailer:        "/opt/jailer",
		FirecrackerDiffSnapshots: true,
		FirecrackerUIDBase:       300000,
		FirecrackerGID:           299999,
		Runsc:                    "/opt/runsc",
		CapsuleCIDR:              netip.MustParsePrefix("172.30.0.0/20"),
		NetworkPrefix:            "w2",
		CapsuleConsoleBytes:      1 << 20,
		CapsulePids:              4096,
		CapsuleNoFile:            1024,
		CapsuleHostFDs:           4096,
		LogLevel:                 slog.LevelDebug,
		LogFormat:                "json",
		CapsuleDNSUpstreams:      []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53"), netip.MustParseAddrPort("192.0.2.54:5353")},
		CapsuleOpenRanges:        []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("192.168.7.7/32")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loadAgent = %+v, want %+v", got, want)
	}
}

func TestLoadAgentBadValues(t *testing.T) {
	tests := []struct {
		name, value string
	}{
		{"WRENN_CP_URL", ""},
		{"WRENN_CP_URL", "cp.example.com"},
		{"WRENN_CP_URL", "ftp://cp.example.com"},
		{"WRENN_CP_URL", "https://"},
		{"WRENN_CP_URL", "https://cp.example.com/?x=1"},
		{"WRENN_HOST_LISTEN_ADDR", "50051"},
		{"WRENN_HOST_LISTEN_ADDR", ":http"},
		{"WRENN_HOST_LISTEN_ADDR", ":70000"},
		{"WRENN_HEARTBEAT_INTERVAL", "30"},
		{"WRENN_HEARTBEAT_INTERVAL", "-1s"},
		{"WRENN_RUNTIME", "docker"},
		{"WRENN_FIRECRACKER_UID_BASE", "0"},
		{"WRENN_FIRECRACKER_UID_BASE", "-5"},
		{"WRENN_FIRECRACKER_UID_BASE", "4294901760"}, // its last uid would be 2^32-1
		{"WRENN_FIRECRACKER_UID_BASE", "many"},
		{"WRENN_FIRECRACKER_GID", "0"},
		{"WRENN_FIRECRACKER_GID", "4294967295"},
		{"WRENN_CAPSULE_CIDR", "10.88.0.0"},
		{"WRENN_CAPSULE_CIDR", "fd00::/64"},
		{"WRENN_CAPSULE_CIDR", "10.88.0.0/25"},
		{"WRENN_CAPSULE_CIDR", "10.88.0.1/16"},
		{"WRENN_NETWORK_PREFIX", "Wr"},
		{"WRENN_NETWORK_PREFIX", "toolong"},
		{"WRENN_NETWORK_PREFIX", "w-1"},
		{"WRENN_WARM_POOL", "-1"},
		{"WRENN_WARM_POOL", "65"},
		{"WRENN_WARM_POOL", "two"},
		{"WRENN_CAPSULE_CONSOLE_BYTES", "1000"},
		{"WRENN_CAPSULE_CONSOLE_BYTES", "4MiB"},
		{"WRENN_CAPSULE_CONSOLE_BYTES", "2147483648"},
		{"WRENN_CAPSULE_PIDS", "0"},
		{"WRENN_CAPSULE_PIDS", "100"},
		{"WRENN_CAPSULE_PIDS", "-1"},
		{"WRENN_CAPSULE_NOFILE", "10"},
		{"WRENN_CAPSULE_NOFILE", "2000000"},
		{"WRENN_CAPSULE_DNS_UPSTREAMS", "resolver.example.com"},
		{"WRENN_CAPSULE_DNS_UPSTREAMS", "192.0.2.53:dns"},
		{"WRENN_CAPSULE_OPEN_RANGES", "fd00::/8"},
		{"WRENN_CAPSULE_OPEN_RANGES", "10.0.0.0/33"},
		{"WRENN_CAPSULE_HOST_FDS", "100"},
		{"WRENN_CAPSULE_HOST_FDS", "2000000"},
		{"WRENN_LOG_LEVEL", "loud"},
		{"WRENN_LOG_FORMAT", "xml"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			vars := map[string]string{"WRENN_CP_URL": "http://127.0.0.1:8000"}
			vars[tt.name] = tt.value
			_, err := loadAgent(envOf(vars), noFirecracker(t))
			if err == nil {
				t.Fatalf("loadAgent accepted %s=%q", tt.name, tt.value)
			}
			if !strings.Contains(err.Error(), tt.name) {
				t.Errorf("error %q does not name %s", err, tt.name)
			}
		})
	}
}

func TestLoadAgentAutoRuntime(t *testing.T) {
	const (
		withVMX = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse\n\nprocessor\t: 1\nflags\t\t: fpu vmx\n"
		withSVM = "flags\t\t: fpu svm lm\n"
		plain   = "flags\t\t: fpu vme de pse hypervisor\nvmx flags\t: ept\n"
	)
	tests := []struct {
		name          string
		kvm, fcBinary bool
		cpuinfo       string
		want          string
	}{
		{"intel with kvm and binary", true, true, withVMX, RuntimeFirecracker},
		{"amd with kvm and binary", true, true, withSVM, RuntimeFirecracker},
		{"no kvm device", false, true, withVMX, RuntimeGVisor},
		{"no binary", true, false, withVMX, RuntimeGVisor},
		{"paravirtual kvm without vmx or svm", true, true, plain, RuntimeGVisor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			probe := agentProbe{kvm: filepath.Join(dir, "kvm"), cpuinfo: filepath.Join(dir, "cpuinfo")}
			bin := filepath.Join(dir, "firecracker")
			write := func(path, content string, mode os.FileMode) {
				if err := os.WriteFile(path, []byte(content), mode); err != nil {
					t.Fatal(err)
				}
			}
			write(probe.cpuinfo, tt.cpuinfo, 0o644)
			if tt.kvm {
				write(probe.kvm, "", 0o600)
			}
			if tt.fcBinary {
				write(bin, "#!/bin/sh\n", 0o755)
			}
			got, err := loadAgent(envOf(map[string]string{
				"WRENN_CP_URL":          "http://127.0.0.1:8000",
				"WRENN_FIRECRACKER_BIN": bin,
			}), probe)
			if err != nil {
				t.Fatalf("loadAgent: %v", err)
			}
			if got.Runtime != tt.want {
				t.Errorf("runtime = %q, want %q", got.Runtime, tt.want)
			}
			// AgentRuntime resolves the same without WRENN_CP_URL.
			rt, err := agentRuntime(envOf(map[string]string{"WRENN_FIRECRACKER_BIN": bin}), probe)
			if err != nil || rt != tt.want {
				t.Errorf("agentRuntime = %q, %v; want %q", rt, err, tt.want)
			}
		})
	}
	for rt, want := range map[string]string{"gvisor": RuntimeGVisor, "FIRECRACKER": RuntimeFirecracker, "kvm": ""} {
		got, err := agentRuntime(envOf(map[string]string{"WRENN_RUNTIME": rt}), noFirecracker(t))
		if got != want || (want == "") != (err != nil) {
			t.Errorf("WRENN_RUNTIME=%s: agentRuntime = %q, %v; want %q", rt, got, err, want)
		}
	}
}

// TestLoadAgentThisMachine checks the real probe: the machines this project
// is tested on have /dev/kvm but no VMX/SVM, so auto must not pick
// Firecracker there.
func TestLoadAgentThisMachine(t *testing.T) {
	got, err := LoadAgent(envOf(map[string]string{"WRENN_CP_URL": "http://127.0.0.1:8000"}))
	if err != nil {
		t.Fatalf("LoadAgent: %v", err)
	}
	info, _ := os.ReadFile("/proc/cpuinfo")
	if !hasVirtFlag(info) && got.Runtime != RuntimeGVisor {
		t.Errorf("runtime = %q on a CPU without vmx/svm, want %q", got.Runtime, RuntimeGVisor)
	}
}
