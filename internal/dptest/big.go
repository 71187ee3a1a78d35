package dptest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"

	"github.com/ztgate/ztgate/policy"
)

// Big is a generated policy of n devices in 12 segments with every rule shape the compiler
// knows: CIDR, device, segment and gateway targets, from: rules toward devices, port lists and
// ranges, protocol numbers, "any", services, VLANs, port bindings, audit and quarantine.
type Big struct {
	Policy *policy.Policy
	Hosts  []BigHost
}

// BigHost is one device of a Big policy.
type BigHost struct {
	Name string
	MAC  net.HardwareAddr
	IPv4 []netip.Addr
	IPv6 []netip.Addr
	VLAN uint16
}

// BigV4 and BigV6 are the addresses of device i (0-based) in a Big policy.
func BigV4(i, k int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(1 + k), byte(i >> 8), byte(i)})
}

func BigV6(i, k int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:%x::%x", 1+k, i+1))
}

// NewBig generates a Big policy; the same seed gives the same policy.
func NewBig(n int, seed uint64) *Big {
	r := rand.New(rand.NewPCG(seed, 7))
	p := &policy.Policy{APIVersion: policy.APIVersion, Kind: policy.Kind, Metadata: policy.Metadata{Name: "big"}}
	p.Spec.Gateway = policy.Gateway{IPv4: []string{"10.0.0.1", "10.255.0.1"}, IPv6: []string{"fd00::1"},
		Services: []policy.Service{policy.ServiceDHCP, policy.ServiceDHCPv6, policy.ServiceDNS}}
	p.Spec.Quarantine.Allow = []policy.Rule{{To: policy.Target{Gateway: true}, Proto: "icmp"}}
	cidrs := []string{"203.0.113.0/24", "203.0.113.128/25", "198.51.100.0/24", "0.0.0.0/0", "10.0.0.0/8",
		"2001:db8::/32", "2001:db8:1::/48", "::/0", "224.0.0.0/4"}
	protos := []string{"tcp", "udp", "icmp", "icmpv6", "any", "47", "132", ""}
	rndRule := func(segs int, devs int) policy.Rule {
		var to policy.Target
		switch r.IntN(4) {
		case 0:
			to.CIDR = cidrs[r.IntN(len(cidrs))]
		case 1:
			if devs > 0 {
				to.Device = fmt.Sprintf("d%d", r.IntN(devs))
			} else {
				to.Gateway = true
			}
		case 2:
			to.Segment = fmt.Sprintf("s%d", r.IntN(segs))
		default:
			to.Gateway = true
		}
		rule := policy.Rule{To: to, Proto: protos[r.IntN(len(protos))]}
		if rule.Proto == "tcp" || rule.Proto == "udp" {
			for range r.IntN(4) {
				lo := uint16(r.IntN(3) * 1000)
				switch r.IntN(3) {
				case 0:
					rule.Ports = append(rule.Ports, policy.PortRange{Lo: lo + 443, Hi: lo + 443})
				case 1:
					rule.Ports = append(rule.Ports, policy.PortRange{Lo: lo + 1, Hi: lo + 1 + uint16(r.IntN(200))})
				default:
					p := []uint16{53, 123, 4789, 6081, 8883, 5683}[r.IntN(6)]
					rule.Ports = append(rule.Ports, policy.PortRange{Lo: p, Hi: p})
				}
			}
		}
		if rule.Proto == "icmp" || rule.Proto == "icmpv6" {
			for range r.IntN(3) { // none: every type
				types := []policy.ICMPType{"0", "3", "3/3", "8", "11/0", "echo-reply"}
				if rule.Proto == "icmpv6" {
					types = []policy.ICMPType{"1/4", "128", "129", "echo-request", "143"}
				}
				rule.ICMP = append(rule.ICMP, types[r.IntN(len(types))])
			}
		}
		return rule
	}
	// from: rules come from a second stream, so that the to: rules stay those of earlier versions.
	r2 := rand.New(rand.NewPCG(seed, 13))
	fromCIDRs := []string{"203.0.113.0/24", "8.8.8.8/32", "10.0.0.0/8", "0.0.0.0/0", "2001:db8::/32", "fd00::/16",
		"::/0"}
	rndFrom := func(segs, devs int) policy.Rule {
		var from policy.Target
		switch r2.IntN(5) {
		case 0, 1:
			from.CIDR = fromCIDRs[r2.IntN(len(fromCIDRs))]
		case 2:
			from.Device = fmt.Sprintf("d%d", r2.IntN(max(devs, 1)))
		case 3:
			from.Segment = fmt.Sprintf("s%d", r2.IntN(segs))
		default:
			from.Gateway = true
		}
		rule := policy.Rule{From: from, Proto: []string{"tcp", "udp", "icmp", "icmpv6", "any", "47"}[r2.IntN(6)]}
		switch rule.Proto {
		case "tcp", "udp":
			for range r2.IntN(3) {
				p := []uint16{22, 53, 443, 5683, 8883, 1, 80}[r2.IntN(7)]
				rule.Ports = append(rule.Ports, policy.PortRange{Lo: p, Hi: p + uint16(r2.IntN(2)*100)})
			}
		case "icmp":
			if r2.IntN(2) == 0 {
				rule.ICMP = []policy.ICMPType{"echo-request"}
			}
		}
		return rule
	}
	const segs = 12
	for s := range segs {
		seg := policy.Segment{Name: fmt.Sprintf("s%d", s)}
		if s == 11 {
			seg.Mode = policy.ModeAudit
		}
		for range 1 + r.IntN(4) {
			seg.Allow = append(seg.Allow, rndRule(segs, n))
		}
		for range r2.IntN(3) {
			seg.Allow = append(seg.Allow, rndFrom(segs, n))
		}
		p.Spec.Segments = append(p.Spec.Segments, seg)
	}
	b := &Big{Policy: p}
	for i := range n {
		h := BigHost{Name: fmt.Sprintf("d%d", i), MAC: net.HardwareAddr{2, 0x10, 0, byte(i >> 16), byte(i >> 8), byte(i)}}
		for k := range 1 + r.IntN(2) {
			h.IPv4 = append(h.IPv4, BigV4(i, k))
		}
		for k := range r.IntN(3) {
			h.IPv6 = append(h.IPv6, BigV6(i, k))
		}
		d := policy.Device{Name: h.Name, MAC: h.MAC.String()}
		for _, a := range h.IPv4 {
			d.IPv4 = append(d.IPv4, a.String())
		}
		for _, a := range h.IPv6 {
			d.IPv6 = append(d.IPv6, a.String())
		}
		if r.IntN(10) > 0 {
			d.Segment = fmt.Sprintf("s%d", r.IntN(segs))
		}
		switch r.IntN(40) {
		case 0:
			d.Port = "lo"
		case 1:
			d.Port = "ghost"
		case 2:
			d.Mode = policy.ModeAudit
		case 3:
			d.Quarantined = true
		case 4:
			d.VLAN = uint16(1 + r.IntN(4094))
			h.VLAN = d.VLAN
		case 5:
			d.Mode = policy.ModeEnforce
		}
		for range r.IntN(3) {
			d.Allow = append(d.Allow, rndRule(segs, i))
		}
		if r2.IntN(4) == 0 {
			d.Allow = append(d.Allow, rndFrom(segs, i))
		}
		p.Spec.Devices = append(p.Spec.Devices, d)
		b.Hosts = append(b.Hosts, h)
	}
	return b
}
