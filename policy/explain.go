package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
)

// Query asks whether device From may reach To (an IP address, a device name or "gateway")
// with protocol Proto (tcp, udp, icmp, icmpv6, any or a number) on destination port Port, or
// for icmp and icmpv6 with the message ICMP ("TYPE" or "TYPE/CODE" as in a rule; default echo-request).
// When From is not a device name but an IP address or "gateway" and To names a device, the
// question is inbound: may From open a connection toward the device (its from: rules)?
type Query struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Proto string `json:"proto"`
	Port  uint16 `json:"port,omitempty"`
	ICMP  string `json:"icmp,omitempty"`
}

// Explanation is the reference model's answer to a Query and what in the policy decides it.
type Explanation struct {
	Direction string `json:"direction"`            // outbound (from a device) or inbound (toward a device)
	From      string `json:"from"`                 // device name; inbound: the query's address or gateway
	Src       string `json:"src"`                  // source address used (the device's first of the family)
	SrcDevice string `json:"src_device,omitempty"` // inbound: the device owning Src, if any
	Dst       string `json:"dst"`                  // destination address
	DstDevice string `json:"dst_device,omitempty"` // device owning Dst, if any
	Proto     string `json:"proto"`
	Port      uint16 `json:"port,omitempty"`
	ICMP      string `json:"icmp,omitempty"`      // the query\'s ICMP message as TYPE/CODE, when it names one
	Mode      string `json:"mode"`                // enforce or audit, as in force for the device
	Verdict   string `json:"verdict"`             // pass, drop, audit (the model's)
	Reason    string `json:"reason"`              // allow, no_rule, quarantined, ... (the model's)
	Rule      string `json:"rule,omitempty"`      // the deciding rule's path (spec.segments[1].allow[0]) or service
	RuleText  string `json:"rule_text,omitempty"` // the rule as Rule.String
	// Replies says how the answers of an allowed outbound connection pass toward the device:
	// RepliesFollowFlow for tcp, udp and echo requests, whose flow the datapath tracks (no
	// from: rule needed), else RepliesNeedRule.
	Replies string `json:"replies,omitempty"`
}

// Directions of an Explanation.
const (
	DirectionOutbound = "outbound" // from a device: its to: rules (the XDP program)
	DirectionInbound  = "inbound"  // toward a device: its from: rules (the TC program)
)

// Explanation.Replies of an allowed outbound connection.
const (
	RepliesFollowFlow = "follow the flow"                                  // they pass as part of the flow it opened
	RepliesNeedRule   = "need a from: rule (no flow tracks this protocol)" // it opened no flow
)

// Probe frame constants.
const (
	explainSrcPort = 49152 // source port of TCP and UDP probes (other than DHCP)
	tpid8021Q      = 0x8100
	icmpEchoKey    = 8 << 8   // an ICMP echo request, code 0, as type<<8|code
	icmp6EchoKey   = 128 << 8 // an ICMPv6 echo request, code 0
)

var (
	explainDstMAC    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	explainAltDstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02} // when the device's own MAC is explainDstMAC
	bcast4Addr       = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	allDHCPv6Addr    = netip.MustParseAddr("ff02::1:2")
)

// Explain answers q with the reference model deciding from s, which must be compiled from p
// (a valid policy), and names the part of p that allows the traffic.
//
// The query becomes one real frame from the device (its MAC, first address of the family and
// VLAN, on its port) to To: an address, "gateway" or a device name. An empty Proto is tcp with
// a Port and any (an echo request) without. Verdict and Reason are the model's; Rule names the
// first rule, or else the gateway service, that allows the traffic, and is empty otherwise.
// An allowed connection's Replies follow the flow.
//
// An inbound query (From an address or "gateway", To a device) becomes one frame leaving the
// gateway toward the device (to its MAC and first address of the family, by its port), decided
// as the TC program does: Rule names the first from: rule that allows it.
func Explain(p *Policy, s *Snapshot, q Query) (*Explanation, error) {
	if p == nil || s == nil {
		return nil, errors.New("explain needs a policy and its snapshot")
	}
	di := deviceIndex(p, q.From)
	if di < 0 {
		if ti := deviceIndex(p, q.To); ti >= 0 {
			return explainInbound(p, s, q, ti)
		}
		return nil, fmt.Errorf("unknown device %q: from names a device, or an IP address or gateway "+
			"when to names a device", q.From)
	}
	dev := &p.Spec.Devices[di]
	rq, err := resolve(p, dev, q, q.To, "destination")
	if err != nil {
		return nil, err
	}
	mac, src, dst, proto, port, msg := rq.mac, rq.self, rq.peer, rq.proto, rq.port, rq.msg

	e := &Explanation{Direction: DirectionOutbound, From: dev.Name, Src: src.String(), Dst: dst.String(),
		Proto: protoNumberName(proto), Port: q.Port, Mode: string(effectiveMode(p, dev))}
	if q.ICMP != "" {
		e.ICMP = msg.text(proto)
	}
	if owner := deviceOwning(p, dst); owner != nil {
		e.DstDevice = owner.Name
	}

	dstMAC := explainDstMAC
	if mac.String() == dstMAC.String() {
		dstMAC = explainAltDstMAC
	}
	if g := frames.GroupMAC(dst); g != nil {
		dstMAC = g // a group or the broadcast: the frame goes to its MAC, as a sender's would
	}
	frame := probe(frames.Host{MAC: mac, IP: src}, frames.Host{MAC: dstMAC, IP: dst}, proto, port)
	if dev.VLAN != 0 {
		frame = frames.VLAN(frame, tpid8021Q, dev.VLAN)
	}
	var ifindex uint32
	if rec, ok := s.Devices[DevKey(mac)]; ok {
		ifindex = rec.Ifindex
	}
	m := NewModel(s, 16, time.Minute)
	m.AddGatewayMAC([6]byte(explainDstMAC)) // the probe is sent to the gateway, as on a routed gateway
	m.AddGatewayMAC([6]byte(explainAltDstMAC))
	dec := m.Decide(frame, ifindex, 0)
	e.Verdict, e.Reason = dec.Verdict.String(), dec.Reason.String()
	if dec.Reason != bpf.ReasonAllow {
		return e, nil
	}
	e.Replies = RepliesNeedRule
	if _, _, kind := flowPorts(proto, uint8(port>>8), 0, explainSrcPort, port); kind == bpf.FlowKindPorts ||
		kind == bpf.FlowKindEchoReq {
		e.Replies = RepliesFollowFlow
	}

	path, r, ok := findRule(p, di, dst, proto, port, false)
	if !ok {
		// To another device, its from: rules may allow what the sender's rules do not.
		if owner := deviceOwning(p, dst); owner != nil {
			if oi := slices.IndexFunc(p.Spec.Devices, func(d Device) bool { return d.Name == owner.Name }); oi >= 0 {
				path, r, ok = findRule(p, oi, src, proto, port, true)
			}
		}
	}
	switch {
	case ok:
		e.Rule, e.RuleText = path, r.String()
	default:
		if svc := gatewayService(p, dst, proto, port); svc != "" {
			e.Rule = "spec.gateway.services: " + string(svc)
		}
	}
	return e, nil
}

// resolved is what a query asks about device dev and a peer: the device's MAC, its address and the
// peer's, the protocol (any: an echo of their family) and the port, or for icmp and icmpv6 the
// message and its type<<8|code (the datapath matches that where it matches ports).
type resolved struct {
	mac        net.HardwareAddr
	self, peer netip.Addr
	proto      uint8
	port       uint16
	msg        ICMPMatch
}

// resolve reads q about device dev and peer (q.To, the destination, or q.From, the source: role).
func resolve(p *Policy, dev *Device, q Query, peer, role string) (resolved, error) {
	var r resolved
	var err error
	if r.mac, err = net.ParseMAC(dev.MAC); err != nil {
		return r, fmt.Errorf("device %q: mac %q: %w", dev.Name, dev.MAC, err)
	}
	if r.proto, err = queryProto(q); err != nil {
		return r, err
	}
	if r.self, r.peer, err = endpoints(p, dev, peer, role, r.proto); err != nil {
		return r, err
	}
	if r.proto == ProtoAny {
		r.proto = ProtoICMP
		if r.self.Is6() {
			r.proto = ProtoICMPv6
		}
	}
	r.port = q.Port
	if r.proto == ProtoICMP || r.proto == ProtoICMPv6 {
		if r.msg, err = queryICMP(q.ICMP, r.proto); err != nil {
			return r, err
		}
		r.port = r.msg.Range().Lo
	}
	return r, nil
}

// explainInbound answers q, an inbound query toward device ti.
func explainInbound(p *Policy, s *Snapshot, q Query, ti int) (*Explanation, error) {
	dev := &p.Spec.Devices[ti]
	rq, err := resolve(p, dev, q, q.From, "source")
	if err != nil {
		return nil, err
	}
	mac, dst, src, proto, port, msg := rq.mac, rq.self, rq.peer, rq.proto, rq.port, rq.msg
	e := &Explanation{Direction: DirectionInbound, From: q.From, Src: src.String(), Dst: dst.String(),
		DstDevice: dev.Name, Proto: protoNumberName(proto), Port: q.Port, Mode: string(effectiveMode(p, dev))}
	if q.ICMP != "" {
		e.ICMP = msg.text(proto)
	}
	if owner := deviceOwning(p, src); owner != nil {
		e.SrcDevice = owner.Name
	}
	// The frame leaves the gateway: from one of its MACs to the device's.
	srcMAC := explainDstMAC
	if mac.String() == srcMAC.String() {
		srcMAC = explainAltDstMAC
	}
	frame := probe(frames.Host{MAC: srcMAC, IP: src}, frames.Host{MAC: mac, IP: dst}, proto, port)
	var egress uint32
	if rec, ok := s.Devices[DevKey(mac)]; ok {
		egress = rec.Ifindex
	}
	dec := NewModel(s, 16, time.Minute).DecideToDevice(frame, egress, 0)
	e.Verdict, e.Reason = dec.Verdict.String(), dec.Reason.String()
	if dec.Reason != bpf.ReasonAllow {
		return e, nil
	}
	if path, r, ok := findRule(p, ti, src, proto, port, true); ok {
		e.Rule, e.RuleText = path, r.String()
	}
	return e, nil
}

// deviceIndex is the index of the device named name in p, or -1.
func deviceIndex(p *Policy, name string) int {
	for i := range p.Spec.Devices {
		if p.Spec.Devices[i].Name == name {
			return i
		}
	}
	return -1
}

// queryProto returns the protocol number of q and checks its port.
func queryProto(q Query) (uint8, error) {
	name := q.Proto
	if name == "" && q.Port > 0 {
		name = "tcp"
	}
	proto, err := ParseProto(name)
	if err != nil {
		return 0, err
	}
	switch {
	case (proto == ProtoTCP || proto == ProtoUDP) && q.Port == 0:
		return 0, fmt.Errorf("proto %s needs a port", protoNumberName(proto))
	case proto != ProtoTCP && proto != ProtoUDP && q.Port != 0:
		return 0, fmt.Errorf("port %d: ports apply only to tcp and udp, not %s", q.Port, protoNumberName(proto))
	case q.ICMP != "" && proto != ProtoICMP && proto != ProtoICMPv6:
		return 0, fmt.Errorf("icmp %s: icmp types need proto icmp or icmpv6", quote(q.ICMP))
	}
	return proto, nil
}

// queryICMP is the message of a query's ICMP for proto: an echo request when it is empty, code
// 0 when it names a type alone.
func queryICMP(s string, proto uint8) (ICMPMatch, error) {
	if s == "" {
		s = "echo-request"
	}
	m, err := ParseICMPType(s, proto)
	m.AnyCode = false
	return m, err
}

// endpoints picks the addresses of a probe between dev and to, the other end (role names it in
// errors: destination, or source for an inbound probe): dev's first of a family, and to's.
func endpoints(p *Policy, dev *Device, to, role string, proto uint8) (src, dst netip.Addr, err error) {
	src4, err := firstAddr(dev.IPv4)
	if err != nil {
		return src, dst, fmt.Errorf("device %q: %w", dev.Name, err)
	}
	src6, err := firstAddr(dev.IPv6)
	if err != nil {
		return src, dst, fmt.Errorf("device %q: %w", dev.Name, err)
	}
	want4, want6 := proto != ProtoICMPv6, proto != ProtoICMP

	if a, perr := netip.ParseAddr(to); perr == nil {
		a = a.WithZone("").Unmap()
		switch {
		case a.Is4() && !want4, a.Is6() && !want6:
			return src, dst, fmt.Errorf("proto %s cannot reach %s", protoNumberName(proto), a)
		case a.Is4() && !src4.IsValid():
			return src, dst, fmt.Errorf("device %q has no IPv4 address", dev.Name)
		case a.Is6() && !src6.IsValid():
			return src, dst, fmt.Errorf("device %q has no IPv6 address", dev.Name)
		case a.Is4():
			return src4, a, nil
		}
		return src6, a, nil
	}

	var lists [2][]string // the destination's IPv4 and IPv6 addresses
	what := to
	if to == "gateway" {
		lists = [2][]string{p.Spec.Gateway.IPv4, p.Spec.Gateway.IPv6}
	} else {
		var d *Device
		for i := range p.Spec.Devices {
			if p.Spec.Devices[i].Name == to {
				d = &p.Spec.Devices[i]
				break
			}
		}
		if d == nil {
			return src, dst, fmt.Errorf("unknown %s %q: not an IP address, a device or gateway", role, to)
		}
		lists = [2][]string{d.IPv4, d.IPv6}
		what = fmt.Sprintf("device %q", to)
	}
	dst4, err := firstAddr(lists[0])
	if err != nil {
		return src, dst, fmt.Errorf("%s: %w", what, err)
	}
	dst6, err := firstAddr(lists[1])
	if err != nil {
		return src, dst, fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case want4 && src4.IsValid() && dst4.IsValid():
		return src4, dst4, nil
	case want6 && src6.IsValid() && dst6.IsValid():
		return src6, dst6, nil
	case proto == ProtoICMP:
		return src, dst, fmt.Errorf("device %q and %s have no IPv4 address in common for proto icmp", dev.Name, what)
	case proto == ProtoICMPv6:
		return src, dst, fmt.Errorf("device %q and %s have no IPv6 address in common for proto icmpv6", dev.Name, what)
	}
	return src, dst, fmt.Errorf("device %q and %s have no address family in common", dev.Name, what)
}

// firstAddr parses the first address of a list (invalid when the list is empty).
func firstAddr(list []string) (netip.Addr, error) {
	if len(list) == 0 {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(list[0])
	if err != nil {
		return netip.Addr{}, fmt.Errorf("address %q: %w", list[0], err)
	}
	return a, nil
}

// probe builds the Ethernet frame of a query from sh to dh (untagged); for icmp and icmpv6,
// port is the message's type<<8|code.
func probe(sh, dh frames.Host, proto uint8, port uint16) []byte {
	mac, src := sh.MAC, sh.IP
	switch {
	case proto == ProtoTCP:
		return frames.TCP(sh, dh, explainSrcPort, port, true, nil)
	case proto == ProtoUDP && port == 67 && src.Is4():
		return frames.DHCPRequest(sh, dh, layers.DHCPOpRequest, mac, 68, 67)
	case proto == ProtoUDP && port == 547 && src.Is6():
		return frames.UDP(sh, dh, 546, 547, make([]byte, 4))
	case proto == ProtoUDP:
		return frames.UDP(sh, dh, explainSrcPort, port, nil)
	case proto == ProtoICMP && src.Is4() && port == icmpEchoKey, proto == ProtoICMPv6 && src.Is6() && port == icmp6EchoKey:
		return frames.Echo(sh, dh)
	case proto == ProtoICMP && src.Is4(), proto == ProtoICMPv6 && src.Is6():
		// Room for the longest message the guards read (a neighbor advertisement's target).
		return frames.ICMP(sh, dh, uint8(port>>8), uint8(port), make([]byte, 20))
	case src.Is4():
		return frames.IPv4(sh, dh, proto, 1, 0, nil, make([]byte, 8))
	}
	return frames.IPv6(sh, dh, proto, make([]byte, 8))
}

// effectiveMode is the mode in force for d: its own, else its segment's, else the policy's,
// else enforce.
func effectiveMode(p *Policy, d *Device) Mode {
	if d.Mode != "" {
		return d.Mode
	}
	if d.Segment != "" {
		for _, s := range p.Spec.Segments {
			if s.Name == d.Segment {
				if s.Mode != "" {
					return s.Mode
				}
				break
			}
		}
	}
	if p.Spec.Mode != "" {
		return p.Spec.Mode
	}
	return ModeEnforce
}

// deviceOwning returns the device a is bound to, or nil.
func deviceOwning(p *Policy, a netip.Addr) *Device {
	for i := range p.Spec.Devices {
		d := &p.Spec.Devices[i]
		if hasAddr(d.IPv4, a) || hasAddr(d.IPv6, a) {
			return d
		}
	}
	return nil
}

// hasAddr reports whether one of the addresses in list is a.
func hasAddr(list []string, a netip.Addr) bool {
	for _, s := range list {
		if b, err := netip.ParseAddr(s); err == nil && b == a {
			return true
		}
	}
	return false
}

// isGatewayAddr reports whether a is one of the gateway's addresses.
func isGatewayAddr(p *Policy, a netip.Addr) bool {
	return hasAddr(p.Spec.Gateway.IPv4, a) || hasAddr(p.Spec.Gateway.IPv6, a)
}

// findRule returns the path and the rule that allows traffic from device di to peer, or with
// inbound from peer toward device di (its from: rules).
func findRule(p *Policy, di int, peer netip.Addr, proto uint8, port uint16, inbound bool) (string, Rule, bool) {
	d := &p.Spec.Devices[di]
	type list struct {
		path  string
		rules []Rule
	}
	var lists []list
	if d.Quarantined {
		lists = append(lists, list{"spec.quarantine.allow", p.Spec.Quarantine.Allow})
	} else {
		lists = append(lists, list{fmt.Sprintf("spec.devices[%d].allow", di), d.Allow})
		if d.Segment != "" {
			for k, s := range p.Spec.Segments {
				if s.Name == d.Segment {
					lists = append(lists, list{fmt.Sprintf("spec.segments[%d].allow", k), s.Allow})
					break
				}
			}
		}
	}
	for _, l := range lists {
		for j, r := range l.rules {
			if r.Inbound() == inbound && ruleAllows(p, r, peer, proto, port) {
				return fmt.Sprintf("%s[%d]", l.path, j), r, true
			}
		}
	}
	return "", Rule{}, false
}

// limitedBroadcast is 255.255.255.255, which no CIDR rule opens.
var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// ruleAllows reports whether r allows traffic with proto to port, to dst (a to: rule) or from
// dst (a from: rule), with the datapath's semantics: a rule for any protocol, or for every
// port, does not allow tunnels (IPIP, IPv6 in IP, GRE, VXLAN and Geneve by UDP port), and a
// tunnel port must be listed on its own.
func ruleAllows(p *Policy, r Rule, dst netip.Addr, proto uint8, port uint16) bool {
	switch t := r.Peer(); {
	case t.Gateway:
		if !isGatewayAddr(p, dst) {
			return false
		}
	case t.Device != "":
		if o := deviceOwning(p, dst); o == nil || o.Name != t.Device {
			return false
		}
	case t.Segment != "":
		if o := deviceOwning(p, dst); o == nil || o.Segment != t.Segment {
			return false
		}
	case t.CIDR != "":
		pfx, err := netip.ParsePrefix(t.CIDR)
		if err != nil || !pfx.Contains(dst) {
			return false
		}
		// A group or the limited broadcast travels to a group or broadcast MAC, which only a
		// prefix within the multicast ranges opens.
		if (dst.IsMulticast() || dst == limitedBroadcast) && !multicast(pfx.Masked()) {
			return false
		}
	default:
		return false
	}
	rp, err := ParseProto(r.Proto)
	if err != nil {
		return false
	}
	tunnel := proto == ProtoIPIP || proto == ProtoIPv6 || proto == ProtoGRE ||
		(proto == ProtoUDP && (port == 4789 || port == 6081))
	switch {
	case rp == ProtoAny:
		return !tunnel
	case rp != proto:
		return false
	case proto == ProtoICMP || proto == ProtoICMPv6:
		return icmpAllows(r, proto, port)
	case proto != ProtoTCP && proto != ProtoUDP:
		return true
	case len(r.Ports) == 0:
		return !tunnel
	}
	for _, pr := range r.Ports {
		if pr.Lo <= port && port <= pr.Hi && (!tunnel || pr.Lo == pr.Hi) {
			return true
		}
	}
	return false
}

// icmpAllows reports whether r, a rule for proto icmp or icmpv6, allows the message key
// (type<<8|code): every message when r lists no icmp types.
func icmpAllows(r Rule, proto uint8, key uint16) bool {
	if len(r.ICMP) == 0 {
		return true
	}
	ranges, err := r.icmpRanges(proto)
	if err != nil {
		return false
	}
	for _, pr := range ranges {
		if pr.Lo <= key && key <= pr.Hi {
			return true
		}
	}
	return false
}

// gatewayService returns the gateway service of p that allows traffic to dst, if one does.
func gatewayService(p *Policy, dst netip.Addr, proto uint8, port uint16) Service {
	gw := isGatewayAddr(p, dst)
	for _, s := range p.Spec.Gateway.Services {
		var ok bool
		switch s {
		case ServiceDNS:
			ok = gw && (proto == ProtoUDP || proto == ProtoTCP) && port == 53
		case ServiceNTP:
			ok = gw && proto == ProtoUDP && port == 123
		case ServiceDHCP:
			ok = dst.Is4() && proto == ProtoUDP && port == 67 && (gw || dst == bcast4Addr)
		case ServiceDHCPv6:
			ok = dst.Is6() && proto == ProtoUDP && port == 547 && (gw || dst == allDHCPv6Addr)
		}
		if ok {
			return s
		}
	}
	return ""
}
