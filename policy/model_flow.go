package policy

import (
	"encoding/binary"
	"time"

	"github.com/ztgate/ztgate/bpf"
)

// FlowLimits are the flow table's sizes and lifetimes, as the loader configures the datapath.
type FlowLimits struct {
	Entries, Quota  int           // capacity of the table; flows one device may hold
	TCP, UDP, Other time.Duration // idle lifetimes of TCP, UDP and ICMP echo flows
}

// DefaultFlowLimits returns the flow table's default sizes and lifetimes (loader.DefaultConfig's).
func DefaultFlowLimits() FlowLimits {
	return FlowLimits{Entries: 65536, Quota: 1024, TCP: 2 * time.Hour, UDP: 2 * time.Minute, Other: 30 * time.Second}
}

// SetFlowLimits sets the flow table's sizes and lifetimes; flows already held stay.
func (m *Model) SetFlowLimits(l FlowLimits) { m.flowLimits = l }

// Flows returns the number of flows held (live or expired, until a lookup or a sweep removes them).
func (m *Model) Flows() int { return len(m.flows) }

// Opened returns how many flows the model opened, by what allowed them: [bpf.FlowOut] the opener
// device's rules, [bpf.FlowIn] the responder device's from: rules.
func (m *Model) Opened() [2]int { return m.opened }

// countKey is an entry of zt_flow_count (zt_flow_count_of): a device, and what allowed its flows
// (bpf.FlowOut: its rules; bpf.FlowIn: its from: rules), each with its own quota.
type countKey struct {
	dev uint32
	by  uint8
}

// FlowCount returns the number of flows charged to device devID, both kinds.
func (m *Model) FlowCount(devID uint32) uint32 {
	return m.flowCount[countKey{devID, bpf.FlowOut}] + m.flowCount[countKey{devID, bpf.FlowIn}]
}

// SweepFlows mirrors the agent's sweep: it removes the flows idle for longer than their lifetime
// at now and returns how many.
func (m *Model) SweepFlows(now time.Duration) int {
	n := 0
	for k, v := range m.flows {
		if elapsed(uint64(now), v.Ts) > uint64(m.flowTimeout(k.Proto, v.Replied)) {
			m.flowDelete(k, v)
			n++
		}
	}
	return n
}

// flowNoSide mirrors ZT_FLOW_NO_SIDE: a flow lookup for no endpoint's packet (an ICMP error).
const flowNoSide = uint8(bpf.ZtgateZtFlowFlagsZT_FLOW_NO_SIDE)

// ICMP types of the flow table, as bpf/flow.h names them.
const (
	icmpEchoReply    = 0   // ICMP_ECHOREPLY
	icmpDestUnreach  = 3   // ICMP_DEST_UNREACH
	icmpSourceQuench = 4   // ICMP_SOURCE_QUENCH
	icmpEcho         = 8   // ICMP_ECHO
	icmpTimeExceeded = 11  // ICMP_TIME_EXCEEDED
	icmpParamProb    = 12  // ICMP_PARAMETERPROB
	icmp6DestUnreach = 1   // ICMPV6_DEST_UNREACH
	icmp6ParamProb   = 4   // ICMPV6_PARAMPROB
	icmp6EchoRequest = 128 // ICMPV6_ECHO_REQUEST
	icmp6EchoReply   = 129 // ICMPV6_ECHO_REPLY
	icmpQuoteOff     = 8   // ZT_ICMP_QUOTE_OFF: an error's icmpQuote follows its 8-byte header
	icmpQuoteL4      = 8   // ZT_ICMP_QUOTE_L4: bytes of the quoted upper-layer header
)

// icmpError mirrors zt_icmp_error: the ICMP or ICMPv6 type is an error, which quotes a datagram.
func icmpError(proto, typ uint8) bool {
	if proto == ProtoICMP {
		return typ == icmpDestUnreach || typ == icmpSourceQuench || typ == icmpTimeExceeded || typ == icmpParamProb
	}
	return proto == ProtoICMPv6 && typ >= icmp6DestUnreach && typ <= icmp6ParamProb
}

// flowPorts mirrors zt_flow_ports: the flow ports of a packet from its sender's side, and its
// kind (bpf.FlowKindNone: no flow tracks it).
func flowPorts(proto, typ uint8, id, sport, dport uint16) (uint16, uint16, uint8) {
	switch {
	case proto == ProtoTCP || proto == ProtoUDP:
		return sport, dport, bpf.FlowKindPorts
	case (proto == ProtoICMP && typ == icmpEcho) || (proto == ProtoICMPv6 && typ == icmp6EchoRequest):
		return id, id, bpf.FlowKindEchoReq
	case (proto == ProtoICMP && typ == icmpEchoReply) || (proto == ProtoICMPv6 && typ == icmp6EchoReply):
		return id, id, bpf.FlowKindEchoRep
	}
	return id, id, bpf.FlowKindNone
}

// flowKeyOf mirrors zt_flow_key_of: the flow of a packet of kind from (s, sp) to (d, dp), and
// which endpoint of the key the sender is.
func flowKeyOf(s [16]byte, sp uint16, d [16]byte, dp uint16, proto, kind uint8) (bpf.FlowKey, uint8) {
	ne := binary.NativeEndian
	x0, x1, y0, y1 := ne.Uint64(s[:8]), ne.Uint64(s[8:]), ne.Uint64(d[:8]), ne.Uint64(d[8:])
	var sfirst bool
	switch {
	case x0 != y0:
		sfirst = x0 < y0
	case x1 != y1:
		sfirst = x1 < y1
	default:
		sfirst = sp <= dp
	}
	k := bpf.FlowKey{A: bpf.In6{B: s}, B: bpf.In6{B: d}, Aport: sp, Bport: dp, Proto: proto}
	side := bpf.FlowAOpened
	if !sfirst {
		k = bpf.FlowKey{A: bpf.In6{B: d}, B: bpf.In6{B: s}, Aport: dp, Bport: sp, Proto: proto}
		side = bpf.FlowBOpened
	}
	switch {
	case kind == bpf.FlowKindEchoReq && sfirst, kind == bpf.FlowKindEchoRep && !sfirst:
		k.Echo = bpf.EchoAAsks
	case kind == bpf.FlowKindEchoReq, kind == bpf.FlowKindEchoRep:
		k.Echo = bpf.EchoBAsks
	}
	return k, side
}

// flowTimeout mirrors zt_flow_timeout: the protocol's lifetime once answered, an echo's until then.
func (m *Model) flowTimeout(proto, replied uint8) time.Duration {
	if replied == 0 {
		return m.flowLimits.Other
	}
	switch proto {
	case ProtoTCP:
		return m.flowLimits.TCP
	case ProtoUDP:
		return m.flowLimits.UDP
	}
	return m.flowLimits.Other
}

// flowDelete mirrors zt_flow_delete.
func (m *Model) flowDelete(k bpf.FlowKey, v bpf.FlowVal) {
	if _, ok := m.flows[k]; !ok {
		return
	}
	delete(m.flows, k)
	if c := (countKey{v.DevId, v.By}); m.flowCount[c] > 0 {
		m.flowCount[c]--
	}
}

// flowAllowed mirrors zt_flow_allowed: the current revision allows flow k (v) as it allowed its
// first packet.
func (m *Model) flowAllowed(p *pkt, k bpf.FlowKey, v bpf.FlowVal) bool {
	op, rs, rport := k.A.B, k.B.B, k.Bport
	if v.Opener != bpf.FlowAOpened {
		op, rs, rport = k.B.B, k.A.B, k.Aport
	}
	devAddr, peer := op, rs
	if v.By != bpf.FlowOut {
		devAddr, peer = rs, op
	}
	a, ok := m.snap.Addrs[bpf.AddrKey{Addr: bpf.In6{B: devAddr}}]
	if !ok || a.Kind != bpf.AddrDevice || a.DevId != v.DevId {
		return false
	}
	mt := match{daddr: peer, l4proto: k.Proto, dport: rport, toGateway: cfgGateway(p.cfg, p.family, peer)}
	switch k.Proto {
	case ProtoICMP:
		mt.dport = icmpKey(icmpEcho, 0)
	case ProtoICMPv6:
		mt.dport = icmpKey(icmp6EchoRequest, 0)
	}
	switch {
	case v.By == bpf.FlowIn:
		if a.Flags&bpf.DevQuarantined != 0 {
			return false
		}
		if o, ok := m.snap.Addrs[bpf.AddrKey{Addr: bpf.In6{B: op}}]; ok && o.Kind == bpf.AddrDevice &&
			o.Flags&bpf.DevQuarantined != 0 {
			return false
		}
		mt.ruleset, mt.flags = a.InRuleset, inFlags(a.Flags)
	case a.Flags&bpf.DevQuarantined != 0:
		mt.ruleset, mt.flags = quarantineSet(p.cfg)
	default:
		mt.ruleset, mt.flags = a.Ruleset, a.Flags&(bpf.DevPeerRules|bpf.DevPrefixRules)
	}
	return m.matchRules(&mt) == bpf.ReasonAllow
}

// inFlags are the lookup flags of a device's from: rules (its DevIn* flags as DevPeerRules and
// DevPrefixRules).
func inFlags(f uint16) uint16 {
	var out uint16
	if f&bpf.DevInPeerRules != 0 {
		out |= bpf.DevPeerRules
	}
	if f&bpf.DevInPrefixRules != 0 {
		out |= bpf.DevPrefixRules
	}
	return out
}

// flowHit mirrors zt_flow_hit (and zt_flow_lookup): allow when flow k is live and allowed under the
// current revision (refreshing it for a packet of endpoint side; flowNoSide: an ICMP error, which
// refreshes nothing), else go on, having deleted a flow that expired or is no longer allowed.
func (m *Model) flowHit(p *pkt, k bpf.FlowKey, side uint8) int {
	v, ok := m.flows[k]
	if !ok {
		return goOn
	}
	now := uint64(p.now)
	if elapsed(now, v.Ts) > uint64(m.flowTimeout(k.Proto, v.Replied)) ||
		(v.Revision != p.cfg.Revision && !m.flowAllowed(p, k, v)) {
		m.flowDelete(k, v)
		return goOn
	}
	v.Revision = p.cfg.Revision
	if side != flowNoSide {
		if side != v.Opener {
			v.Replied = 1
		}
		v.Ts = now
	}
	m.flows[k] = v
	return int(bpf.ReasonAllow)
}

// flowOpen mirrors zt_flow_open.
func (m *Model) flowOpen(p *pkt, k bpf.FlowKey, opener, by uint8, devID uint32) bpf.Reason {
	if devID == ZeroDevID || m.flowCount[countKey{devID, by}] >= uint32(m.flowLimits.Quota) {
		return bpf.ReasonFlowTableFull
	}
	if _, ok := m.flows[k]; ok {
		return bpf.ReasonAllow
	}
	if len(m.flows) >= m.flowLimits.Entries {
		return bpf.ReasonFlowTableFull
	}
	m.flows[k] = bpf.FlowVal{Ts: uint64(p.now), Revision: p.cfg.Revision, DevId: devID, Opener: opener, By: by}
	m.flowCount[countKey{devID, by}]++
	m.opened[by&1]++
	return bpf.ReasonAllow
}

// icmpQuote mirrors struct zt_quote: the endpoints of the datagram an ICMP error carries.
type icmpQuote struct {
	saddr, daddr [16]byte
	sport, dport uint16
	proto, kind  uint8
}

// parseQuote mirrors zt_parse_quote_in.
func (p *pkt) parseQuote() (icmpQuote, bool) {
	var q icmpQuote
	off := p.l4off + icmpQuoteOff
	var l4 int
	if p.family == 4 {
		ip := p.ptr(off, ipv4HLen)
		// struct iphdr: version/ihl, frag_off at 6, protocol 9, saddr 12, daddr 16.
		if ip == nil || ip[0]>>4 != ipv4Version || ip[0]&0xf != ipv4MinIHL || be16(ip[6:])&ipOffset != 0 {
			return q, false
		}
		q.saddr, q.daddr, q.proto = v4mapped(ip[12:16]), v4mapped(ip[16:20]), ip[9]
		l4 = off + ipv4HLen
	} else {
		ip := p.ptr(off, ipv6HLen)
		if ip == nil || ip[0]>>4 != ipv6Version {
			return q, false
		}
		copy(q.saddr[:], ip[8:24])
		copy(q.daddr[:], ip[24:40])
		q.proto = ip[6]
		l4 = off + ipv6HLen
	}
	own := uint8(ProtoICMP)
	if p.family == 6 {
		own = ProtoICMPv6
	}
	if q.proto != own && q.proto != ProtoTCP && q.proto != ProtoUDP {
		return q, false
	}
	if l4+icmpQuoteL4 > p.lim {
		return q, false
	}
	u := p.ptr(l4, icmpQuoteL4)
	if u == nil {
		return q, false
	}
	q.sport, q.dport, q.kind = flowPorts(q.proto, u[0], be16(u[4:]), be16(u), be16(u[2:]))
	return q, q.kind != bpf.FlowKindNone
}

// flowRelated mirrors zt_flow_related: an ICMP error passes when it goes back to the sender of a
// datagram of a live flow.
func (m *Model) flowRelated(p *pkt) bpf.Reason {
	q, ok := p.parseQuote()
	if !ok || q.saddr != p.daddr || (p.dir == bpf.DirFromDevice && q.daddr != p.saddr) {
		return bpf.ReasonICMPNoFlow
	}
	k, _ := flowKeyOf(q.saddr, q.sport, q.daddr, q.dport, q.proto, q.kind)
	if m.flowHit(p, k, flowNoSide) == int(bpf.ReasonAllow) {
		return bpf.ReasonAllow
	}
	return bpf.ReasonICMPNoFlow
}

// peerFromRules mirrors zt_peer_from_rules: the dev_id of the device the destination is bound to
// when its from: rules allow the sender to open this connection; 0 otherwise.
func (m *Model) peerFromRules(p *pkt) uint32 {
	a, ok := m.snap.Addrs[bpf.AddrKey{Addr: bpf.In6{B: p.daddr}}]
	if !ok || a.Kind != bpf.AddrDevice || a.Flags&bpf.DevQuarantined != 0 {
		return 0
	}
	mt := match{daddr: p.saddr, ruleset: a.InRuleset, flags: inFlags(a.Flags), dport: p.dport, l4proto: p.l4proto}
	if m.matchRules(&mt) == bpf.ReasonAllow {
		return a.DevId
	}
	return 0
}

// flowStep mirrors zt_flow_step (step 12 for a frame from a device).
func (m *Model) flowStep(p *pkt) bpf.Reason {
	if icmpError(p.l4proto, p.icmpType) {
		return m.flowRelated(p)
	}
	if p.l2 == l2Bcast || p.l2 == l2Mcast {
		return m.allowList(p)
	}
	fs, fd, kind := flowPorts(p.l4proto, p.icmpType, p.icmpID, p.sport, p.dport)
	k, side := flowKeyOf(p.saddr, fs, p.daddr, fd, p.l4proto, kind)
	if kind != bpf.FlowKindNone {
		if r := m.flowHit(p, k, side); r >= 0 {
			return bpf.Reason(r)
		}
	}
	r := m.allowList(p)
	var peer uint32
	if r == bpf.ReasonNoRule || r == bpf.ReasonEncapDenied {
		if peer = m.peerFromRules(p); peer != 0 {
			r = bpf.ReasonAllow
		}
	}
	if r == bpf.ReasonAllow && kind != bpf.FlowKindNone && kind != bpf.FlowKindEchoRep { // a reply opens nothing
		if peer != 0 {
			return m.flowOpen(p, k, side, bpf.FlowIn, peer)
		}
		return m.flowOpen(p, k, side, bpf.FlowOut, p.dev.DevId)
	}
	return r
}
