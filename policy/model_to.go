package policy

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bpf"
)

// tcPull mirrors ZT_TC_PULL: the TC program reads headers from a frame's first tcPull bytes.
const tcPull = 512

// DecideToDevice returns the verdict for frame leaving the gateway by port egress, toward a
// device, at time now: the TC program's decision (bpf/todevice.h).
func (m *Model) DecideToDevice(frame []byte, egress uint32, now time.Duration) Decision {
	p := m.newPkt(frame[:min(len(frame), tcPull)], bpf.DirToDevice, now)
	r := m.toDevice(p, len(frame), egress)
	if r == bpf.ReasonAllow && p.firstFrag && p.dev != nil {
		r = m.fragRecord(p)
	}
	return m.decision(p, r)
}

// groupIP mirrors zt_group_ip: the IP destination is a broadcast or multicast address.
func (p *pkt) groupIP() bool {
	if p.family == 4 {
		return p.daddr == bcast4 || p.daddr[12]>>4 == 0xe
	}
	return p.daddr[0] == 0xff
}

// toIPv4 mirrors zt_to_ip4 (T4 for IPv4).
func (p *pkt) toIPv4(n int) int {
	ip := p.ptr(p.l3off, ipv4HLen)
	if ip == nil {
		return int(bpf.ReasonTruncated)
	}
	ihl := int(ip[0] & 0xf)
	if ip[0]>>4 != ipv4Version || ihl < ipv4MinIHL {
		return int(bpf.ReasonMalformed)
	}
	tot := int(be16(ip[2:]))
	if tot < ihl*ihlUnit || p.l3off+tot > n {
		return int(bpf.ReasonMalformed)
	}
	p.saddr, p.daddr = v4mapped(ip[12:16]), v4mapped(ip[16:20])
	if ihl != ipv4MinIHL {
		if p.groupIP() {
			return int(bpf.ReasonAllow)
		}
		return int(bpf.ReasonIPOptions)
	}
	p.ipv4Datagram(ip, ipv4HLen, tot, tcPull)
	return goOn
}

// toIPv6 mirrors zt_to_ip6 (T4 for IPv6).
func (p *pkt) toIPv6(n int) int {
	off, nh, r := p.ipv6Hdr(n, tcPull)
	if r >= 0 {
		return r
	}
	return p.ipv6Ext(off, nh)
}

// Who sent a frame toward a device, by its source MAC, as ZT_SRC_* in bpf/todevice.h.
const (
	srcOther  = iota // anyone else
	srcSelf          // one of the gateway's own MACs (zt_gwmacs)
	srcRouter        // a MAC the policy names for the gateway
	srcDevice        // a known device's MAC
)

// srcOf mirrors zt_src_of.
func (m *Model) srcOf(p *pkt, smac []byte) int {
	mac := [6]byte(smac)
	if m.gwMACs[mac] {
		return srcSelf
	}
	for i := 0; i < int(p.cfg.N_gwmac) && i < len(p.cfg.Gwmac); i++ {
		if p.cfg.Gwmac[i].B == mac {
			return srcRouter
		}
	}
	if _, ok := m.snap.Devices[bpf.DevKey{Mac: mac}]; ok {
		return srcDevice
	}
	return srcOther
}

// toPlumbing mirrors zt_to_plumbing (T6): neighbour discovery on the link and DHCP server
// messages, from the gateway or a router the policy names.
func (m *Model) toPlumbing(p *pkt, smac []byte) bool {
	nd := p.l4proto == ProtoICMPv6 && p.icmpType >= icmp6RS && p.icmpType <= icmp6Redirect
	dhcp := p.l4proto == ProtoUDP && ((p.family == 4 && p.sport == portDHCPServer && p.dport == portDHCPClient) ||
		(p.family == 6 && p.sport == portDHCP6Srv && p.dport == portDHCP6Clnt))
	if !nd && !dhcp {
		return false
	}
	src := m.srcOf(p, smac)
	if src != srcSelf && src != srcRouter {
		return false
	}
	switch {
	case nd:
		return p.hoplimit == ndHopLimit
	case p.family == 4:
		return src == srcRouter || cfgGateway(p.cfg, 4, p.saddr)
	}
	return p.saddr[0] == v6LL0 && p.saddr[1]&v6LL1Mask == v6LL1
}

// toL4 mirrors zt_to_l4 (T7).
func (p *pkt) toL4() int {
	tiny := int(bpf.ReasonTruncated)
	if p.firstFrag {
		tiny = int(bpf.ReasonFragTiny)
	}
	need := l4Need(p.l4proto)
	l4 := p.ptr(p.l4off, udpHLen)
	if need == 0 {
		return goOn
	}
	if p.l4off+need > p.lim || l4 == nil {
		return tiny
	}
	if p.l4proto == ProtoTCP {
		t := p.ptr(p.l4off, tcpHLen)
		if t == nil {
			return tiny
		}
		if int(t[12]>>4) < tcpMinDoff {
			return int(bpf.ReasonMalformed)
		}
	}
	if p.l4proto == ProtoTCP || p.l4proto == ProtoUDP {
		p.sport, p.dport = be16(l4), be16(l4[2:])
		return goOn
	}
	p.icmpType = l4[0]
	p.dport = icmpKey(p.icmpType, l4[1])
	p.icmpID = be16(l4[4:])
	return goOn
}

// fromRules mirrors zt_from_rules (T10): the destination device's from: rules, on the source; a
// quarantined source opens nothing.
func (m *Model) fromRules(p *pkt) bpf.Reason {
	if p.dev.Flags&bpf.DevQuarantined != 0 {
		return bpf.ReasonQuarantined
	}
	mt := match{daddr: p.saddr, ruleset: p.dev.InRuleset, flags: inFlags(p.dev.Flags), dport: p.dport,
		l4proto: p.l4proto, toGateway: cfgGateway(p.cfg, p.family, p.saddr)}
	r := m.matchRules(&mt)
	if r == bpf.ReasonAllow {
		// zt_src_quarantined: a quarantined source opens nothing, whatever the from: rules say.
		if a, ok := m.snap.Addrs[bpf.AddrKey{Addr: bpf.In6{B: p.saddr}}]; ok && a.Kind == bpf.AddrDevice &&
			a.Flags&bpf.DevQuarantined != 0 {
			return bpf.ReasonInboundDenied
		}
	}
	if r == bpf.ReasonNoRule {
		return bpf.ReasonInboundDenied
	}
	return r
}

// toDevice mirrors zt_to_device: a frame of n bytes (p.f holds its first tcPull) leaving by egress.
func (m *Model) toDevice(p *pkt, n int, egress uint32) bpf.Reason {
	if m.snap == nil {
		return bpf.ReasonNoPolicy
	}
	// T1: L2 and VLAN.
	eth := p.ptr(0, ethHLen)
	if eth == nil {
		return bpf.ReasonTruncated
	}
	proto, vr := p.vlan(eth)
	if vr >= 0 {
		return bpf.Reason(vr)
	}
	switch proto {
	case unix.ETH_P_ARP:
		return bpf.ReasonAllow
	case unix.ETH_P_IP:
		p.family = 4
	case unix.ETH_P_IPV6:
		p.family = 6
	default:
		return bpf.ReasonEthertypeDenied
	}
	ip := func() int {
		if p.family == 4 {
			return p.toIPv4(n)
		}
		return p.toIPv6(n)
	}
	// T2: broadcast and multicast.
	if eth[0]&macGroup != 0 {
		if r := ip(); r >= 0 && r != int(bpf.ReasonAllow) {
			return bpf.Reason(r)
		}
		if !p.groupIP() {
			return bpf.ReasonL2DstDenied
		}
		if m.srcOf(p, eth[ethALen:2*ethALen]) == srcOther {
			return bpf.ReasonInboundDenied
		}
		return bpf.ReasonAllow
	}
	// T3: the destination device.
	var key bpf.DevKey
	copy(key.Mac[:], eth[:ethALen])
	dev, ok := m.snap.Devices[key]
	if !ok {
		return bpf.ReasonUnknownDevice
	}
	p.dev = &dev
	if dev.Ifindex != 0 && dev.Ifindex != egress {
		return bpf.ReasonSpoofMACPort
	}
	// T4.
	if r := ip(); r >= 0 {
		if r == int(bpf.ReasonAllow) {
			return bpf.ReasonL2DstDenied
		}
		return bpf.Reason(r)
	}
	p.counted = true
	// T5.
	if p.foff != 0 {
		return m.fragLater(p)
	}
	if r := p.toL4(); r >= 0 {
		return bpf.Reason(r)
	}
	if m.toPlumbing(p, eth[ethALen:2*ethALen]) {
		return bpf.ReasonAllow
	}
	bound := boundV6(p.dev, p.daddr[:])
	if p.family == 4 {
		bound = boundV4(p.dev, p.daddr[12:])
	}
	if !bound {
		return bpf.ReasonL2DstDenied
	}
	// T8.
	if icmpError(p.l4proto, p.icmpType) {
		return m.flowRelated(p)
	}
	// T9, T10.
	fs, fd, kind := flowPorts(p.l4proto, p.icmpType, p.icmpID, p.sport, p.dport)
	if kind == bpf.FlowKindNone {
		return m.fromRules(p)
	}
	k, side := flowKeyOf(p.saddr, fs, p.daddr, fd, p.l4proto, kind)
	if r := m.flowHit(p, k, side); r >= 0 {
		return bpf.Reason(r)
	}
	r := m.fromRules(p)
	if r == bpf.ReasonAllow && kind != bpf.FlowKindEchoRep { // a reply opens nothing
		r = m.flowOpen(p, k, side, bpf.FlowIn, p.dev.DevId)
	}
	return r
}
