package policy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/ztgate/ztgate/bpf"
)

// IP protocol numbers the compiler and the model name.
const (
	ProtoICMP   = 1
	ProtoIPIP   = 4
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoIPv6   = 41
	ProtoGRE    = 47
	ProtoICMPv6 = 58
	ProtoAny    = 255
)

// CompileOptions are the inputs of Compile besides the policy itself.
type CompileOptions struct {
	// Revision is the revision the datapath will carry.
	Revision uint64
	// Ifindex resolves a device's gateway port name. Required when a device names a port.
	Ifindex func(name string) (uint32, error)
	// Prev is the snapshot in force, if any: devices keep their dev_id (and so their counters)
	// across revisions, and ids it used are not handed to other devices in this revision.
	Prev *Snapshot
	// Limits, when set, are the datapath's capacities: Compile fails with a *CapacityError as
	// soon as the snapshot needs more, so that a policy far over capacity costs little.
	Limits Limits
}

// Limits are the capacities of the datapath's policy maps (see loader.Config); 0 is no limit.
type Limits struct {
	Devices, Addrs, Rules, Prefixes int
}

// CapacityError is a policy that needs more entries in a datapath map than it holds.
type CapacityError struct {
	Map      string // e.g. zt_rules
	Count    int    // entries needed, or (AtLeast) entries when Compile stopped
	Capacity int
	AtLeast  bool
}

func (e *CapacityError) Error() string {
	more := ""
	if e.AtLeast {
		more = "at least "
	}
	return fmt.Sprintf("%s: %s%d entries exceed the capacity of %d", e.Map, more, e.Count, e.Capacity)
}

// over reports a count over a limit (0: none).
func over(name string, n, limit int, atLeast bool) error {
	if limit > 0 && n > limit {
		return &CapacityError{Map: name, Count: n, Capacity: limit, AtLeast: atLeast}
	}
	return nil
}

// capacity fails once the snapshot being compiled holds more rules or prefixes than fit.
func (c *compiler) capacity() error {
	if err := over(bpf.ZtgateMapZtRules, len(c.snap.Rules), c.opt.Limits.Rules, true); err != nil {
		return err
	}
	return over(bpf.ZtgateMapZtPrefixes, len(c.snap.Prefixes), c.opt.Limits.Prefixes, true)
}

// Compile turns a valid policy into the content of one datapath policy slot. It is pure: no
// kernel is needed. The policy must have passed Validate.
func Compile(p *Policy, opt CompileOptions) (*Snapshot, error) {
	s, _, err := compile(p, opt)
	return s, err
}

// compile is Compile, returning the compiler too (for the Editor).
func compile(p *Policy, opt CompileOptions) (*Snapshot, *compiler, error) {
	n, addrs := len(p.Spec.Devices), 0
	for i := range p.Spec.Devices {
		addrs += len(p.Spec.Devices[i].IPv4) + len(p.Spec.Devices[i].IPv6)
	}
	// Every device and address is one entry: what does not fit is refused before any work.
	if err := over(bpf.ZtgateMapZtDevices, n, opt.Limits.Devices, false); err != nil {
		return nil, nil, err
	}
	if err := over(bpf.ZtgateMapZtAddrs, addrs, opt.Limits.Addrs, false); err != nil {
		return nil, nil, err
	}
	c := &compiler{
		p:         p,
		opt:       opt,
		segIDs:    map[string]uint16{},
		devIDs:    make(map[string]uint32, n),
		rulesets:  map[string]uint32{},
		listCache: map[string]uint32{},
		snap: &Snapshot{
			Revision:     opt.Revision,
			Devices:      make(map[bpf.DevKey]bpf.DevRec, n),
			Addrs:        make(map[bpf.AddrKey]bpf.AddrVal, addrs),
			Prefixes:     map[bpf.PrefixKey]bpf.PrefixVal{},
			Rules:        map[bpf.RuleKey]bpf.RuleVal{},
			DeviceNames:  make(map[uint32]string, n),
			SegmentNames: map[uint16]string{},
		},
	}
	if err := c.run(); err != nil {
		return nil, nil, err
	}
	return c.snap, c, nil
}

// Largest ids the datapath's fields hold: ids count from 1 and wrapping one would alias two
// destinations, so the compiler refuses a policy that needs more. Variables, for the tests.
var (
	maxSegmentID = uint64(math.MaxUint16) // zt_dev_rec.segment, zt_addr_val.segment
	maxDevID     = uint64(math.MaxUint32) // dev_id
	maxRulesetID = uint64(math.MaxUint32) // zt_dev_rec.ruleset, the rule and prefix keys
	maxGroupID   = uint64(math.MaxUint32) // zt_prefix_val.group, the prefix selector id
)

// compiler is the state of one Compile: ids handed out so far and the snapshot being filled.
type compiler struct {
	p        *Policy
	opt      CompileOptions
	snap     *Snapshot
	segIDs   map[string]uint16
	devIDs   map[string]uint32 // device name -> dev_id
	rulesets map[string]uint32 // canonical rule list -> rule set id
	rsFlags  []uint16          // rule set id -> ZT_DEV_PEER_RULES | ZT_DEV_PREFIX_RULES
	groups   uint32            // prefix groups handed out

	// listCache maps a device's rule list as written (its segment and its own rules of one
	// direction, see listKey) to its rule set: devices mostly share a few lists, and compiling
	// a list (ruleset) costs far more than recognising one already compiled.
	listCache map[string]uint32
	key       []byte   // listKey's buffer
	added     []string // the keys of the rule sets compiled, in order, since the Editor reset it
}

// run compiles c.p into c.snap: segment and device ids, the gateway's configuration and the
// quarantine rule set, then every device.
func (c *compiler) run() error {
	spec := &c.p.Spec
	if n := len(spec.Segments); uint64(n) > maxSegmentID {
		return atPath("spec.segments", fmt.Errorf("has %d segments, at most %d are allowed", n, maxSegmentID))
	}
	for i, s := range spec.Segments {
		id := uint16(i + 1)
		c.segIDs[s.Name] = id
		c.snap.SegmentNames[id] = s.Name
	}
	if err := c.assignDevIDs(); err != nil {
		return err
	}
	c.rsFlags = []uint16{0} // rule set 0 is never used

	cfg := &c.snap.Config
	cfg.Revision = c.opt.Revision
	if spec.Mode == ModeAudit {
		cfg.Flags |= bpf.CfgAudit
	}
	for _, s := range spec.Gateway.Services {
		switch s {
		case ServiceDHCP:
			cfg.Flags |= bpf.CfgSvcDHCP
		case ServiceDHCPv6:
			cfg.Flags |= bpf.CfgSvcDHCPv6
		}
	}
	for _, s := range spec.Gateway.IPv4 {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() || int(cfg.N_gw4) >= len(cfg.Gw4) {
			return fmt.Errorf("spec.gateway.ipv4: %q: not a usable IPv4 address", s)
		}
		cfg.Gw4[cfg.N_gw4] = be32(a)
		cfg.N_gw4++
	}
	for _, s := range spec.Gateway.IPv6 {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is6() || a.Is4In6() || int(cfg.N_gw6) >= len(cfg.Gw6) {
			return fmt.Errorf("spec.gateway.ipv6: %q: not a usable IPv6 address", s)
		}
		cfg.Gw6[cfg.N_gw6] = in6(a)
		cfg.N_gw6++
	}
	for _, s := range spec.Gateway.MACs {
		hw, err := net.ParseMAC(s)
		if err != nil || len(hw) != 6 || hw[0]&1 != 0 || int(cfg.N_gwmac) >= len(cfg.Gwmac) {
			return fmt.Errorf("spec.gateway.macs: %q: not a usable unicast MAC address", s)
		}
		cfg.Gwmac[cfg.N_gwmac].B = [6]byte(hw)
		cfg.N_gwmac++
	}

	qrs, err := c.ruleset("spec.quarantine.allow", spec.Quarantine.Allow, false)
	if err != nil {
		return err
	}
	cfg.QuarantineRuleset = qrs
	if c.rsFlags[qrs]&bpf.DevPeerRules != 0 {
		cfg.Flags |= bpf.CfgQPeerRules
	}
	if c.rsFlags[qrs]&bpf.DevPrefixRules != 0 {
		cfg.Flags |= bpf.CfgQPrefixRules
	}

	segs := map[string]*Segment{}
	for i := range spec.Segments {
		segs[spec.Segments[i].Name] = &spec.Segments[i]
	}
	for i := range spec.Devices {
		if err := c.device(i, &spec.Devices[i], segs); err != nil {
			return err
		}
	}
	return nil
}

// assignDevIDs keeps the dev_id of every device whose MAC the previous snapshot knew, and gives
// new devices the lowest ids the previous snapshot did not use.
func (c *compiler) assignDevIDs() error {
	used := map[uint32]bool{ZeroDevID: true}
	if c.opt.Prev != nil {
		for _, d := range c.opt.Prev.Devices {
			used[d.DevId] = true
		}
	}
	next := uint32(1)
	for _, d := range c.p.Spec.Devices {
		if c.opt.Prev != nil {
			if rec, ok := c.opt.Prev.Devices[devKey(mustMAC(d.MAC))]; ok {
				c.devIDs[d.Name] = rec.DevId
				continue
			}
		}
		for used[next] {
			next++
		}
		if uint64(next) > maxDevID || next == 0 {
			return atPath("spec.devices", fmt.Errorf("more than %d device ids needed", maxDevID))
		}
		used[next] = true
		c.devIDs[d.Name] = next
		c.snap.Fresh = append(c.snap.Fresh, next)
	}
	return nil
}

// ZeroDevID is the dev_id of frames whose device is not identified.
const ZeroDevID = 0

// device compiles spec.devices[i] (its record and rule set) into the snapshot.
func (c *compiler) device(i int, d *Device, segs map[string]*Segment) error {
	rec, err := c.record(fmt.Sprintf("spec.devices[%d]", i), d, segs)
	if err != nil {
		return err
	}
	c.write(d, &rec)
	return nil
}

// record compiles device d (at path) into its device record, with the id c.devIDs gives it,
// compiling its rule list into a rule set when no device compiled the same list before.
func (c *compiler) record(path string, d *Device, segs map[string]*Segment) (bpf.DevRec, error) {
	rec := bpf.DevRec{DevId: c.devIDs[d.Name], Vlan: d.VLAN}
	mode := c.p.Spec.Mode
	auditIdentity := c.p.Spec.AuditIdentity || d.AuditIdentity
	var seg *Segment
	if d.Segment != "" {
		seg = segs[d.Segment]
		rec.Segment = c.segIDs[d.Segment]
		if seg.Mode != "" {
			mode = seg.Mode
		}
		auditIdentity = auditIdentity || seg.AuditIdentity
	}
	if d.Mode != "" {
		mode = d.Mode
	}
	var err error
	if rec.Ruleset, err = c.list(path, d, seg, false); err != nil {
		return rec, err
	}
	if rec.InRuleset, err = c.list(path, d, seg, true); err != nil {
		return rec, err
	}
	rec.Flags = c.rsFlags[rec.Ruleset] | inboundFlags(c.rsFlags[rec.InRuleset])
	if mode == ModeAudit {
		rec.Flags |= bpf.DevAudit
		if auditIdentity {
			rec.Flags |= bpf.DevAuditIdentity
		}
	}
	if d.Quarantined {
		rec.Flags |= bpf.DevQuarantined
	}
	if d.Port != "" {
		if c.opt.Ifindex == nil {
			return rec, atPath(joinPath(path, "port"), fmt.Errorf("%q: no interface resolver given", d.Port))
		}
		idx, err := c.opt.Ifindex(d.Port)
		if err != nil {
			return rec, atPath(joinPath(path, "port"), fmt.Errorf("%q: %w", d.Port, err))
		}
		rec.Ifindex = idx
	}
	for i, list := range [2][]string{d.IPv4, d.IPv6} {
		for _, s := range list {
			if err := bind(&rec, netip.MustParseAddr(s)); err != nil {
				return rec, atPath(joinPath(path, [2]string{"ipv4", "ipv6"}[i]), err)
			}
		}
	}
	return rec, nil
}

// list returns the rule set of device d's outbound (to:) or inbound (from:) rules, its segment's
// and its own, compiling them when no device compiled the same list before.
func (c *compiler) list(path string, d *Device, seg *Segment, inbound bool) (uint32, error) {
	c.key = listKey(c.key[:0], d.Segment, d.Allow, inbound)
	if rs, ok := c.listCache[string(c.key)]; ok {
		return rs, nil
	}
	var rules []Rule
	if seg != nil {
		rules = append(rules, seg.Allow...)
	}
	rules = append(rules, d.Allow...)
	rs, err := c.ruleset(joinPath(path, "allow"), rules, inbound)
	if err != nil {
		return 0, err
	}
	c.listCache[string(c.key)] = rs
	return rs, nil
}

// inboundFlags are the device flags that say what the inbound rule set with flags f holds:
// bpf.DevInPeerRules for bpf.DevPeerRules, bpf.DevInPrefixRules for bpf.DevPrefixRules.
func inboundFlags(f uint16) uint16 {
	var in uint16
	if f&bpf.DevPeerRules != 0 {
		in |= bpf.DevInPeerRules
	}
	if f&bpf.DevPrefixRules != 0 {
		in |= bpf.DevInPrefixRules
	}
	return in
}

// write adds device d, compiled into rec, to the snapshot.
func (c *compiler) write(d *Device, rec *bpf.DevRec) {
	val := addrVal(rec)
	for _, list := range [2][]string{d.IPv4, d.IPv6} {
		for _, s := range list {
			c.snap.Addrs[bpf.AddrKey{Addr: in6(netip.MustParseAddr(s))}] = val
		}
	}
	c.snap.Devices[devKey(mustMAC(d.MAC))] = *rec
	c.snap.DeviceNames[rec.DevId] = d.Name
}

// addrVal is what the address index says of each address bound to the device of rec.
func addrVal(rec *bpf.DevRec) bpf.AddrVal {
	return bpf.AddrVal{DevId: rec.DevId, Segment: rec.Segment, Kind: bpf.AddrDevice,
		Ruleset: rec.Ruleset, InRuleset: rec.InRuleset, Flags: rec.Flags}
}

// PathError is a compile error at one field of the policy (Path, as in FieldError).
type PathError struct {
	Path string
	Err  error
}

func (e *PathError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *PathError) Unwrap() error { return e.Err }

func atPath(path string, err error) error { return &PathError{Path: path, Err: err} }

// listKey appends to b an encoding of a device's rule list of one direction as written: the
// direction, its segment's name (the segment's rules of that direction) and its own rules of
// that direction (to: rules, or from: rules when inbound), every string length-prefixed so that
// different lists never share a key.
func listKey(b []byte, segment string, rules []Rule, inbound bool) []byte {
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	n := 0
	for i := range rules {
		if rules[i].Inbound() == inbound {
			n++
		}
	}
	if inbound {
		b = append(b, 'i')
	} else {
		b = append(b, 'o')
	}
	str(segment)
	b = binary.AppendUvarint(b, uint64(n))
	for i := range rules {
		r := &rules[i]
		if r.Inbound() != inbound {
			continue
		}
		t := r.Peer()
		str(t.CIDR)
		str(t.Device)
		str(t.Segment)
		if t.Gateway {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		str(r.Proto)
		b = binary.AppendUvarint(b, uint64(len(r.Ports)))
		for _, p := range r.Ports {
			b = binary.LittleEndian.AppendUint16(b, p.Lo)
			b = binary.LittleEndian.AppendUint16(b, p.Hi)
		}
		b = binary.AppendUvarint(b, uint64(len(r.ICMP)))
		for _, t := range r.ICMP {
			str(string(t))
		}
	}
	return b
}

// bind adds a to the addresses inlined in the device record.
func bind(rec *bpf.DevRec, a netip.Addr) error {
	if a.Is4() {
		if int(rec.N_v4) >= len(rec.V4) {
			return fmt.Errorf("more than %d addresses", len(rec.V4))
		}
		rec.V4[rec.N_v4] = be32(a)
		rec.N_v4++
		return nil
	}
	if int(rec.N_v6) >= len(rec.V6) {
		return fmt.Errorf("more than %d addresses", len(rec.V6))
	}
	rec.V6[rec.N_v6] = in6(a)
	rec.N_v6++
	return nil
}

// selector is one rule destination other than a CIDR.
type selector struct {
	kind uint8
	id   uint32
}

// portSet is what one (selector, protocol) allows: every port, or merged ranges.
type portSet struct {
	all    bool
	ranges []PortRange
}

// add adds the ports r allows for proto (every port when r lists none or proto has none); for
// icmp and icmpv6 the "ports" are the ICMP key ranges of r's types (every type when it lists
// none). r's icmp types are valid: ruleset checks them first.
func (ps *portSet) add(r Rule, proto uint8) {
	if icmp, _ := r.icmpRanges(proto); len(icmp) > 0 {
		ps.ranges = append(ps.ranges, icmp...)
		return
	}
	if len(r.Ports) == 0 || (proto != ProtoTCP && proto != ProtoUDP) {
		ps.all = true
		return
	}
	ps.ranges = append(ps.ranges, r.Ports...)
}

// merged is the set's ranges sorted, with overlapping and adjacent ranges joined.
func (ps *portSet) merged() []PortRange {
	rs := slices.Clone(ps.ranges)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Lo < rs[j].Lo })
	var out []PortRange
	for _, r := range rs {
		if n := len(out); n > 0 && uint32(r.Lo) <= uint32(out[n-1].Hi)+1 {
			out[n-1].Hi = max(out[n-1].Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// union adds the ports of o.
func (ps *portSet) union(o *portSet) {
	ps.all = ps.all || o.all
	ps.ranges = append(ps.ranges, o.ranges...)
}

// protoPorts are the ports one destination allows, by protocol number.
type protoPorts map[uint8]*portSet

// add adds the ports r allows for proto.
func (pp protoPorts) add(r Rule, proto uint8) {
	ps := pp[proto]
	if ps == nil {
		ps = &portSet{}
		pp[proto] = ps
	}
	ps.add(r, proto)
}

// ruleset compiles the rules of a list of one direction into rule map entries, shared by every
// device (and direction) whose entries are the same: the to: rules plus the gateway services
// every device may use, or the from: rules (matched on the source) when inbound.
func (c *compiler) ruleset(path string, rules []Rule, inbound bool) (_ uint32, err error) {
	sels := map[selector]protoPorts{}
	prefixes := map[netip.Prefix]protoPorts{}
	addSel := func(s selector, r Rule, proto uint8) {
		if sels[s] == nil {
			sels[s] = protoPorts{}
		}
		sels[s].add(r, proto)
	}
	gw := selector{kind: bpf.SelGateway}
	for _, s := range c.p.Spec.Gateway.Services {
		if inbound { // the services are the device's connections to the gateway
			break
		}
		switch s {
		case ServiceDNS:
			addSel(gw, Rule{Ports: []PortRange{{53, 53}}}, ProtoUDP)
			addSel(gw, Rule{Ports: []PortRange{{53, 53}}}, ProtoTCP)
		case ServiceNTP:
			addSel(gw, Rule{Ports: []PortRange{{123, 123}}}, ProtoUDP)
		}
	}
	end := "to"
	if inbound {
		end = "from"
	}
	for i, r := range rules {
		if r.Inbound() != inbound {
			continue
		}
		t := r.Peer()
		proto, err := ParseProto(r.Proto)
		if err != nil {
			return 0, atPath(fmt.Sprintf("%s[%d].proto", path, i), err)
		}
		if _, err := r.icmpRanges(proto); err != nil {
			return 0, atPath(fmt.Sprintf("%s[%d].icmp", path, i), err)
		}
		switch {
		case t.Gateway:
			addSel(gw, r, proto)
		case t.Device != "":
			id, ok := c.devIDs[t.Device]
			if !ok {
				return 0, atPath(fmt.Sprintf("%s[%d].%s.device", path, i, end), fmt.Errorf("%q is not a device", t.Device))
			}
			addSel(selector{bpf.SelDevice, id}, r, proto)
		case t.Segment != "":
			id, ok := c.segIDs[t.Segment]
			if !ok {
				return 0, atPath(fmt.Sprintf("%s[%d].%s.segment", path, i, end), fmt.Errorf("%q is not a segment", t.Segment))
			}
			addSel(selector{bpf.SelSegment, uint32(id)}, r, proto)
		case t.CIDR != "":
			pfx, err := netip.ParsePrefix(t.CIDR)
			if err != nil {
				return 0, atPath(fmt.Sprintf("%s[%d].%s.cidr", path, i, end), err)
			}
			pfx = pfx.Masked()
			if prefixes[pfx] == nil {
				prefixes[pfx] = protoPorts{}
			}
			prefixes[pfx].add(r, proto)
		default:
			return 0, atPath(fmt.Sprintf("%s[%d].%s", path, i, end), errors.New("no destination or source"))
		}
	}
	// A v6 prefix that covers ::ffff:0:0/96 would match IPv4 destinations in the trie: an
	// explicit (possibly empty) IPv4 0.0.0.0/0 entry keeps the families apart.
	for p := range prefixes {
		if p.Addr().Is6() && p.Bits() <= 96 && p.Contains(netip.MustParseAddr("::ffff:0.0.0.0")) {
			v4all := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if prefixes[v4all] == nil {
				prefixes[v4all] = protoPorts{}
			}
			break
		}
	}

	key, err := canonical(sels, prefixes, path)
	if err != nil {
		return 0, err
	}
	if id, ok := c.rulesets[key]; ok {
		return id, nil
	}
	// On error nothing of the compiler's state but the snapshot's maps has changed (the
	// Editor compiles into a scratch snapshot and relies on it).
	if uint64(len(c.rsFlags)) > maxRulesetID {
		return 0, atPath(path, fmt.Errorf("more than %d distinct rule lists", maxRulesetID))
	}
	id := uint32(len(c.rsFlags))
	g0 := c.groups
	defer func() {
		if err != nil {
			c.groups = g0
		}
	}()
	var flags uint16
	for s, pp := range sels {
		if s.kind == bpf.SelDevice || s.kind == bpf.SelSegment {
			flags |= bpf.DevPeerRules
		}
		if err := c.emit(id, s, pp, path); err != nil {
			return 0, err
		}
	}
	if len(prefixes) > 0 {
		flags |= bpf.DevPrefixRules
	}
	// Close every prefix over the prefixes that contain it: the trie returns only the longest
	// match, which must then carry every rule that applies to the destination. Prefixes are
	// numbered in a fixed order, so that compiling a policy twice gives the same snapshot (a
	// restarted agent recognises the maps it pinned).
	order := make([]netip.Prefix, 0, len(prefixes))
	for p := range prefixes {
		order = append(order, p)
	}
	slices.SortFunc(order, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	// In that order every prefix comes after the prefixes that contain it, and those form a
	// chain: a stack of the chain gives the closest one, whose closure already holds the others.
	// A multicast prefix is closed a second time, over the multicast prefixes of its chain only
	// (they end the chain: a prefix that contains one and is not one contains all multicast),
	// for broadcast and multicast frames (ZT_SEL_MCAST): a wide rule must not let them flood.
	type link struct {
		p      netip.Prefix
		closed protoPorts
		mcast  protoPorts // nil unless p lies inside 224.0.0.0/4 or ff00::/8
	}
	var chain []link
	for _, p := range order {
		for len(chain) > 0 && !contains(chain[len(chain)-1].p, p) {
			chain = chain[:len(chain)-1]
		}
		var parent link
		if len(chain) > 0 {
			parent = chain[len(chain)-1]
		}
		closed := closure(parent.closed, prefixes[p])
		var mcast protoPorts
		if multicast(p) {
			mcast = closure(parent.mcast, prefixes[p])
		}
		chain = append(chain, link{p, closed, mcast})
		if uint64(c.groups) >= maxGroupID {
			return 0, atPath(path, fmt.Errorf("more than %d prefix groups", maxGroupID))
		}
		c.groups++
		g := c.groups
		c.snap.Prefixes[prefixKey(id, p)] = bpf.PrefixVal{Group: g}
		if err := c.emit(id, selector{bpf.SelPrefix, g}, closed, path); err != nil {
			return 0, err
		}
		if err := c.emit(id, selector{bpf.SelMcast, g}, mcast, path); err != nil {
			return 0, err
		}
	}
	c.rulesets[key] = id
	c.added = append(c.added, key)
	c.rsFlags = append(c.rsFlags, flags)
	return id, nil
}

// emit writes the rule entries of rule set rs for destination s, one for each protocol of pp.
func (c *compiler) emit(rs uint32, s selector, pp protoPorts, path string) error {
	for proto, ps := range pp {
		v := bpf.RuleVal{}
		if ps.all {
			v.Flags = bpf.RuleAllPorts
		} else {
			m := ps.merged()
			if len(m) > len(v.Ranges) {
				return atPath(path, fmt.Errorf("%d distinct port ranges for one destination and protocol %d, at most %d",
					len(m), proto, len(v.Ranges)))
			}
			for i, r := range m {
				v.Ranges[i].Lo, v.Ranges[i].Hi = r.Lo, r.Hi
			}
			v.N = uint16(len(m))
		}
		c.snap.Rules[bpf.RuleKey{Ruleset: rs, SelId: s.id, SelKind: s.kind, Proto: proto}] = v
	}
	return c.capacity()
}

// closure is a copy of the ports of an enclosing prefix (nil: none) with own added.
func closure(outer, own protoPorts) protoPorts {
	closed := protoPorts{}
	for proto, ps := range outer {
		closed[proto] = &portSet{all: ps.all, ranges: slices.Clone(ps.ranges)}
	}
	for proto, ps := range own {
		if closed[proto] == nil {
			closed[proto] = &portSet{}
		}
		closed[proto].union(ps)
		if !closed[proto].all {
			closed[proto].ranges = closed[proto].merged()
		}
	}
	return closed
}

// Multicast ranges: a broadcast or multicast frame is allowed only by a rule to a prefix inside
// one of them.
var (
	multicast4 = netip.MustParsePrefix("224.0.0.0/4")
	multicast6 = netip.MustParsePrefix("ff00::/8")
)

// multicast reports whether prefix p lies inside 224.0.0.0/4 or ff00::/8.
func multicast(p netip.Prefix) bool {
	return contains(multicast4, p) || contains(multicast6, p)
}

// contains reports whether prefix q contains prefix p (of the same family).
func contains(q, p netip.Prefix) bool {
	return q.Addr().Is4() == p.Addr().Is4() && q.Bits() <= p.Bits() && q.Contains(p.Addr())
}

// canonical is a stable text form of a compiled rule list, to share rule sets.
func canonical(sels map[selector]protoPorts, prefixes map[netip.Prefix]protoPorts, path string) (string, error) {
	var lines []string
	ports := func(pp protoPorts) string {
		var out []string
		for proto, ps := range pp {
			if ps.all {
				out = append(out, fmt.Sprintf("%d:*", proto))
				continue
			}
			out = append(out, fmt.Sprintf("%d:%v", proto, ps.merged()))
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	for s, pp := range sels {
		lines = append(lines, fmt.Sprintf("s%d/%d=%s", s.kind, s.id, ports(pp)))
	}
	for p, pp := range prefixes {
		lines = append(lines, fmt.Sprintf("p%s=%s", p, ports(pp)))
	}
	sort.Strings(lines)
	return strings.Join(lines, ";"), nil
}

// prefixKey is the prefix map key of p in rule set rs (an IPv4 prefix within ::ffff:0:0/96).
func prefixKey(rs uint32, p netip.Prefix) bpf.PrefixKey {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return bpf.PrefixKey{Prefixlen: uint32(32 + bits), Ruleset: rs, Addr: in6(p.Addr())}
}

// in6 is the datapath's 16-byte form of an address (IPv4 as ::ffff:a.b.c.d).
func in6(a netip.Addr) bpf.In6 { return bpf.In6{B: a.As16()} }

// be32 is an IPv4 address as the datapath's __be32: network-order bytes read natively.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// devKey is the devices map key of mac.
func devKey(mac net.HardwareAddr) bpf.DevKey {
	var k bpf.DevKey
	copy(k.Mac[:], mac)
	return k
}

// DevKey is the devices map key of a MAC address.
func DevKey(mac net.HardwareAddr) bpf.DevKey { return devKey(mac) }

// mustMAC parses a MAC address the validator has accepted.
func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(fmt.Sprintf("policy: unvalidated MAC %q: %v", s, err))
	}
	return m
}
