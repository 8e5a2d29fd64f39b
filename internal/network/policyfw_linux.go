package network

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn/internal/egress"
)

// A capsule whose egress policy is not egress.Open has, in the manager's
// table (all named by its slot index i):
//
//   - chain cap_<i>: its policy as rules — denied CIDRs and addresses of
//     denied names reject, allowed CIDRs and addresses of allowed names
//     accept, and a default-deny policy rejects the rest;
//   - set dns_<i>: addresses that allowed lookups answered, each with the
//     answer's TTL as timeout (the DNS forwarder adds them);
//   - set dnsdeny_<i>: addresses that lookups of denied names resolve to;
//   - an element of the verdict map policyMap, iifname → jump cap_<i>,
//     which the forward chain looks up for every new connection.
const policyMap = "capsule_policy"

// policed is a slot and its policy's rules (nil for the open policy).
type policed struct {
	slot  Slot
	rules *egress.Rules
}

func newPolicyMap(table *nftables.Table) *nftables.Set {
	return &nftables.Set{
		Table: table, ID: 2, Name: policyMap,
		IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict,
	}
}

func policyChain(i int) string { return "cap_" + strconv.Itoa(i) }

// learnedSet is the set of addresses allowed (or, with deny, denied)
// lookups of slot i's capsule produced.
func (f *firewall) learnedSet(i int, deny bool) *nftables.Set {
	name, id := "dns_"+strconv.Itoa(i), uint32(100+2*i)
	if deny {
		name, id = "dnsdeny_"+strconv.Itoa(i), id+1
	}
	return &nftables.Set{Table: f.table, ID: id, Name: name, KeyType: nftables.TypeIPAddr, HasTimeout: true}
}

// ifKey is an interface name as nftables keys hold it: NUL-padded to
// IFNAMSIZ.
func ifKey(name string) []byte {
	key := make([]byte, 16)
	copy(key, name)
	return key
}

// learnedElems are the learned addresses of one capsule, allowed and
// denied, as read before a reinstall.
type learnedElems struct{ allow, deny []nftables.SetElement }

// learnedLocked reads what every capsule's sets hold now, by slot index,
// with the time each element has left. A missing table or set reads as
// nothing. f.mu held.
func (f *firewall) learnedLocked() map[int]learnedElems {
	out := map[int]learnedElems{}
	sets, err := f.conn.GetSets(f.table)
	if err != nil {
		return out
	}
	for _, s := range sets {
		var deny bool
		var rest string
		if r, ok := cutPrefix(s.Name, "dnsdeny_"); ok {
			deny, rest = true, r
		} else if r, ok := cutPrefix(s.Name, "dns_"); ok {
			rest = r
		} else {
			continue
		}
		i, err := strconv.Atoi(rest)
		if err != nil {
			continue
		}
		elems, err := f.conn.GetSetElements(s)
		if err != nil {
			continue
		}
		var keep []nftables.SetElement
		for _, e := range elems {
			if e.Expires > 0 {
				keep = append(keep, nftables.SetElement{Key: e.Key, Timeout: e.Expires})
			}
		}
		l := out[i]
		if deny {
			l.deny = keep
		} else {
			l.allow = keep
		}
		out[i] = l
	}
	return out
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}

// addPolicyLocked adds to the current batch slot's chain, sets (filled
// with learned) and verdict map element for rules. The chain and sets may
// exist already: the chain is flushed and refilled, the sets emptied first.
// f.mu held; the caller flushes.
func (f *firewall) addPolicyLocked(s Slot, rules egress.Rules, learned learnedElems) error {
	c := f.conn
	ch := c.AddChain(&nftables.Chain{Name: policyChain(s.Index), Table: f.table})
	c.FlushChain(ch)
	allowSet, denySet := f.learnedSet(s.Index, false), f.learnedSet(s.Index, true)
	for _, set := range []*nftables.Set{allowSet, denySet} {
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("adding nftables set %s: %w", set.Name, err)
		}
		c.FlushSet(set)
	}
	if len(learned.allow) > 0 {
		if err := c.SetAddElements(allowSet, learned.allow); err != nil {
			return fmt.Errorf("adding learned addresses: %w", err)
		}
	}
	if len(learned.deny) > 0 {
		if err := c.SetAddElements(denySet, learned.deny); err != nil {
			return fmt.Errorf("adding learned addresses: %w", err)
		}
	}
	rule := func(exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: f.table, Chain: ch, Exprs: all})
	}
	// Deny beats allow: denied CIDRs and addresses of denied names first.
	for _, p := range rules.DenyNets() {
		rule(daddrIn(p), reject())
	}
	rule(daddrInSet(denySet), reject())
	for _, p := range rules.AllowNets() {
		rule(daddrIn(p), verdict(expr.VerdictAccept))
	}
	rule(daddrInSet(allowSet), verdict(expr.VerdictAccept))
	if rules.DefaultDeny() {
		rule(reject())
	}
	err := c.SetAddElements(f.vmap, []nftables.SetElement{{
		Key:         ifKey(s.HostIface),
		VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name},
	}})
	if err != nil {
		return fmt.Errorf("adding policy map entry: %w", err)
	}
	return nil
}

// setPolicy makes rules slot's policy (nil: the open one, no chain), in
// one transaction: there is no moment with half a policy. Learned
// addresses are forgotten: they were answers under the old policy.
func (f *firewall) setPolicy(s Slot, rules *egress.Rules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rules == nil {
		return f.removePolicyLocked(s)
	}
	if err := f.addPolicyLocked(s, *rules, learnedElems{}); err != nil {
		return err
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("setting egress policy of %s: %w", s.CapsuleID, err)
	}
	return nil
}

// removePolicy deletes slot's policy chain, sets and map element, whichever
// exist.
func (f *firewall) removePolicy(s Slot) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.removePolicyLocked(s)
}

func (f *firewall) removePolicyLocked(s Slot) error {
	c := f.conn
	// Adding first makes each delete valid whether or not the object
	// exists; an existing map element has exactly this value.
	ch := c.AddChain(&nftables.Chain{Name: policyChain(s.Index), Table: f.table})
	elem := []nftables.SetElement{{Key: ifKey(s.HostIface), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name}}}
	if err := c.SetAddElements(f.vmap, elem); err != nil {
		return fmt.Errorf("removing policy map entry: %w", err)
	}
	if err := c.SetDeleteElements(f.vmap, elem); err != nil {
		return fmt.Errorf("removing policy map entry: %w", err)
	}
	c.FlushChain(ch)
	c.DelChain(ch)
	for _, set := range []*nftables.Set{f.learnedSet(s.Index, false), f.learnedSet(s.Index, true)} {
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("removing nftables set %s: %w", set.Name, err)
		}
		c.DelSet(set)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("removing egress policy of %s: %w", s.CapsuleID, err)
	}
	return nil
}

// learn adds addrs to slot's allowed (or denied) learned set for ttl,
// replacing the time left of those already there.
func (f *firewall) learn(s Slot, addrs []netip.Addr, ttl time.Duration, deny bool) error {
	if len(addrs) == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	set := f.learnedSet(s.Index, deny)
	elems := make([]nftables.SetElement, 0, len(addrs))
	for _, a := range addrs {
		k := a.As4()
		elems = append(elems, nftables.SetElement{Key: k[:], Timeout: ttl})
	}
	// An element already in the set keeps its old timeout when added
	// again: add, delete and add in one transaction to renew it.
	c := f.conn
	for _, step := range []func(*nftables.Set, []nftables.SetElement) error{c.SetAddElements, c.SetDeleteElements, c.SetAddElements} {
		if err := step(set, elems); err != nil {
			return fmt.Errorf("adding looked-up addresses: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("adding looked-up addresses: capsule %s has no policy chain: %w", s.CapsuleID, err)
		}
		return fmt.Errorf("adding looked-up addresses: %w", err)
	}
	return nil
}

// daddrInSet matches an IPv4 destination in set.
func daddrInSet(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
	}
}

// reject refuses a connection at once (TCP reset, ICMP "administratively
// prohibited" otherwise), so that a program in the capsule learns that a
// destination is not allowed instead of waiting for a timeout.
func reject() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}
}
