package network

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// srcSet is the set of (host veth, capsule address) pairs a packet from a
// capsule must match: the per-capsule anti-spoofing entries.
const srcSet = "capsule_src"

// blockedV4 are the destinations a capsule may not reach through the host:
// private, carrier-grade NAT, link-local (cloud metadata), loopback, "this
// network", multicast and reserved ranges.
var blockedV4 = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// Registers as the kernel numbers them: reg 1 is 16 bytes wide, enough for
// an interface name; the 32-bit register right after it is NFT_REG32_04.
const (
	reg1       = 1
	regAfterIf = 12
)

// firewall owns one nftables table. It is safe for concurrent use: a
// nftables.Conn batches messages until Flush, so two goroutines sharing it
// would send each other's half-built batches.
type firewall struct {
	mu     sync.Mutex
	conn   *nftables.Conn
	table  *nftables.Table
	set    *nftables.Set
	vmap   *nftables.Set
	prefix string
	cidr   netip.Prefix
	// dnsPort is where the agent's DNS forwarder listens: every DNS query
	// a capsule sends (UDP or TCP port 53, to any address) is redirected
	// there. 0: no redirect.
	dnsPort uint16
	// open are destinations the fixed protections let through (an
	// operator's choice); capsule policies still apply to them.
	open []netip.Prefix
}

// newFirewall returns the firewall of a manager; the caller sets dnsPort
// before the first install.
func newFirewall(prefix string, cidr netip.Prefix, open []netip.Prefix) (*firewall, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName(prefix)}
	return &firewall{
		conn:   conn,
		table:  table,
		set:    newSrcSet(table),
		vmap:   newPolicyMap(table),
		prefix: prefix,
		cidr:   cidr,
		open:   open,
	}, nil
}

func newSrcSet(table *nftables.Table) *nftables.Set {
	return &nftables.Set{
		Table: table,
		// The id only names the set within one batch. Setting it keeps
		// AddSet from drawing one from the library's global counter, which
		// it increments without synchronization (a data race between
		// managers).
		ID:            1,
		Name:          srcSet,
		KeyType:       nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr),
		Concatenation: true,
	}
}

// srcKey is the set key for a slot: the interface name NUL-padded to
// IFNAMSIZ, then the address, as `iifname . ip saddr` loads them.
func srcKey(s Slot) []byte {
	key := make([]byte, 16, 20)
	copy(key, s.HostIface)
	a := s.Address.Addr().As4()
	return append(key, a[:]...)
}

// install replaces the table with a fresh one holding the rules and the
// entries of the slots returned by slots, in one transaction: there is no
// moment without rules, and whatever an earlier run left in the table is
// gone. slots is called under the firewall's lock so that no entry added
// concurrently by add is lost.
func (f *firewall) install(slots func() []policed) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.conn
	// What the capsules learned from DNS survives the reinstall (an
	// agent restart): their default-deny policies would otherwise cut
	// connections to addresses they looked up a moment ago.
	learned := f.learnedLocked()
	// Adding first makes the delete valid whether or not the table exists.
	c.AddTable(f.table)
	c.DelTable(f.table)
	c.AddTable(f.table)

	f.set = newSrcSet(f.table)
	f.vmap = newPolicyMap(f.table)
	all := slots()
	var elems []nftables.SetElement
	for _, s := range all {
		elems = append(elems, nftables.SetElement{Key: srcKey(s.slot)})
	}
	if err := c.AddSet(f.set, elems); err != nil {
		return fmt.Errorf("adding nftables set: %w", err)
	}
	if err := c.AddSet(f.vmap, nil); err != nil {
		return fmt.Errorf("adding nftables map: %w", err)
	}
	for _, s := range all {
		if s.rules == nil {
			continue
		}
		if err := f.addPolicyLocked(s.slot, *s.rules, learned[s.slot.Index]); err != nil {
			return err
		}
	}

	accept := nftables.ChainPolicyAccept
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{
			Name: name, Table: f.table, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept,
		})
	}
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: f.table, Chain: ch, Exprs: all})
	}
	fromCapsule := f.ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq)
	toCapsule := f.ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq)

	// Anti-spoofing before anything else looks at the source address: a
	// capsule sends only from its own address, through its own veth. Not
	// being in the set drops, so a veth without an entry sends nothing.
	pre := chain("prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityFilter)
	rule(pre, fromCapsule, nfproto(unix.NFPROTO_IPV4), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Payload{DestRegister: regAfterIf, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: reg1, SetName: f.set.Name, SetID: f.set.ID, Invert: true},
	}, verdict(expr.VerdictDrop))

	// Nothing on the host is a capsule's business; only answers to
	// connections the host opened (the agent talking to envd) come back.
	in := chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	rule(in, fromCapsule, ctEstablished(), verdict(expr.VerdictAccept))
	notFromCapsule := f.ifname(expr.MetaKeyIIFNAME, expr.CmpOpNeq)
	if f.dnsPort != 0 {
		// The DNS forwarder is the one host service a capsule talks to;
		// it listens on every address, so everyone else is kept off it.
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			rule(in, fromCapsule, nfproto(unix.NFPROTO_IPV4), dport(proto, f.dnsPort), verdict(expr.VerdictAccept))
			rule(in, notFromCapsule, dport(proto, f.dnsPort), verdict(expr.VerdictDrop))
		}
	}
	rule(in, fromCapsule, verdict(expr.VerdictDrop))

	fwd := chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	rule(fwd, fromCapsule, ctEstablished(), verdict(expr.VerdictAccept))
	rule(fwd, fromCapsule, toCapsule, verdict(expr.VerdictDrop))
	// No IPv6 egress yet: capsules have no IPv6 addresses or NAT.
	rule(fwd, fromCapsule, nfproto(unix.NFPROTO_IPV6), verdict(expr.VerdictDrop))
	// A capsule with a policy has an element in the verdict map that
	// jumps to its chain (addPolicyLocked); falling off the end of that
	// chain comes back here, to the accept.
	policy := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, SetName: f.vmap.Name, SetID: f.vmap.ID, IsDestRegSet: true, DestRegister: 0},
	}
	for _, p := range f.open {
		rule(fwd, fromCapsule, nfproto(unix.NFPROTO_IPV4), daddrIn(p), policy)
		rule(fwd, fromCapsule, nfproto(unix.NFPROTO_IPV4), daddrIn(p), verdict(expr.VerdictAccept))
	}
	for _, p := range blockedV4 {
		rule(fwd, fromCapsule, nfproto(unix.NFPROTO_IPV4), daddrIn(p), verdict(expr.VerdictDrop))
	}
	rule(fwd, fromCapsule, policy)
	rule(fwd, fromCapsule, verdict(expr.VerdictAccept))
	// Capsules are reached through the agent on this host, never routed to
	// from outside: someone on the LAN routing the pool here gets nothing.
	rule(fwd, toCapsule, ctEstablished(), verdict(expr.VerdictAccept))
	rule(fwd, toCapsule, verdict(expr.VerdictDrop))

	if f.dnsPort != 0 {
		// Every DNS query a capsule sends, to whichever server, goes to
		// the forwarder, which answers by the capsule's policy.
		dnat := chain("dstnat", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			rule(dnat, fromCapsule, nfproto(unix.NFPROTO_IPV4), dport(proto, 53), []expr.Any{
				&expr.Immediate{Register: reg1, Data: binaryutil.BigEndian.PutUint16(f.dnsPort)},
				&expr.Redir{RegisterProtoMin: reg1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
			})
		}
	}

	post := chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	rule(post, nfproto(unix.NFPROTO_IPV4), saddrIn(f.cidr), f.ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq), []expr.Any{&expr.Masq{}})

	if err := c.Flush(); err != nil {
		return fmt.Errorf("installing nftables table %s: %w", f.table.Name, err)
	}
	return nil
}

// add lets s's capsule send from its address.
func (f *firewall) add(s Slot) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.conn.SetAddElements(f.set, []nftables.SetElement{{Key: srcKey(s)}}); err != nil {
		return fmt.Errorf("adding firewall entry: %w", err)
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("adding firewall entry: %w", err)
	}
	return nil
}

// remove deletes s's entry; a missing entry is not an error.
func (f *firewall) remove(s Slot) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	elems := []nftables.SetElement{{Key: srcKey(s)}}
	// Adding first makes the delete valid whether or not the entry exists.
	if err := f.conn.SetAddElements(f.set, elems); err != nil {
		return fmt.Errorf("removing firewall entry: %w", err)
	}
	if err := f.conn.SetDeleteElements(f.set, elems); err != nil {
		return fmt.Errorf("removing firewall entry: %w", err)
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("removing firewall entry: %w", err)
	}
	return nil
}

// ifname matches the interface named by key against the manager's veth
// prefix. Comparing only the prefix's bytes is how nft implements "wr-*".
func (f *firewall) ifname(key expr.MetaKey, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Cmp{Op: op, Register: reg1, Data: []byte(ifacePrefix(f.prefix))},
	}
}

// dport matches transport protocol proto (TCP or UDP) to port.
func dport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func nfproto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
	}
}

func ctEstablished() []expr.Any {
	bits := expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{
			SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: nativeUint32(bits), Xor: nativeUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: nativeUint32(0)},
	}
}

// addrIn matches the IPv4 address at offset of the network header against p.
func addrIn(offset uint32, p netip.Prefix) []expr.Any {
	var mask [4]byte
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	net := p.Masked().Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: mask[:], Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: net[:]},
	}
}

func saddrIn(p netip.Prefix) []expr.Any { return addrIn(12, p) }
func daddrIn(p netip.Prefix) []expr.Any { return addrIn(16, p) }

func verdict(k expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: k}}
}

// nativeUint32 encodes v as the kernel holds conntrack state: host-endian.
func nativeUint32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// uninstall deletes the table with everything in it.
func (f *firewall) uninstall() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conn.DelTable(f.table)
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("removing nftables table %s: %w", f.table.Name, err)
	}
	return nil
}
