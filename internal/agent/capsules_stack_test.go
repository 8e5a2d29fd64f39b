package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/nftables"
	"github.com/google/uuid"
	"github.com/vishvananda/netlink"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// leftovers lists what remains on the host of the capsule with runtime id
// id: its sandbox in runsc, its namespace, its host veth, its firewall
// entry, its files, its address allocation, its processes.
func leftovers(t *testing.T, s *stacktest.Stack, id, hostIface, addr string) []string {
	t.Helper()
	var left []string
	if firewallHas(t, s.AgentConfig.NetworkPrefix, addr) {
		left = append(left, "firewall entry for "+addr)
	}
	if out, err := runsc(s, "list", "--format=json"); err != nil {
		t.Fatalf("runsc list: %v", err)
	} else if strings.Contains(out, id) {
		left = append(left, "runsc container")
	}
	ns := filepath.Join(s.AgentConfig.Dir, "netns", s.AgentConfig.NetworkPrefix+"-"+id)
	if _, err := os.Stat(ns); err == nil {
		left = append(left, "netns "+ns)
	}
	if hostIface != "" {
		if _, err := netlink.LinkByName(hostIface); err == nil {
			left = append(left, "veth "+hostIface)
		}
	}
	if _, err := os.Stat(filepath.Join(s.AgentConfig.Dir, "sandboxes", id)); err == nil {
		left = append(left, "sandbox dir")
	}
	matches, _ := filepath.Glob(filepath.Join(s.AgentConfig.Dir, "network", "*", id+"*"))
	more, _ := filepath.Glob(filepath.Join(s.AgentConfig.Dir, "network", id+"*"))
	for _, m := range append(matches, more...) {
		left = append(left, "allocation "+m)
	}
	if procs := stacktest.ProcessesNaming(t, id); len(procs) > 0 {
		left = append(left, fmt.Sprintf("processes %v", procs))
	}
	return left
}

// firewallHas reports whether the agent's nftables table has an
// anti-spoofing entry for a capsule address (see docs/network.md).
func firewallHas(t *testing.T, prefix, addr string) bool {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: prefix + "_wrenn"}
	set, err := conn.GetSetByName(table, "capsule_src")
	if err != nil {
		t.Fatalf("reading the agent's firewall: %v", err)
	}
	elems, err := conn.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddr(addr).As4()
	for _, e := range elems {
		if len(e.Key) == 20 && [4]byte(e.Key[16:20]) == want {
			return true
		}
	}
	return false
}

func runsc(s *stacktest.Stack, args ...string) (string, error) {
	return runCmd(s.AgentConfig.Runsc, append([]string{"--root", filepath.Join(s.AgentConfig.Dir, "runsc")}, args...)...)
}

// hostIfaceOf finds the host-side veth whose address is the capsule's gateway.
func hostIfaceOf(t *testing.T, capsuleAddr string) string {
	t.Helper()
	ip := net.ParseIP(capsuleAddr).To4()
	gw := net.IPv4(ip[0], ip[1], ip[2], ip[3]-1)
	// Other tests add and remove veths meanwhile, which interrupts netlink
	// dumps: those are retried.
	for range 20 {
		links, err := netlink.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
			for _, a := range addrs {
				if a.IP.Equal(gw) {
					return l.Attrs().Name
				}
			}
		}
		break
	}
	t.Fatalf("no host interface has gateway %s", gw)
	return ""
}

func TestCapsuleLifecycle(t *testing.T) {
	s := stacktest.Start(t)
	c := s.CreateCapsule(t)
	id := c.GetSpec().GetCapsuleId()
	if c.GetStatus() != "running" || c.GetAddress() == "" {
		t.Fatalf("created capsule = %v, want running with an address", c)
	}
	envd := s.Envd(t, id)
	if r := stacktest.Run(t, envd, "echo hello; hostname"); r.ExitCode != 0 || r.Stdout != "hello\ncapsule-"+id[:8]+"\n" {
		t.Fatalf("echo hello = %+v", r)
	}
	// User code runs under gVisor's kernel, not the host's.
	if r := stacktest.Run(t, envd, "dmesg | head -1"); !strings.Contains(r.Stdout, "gVisor") {
		t.Errorf("dmesg in the capsule = %q, want gVisor's", r.Stdout)
	}
	// Writes land in the capsule's own layer, never in the shared template.
	if r := stacktest.Run(t, envd, "echo data > /etc/capsule-file && cat /etc/capsule-file"); r.Stdout != "data\n" {
		t.Fatalf("write in capsule = %+v", r)
	}
	if _, err := os.Stat(filepath.Join(s.AgentConfig.Dir, "images", "minimal", "rootfs", "etc", "capsule-file")); err == nil {
		t.Fatal("a capsule's write reached the template")
	}

	got, err := s.CapsuleService().GetCapsule(context.Background(), connect.NewRequest(&hostagentv1.GetCapsuleRequest{CapsuleId: id}))
	if err != nil || got.Msg.GetCapsule().GetStatus() != "running" {
		t.Fatalf("GetCapsule = %v, %v", got, err)
	}
	iface := hostIfaceOf(t, c.GetAddress())
	rid := c.GetRuntimeId()
	if rid == "" {
		t.Fatal("the agent reports no runtime id")
	}
	if !firewallHas(t, s.AgentConfig.NetworkPrefix, c.GetAddress()) {
		t.Fatal("a running capsule has no anti-spoofing entry, so the leftover check below proves nothing")
	}
	if _, err := s.CapsuleService().DestroyCapsule(context.Background(), connect.NewRequest(&hostagentv1.DestroyCapsuleRequest{CapsuleId: id})); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, s, rid, iface, c.GetAddress()); len(left) > 0 {
		t.Fatalf("after destroy, left on the host: %v", left)
	}
	_, err = s.CapsuleService().GetCapsule(context.Background(), connect.NewRequest(&hostagentv1.GetCapsuleRequest{CapsuleId: id}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("GetCapsule after destroy = %v, want not_found", err)
	}
	// Destroy is idempotent.
	if _, err := s.CapsuleService().DestroyCapsule(context.Background(), connect.NewRequest(&hostagentv1.DestroyCapsuleRequest{CapsuleId: id})); err != nil {
		t.Fatalf("second destroy: %v", err)
	}
}

func TestConcurrentCreates(t *testing.T) {
	s := stacktest.Start(t)
	const n = 10
	var wg sync.WaitGroup
	capsules := make([]*hostagentv1.Capsule, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.CapsuleService().CreateCapsule(context.Background(), connect.NewRequest(&hostagentv1.CreateCapsuleRequest{
				Spec: &hostagentv1.CapsuleSpec{CapsuleId: uuid.NewString(), Template: "minimal", Vcpus: 1, MemoryMb: 128, DiskMb: 128},
			}))
			errs[i] = err
			if err == nil {
				capsules[i] = res.Msg.GetCapsule()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent creates: %v", err)
	}
	addrs := map[string]bool{}
	ifaces := map[string]string{}
	addrOf := map[string]string{}
	runtimeOf := map[string]string{}
	for _, c := range capsules {
		if addrs[c.GetAddress()] {
			t.Fatalf("address %s given twice", c.GetAddress())
		}
		addrs[c.GetAddress()] = true
		id := c.GetSpec().GetCapsuleId()
		ifaces[id] = hostIfaceOf(t, c.GetAddress())
		addrOf[id] = c.GetAddress()
		runtimeOf[id] = c.GetRuntimeId()
		if r := stacktest.Run(t, s.Envd(t, id), "echo $((6*7))"); r.Stdout != "42\n" {
			t.Fatalf("capsule %s: %+v", id, r)
		}
	}
	for id, iface := range ifaces {
		if _, err := s.CapsuleService().DestroyCapsule(context.Background(), connect.NewRequest(&hostagentv1.DestroyCapsuleRequest{CapsuleId: id})); err != nil {
			t.Fatal(err)
		}
		if left := leftovers(t, s, runtimeOf[id], iface, addrOf[id]); len(left) > 0 {
			t.Fatalf("after destroying %s, left on the host: %v", id, left)
		}
	}
}

// TestIsolation checks from inside a capsule that the host, the other
// capsules and the metadata address are out of reach, while the same
// targets answer the host itself (so a failure means the firewall, not a
// missing listener).
func TestIsolation(t *testing.T) {
	s := stacktest.Start(t)
	a, b := s.CreateCapsule(t), s.CreateCapsule(t)
	envdA := s.Envd(t, a.GetSpec().GetCapsuleId())
	gateway := netip.MustParseAddr(a.GetAddress()).Prev().String() // the /30's host end

	// A listener on every host address, like any service on the host.
	hostLn, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hostLn.Close() }()
	go func() {
		for {
			c, err := hostLn.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("reached\n"))
			_ = c.Close()
		}
	}()
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	primary := primaryIP(t)
	targets := []struct{ name, host, port string }{
		{"agent port via the gateway", gateway, port(s.AgentAddr)},
		{"control plane port via the gateway", gateway, port(strings.TrimPrefix(s.URL, "http://"))},
		{"host listener via the gateway", gateway, port(hostLn.Addr().String())},
		{"host listener via the host's own address", primary, port(hostLn.Addr().String())},
		{"other capsule's envd", b.GetAddress(), "49983"},
	}
	for _, tt := range targets {
		// Control: the host itself reaches the target.
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(tt.host, tt.port), 2*time.Second)
		if err != nil {
			t.Fatalf("%s: the host cannot reach %s:%s either (%v), so the test would prove nothing", tt.name, tt.host, tt.port, err)
		}
		_ = conn.Close()
		r := stacktest.Run(t, envdA, fmt.Sprintf("nc -w 1 %s %s </dev/null && echo CONNECTED", tt.host, tt.port))
		if strings.Contains(r.Stdout, "CONNECTED") || strings.Contains(r.Stdout, "reached") {
			t.Errorf("%s (%s:%s): reachable from inside a capsule: %+v", tt.name, tt.host, tt.port, r)
		}
	}
	r := stacktest.Run(t, envdA, "nc -w 1 169.254.169.254 80 </dev/null && echo CONNECTED")
	if strings.Contains(r.Stdout, "CONNECTED") {
		t.Errorf("metadata address reachable from a capsule: %+v", r)
	}
	// The capsule's own envd works: the test's commands ran through it.

	// envd of capsule A refuses capsule B's token, and takes its own.
	idA, idB := a.GetSpec().GetCapsuleId(), b.GetSpec().GetCapsuleId()
	direct := envdclient.New("http://"+net.JoinHostPort(a.GetAddress(), "49983"), s.EnvdToken(t, idB))
	defer direct.Close()
	if _, err := direct.Metrics(context.Background()); !isUnauthorized(err) {
		t.Errorf("envd of A with B's token: err = %v, want 401", err)
	}
	direct.SetToken(s.EnvdToken(t, idA))
	if _, err := direct.Metrics(context.Background()); err != nil {
		t.Errorf("envd of A with A's token: %v", err)
	}

	// The agent's envd proxy refuses a control-plane token made for B on A's
	// path, and calls with no token at all.
	tok, err := s.Signer.Token(s.HostID, hostauth.EnvdProcedure(idB))
	if err != nil {
		t.Fatal(err)
	}
	for name, header := range map[string]string{"B's token": "Bearer " + tok, "no token": ""} {
		req, _ := http.NewRequest("GET", "https://"+s.AgentAddr+hostauth.EnvdProxyPath(idA)+"/metrics", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		res, err := s.AgentHTTP(hosttls.AnyHTTP).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("envd proxy of A with %s = %d, want 401", name, res.StatusCode)
		}
	}
}

func isUnauthorized(err error) bool {
	var e *envdclient.Error
	return errors.As(err, &e) && e.Status == http.StatusUnauthorized
}

// primaryIP is a non-loopback IPv4 address of the host.
func primaryIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !strings.HasPrefix(n.IP.String(), "10.2") {
			return n.IP.String()
		}
	}
	t.Fatal("the host has no non-loopback IPv4 address")
	return ""
}

func runCmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := execCommand(ctx, name, args...)
	return string(out), err
}

func execCommand(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).Output()
}

// TestReadoptAfterRestart opens a second capsule manager on the agent's
// directory, as a restarted agent does: the running capsule is adopted
// with its address and token, and keeps working; nothing is destroyed.
func TestReadoptAfterRestart(t *testing.T) {
	s := stacktest.Start(t)
	c := s.CreateCapsule(t)
	id := c.GetSpec().GetCapsuleId()
	if r := stacktest.Run(t, s.Envd(t, id), "echo before > /root/f"); r.ExitCode != 0 {
		t.Fatalf("write: %+v", r)
	}
	cfg := s.AgentConfig
	cfg.WarmPool = 0
	restarted, err := stacktest.OpenCapsules(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("reopening capsules: %v", err)
	}
	defer func() { _ = restarted.Close() }()
	info, err := restarted.Get(context.Background(), id)
	if err != nil || info.Status != "running" || info.Address.String() != c.GetAddress() {
		t.Fatalf("after restart Get = %+v, %v; want running at %s", info, err, c.GetAddress())
	}
	direct := envdclient.New("http://"+net.JoinHostPort(c.GetAddress(), "49983"), s.EnvdToken(t, id))
	defer direct.Close()
	if r := stacktest.Run(t, direct, "cat /root/f"); r.Stdout != "before\n" {
		t.Fatalf("after restart the capsule's file = %+v", r)
	}
}

// TestWarmPool checks that a capsule of a template's default size comes
// from the warm pool, is its own capsule there (token, hostname,
// environment), and that nothing of the pool outlives the agent.
func TestWarmPool(t *testing.T) {
	s := stacktest.Start(t)
	ctx := context.Background()
	waitPool := func(n int) []stacktest.Record {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			pooled := pooledRecords(t, s.AgentConfig.Dir)
			if len(pooled) >= n {
				return pooled
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d capsules waiting after 20 s, want %d", len(pooled), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	pooled := waitPool(2) // the minimal template's default size, warmed at start
	id := uuid.NewString()
	asked := time.Now()
	res, err := s.CapsuleService().CreateCapsule(ctx, connect.NewRequest(&hostagentv1.CreateCapsuleRequest{
		Spec: &hostagentv1.CapsuleSpec{CapsuleId: id, Template: "minimal", Vcpus: 1, MemoryMb: 256, DiskMb: 1024,
			Envs: map[string]string{"GREETING": "hi"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	c := res.Msg.GetCapsule()
	if c.GetRuntimeId() == id || !slices.ContainsFunc(pooled, func(r stacktest.Record) bool { return r.RuntimeID == c.GetRuntimeId() }) {
		t.Fatalf("capsule runs as %s, not one of the waiting capsules %+v", c.GetRuntimeId(), pooled)
	}
	// It started when it was handed out, not when the pool booted it.
	if started := time.UnixMilli(c.GetStartedAtUnixMs()); started.Before(asked.Truncate(time.Millisecond)) {
		t.Errorf("capsule from the pool started at %v, before it was asked for at %v", started, asked)
	}
	r := stacktest.Run(t, s.Envd(t, id), "hostname; echo $GREETING")
	if r.Stdout != "capsule-"+id[:8]+"\nhi\n" {
		t.Fatalf("capsule from the pool: hostname and env = %q", r.Stdout)
	}
	// The pool token was retired when the capsule was handed out.
	var poolToken string
	for _, p := range pooled {
		if p.RuntimeID == c.GetRuntimeId() {
			poolToken = p.Token
		}
	}
	stale := envdclient.New("http://"+net.JoinHostPort(c.GetAddress(), "49983"), poolToken)
	defer stale.Close()
	if _, err := stale.Metrics(ctx); !isUnauthorized(err) {
		t.Errorf("envd with the pool token after hand-over: %v, want 401", err)
	}
	// The pool refills.
	waitPool(2)

	// A restarted agent removes its predecessor's waiting capsules, and a
	// closed one leaves none.
	cfg := s.AgentConfig
	cfg.WarmPool = 0
	restarted, err := stacktest.OpenCapsules(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if left := pooledRecords(t, s.AgentConfig.Dir); len(left) != 0 {
		t.Errorf("after a restart, %d waiting capsules of the old agent are left", len(left))
	}
	if _, err := restarted.Get(ctx, id); err != nil {
		t.Errorf("the handed-out capsule was not re-adopted: %v", err)
	}
	_ = restarted.Close()
	out, err := runsc(s, "list", "--format=json")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, `"id"`); n != 1 {
		t.Errorf("runsc has %d sandboxes, want just the capsule's: %s", n, out)
	}
}

// pooledRecords lists the waiting capsules recorded under an agent's dir.
func pooledRecords(t *testing.T, dir string) []stacktest.Record {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dir, "sandboxes", "*", "capsule.json"))
	var out []stacktest.Record
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var rec struct {
			stacktest.Record
			Status string `json:"status"`
		}
		if json.Unmarshal(b, &rec) == nil && rec.Status == "pooled" {
			out = append(out, rec.Record)
		}
	}
	return out
}

// TestDestroyOfARuntimeIDSparesItsOwner destroys, by id, the runtime id of
// a capsule handed out by the warm pool and of one still waiting: neither
// is a capsule of that id, so both must live on.
func TestDestroyOfARuntimeIDSparesItsOwner(t *testing.T) {
	s := stacktest.Start(t)
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for len(pooledRecords(t, s.AgentConfig.Dir)) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the warm pool did not fill within 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	id := uuid.NewString()
	res, err := s.CapsuleService().CreateCapsule(ctx, connect.NewRequest(&hostagentv1.CreateCapsuleRequest{
		Spec: &hostagentv1.CapsuleSpec{CapsuleId: id, Template: "minimal", Vcpus: 1, MemoryMb: 256, DiskMb: 1024},
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Capsules.Destroy(context.Background(), id) })
	rid := res.Msg.GetCapsule().GetRuntimeId()
	if rid == id {
		t.Fatal("the capsule did not come from the warm pool")
	}
	var waiting string
	for _, r := range pooledRecords(t, s.AgentConfig.Dir) {
		if r.RuntimeID != rid {
			waiting = r.RuntimeID
		}
	}
	for _, other := range []string{rid, waiting} {
		if other == "" {
			continue
		}
		if err := s.Capsules.Destroy(ctx, other); err != nil {
			t.Fatalf("Destroy(%s): %v", other, err)
		}
		if _, err := os.Stat(filepath.Join(s.AgentConfig.Dir, "sandboxes", other, "capsule.json")); err != nil {
			t.Errorf("Destroy(%s) removed the record of the capsule running as %s: %v", other, other, err)
		}
	}
	info, err := s.Capsules.Get(ctx, id)
	if err != nil || info.Status != "running" {
		t.Fatalf("capsule after a destroy of its runtime id: %+v, %v; want running", info, err)
	}
	if r := stacktest.Run(t, s.Envd(t, id), "echo alive"); r.Stdout != "alive\n" {
		t.Fatalf("capsule after a destroy of its runtime id: %+v", r)
	}
}
