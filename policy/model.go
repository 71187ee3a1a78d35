package policy

import (
	"bytes"
	"encoding/binary"
	"sort"
	"time"

	"github.com/ztgate/ztgate/bpf"
)

// Decision is the datapath's answer for one frame.
type Decision struct {
	Verdict bpf.Verdict
	Reason  bpf.Reason
	DevID   uint32 // ZeroDevID when the source device was not identified
	Counted bool   // charged to the device: identity and source checks passed
}

// Model is the pure-Go reference of the XDP program: the specification it must match on
// every frame. It decides from the same Snapshot the maps package writes into the kernel and
// keeps its own first-fragment table with the datapath's capacity and lifetime.
//
// Each step below has a twin in bpf/ztgate.c or bpf/helpers.h; a reason here is a reason there.
type Model struct {
	snap         *Snapshot
	tries        map[uint32][]trieEntry // rule set -> prefixes, longest first
	frags        map[bpf.FragKey]bpf.FragVal
	fragCapacity int
	fragTimeout  time.Duration
	gwMACs       map[[6]byte]bool // zt_gwmacs: the gateway's own MACs, from the loader
}

type trieEntry struct {
	bits  int // of the 128-bit address (IPv4 counts from ::ffff:0:0/96)
	addr  [16]byte
	group uint32
}

// NewModel returns a model deciding from s (nil: no policy installed) with a first-fragment
// table of fragCapacity entries whose records live for fragTimeout.
func NewModel(s *Snapshot, fragCapacity int, fragTimeout time.Duration) *Model {
	m := &Model{frags: map[bpf.FragKey]bpf.FragVal{}, fragCapacity: fragCapacity, fragTimeout: fragTimeout,
		gwMACs: map[[6]byte]bool{}}
	m.SetSnapshot(s)
	return m
}

// SetSnapshot installs a new revision; the fragment table, like the datapath's, is kept.
func (m *Model) SetSnapshot(s *Snapshot) {
	m.snap = s
	m.tries = map[uint32][]trieEntry{}
	if s == nil {
		return
	}
	for k, v := range s.Prefixes {
		m.tries[k.Ruleset] = append(m.tries[k.Ruleset], trieEntry{bits: int(k.Prefixlen) - 32, addr: k.Addr.B, group: v.Group})
	}
	for _, es := range m.tries {
		sort.Slice(es, func(i, j int) bool { return es[i].bits > es[j].bits })
	}
}

// AddGatewayMAC records one of the gateway's own MACs, as the loader writes it into zt_gwmacs.
func (m *Model) AddGatewayMAC(mac [6]byte) { m.gwMACs[mac] = true }

// Snapshot returns the revision the model decides from.
func (m *Model) Snapshot() *Snapshot { return m.snap }

// FragEntries is the number of first-fragment records held.
func (m *Model) FragEntries() int { return len(m.frags) }

// pkt mirrors struct zt_pkt.
type pkt struct {
	f         []byte
	cfg       *bpf.Config
	dev       *bpf.DevRec
	saddr     [16]byte
	daddr     [16]byte
	l3off     int
	end       int
	l4off     int
	fpStart   int
	foff      int
	fragID    uint32
	vid       uint16
	sport     uint16
	dport     uint16
	smac      []byte
	dmac      []byte
	l2        int   // m.l2 of the frame
	hoplimit  uint8 // IPv6 hop limit
	family    int
	l4proto   uint8
	mf        bool
	firstFrag bool
	unspec    bool
	counted   bool
	icmpType  uint8
	now       time.Duration
}

// Destination MAC classes, as ZT_L2_* in bpf/helpers.h.
const (
	l2Deny    = iota // the destination MAC does not fit the frame: l2_dst_denied
	l2Gateway        // one of the gateway's MACs (zt_gwmacs or the policy's)
	l2DevMAC         // a known device's MAC, and the IP destination is bound to it
	l2Bcast          // ff:ff:ff:ff:ff:ff
	l2Mcast          // the group MAC of the IP destination
)

const (
	maxOff        = 0x3fff // ZT_MAX_OFF
	maxNDOpts     = 8      // ZT_MAX_ND_OPTS
	maxIPv4Opts   = 40     // ZT_MAX_IPV4_OPTS
	maxExtHeaders = 8      // ZT_MAX_EXT_HDRS
	goOn          = -1     // a step that did not decide
)

// ptr mirrors zt_ptr: n readable bytes at off, or nil.
func (p *pkt) ptr(off, n int) []byte {
	if off > maxOff || off+n > len(p.f) {
		return nil
	}
	return p.f[off : off+n]
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// Decide returns the verdict for frame arriving on gateway port ingress at time now.
func (m *Model) Decide(frame []byte, ingress uint32, now time.Duration) Decision {
	// zt_cfg is an array: before any policy its entry exists, zeroed.
	p := &pkt{f: frame, now: now, cfg: &bpf.Config{}}
	if m.snap != nil {
		p.cfg = &m.snap.Config
	}
	r := m.decide(p, ingress)
	d := Decision{Reason: r, Verdict: bpf.VerdictPass}
	if r != bpf.ReasonAllow {
		audit := false
		if p.dev != nil {
			audit = devAudits(p.dev.Flags, r)
		} else if p.cfg != nil {
			audit = p.cfg.Flags&bpf.CfgAudit != 0
		}
		d.Verdict = bpf.VerdictDrop
		if r != bpf.ReasonNoPolicy && audit {
			d.Verdict = bpf.VerdictAudit
		}
	}
	if p.dev != nil {
		d.DevID = p.dev.DevId
		d.Counted = p.counted
	}
	return d
}

// identityReasons are the drops that say the sender is not who it claims to be.
var identityReasons = map[bpf.Reason]bool{bpf.ReasonSpoofMACPort: true, bpf.ReasonSpoofIP: true,
	bpf.ReasonARPSpoof: true, bpf.ReasonNDSpoof: true, bpf.ReasonDHCPChaddr: true}

// devAudits mirrors zt_dev_audits: audit mode passes a drop, except an identity failure unless
// the device's audit covers identity too.
func devAudits(flags uint16, r bpf.Reason) bool {
	if flags&bpf.DevAudit == 0 {
		return false
	}
	if identityReasons[r] {
		return flags&bpf.DevAuditIdentity != 0
	}
	return true
}

func (m *Model) decide(p *pkt, ingress uint32) bpf.Reason {
	// Step 1: L2 sanity.
	eth := p.ptr(0, 14)
	if eth == nil {
		return bpf.ReasonTruncated
	}
	p.smac = eth[6:12]
	if eth[6]&1 != 0 || bytes.Equal(p.smac, make([]byte, 6)) || bytes.Equal(eth[0:6], p.smac) {
		return bpf.ReasonBadL2Src
	}
	// Step 2: VLAN.
	proto := be16(eth[12:])
	p.l3off = 14
	if proto == 0x88a8 || proto == 0x9100 {
		return bpf.ReasonVLANDenied
	}
	if proto == 0x8100 {
		tag := p.ptr(14, 4)
		if tag == nil {
			return bpf.ReasonTruncated
		}
		p.vid = be16(tag) & 0x0fff
		proto = be16(tag[2:])
		p.l3off = 18
		if proto == 0x8100 || proto == 0x88a8 || proto == 0x9100 {
			return bpf.ReasonVLANDenied
		}
	}
	// Step 3: identity. No devices map in the slot: no policy installed yet.
	if m.snap == nil {
		return bpf.ReasonNoPolicy
	}
	var key bpf.DevKey
	copy(key.Mac[:], p.smac)
	dev, ok := m.snap.Devices[key]
	if !ok {
		return bpf.ReasonUnknownDevice
	}
	p.dev = &dev
	if dev.Ifindex != 0 && dev.Ifindex != ingress {
		return bpf.ReasonSpoofMACPort
	}
	if p.vid != dev.Vlan {
		return bpf.ReasonVLANDenied
	}
	p.dmac = eth[0:6]
	// Step 5: ethertype (step 4, quarantine, picks the rule set in step 13).
	var r int
	switch proto {
	case 0x0806:
		return m.arp(p)
	case 0x0800:
		p.family = 4
		r = m.ipv4(p)
	case 0x86dd:
		p.family = 6
		r = m.ipv6(p)
	default:
		return bpf.ReasonEthertypeDenied
	}
	if r >= 0 {
		return bpf.Reason(r)
	}
	// Step 8b: whom the frame is for, enforced after the sender's identity checks.
	p.l2 = m.l2(p)
	// Step 9: later fragments follow their first fragment, to the same receiver.
	if p.foff != 0 {
		if p.l2 == l2Deny {
			return bpf.ReasonL2DstDenied
		}
		return m.fragLater(p)
	}
	// Steps 10-11, 13. The destination MAC must fit the IP destination: a frame the guards
	// let through as plumbing too.
	r = m.guards(p)
	if (r < 0 || r == int(bpf.ReasonAllow)) && p.l2 == l2Deny {
		r = int(bpf.ReasonL2DstDenied)
	}
	if r < 0 {
		r = int(m.allowList(p))
	}
	if bpf.Reason(r) == bpf.ReasonAllow && p.firstFrag {
		return m.fragRecord(p)
	}
	return bpf.Reason(r)
}

// arp mirrors zt_arp (step 6).
func (m *Model) arp(p *pkt) bpf.Reason {
	a := p.ptr(p.l3off, 28)
	if a == nil {
		return bpf.ReasonTruncated
	}
	op := be16(a[6:])
	if be16(a) != 1 || be16(a[2:]) != 0x0800 || a[4] != 6 || a[5] != 4 || (op != 1 && op != 2) {
		return bpf.ReasonMalformed
	}
	if !bytes.Equal(a[8:14], p.smac) {
		return bpf.ReasonARPSpoof
	}
	spa := a[14:18]
	if bytes.Equal(spa, []byte{0, 0, 0, 0}) {
		if op != 1 {
			return bpf.ReasonARPSpoof
		}
	} else if !boundV4(p.dev, spa) {
		return bpf.ReasonARPSpoof
	}
	p.counted = true
	if m.l2(p) == l2Deny {
		return bpf.ReasonL2DstDenied
	}
	return bpf.ReasonAllow
}

// l2 mirrors zt_l2: the class of the destination MAC, or l2Deny when it does not fit the frame
// (family 0: ARP).
func (m *Model) l2(p *pkt) int {
	d, a := p.dmac, p.daddr
	if d[0]&1 != 0 {
		if bytes.Equal(d, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
			if p.family == 6 || (p.family == 4 && a != bcast4) {
				return l2Deny
			}
			return l2Bcast
		}
		if p.family == 4 && a[12]>>4 == 0xe && bytes.Equal(d, []byte{0x01, 0x00, 0x5e, a[13] & 0x7f, a[14], a[15]}) {
			return l2Mcast
		}
		if p.family == 6 && a[0] == 0xff && bytes.Equal(d, []byte{0x33, 0x33, a[12], a[13], a[14], a[15]}) {
			return l2Mcast
		}
		return l2Deny
	}
	mac := [6]byte(d)
	if m.gwMACs[mac] {
		return l2Gateway
	}
	for i := 0; i < int(p.cfg.N_gwmac) && i < len(p.cfg.Gwmac); i++ {
		if p.cfg.Gwmac[i].B == mac {
			return l2Gateway
		}
	}
	peer, ok := m.snap.Devices[bpf.DevKey{Mac: mac}]
	if !ok {
		return l2Deny
	}
	if p.family == 0 || (p.family == 4 && boundV4(&peer, a[12:])) || (p.family == 6 && boundV6(&peer, a[:])) {
		return l2DevMAC
	}
	return l2Deny
}

// ndLinkScope mirrors zt_nd_link_scope: hop limit 255 and a destination no router forwards.
func (m *Model) ndLinkScope(p *pkt) bool {
	a := p.daddr
	if p.hoplimit != 255 {
		return false
	}
	if p.l2 == l2DevMAC {
		return true
	}
	if (a[0] == 0xfe && a[1]&0xc0 == 0x80) || (a[0] == 0xff && a[1] == 0x02) {
		return true
	}
	return m.isGateway(p)
}

func macU64(b []byte) uint64 {
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

// ndOptions mirrors zt_nd_options: link-layer address options must name the Ethernet source.
func (p *pkt) ndOptions(start, end int, mac uint64) int {
	off := start
	for range maxNDOpts {
		if off >= end {
			return goOn
		}
		if off+8 > end {
			return int(bpf.ReasonMalformed)
		}
		o := p.ptr(off, 8)
		if o == nil {
			return int(bpf.ReasonTruncated)
		}
		if o[1] == 0 || off+int(o[1])*8 > end {
			return int(bpf.ReasonMalformed)
		}
		if (o[0] == ndSLLA || o[0] == ndTLLA) && macU64(o[2:8]) != mac {
			return int(bpf.ReasonNDSpoof)
		}
		off += int(o[1]) * 8
	}
	if off >= end {
		return goOn
	}
	return int(bpf.ReasonMalformed)
}

func boundV4(d *bpf.DevRec, a []byte) bool {
	v := binary.NativeEndian.Uint32(a)
	for i := 0; i < int(d.N_v4) && i < len(d.V4); i++ {
		if d.V4[i] == v {
			return true
		}
	}
	return false
}

func boundV6(d *bpf.DevRec, a []byte) bool {
	for i := 0; i < int(d.N_v6) && i < len(d.V6); i++ {
		if bytes.Equal(d.V6[i].B[:], a) {
			return true
		}
	}
	return false
}

func v4mapped(a []byte) (out [16]byte) {
	out[10], out[11] = 0xff, 0xff
	copy(out[12:], a)
	return out
}

// ipv4 mirrors zt_ipv4 (step 7).
func (m *Model) ipv4(p *pkt) int {
	ip := p.ptr(p.l3off, 20)
	if ip == nil {
		return int(bpf.ReasonTruncated)
	}
	if ip[0]>>4 != 4 || ip[0]&0xf < 5 {
		return int(bpf.ReasonMalformed)
	}
	hl := int(ip[0]&0xf) * 4
	if p.ptr(p.l3off, hl) == nil {
		return int(bpf.ReasonTruncated)
	}
	tot := int(be16(ip[2:]))
	if tot < hl || p.l3off+tot > len(p.f) {
		return int(bpf.ReasonMalformed)
	}
	p.end = p.l3off + tot
	p.l4off = p.l3off + hl
	p.fpStart = p.l4off
	p.l4proto = ip[9]
	p.fragID = uint32(be16(ip[4:]))
	frag := be16(ip[6:])
	p.mf = frag&0x2000 != 0
	p.foff = int(frag&0x1fff) * 8
	p.firstFrag = p.mf && p.foff == 0
	p.saddr = v4mapped(ip[12:16])
	p.daddr = v4mapped(ip[16:20])
	if bytes.Equal(ip[12:16], []byte{0, 0, 0, 0}) {
		p.unspec = true
	} else if !boundV4(p.dev, ip[12:16]) {
		return int(bpf.ReasonSpoofIP)
	}
	if r := p.ipv4Options(p.l3off+20, hl-20); r >= 0 {
		return r
	}
	if !p.unspec {
		p.counted = true
	}
	return goOn
}

// ipv4Options mirrors zt_ipv4_options.
func (p *pkt) ipv4Options(start, n int) int {
	if n > maxIPv4Opts {
		return int(bpf.ReasonMalformed)
	}
	for i := 0; i < maxIPv4Opts; {
		if i >= n {
			break
		}
		o := p.ptr(start+i, 1)
		if o == nil {
			return int(bpf.ReasonTruncated)
		}
		if o[0] == 0 {
			break
		}
		if o[0] == 1 {
			i++
			continue
		}
		if i+1 >= n {
			return int(bpf.ReasonMalformed)
		}
		o = p.ptr(start+i, 2)
		if o == nil {
			return int(bpf.ReasonTruncated)
		}
		if o[1] < 2 || i+int(o[1]) > n {
			return int(bpf.ReasonMalformed)
		}
		if o[0] == 0x83 || o[0] == 0x89 {
			return int(bpf.ReasonIPOptions)
		}
		i += int(o[1])
	}
	return goOn
}

func isExt(nh uint8) bool { return nh == 0 || nh == 60 || nh == 43 || nh == 44 }

// ipv6 mirrors zt_ipv6 (steps 7-8).
func (m *Model) ipv6(p *pkt) int {
	ip := p.ptr(p.l3off, 40)
	if ip == nil {
		return int(bpf.ReasonTruncated)
	}
	if ip[0]>>4 != 6 {
		return int(bpf.ReasonMalformed)
	}
	if p.l3off+40+int(be16(ip[4:])) > len(p.f) {
		return int(bpf.ReasonMalformed)
	}
	p.end = p.l3off + 40 + int(be16(ip[4:]))
	copy(p.saddr[:], ip[8:24])
	copy(p.daddr[:], ip[24:40])
	nh := ip[6]
	p.hoplimit = ip[7]
	if p.saddr == [16]byte{} {
		p.unspec = true
	} else if !boundV6(p.dev, p.saddr[:]) {
		return int(bpf.ReasonSpoofIP)
	}
	if !p.unspec {
		p.counted = true
	}
	off := p.l3off + 40
	p.fpStart = off
	seenFrag := false
	for i := 0; i < maxExtHeaders; i++ {
		if !isExt(nh) {
			break
		}
		if nh == 43 || (nh == 0 && i != 0) {
			return int(bpf.ReasonExtDenied)
		}
		if off+8 > p.end {
			return int(bpf.ReasonTruncated)
		}
		h := p.ptr(off, 8)
		if h == nil {
			return int(bpf.ReasonTruncated)
		}
		if nh == 44 {
			fo := be16(h[2:])
			if seenFrag {
				return int(bpf.ReasonExtDenied)
			}
			seenFrag = true
			nh = h[0]
			off += 8
			p.fpStart = off
			p.foff = int(fo & 0xfff8)
			p.mf = fo&1 != 0
			p.fragID = binary.BigEndian.Uint32(h[4:])
			p.firstFrag = p.mf && p.foff == 0
			if p.foff != 0 {
				break
			}
			continue
		}
		nh = h[0]
		off += (int(h[1]) + 1) * 8
		if off > p.end {
			return int(bpf.ReasonTruncated)
		}
	}
	if p.foff == 0 && isExt(nh) {
		return int(bpf.ReasonExtDenied)
	}
	p.l4proto = nh
	p.l4off = off
	return goOn
}

func l4Need(proto uint8) int {
	switch proto {
	case ProtoTCP:
		return 20
	case ProtoUDP, ProtoICMP, ProtoICMPv6:
		return 8
	}
	return 0
}

var (
	allDHCPv6 = [16]byte{0xff, 0x02, 14: 0x00, 13: 0x01, 15: 0x02}
	bcast4    = v4mapped([]byte{255, 255, 255, 255})
)

// ICMP types the guards inspect.
const (
	icmpRedirect     = 5
	icmpRouterAdvert = 9
	icmp6RS          = 133
	icmp6RA          = 134
	icmp6NS          = 135
	icmp6NA          = 136
	icmp6Redirect    = 137
	ndSLLA           = 1 // ND option: source link-layer address
	ndTLLA           = 2 // ND option: target link-layer address
)

// guards mirrors zt_guards (step 10 and the DHCP/ND plumbing).
func (m *Model) guards(p *pkt) int {
	tiny := int(bpf.ReasonTruncated)
	if p.firstFrag {
		tiny = int(bpf.ReasonFragTiny)
	}
	need := l4Need(p.l4proto)
	l4 := p.ptr(p.l4off, 8)
	if p.l4off+need > p.end {
		return tiny
	}
	if need != 0 {
		if l4 == nil {
			return tiny
		}
		p.icmpType = l4[0]
	}
	if p.l4proto == ProtoTCP {
		t := p.ptr(p.l4off, 20)
		if t == nil {
			return tiny
		}
		if t[12]>>4 < 5 {
			return int(bpf.ReasonMalformed)
		}
		if p.l4off+int(t[12]>>4)*4 > p.end {
			return tiny
		}
	}
	if p.l4proto == ProtoTCP || p.l4proto == ProtoUDP {
		if l4 == nil {
			return tiny
		}
		p.sport = be16(l4)
		p.dport = be16(l4[2:])
	}
	if p.l4proto == ProtoUDP && l4 != nil {
		ulen := int(be16(l4[4:]))
		if ulen < 8 || (!p.firstFrag && p.l4off+ulen > p.end) {
			return int(bpf.ReasonMalformed)
		}
	}

	if p.family == 4 {
		if p.l4proto == ProtoUDP {
			if p.sport == 67 {
				return int(bpf.ReasonDHCPServer)
			}
			if p.dport == 67 {
				if p.l4off+8+34 > p.end {
					return tiny
				}
				b := p.ptr(p.l4off+8, 34)
				if b == nil {
					return tiny
				}
				if b[0] != 1 {
					return int(bpf.ReasonDHCPServer)
				}
				if !bytes.Equal(b[28:34], p.smac) {
					return int(bpf.ReasonDHCPChaddr)
				}
				if p.sport == 68 && p.cfg.Flags&bpf.CfgSvcDHCP != 0 && (p.daddr == bcast4 || m.isGateway(p)) {
					p.counted = true
					return int(bpf.ReasonAllow)
				}
			}
		}
		if p.unspec {
			return int(bpf.ReasonSpoofIP)
		}
		if p.l4proto == ProtoICMP && (p.icmpType == icmpRedirect || p.icmpType == icmpRouterAdvert) {
			return int(bpf.ReasonRouterGuard)
		}
		return goOn
	}

	if p.unspec && !(p.l4proto == ProtoICMPv6 && p.icmpType == icmp6NS) {
		return int(bpf.ReasonSpoofIP)
	}
	if p.l4proto == ProtoUDP {
		if p.sport == 547 {
			return int(bpf.ReasonDHCPServer)
		}
		if p.sport == 546 && p.dport == 547 && p.cfg.Flags&bpf.CfgSvcDHCPv6 != 0 {
			if p.daddr == allDHCPv6 || m.isGateway(p) {
				return int(bpf.ReasonAllow)
			}
		}
	}
	if p.l4proto == ProtoICMPv6 {
		switch p.icmpType {
		case icmp6RA, icmp6Redirect:
			return int(bpf.ReasonRouterGuard)
		case icmp6NA, icmp6NS, icmp6RS:
			opts := p.l4off + 24
			if p.icmpType == icmp6RS {
				opts = p.l4off + 8
			}
			if opts > p.end {
				return tiny
			}
			if p.icmpType == icmp6NA {
				t := p.ptr(p.l4off+8, 16)
				if t == nil {
					return tiny
				}
				if !boundV6(p.dev, t) {
					return int(bpf.ReasonNDSpoof)
				}
			}
			if r := p.ndOptions(opts, p.end, macU64(p.smac)); r >= 0 {
				return r
			}
			if m.ndLinkScope(p) {
				return int(bpf.ReasonAllow)
			}
			if p.unspec {
				return int(bpf.ReasonSpoofIP)
			}
		}
	}
	return goOn
}

// isGateway mirrors zt_is_gateway.
func (m *Model) isGateway(p *pkt) bool {
	c := p.cfg
	if p.family == 4 {
		for i := 0; i < int(c.N_gw4) && i < len(c.Gw4); i++ {
			a := v4mapped(binary.NativeEndian.AppendUint32(nil, c.Gw4[i]))
			if a == p.daddr {
				return true
			}
		}
		return false
	}
	for i := 0; i < int(c.N_gw6) && i < len(c.Gw6); i++ {
		if c.Gw6[i].B == p.daddr {
			return true
		}
	}
	return false
}

// allowList mirrors zt_allow_list and zt_match_rules (steps 11 and 13).
func (m *Model) allowList(p *pkt) bpf.Reason {
	rs := p.dev.Ruleset
	flags := p.dev.Flags & (bpf.DevPeerRules | bpf.DevPrefixRules)
	if p.dev.Flags&bpf.DevQuarantined != 0 {
		rs = p.cfg.QuarantineRuleset
		flags = bpf.DevQuarantined
		if p.cfg.Flags&bpf.CfgQPeerRules != 0 {
			flags |= bpf.DevPeerRules
		}
		if p.cfg.Flags&bpf.CfgQPrefixRules != 0 {
			flags |= bpf.DevPrefixRules
		}
	}
	pr := p.l4proto
	// A broadcast or multicast frame matches only the rules that name a multicast prefix.
	group := p.l2 == l2Bcast || p.l2 == l2Mcast
	tunnel := pr == ProtoIPIP || pr == ProtoIPv6 || pr == ProtoGRE ||
		(pr == ProtoUDP && (p.dport == 4789 || p.dport == 6081))
	try := func(kind uint8, id uint32) bool {
		k := bpf.RuleKey{Ruleset: rs, SelId: id, SelKind: kind, Proto: pr}
		if v, ok := m.snap.Rules[k]; ok && portsOK(&v, pr, pr, p.dport, tunnel) {
			return true
		}
		k.Proto = ProtoAny
		v, ok := m.snap.Rules[k]
		return ok && portsOK(&v, ProtoAny, pr, p.dport, tunnel)
	}
	if !group && m.isGateway(p) && try(bpf.SelGateway, 0) {
		return bpf.ReasonAllow
	}
	if !group && flags&bpf.DevPeerRules != 0 {
		if a, ok := m.snap.Addrs[bpf.AddrKey{Addr: bpf.In6{B: p.daddr}}]; ok && a.Kind == bpf.AddrDevice {
			if try(bpf.SelDevice, a.DevId) {
				return bpf.ReasonAllow
			}
			if a.Segment != 0 && try(bpf.SelSegment, uint32(a.Segment)) {
				return bpf.ReasonAllow
			}
		}
	}
	if flags&bpf.DevPrefixRules != 0 {
		kind := bpf.SelPrefix
		if group {
			kind = bpf.SelMcast
		}
		if g, ok := m.longestMatch(rs, p.daddr); ok && try(kind, g) {
			return bpf.ReasonAllow
		}
	}
	if flags&bpf.DevQuarantined != 0 {
		return bpf.ReasonQuarantined
	}
	if tunnel {
		return bpf.ReasonEncapDenied
	}
	return bpf.ReasonNoRule
}

// portsOK mirrors zt_ports_ok.
func portsOK(v *bpf.RuleVal, protoKey, l4proto uint8, dport uint16, tunnel bool) bool {
	if protoKey == ProtoAny {
		return !tunnel
	}
	if l4proto != ProtoTCP && l4proto != ProtoUDP {
		return true
	}
	if v.Flags&bpf.RuleAllPorts != 0 {
		return !tunnel
	}
	for i := 0; i < int(v.N) && i < len(v.Ranges); i++ {
		r := v.Ranges[i]
		if r.Lo <= dport && dport <= r.Hi && (!tunnel || r.Lo == r.Hi) {
			return true
		}
	}
	return false
}

// longestMatch is the LPM trie lookup of (rule set, destination).
func (m *Model) longestMatch(rs uint32, a [16]byte) (uint32, bool) {
	for _, e := range m.tries[rs] {
		if prefixContains(e.addr, e.bits, a) {
			return e.group, true
		}
	}
	return 0, false
}

func prefixContains(pfx [16]byte, bits int, a [16]byte) bool {
	for i := 0; i < bits; i++ {
		mask := byte(0x80) >> (i % 8)
		if pfx[i/8]&mask != a[i/8]&mask {
			return false
		}
	}
	return true
}

func (p *pkt) fragKey() bpf.FragKey {
	k := bpf.FragKey{Saddr: bpf.In6{B: p.saddr}, Daddr: bpf.In6{B: p.daddr}, Id: p.fragID, Family: uint8(p.family)}
	if p.family == 4 {
		k.Proto = p.l4proto
	}
	return k
}

// elapsed mirrors zt_elapsed: now - then, 0 when then is ahead (another CPU's clock).
func elapsed(now, then uint64) uint64 {
	if d := int64(now - then); d > 0 {
		return uint64(d)
	}
	return 0
}

// fragLater mirrors zt_frag_later.
func (m *Model) fragLater(p *pkt) bpf.Reason {
	k := p.fragKey()
	v, ok := m.frags[k]
	if !ok {
		return bpf.ReasonFragNoState
	}
	if elapsed(uint64(p.now), v.Ts) > uint64(m.fragTimeout) {
		delete(m.frags, k)
		return bpf.ReasonFragNoState
	}
	if v.DevId != p.dev.DevId {
		return bpf.ReasonFragNoState
	}
	if uint32(p.foff) < v.Covered {
		return bpf.ReasonFragOverlap
	}
	if !p.mf {
		delete(m.frags, k)
	}
	return bpf.ReasonAllow
}

// fragRecord mirrors zt_frag_record.
func (m *Model) fragRecord(p *pkt) bpf.Reason {
	k := p.fragKey()
	if _, ok := m.frags[k]; !ok && len(m.frags) >= m.fragCapacity {
		return bpf.ReasonFragTableFull
	}
	m.frags[k] = bpf.FragVal{Ts: uint64(p.now), DevId: p.dev.DevId, Covered: uint32(p.end - p.fpStart)}
	return bpf.ReasonAllow
}
