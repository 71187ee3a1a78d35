package dptest

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket/layers"
	"github.com/ztgate/ztgate/internal/frames"
)

// Gen generates frames against a Big policy: valid flows of its devices, every mutation class
// of the threat matrix (spoofed MACs and addresses, special sources, VLAN tags, ethertypes,
// IPv4 options and length lies, IPv6 extension chains, fragments, DHCP/ND/RA, tunnels,
// broadcast and multicast) and random truncations and byte flips.
type Gen struct {
	r     *rand.Rand
	b     *Big
	fragN uint32
}

// NewGen returns a generator; the same seed gives the same frames.
func NewGen(b *Big, seed uint64) *Gen {
	return &Gen{r: rand.New(rand.NewPCG(seed, 11)), b: b}
}

func (g *Gen) pick(n int) int { return g.r.IntN(n) }

func (g *Gen) chance(pct int) bool { return g.r.IntN(100) < pct }

var (
	gwMAC    = net.HardwareAddr{2, 0, 0, 0, 0, 0xfe}
	special4 = []string{"0.0.0.0", "127.0.0.1", "255.255.255.255", "224.0.0.5", "240.0.0.1", "10.0.0.1"}
	special6 = []string{"::", "::1", "ff02::1", "fd00::1", "::ffff:10.1.0.1", "fe80::1"}
	dests4   = []string{"10.0.0.1", "10.255.0.1", "203.0.113.7", "203.0.113.200", "198.51.100.9", "8.8.8.8",
		"255.255.255.255", "224.0.0.251", "239.255.255.250", "10.9.9.9", "224.0.0.1", "224.0.0.252"}
	dests6 = []string{"fd00::1", "2001:db8::1", "2001:db8:1::5", "2001:db9::1", "ff02::1", "ff02::1:2", "ff02::fb",
		"fd00:9::9", "ff05::fb", "ff02::fc"}
	ports = []uint16{53, 67, 68, 123, 443, 546, 547, 1443, 2443, 4789, 6081, 8883, 5683, 80, 1, 150, 1100, 65535,
		5353, 1900}
)

func (g *Gen) host(i int, v6 bool) frames.Host {
	h := g.b.Hosts[i]
	fh := frames.Host{MAC: h.MAC}
	switch {
	case v6 && len(h.IPv6) > 0:
		fh.IP = h.IPv6[g.pick(len(h.IPv6))]
	case v6:
		fh.IP = BigV6(i, 0) // not bound: a spoof
	default:
		fh.IP = h.IPv4[g.pick(len(h.IPv4))]
	}
	return fh
}

// src picks a source: usually a device with its own address, sometimes a spoof.
func (g *Gen) src(v6 bool) (frames.Host, uint16) {
	i := g.pick(len(g.b.Hosts))
	h := g.host(i, v6)
	vlan := g.b.Hosts[i].VLAN
	switch g.pick(20) {
	case 0: // unknown MAC
		h.MAC = net.HardwareAddr{2, 0x99, byte(g.pick(256)), byte(g.pick(256)), 0, byte(g.pick(256))}
	case 1: // another device's address
		h.IP = g.host(g.pick(len(g.b.Hosts)), v6).IP
	case 2: // special source
		if v6 {
			h.IP = netip.MustParseAddr(special6[g.pick(len(special6))])
		} else {
			h.IP = netip.MustParseAddr(special4[g.pick(len(special4))])
		}
	case 3: // bad L2 source
		h.MAC = [][]byte{{1, 0, 0x5e, 0, 0, 1}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0, 0, 0, 0, 0, 0}, gwMAC}[g.pick(4)]
	}
	return h, vlan
}

func (g *Gen) dst(v6 bool) frames.Host {
	d := frames.Host{MAC: gwMAC}
	switch g.pick(3) {
	case 0: // another device
		d.IP = g.host(g.pick(len(g.b.Hosts)), v6).IP
	default:
		if v6 {
			d.IP = netip.MustParseAddr(dests6[g.pick(len(dests6))])
		} else {
			d.IP = netip.MustParseAddr(dests4[g.pick(len(dests4))])
		}
	}
	switch {
	case frames.GroupMAC(d.IP) != nil && g.chance(50):
		d.MAC = frames.GroupMAC(d.IP) // what a bridge floods: against the wide and the multicast rules
	case g.chance(25):
		d.MAC = g.dstMAC(d.IP)
	}
	return d
}

// dstMAC picks a destination MAC other than the gateway's: a device's (sometimes the owner of
// ip), broadcast, the group ip maps to (or another group), an unknown unicast MAC.
func (g *Gen) dstMAC(ip netip.Addr) net.HardwareAddr {
	a := ip.As16()
	switch g.pick(6) {
	case 0:
		return g.b.Hosts[g.pick(len(g.b.Hosts))].MAC
	case 1:
		for i, h := range g.b.Hosts {
			for _, b := range append(h.IPv4, h.IPv6...) {
				if b == ip {
					return g.b.Hosts[i].MAC
				}
			}
		}
		return g.b.Hosts[g.pick(len(g.b.Hosts))].MAC
	case 2:
		return net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	case 3:
		if ip.Is4() {
			return net.HardwareAddr{1, 0, 0x5e, a[13] & 0x7f, a[14], a[15]}
		}
		return net.HardwareAddr{0x33, 0x33, a[12], a[13], a[14], a[15]}
	case 4:
		return [][]byte{{1, 0, 0x5e, 0, 0, 0xfb}, {0x33, 0x33, 0, 0, 0, 1}, {0x33, 0x33, 0xff, 0, 0, 1}}[g.pick(3)]
	}
	return net.HardwareAddr{2, 0x98, 0, 0, 0, byte(g.pick(256))}
}

// nd returns a neighbour solicitation, advertisement or router solicitation body (after the
// 4-byte ICMPv6 header) with link-layer address options naming src or another device, and
// now and then a nonce option, a zero length or an option past the end.
func (g *Gen) nd(src frames.Host, typ uint8) []byte {
	var body []byte
	if typ == 133 {
		body = make([]byte, 4)
	} else {
		t := src.IP
		if g.chance(30) {
			t = g.dst(true).IP
		}
		body = append(make([]byte, 4), t.AsSlice()...)
	}
	for range g.pick(4) {
		mac := src.MAC
		if g.chance(30) {
			mac = g.b.Hosts[g.pick(len(g.b.Hosts))].MAC
		}
		switch g.pick(8) {
		case 0:
			body = append(body, 14, 1, 1, 2, 3, 4, 5, 6)
		case 1:
			body = append(body, 1, byte(g.pick(3)), 0, 0, 0, 0, 0, 0)
		default:
			body = append(append(body, byte(1+g.pick(2)), 1), mac...)
		}
	}
	return body
}

func (g *Gen) port() uint16 {
	if g.chance(30) {
		return uint16(g.pick(65536))
	}
	return ports[g.pick(len(ports))]
}

// l4 returns an upper-layer protocol and header+payload bytes.
func (g *Gen) l4(v6 bool) (uint8, []byte) {
	payload := make([]byte, g.pick(40))
	switch g.pick(12) {
	case 0, 1, 2:
		return 6, frames.TCPHeader(g.port(), g.port(), uint8(5+g.pick(2)*g.pick(11)), 0x02)
	case 3, 4, 5:
		if g.chance(10) {
			b := make([]byte, 8+34+g.pick(30))
			binary.BigEndian.PutUint16(b, []uint16{67, 68}[g.pick(2)])
			binary.BigEndian.PutUint16(b[2:], 67)
			binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
			b[8] = byte(1 + g.pick(2))
			return 17, b
		}
		u := frames.UDPHeader(g.port(), g.port(), payload)
		if g.chance(10) { // a length lie: past the datagram, or short of it
			binary.BigEndian.PutUint16(u[4:], uint16(len(u)+[]int{-1, 1, 8, 200, -len(u)}[g.pick(5)]))
		}
		return 17, u
	case 6, 7:
		icmp := []byte{byte(g.pick(256)), 0, 0, 0, 0, 0, 0, 0}
		icmp[1] = []byte{0, 0, 1, 3, 4, byte(g.pick(256))}[g.pick(6)] // the code: rules may name one
		if v6 {
			icmp[0] = []byte{128, 129, 133, 134, 135, 136, 137, 143, byte(g.pick(256))}[g.pick(9)]
			icmp = append(icmp, make([]byte, 16)...)
			return 58, icmp
		}
		icmp[0] = []byte{0, 3, 5, 8, 9, 11}[g.pick(6)]
		return 1, icmp
	case 8:
		return []uint8{4, 41, 47}[g.pick(3)], append([]byte{0, 0, 8, 0}, payload...)
	case 9:
		return []uint8{132, 50, 59, 0, 60, 43, 44, 255}[g.pick(8)], frames.TCPHeader(443, 443, 5, 2)
	default:
		return uint8(g.pick(256)), payload
	}
}

// Frame returns the next generated frame.
func (g *Gen) Frame() []byte {
	var f []byte
	v6 := g.chance(40)
	src, vlan := g.src(v6)
	dst := g.dst(v6)
	switch kind := g.pick(20); {
	case kind == 0: // ARP
		spa := src.IP
		if !spa.Is4() {
			spa = netip.IPv4Unspecified()
		}
		sha := src.MAC
		if g.chance(10) {
			sha = g.b.Hosts[g.pick(len(g.b.Hosts))].MAC
		}
		f = frames.ARP(src, uint16(1+g.pick(2)), sha, spa, netip.MustParseAddr(dests4[g.pick(len(dests4))]))
	case kind == 1 && !v6: // DHCP
		s := src
		if g.chance(50) {
			s.IP = netip.IPv4Unspecified()
		}
		ch := src.MAC
		if g.chance(20) {
			ch = g.b.Hosts[g.pick(len(g.b.Hosts))].MAC
		}
		d := frames.Host{MAC: gwMAC, IP: netip.MustParseAddr([]string{"255.255.255.255", "10.0.0.1", "10.9.9.9"}[g.pick(3)])}
		f = frames.DHCPRequest(s, d, layers.DHCPOp(1+g.pick(2)), ch, []uint16{68, 67, 1000}[g.pick(3)], 67)
	case kind == 2 && v6: // neighbour discovery
		switch g.pick(3) {
		case 0:
			t := src.IP
			if g.chance(30) {
				t = g.dst(true).IP
			}
			f = frames.NA(src, dst, t)
		default:
			typ := []uint8{133, 135, 136}[g.pick(3)]
			if g.chance(50) {
				dst.IP = netip.MustParseAddr([]string{"ff02::1:ff00:1", "ff02::2", "ff02::1", "fe80::1", "fd00::1"}[g.pick(5)])
			}
			f = frames.ICMP(src, dst, typ, 0, g.nd(src, typ))
			if g.chance(20) {
				f[14+7] = 64 // hop limit: not link scope
			}
		}
	case v6:
		proto, l4 := g.l4(true)
		ext, nh := g.ext6(proto, len(l4))
		f = frames.IPv6(src, dst, nh, append(ext, l4...))
	default:
		proto, l4 := g.l4(false)
		f = frames.IPv4(src, dst, proto, uint16(g.fragID()), g.frag4(len(l4)), g.opts4(), l4)
	}
	if g.chance(8) {
		vid := []uint16{0, vlan, uint16(g.pick(4096))}[g.pick(3)]
		tpid := []uint16{0x8100, 0x8100, 0x8100, 0x88a8, 0x9100}[g.pick(5)]
		f = frames.VLAN(f, tpid, vid)
		if g.chance(20) {
			f = frames.VLAN(f, 0x8100, 0)
		}
	}
	return g.mutate(f)
}

func (g *Gen) fragID() uint32 {
	if g.chance(50) {
		return uint32(g.pick(8)) // a small pool, so fragments of one datagram meet
	}
	g.fragN++
	return g.fragN
}

func (g *Gen) frag4(l4len int) uint16 {
	switch g.pick(10) {
	case 0:
		return 0x2000 // first fragment
	case 1:
		return uint16(g.pick(8)) // later, last
	case 2:
		return 0x2000 | uint16(1+g.pick(8)) // later, more
	case 3:
		return 0x4000 // don't fragment
	}
	return 0
}

func (g *Gen) opts4() []byte {
	switch g.pick(12) {
	case 0:
		return []byte{1, 1, 1, 1}
	case 1:
		return []byte{0x94, 4, 1, 0xbb}
	case 2:
		return []byte{0x83, 7, 4, 10, 0, 0, 1}
	case 3:
		return []byte{0x89, 3, 0}
	case 4:
		return []byte{0x94, byte(g.pick(60)), 0, 0}
	case 5:
		return []byte{1, 0}
	}
	return nil
}

// ext6 builds an extension header chain ending in proto.
func (g *Gen) ext6(proto uint8, l4len int) ([]byte, uint8) {
	var hdrs [][]byte
	var types []uint8
	for range g.pick(4) * g.pick(4) {
		types = append(types, []uint8{0, 60, 60, 43, 44}[g.pick(5)])
	}
	id := g.fragID()
	for i, t := range types {
		next := proto
		if i+1 < len(types) {
			next = types[i+1]
		}
		switch t {
		case 43:
			hdrs = append(hdrs, frames.Routing(next, []uint8{0, 2, 4}[g.pick(3)]))
		case 44:
			off := []int{0, 0, 8, 16, 24, 1232}[g.pick(6)]
			hdrs = append(hdrs, frames.Frag6(next, off, g.chance(60), id))
		default:
			h := frames.Opts(next)
			if g.chance(10) {
				h[1] = byte(g.pick(256))
			}
			hdrs = append(hdrs, h)
		}
	}
	var out []byte
	for _, h := range hdrs {
		out = append(out, h...)
	}
	if len(types) == 0 {
		return out, proto
	}
	return out, types[0]
}

// mutate applies, now and then, a random damage: truncation, a flipped byte, a length lie.
func (g *Gen) mutate(f []byte) []byte {
	switch g.pick(12) {
	case 0:
		return f[:14+g.pick(len(f)-13)] // frames shorter than 14 bytes never reach XDP
	case 1:
		f[g.pick(len(f))] ^= byte(1 + g.pick(255))
	case 2:
		if len(f) > 20 {
			i := 14 + g.pick(min(len(f)-14, 50))
			f[i] = byte(g.pick(256))
		}
	case 3:
		f = append(f, make([]byte, g.pick(64))...) // padding after the datagram
	}
	return f
}
