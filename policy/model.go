package policy

import (
	"bytes"
	"encoding/binary"
	"math"
	"sort"
	"time"

	"golang.org/x/sys/unix"

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
// Each step below has a twin in bpf/ztgate.c or a header beside it; a reason here is a reason there.
type Model struct {
	snap         *Snapshot
	tries        map[uint32][]trieEntry // rule set -> prefixes, longest first
	frags        map[bpf.FragKey]bpf.FragVal
	fragCapacity int
	fragTimeout  time.Duration
	gwMACs       map[[6]byte]bool // zt_gwmacs: the gateway's own MACs, from the loader
	flows        map[bpf.FlowKey]bpf.FlowVal
	flowCount    map[countKey]uint32 // zt_flow_count: flows charged to each device, by what allowed them
	flowLimits   FlowLimits
	opened       [2]int // flows opened, by bpf.FlowOut and bpf.FlowIn
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
		gwMACs: map[[6]byte]bool{}, flows: map[bpf.FlowKey]bpf.FlowVal{}, flowCount: map[countKey]uint32{},
		flowLimits: DefaultFlowLimits()}
	m.SetSnapshot(s)
	return m
}

// SetSnapshot installs a new revision; the fragment table, like the datapath's, is kept, and so
// is the flow table but for the flows of fresh device ids (s.FreshOver the revision it replaces),
// which maps.Apply clears with their quota.
func (m *Model) SetSnapshot(s *Snapshot) {
	if s != nil && m.snap != nil {
		for _, id := range s.FreshOver(m.snap) {
			if m.FlowCount(id) == 0 {
				continue
			}
			for k, v := range m.flows {
				if v.DevId == id {
					delete(m.flows, k)
				}
			}
			delete(m.flowCount, countKey{id, bpf.FlowOut})
			delete(m.flowCount, countKey{id, bpf.FlowIn})
		}
	}
	m.snap = s
	m.tries = map[uint32][]trieEntry{}
	if s == nil {
		return
	}
	for k, v := range s.Prefixes {
		e := trieEntry{bits: int(k.Prefixlen) - 32, addr: k.Addr.B, group: v.Group}
		m.tries[k.Ruleset] = append(m.tries[k.Ruleset], e)
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
	lim       int // zt_pkt.lim: end, toward devices at most tcPull
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
	icmpID    uint16 // an ICMP echo's identifier
	dir       bpf.Dir
	now       time.Duration
}

// Destination MAC classes, as ZT_L2_* in bpf/pkt.h.
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
	goOn          = -1     // ZT_CONTINUE: a step that did not decide
)

// Header lengths, fields and values the datapath reads, named after the C (the kernel's names in
// bpf/parsing.h) where golang.org/x/sys/unix has no constant (unix.ETH_P_IP, unix.IPPROTO_HOPOPTS, ...).
const (
	ethALen        = 6      // ETH_ALEN
	ethHLen        = 14     // ETH_HLEN, sizeof(struct ethhdr)
	vlanHLen       = 4      // sizeof(struct vlan_hdr)
	vlanVIDMask    = 0x0fff // VLAN_VID_MASK
	macGroup       = 0x01   // ZT_MAC_GROUP: the group bit of a MAC's first byte
	arpIPv4Len     = 28     // sizeof(struct arp_ipv4)
	arpOpRequest   = 1      // ARPOP_REQUEST
	arpOpReply     = 2      // ARPOP_REPLY
	ipv4Len        = 4      // bytes of an IPv4 address (arphdr.ar_pln)
	ipv4HLen       = 20     // sizeof(struct iphdr)
	ipv4Version    = 4      // ZT_IPV4_VERSION
	ipv4MinIHL     = 5      // ZT_IPV4_MIN_IHL
	ihlUnit        = 4      // ZT_IHL_UNIT: iphdr.ihl and tcphdr.doff count 4 bytes
	fragUnit       = 8      // ZT_FRAG_UNIT: IPv4 fragment offsets count 8 bytes
	ipOffset       = 0x1fff // IP_OFFSET (unix.IP_MF is the more-fragments flag)
	ipoptEnd       = 0      // IPOPT_END
	ipoptNoop      = 1      // IPOPT_NOOP
	ipoptLSRR      = 0x83   // IPOPT_LSRR
	ipoptSSRR      = 0x89   // IPOPT_SSRR
	ipoptMinLen    = 2      // ZT_IPOPT_MIN_LEN
	ipv6HLen       = 40     // sizeof(struct ipv6hdr)
	ipv6Version    = 6      // ZT_IPV6_VERSION
	extUnit        = 8      // ZT_EXT_UNIT: ipv6_opt_hdr.hdrlen counts 8 bytes
	fragHLen       = 8      // sizeof(struct frag_hdr)
	ip6Offset      = 0xfff8 // IP6_OFFSET
	ip6MF          = 0x0001 // IP6_MF
	tcpHLen        = 20     // sizeof(struct tcphdr)
	tcpMinDoff     = 5      // ZT_TCP_MIN_DOFF
	udpHLen        = 8      // sizeof(struct udphdr)
	icmpHLen       = 8      // sizeof(struct icmp6hdr), ICMP's alike
	ndMsgLen       = 24     // sizeof(struct nd_msg): ICMPv6 header and target
	ndOptUnit      = 8      // ND_OPT_UNIT: nd_opt_len counts 8 bytes
	ndHopLimit     = 255    // ZT_ND_HOPLIMIT
	bootRequest    = 1      // ZT_BOOTREQUEST
	dhcpChaddrOff  = 28     // ZT_DHCP_CHADDR_OFF
	dhcpMinLen     = 34     // ZT_DHCP_MIN_LEN
	portDHCPServer = 67     // ZT_PORT_DHCP_SERVER
	portDHCPClient = 68     // ZT_PORT_DHCP_CLIENT
	portDHCP6Clnt  = 546    // ZT_PORT_DHCP6_CLIENT
	portDHCP6Srv   = 547    // ZT_PORT_DHCP6_SERVER
	portVXLAN      = 4789   // ZT_PORT_VXLAN
	portGeneve     = 6081   // ZT_PORT_GENEVE
)

// ptr mirrors zt_ptr: n readable bytes at off, or nil.
func (p *pkt) ptr(off, n int) []byte {
	if off > maxOff || off+n > len(p.f) {
		return nil
	}
	return p.f[off : off+n]
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// vlan mirrors zt_vlan: the ethertype after the Ethernet header eth, over one 802.1Q tag at most
// (its VID into p.vid), and the offset of what follows into p.l3off; goOn or a reason.
func (p *pkt) vlan(eth []byte) (uint16, int) {
	proto := be16(eth[2*ethALen:])
	p.l3off = ethHLen
	if proto == unix.ETH_P_8021AD || proto == unix.ETH_P_QINQ1 {
		return 0, int(bpf.ReasonVLANDenied)
	}
	if proto == unix.ETH_P_8021Q {
		tag := p.ptr(ethHLen, vlanHLen)
		if tag == nil {
			return 0, int(bpf.ReasonTruncated)
		}
		p.vid = be16(tag) & vlanVIDMask
		proto = be16(tag[2:])
		p.l3off = ethHLen + vlanHLen
		if proto == unix.ETH_P_8021Q || proto == unix.ETH_P_8021AD || proto == unix.ETH_P_QINQ1 {
			return 0, int(bpf.ReasonVLANDenied)
		}
	}
	return proto, goOn
}

// Decide returns the verdict for frame arriving from a device on gateway port ingress at time now.
func (m *Model) Decide(frame []byte, ingress uint32, now time.Duration) Decision {
	p := m.newPkt(frame, bpf.DirFromDevice, now)
	return m.decision(p, m.decide(p, ingress))
}

// newPkt starts the state of one frame. zt_cfg is an array: before any policy its entry exists, zeroed.
func (m *Model) newPkt(frame []byte, dir bpf.Dir, now time.Duration) *pkt {
	p := &pkt{f: frame, now: now, cfg: &bpf.Config{}, dir: dir}
	if m.snap != nil {
		p.cfg = &m.snap.Config
	}
	return p
}

// decision mirrors zt_verdict: the verdict of a frame decided for r.
func (m *Model) decision(p *pkt, r bpf.Reason) Decision {
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
	eth := p.ptr(0, ethHLen)
	if eth == nil {
		return bpf.ReasonTruncated
	}
	dst, src := eth[:ethALen], eth[ethALen:2*ethALen]
	p.smac = src
	if src[0]&macGroup != 0 || bytes.Equal(src, make([]byte, ethALen)) || bytes.Equal(dst, src) {
		return bpf.ReasonBadL2Src
	}
	// Step 2: VLAN.
	proto, vr := p.vlan(eth)
	if vr >= 0 {
		return bpf.Reason(vr)
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
	p.dmac = dst
	// Step 5: ethertype (step 4, quarantine, picks the rule set in step 13).
	var r int
	switch proto {
	case unix.ETH_P_ARP:
		return m.arp(p)
	case unix.ETH_P_IP:
		p.family = 4
		r = m.ipv4(p)
	case unix.ETH_P_IPV6:
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
		r = int(m.flowStep(p))
	}
	if bpf.Reason(r) == bpf.ReasonAllow && p.firstFrag {
		return m.fragRecord(p)
	}
	return bpf.Reason(r)
}

// arp mirrors zt_arp (step 6).
func (m *Model) arp(p *pkt) bpf.Reason {
	a := p.ptr(p.l3off, arpIPv4Len)
	if a == nil {
		return bpf.ReasonTruncated
	}
	// struct arp_ipv4: hrd, pro, hln, pln, op, then sender MAC and IP, target MAC and IP.
	hrd, pro, hln, pln, op := be16(a), be16(a[2:]), a[4], a[5], be16(a[6:])
	if hrd != unix.ARPHRD_ETHER || pro != unix.ETH_P_IP || hln != ethALen || pln != ipv4Len ||
		(op != arpOpRequest && op != arpOpReply) {
		return bpf.ReasonMalformed
	}
	sha, spa := a[8:8+ethALen], a[8+ethALen:8+ethALen+ipv4Len]
	if !bytes.Equal(sha, p.smac) {
		return bpf.ReasonARPSpoof
	}
	if bytes.Equal(spa, make([]byte, ipv4Len)) {
		if op != arpOpRequest {
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
	if d[0]&macGroup != 0 {
		if bytes.Equal(d, bcastMAC) {
			if p.family == 6 || (p.family == 4 && a != bcast4) {
				return l2Deny
			}
			return l2Bcast
		}
		if p.family == 4 && a[12]>>4 == v4McastNibble && bytes.Equal(d, v4GroupMAC(a)) {
			return l2Mcast
		}
		if p.family == 6 && a[0] == v6Mcast && bytes.Equal(d, v6GroupMAC(a)) {
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

// Multicast addresses and their MACs, as the ZT_V4_* and ZT_V6_* constants of bpf/addr.h.
const (
	v4McastNibble = 0xe  // ZT_V4_MCAST_NIBBLE: 224.0.0.0/4
	v4McastMask   = 0x7f // ZT_V4_MCAST_MASK: the group bits of the second byte a MAC keeps
	v6Mcast       = 0xff // ZT_V6_MCAST: ff00::/8
	v6LL0         = 0xfe // ZT_V6_LL0: fe80::/10, first byte
	v6LL1Mask     = 0xc0 // ZT_V6_LL1_MASK
	v6LL1         = 0x80 // ZT_V6_LL1
	v6ScopeLink   = 0x02 // ZT_V6_SCOPE_LINK: ff02::/16
)

var bcastMAC = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// v4GroupMAC is the MAC of IPv4 group a (v4-mapped): 01:00:5e and its low 23 bits (RFC 1112).
func v4GroupMAC(a [16]byte) []byte {
	return []byte{0x01, 0x00, 0x5e, a[13] & v4McastMask, a[14], a[15]}
}

// v6GroupMAC is the MAC of IPv6 group a: 33:33 and its low 32 bits (RFC 2464).
func v6GroupMAC(a [16]byte) []byte {
	return []byte{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

// ndLinkScope mirrors zt_nd_link_scope: hop limit 255 and a destination no router forwards.
func (m *Model) ndLinkScope(p *pkt) bool {
	a := p.daddr
	if p.hoplimit != ndHopLimit {
		return false
	}
	if p.l2 == l2DevMAC {
		return true
	}
	if (a[0] == v6LL0 && a[1]&v6LL1Mask == v6LL1) || (a[0] == v6Mcast && a[1] == v6ScopeLink) {
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
		if off+ndOptUnit > end {
			return int(bpf.ReasonMalformed)
		}
		o := p.ptr(off, ndOptUnit) // struct zt_nd_lladdr: type, length, link-layer address
		if o == nil {
			return int(bpf.ReasonTruncated)
		}
		typ, n := o[0], int(o[1])
		if n == 0 || off+n*ndOptUnit > end {
			return int(bpf.ReasonMalformed)
		}
		if (typ == ndOptSourceLLAddr || typ == ndOptTargetLLAddr) && macU64(o[2:2+ethALen]) != mac {
			return int(bpf.ReasonNDSpoof)
		}
		off += n * ndOptUnit
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
	ip := p.ptr(p.l3off, ipv4HLen)
	if ip == nil {
		return int(bpf.ReasonTruncated)
	}
	// struct iphdr: version and ihl, tot_len at 2, id 4, frag_off 6, protocol 9, saddr 12, daddr 16.
	version, ihl := ip[0]>>4, ip[0]&0xf
	if version != ipv4Version || ihl < ipv4MinIHL {
		return int(bpf.ReasonMalformed)
	}
	hl := int(ihl) * ihlUnit
	if p.ptr(p.l3off, hl) == nil {
		return int(bpf.ReasonTruncated)
	}
	tot := int(be16(ip[2:]))
	if tot < hl || p.l3off+tot > len(p.f) {
		return int(bpf.ReasonMalformed)
	}
	p.ipv4Datagram(ip, hl, tot, noCap)
	src, dst := ip[12:16], ip[16:20]
	p.saddr = v4mapped(src)
	p.daddr = v4mapped(dst)
	if bytes.Equal(src, make([]byte, ipv4Len)) {
		p.unspec = true
	} else if !boundV4(p.dev, src) {
		return int(bpf.ReasonSpoofIP)
	}
	if r := p.ipv4Options(p.l3off+ipv4HLen, hl-ipv4HLen); r >= 0 {
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
		if o[0] == ipoptEnd {
			break
		}
		if o[0] == ipoptNoop {
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
		if o[1] < ipoptMinLen || i+int(o[1]) > n {
			return int(bpf.ReasonMalformed)
		}
		if o[0] == ipoptLSRR || o[0] == ipoptSSRR {
			return int(bpf.ReasonIPOptions)
		}
		i += int(o[1])
	}
	return goOn
}

// isExt mirrors zt_is_ext: an IPv6 next header the parser walks (or refuses).
func isExt(nh uint8) bool {
	return nh == unix.IPPROTO_HOPOPTS || nh == unix.IPPROTO_DSTOPTS || nh == unix.IPPROTO_ROUTING ||
		nh == unix.IPPROTO_FRAGMENT
}

// ipv6 mirrors zt_ipv6 (steps 7-8).
func (m *Model) ipv6(p *pkt) int {
	off, nh, r := p.ipv6Hdr(len(p.f), noCap)
	if r >= 0 {
		return r
	}
	if p.saddr == [16]byte{} {
		p.unspec = true
	} else if !boundV6(p.dev, p.saddr[:]) {
		return int(bpf.ReasonSpoofIP)
	}
	if !p.unspec {
		p.counted = true
	}
	return p.ipv6Ext(off, nh)
}

// noCap mirrors ZT_NO_CAP: frames from devices have their headers read up to the datagram's end.
const noCap = math.MaxInt

// ipv4Datagram mirrors zt_ipv4_datagram: what the IPv4 header ip (hl bytes, of a tot-byte datagram)
// says of its datagram, headers read up to at most limit.
func (p *pkt) ipv4Datagram(ip []byte, hl, tot, limit int) {
	p.end = p.l3off + tot
	p.lim = min(p.end, limit)
	p.l4off = p.l3off + hl
	p.fpStart = p.l4off
	p.l4proto = ip[9]
	p.fragID = uint32(be16(ip[4:]))
	frag := be16(ip[6:])
	p.mf = frag&unix.IP_MF != 0
	p.foff = int(frag&ipOffset) * fragUnit
	p.firstFrag = p.mf && p.foff == 0
}

// ipv6Hdr mirrors zt_ipv6_hdr for a frame of n bytes: the IPv6 header into p (headers read up to
// at most limit), and the offset and type of the header after it; goOn or a reason.
func (p *pkt) ipv6Hdr(n, limit int) (int, uint8, int) {
	ip := p.ptr(p.l3off, ipv6HLen)
	if ip == nil {
		return 0, 0, int(bpf.ReasonTruncated)
	}
	// struct ipv6hdr: version, payload_len at 4, nexthdr 6, hop_limit 7, saddr 8, daddr 24.
	if ip[0]>>4 != ipv6Version {
		return 0, 0, int(bpf.ReasonMalformed)
	}
	off := p.l3off + ipv6HLen
	if off+int(be16(ip[4:])) > n {
		return 0, 0, int(bpf.ReasonMalformed)
	}
	p.end = off + int(be16(ip[4:]))
	p.lim = min(p.end, limit)
	copy(p.saddr[:], ip[8:24])
	copy(p.daddr[:], ip[24:40])
	p.hoplimit = ip[7]
	return off, ip[6], goOn
}

// ipv6Ext mirrors zt_ipv6_ext (step 8): the extension-header walk from off, where header nh starts.
func (p *pkt) ipv6Ext(off int, nh uint8) int {
	p.fpStart = off
	seenFrag := false
	for i := 0; i < maxExtHeaders; i++ {
		if !isExt(nh) {
			break
		}
		if nh == unix.IPPROTO_ROUTING || (nh == unix.IPPROTO_HOPOPTS && i != 0) {
			return int(bpf.ReasonExtDenied)
		}
		if off+extUnit > p.lim {
			return int(bpf.ReasonTruncated)
		}
		h := p.ptr(off, extUnit)
		if h == nil {
			return int(bpf.ReasonTruncated)
		}
		// struct ipv6_opt_hdr: nexthdr, hdrlen; struct frag_hdr: nexthdr, frag_off at 2, identification 4.
		if nh == unix.IPPROTO_FRAGMENT {
			fo := be16(h[2:])
			if seenFrag {
				return int(bpf.ReasonExtDenied)
			}
			seenFrag = true
			nh = h[0]
			off += fragHLen
			p.fpStart = off
			p.foff = int(fo & ip6Offset)
			p.mf = fo&ip6MF != 0
			p.fragID = binary.BigEndian.Uint32(h[4:])
			p.firstFrag = p.mf && p.foff == 0
			if p.foff != 0 {
				break
			}
			continue
		}
		nh = h[0]
		off += (int(h[1]) + 1) * extUnit
		if off > p.lim {
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

// l4Need mirrors zt_l4_need: the bytes of L4 header the datapath must see.
func l4Need(proto uint8) int {
	switch proto {
	case ProtoTCP:
		return tcpHLen
	case ProtoUDP:
		return udpHLen
	case ProtoICMP, ProtoICMPv6:
		return icmpHLen
	}
	return 0
}

var (
	allDHCPv6 = [16]byte{0xff, 0x02, 13: 0x01, 15: 0x02} // ff02::1:2, all DHCP relay agents and servers
	bcast4    = v4mapped([]byte{255, 255, 255, 255})
)

// ICMP types and ND options the guards inspect, as bpf/parsing.h names them.
const (
	icmpRedirect      = 5   // ICMP_REDIRECT
	icmpRouterAdvert  = 9   // ICMP_ROUTERADVERT
	icmp6RS           = 133 // NDISC_ROUTER_SOLICITATION
	icmp6RA           = 134 // NDISC_ROUTER_ADVERTISEMENT
	icmp6NS           = 135 // NDISC_NEIGHBOUR_SOLICITATION
	icmp6NA           = 136 // NDISC_NEIGHBOUR_ADVERTISEMENT
	icmp6Redirect     = 137 // NDISC_REDIRECT
	ndOptSourceLLAddr = 1   // ND_OPT_SOURCE_LL_ADDR
	ndOptTargetLLAddr = 2   // ND_OPT_TARGET_LL_ADDR
)

// guards mirrors zt_guards (step 10 and the DHCP/ND plumbing).
func (m *Model) guards(p *pkt) int {
	tiny := int(bpf.ReasonTruncated)
	if p.firstFrag {
		tiny = int(bpf.ReasonFragTiny)
	}
	need := l4Need(p.l4proto)
	l4 := p.ptr(p.l4off, udpHLen) // ICMP's type, or the ports of TCP and UDP alike
	if p.l4off+need > p.end {
		return tiny
	}
	if need != 0 {
		if l4 == nil {
			return tiny
		}
		p.icmpType = l4[0]
		if p.l4proto == ProtoICMP || p.l4proto == ProtoICMPv6 {
			p.dport = icmpKey(p.icmpType, l4[1])
			p.icmpID = be16(l4[4:])
		}
	}
	if p.l4proto == ProtoTCP {
		t := p.ptr(p.l4off, tcpHLen)
		if t == nil {
			return tiny
		}
		doff := int(t[12] >> 4) // tcphdr.doff
		if doff < tcpMinDoff {
			return int(bpf.ReasonMalformed)
		}
		if p.l4off+doff*ihlUnit > p.end {
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
		if ulen < udpHLen || (!p.firstFrag && p.l4off+ulen > p.end) {
			return int(bpf.ReasonMalformed)
		}
	}

	if p.family == 4 {
		if p.l4proto == ProtoUDP {
			if p.sport == portDHCPServer {
				return int(bpf.ReasonDHCPServer)
			}
			if p.dport == portDHCPServer {
				bootp := p.l4off + udpHLen
				if bootp+dhcpMinLen > p.end {
					return tiny
				}
				b := p.ptr(bootp, dhcpMinLen)
				if b == nil {
					return tiny
				}
				if b[0] != bootRequest {
					return int(bpf.ReasonDHCPServer)
				}
				if !bytes.Equal(b[dhcpChaddrOff:dhcpChaddrOff+ethALen], p.smac) {
					return int(bpf.ReasonDHCPChaddr)
				}
				if p.sport == portDHCPClient && p.cfg.Flags&bpf.CfgSvcDHCP != 0 && (p.daddr == bcast4 || m.isGateway(p)) {
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
		if p.sport == portDHCP6Srv {
			return int(bpf.ReasonDHCPServer)
		}
		if p.sport == portDHCP6Clnt && p.dport == portDHCP6Srv && p.cfg.Flags&bpf.CfgSvcDHCPv6 != 0 {
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
			opts := p.l4off + ndMsgLen
			if p.icmpType == icmp6RS {
				opts = p.l4off + icmpHLen
			}
			if opts > p.end {
				return tiny
			}
			if p.icmpType == icmp6NA {
				t := p.ptr(p.l4off+icmpHLen, len(p.daddr)) // nd_msg.target
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
func (m *Model) isGateway(p *pkt) bool { return cfgGateway(p.cfg, p.family, p.daddr) }

// cfgGateway mirrors zt_cfg_gateway: a (of family 4 or 6) is one of the gateway's own addresses.
func cfgGateway(c *bpf.Config, family int, a [16]byte) bool {
	if family == 4 {
		for i := 0; i < int(c.N_gw4) && i < len(c.Gw4); i++ {
			if v4mapped(binary.NativeEndian.AppendUint32(nil, c.Gw4[i])) == a {
				return true
			}
		}
		return false
	}
	for i := 0; i < int(c.N_gw6) && i < len(c.Gw6); i++ {
		if c.Gw6[i].B == a {
			return true
		}
	}
	return false
}

// match mirrors struct zt_match: what the rule lookups need of a frame.
type match struct {
	daddr     [16]byte
	ruleset   uint32
	flags     uint16 // bpf.DevPeerRules | bpf.DevPrefixRules | bpf.DevQuarantined
	dport     uint16
	l4proto   uint8
	toGateway bool
	group     bool // broadcast or multicast frame
}

// allowList mirrors zt_allow_list (steps 11 and 13): the device's rules, or the quarantine set.
func (m *Model) allowList(p *pkt) bpf.Reason {
	mt := match{daddr: p.daddr, ruleset: p.dev.Ruleset, flags: p.dev.Flags & (bpf.DevPeerRules | bpf.DevPrefixRules),
		dport: p.dport, l4proto: p.l4proto, toGateway: m.isGateway(p), group: p.l2 == l2Bcast || p.l2 == l2Mcast}
	if p.dev.Flags&bpf.DevQuarantined != 0 {
		mt.ruleset, mt.flags = quarantineSet(p.cfg)
	}
	return m.matchRules(&mt)
}

// quarantineSet is the rule set and lookup flags of quarantined devices in cfg.
func quarantineSet(cfg *bpf.Config) (uint32, uint16) {
	flags := bpf.DevQuarantined
	if cfg.Flags&bpf.CfgQPeerRules != 0 {
		flags |= bpf.DevPeerRules
	}
	if cfg.Flags&bpf.CfgQPrefixRules != 0 {
		flags |= bpf.DevPrefixRules
	}
	return cfg.QuarantineRuleset, flags
}

// matchRules mirrors zt_match_rules: a broadcast or multicast frame matches only the rules that
// name a multicast prefix.
func (m *Model) matchRules(mt *match) bpf.Reason {
	rs, flags, pr := mt.ruleset, mt.flags, mt.l4proto
	tunnel := pr == ProtoIPIP || pr == ProtoIPv6 || pr == ProtoGRE ||
		(pr == ProtoUDP && (mt.dport == portVXLAN || mt.dport == portGeneve))
	try := func(kind uint8, id uint32) bool {
		k := bpf.RuleKey{Ruleset: rs, SelId: id, SelKind: kind, Proto: pr}
		if v, ok := m.snap.Rules[k]; ok && portsOK(&v, pr, pr, mt.dport, tunnel) {
			return true
		}
		k.Proto = ProtoAny
		v, ok := m.snap.Rules[k]
		return ok && portsOK(&v, ProtoAny, pr, mt.dport, tunnel)
	}
	if !mt.group && mt.toGateway && try(bpf.SelGateway, 0) {
		return bpf.ReasonAllow
	}
	if !mt.group && flags&bpf.DevPeerRules != 0 {
		if a, ok := m.snap.Addrs[bpf.AddrKey{Addr: bpf.In6{B: mt.daddr}}]; ok && a.Kind == bpf.AddrDevice {
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
		if mt.group {
			kind = bpf.SelMcast
		}
		if g, ok := m.longestMatch(rs, mt.daddr); ok && try(kind, g) {
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

// icmpKey mirrors zt_icmp_key: what an ICMP or ICMPv6 rule's ranges hold in place of ports, the
// type in the high byte and the code in the low one.
func icmpKey(typ, code uint8) uint16 { return uint16(typ)<<8 | uint16(code) }

// portsOK mirrors zt_ports_ok.
func portsOK(v *bpf.RuleVal, protoKey, l4proto uint8, dport uint16, tunnel bool) bool {
	if protoKey == ProtoAny {
		return !tunnel
	}
	if l4proto != ProtoTCP && l4proto != ProtoUDP && l4proto != ProtoICMP && l4proto != ProtoICMPv6 {
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
	k := bpf.FragKey{Saddr: bpf.In6{B: p.saddr}, Daddr: bpf.In6{B: p.daddr}, Id: p.fragID, Family: uint8(p.family),
		Dir: uint8(p.dir)}
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
