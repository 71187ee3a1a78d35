// Package frames builds Ethernet frames for tests, benchmarks and the demo: well-formed ones
// with gopacket, and the malformed or unusual ones gopacket will not produce (bad IHL, IPv4
// options, raw IPv6 extension chains, overlapping fragments) by hand.
package frames

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Host is one end of a frame.
type Host struct {
	MAC net.HardwareAddr
	IP  netip.Addr
}

// Build serialises layers with lengths and checksums computed.
func Build(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(fmt.Sprintf("frames: serialize: %v", err))
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(src, dst Host, t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: src.MAC, DstMAC: dst.MAC, EthernetType: t}
}

// ipLayers returns the Ethernet and IP layers for src -> dst carrying proto.
func ipLayers(src, dst Host, proto layers.IPProtocol) (
	*layers.Ethernet, gopacket.SerializableLayer, gopacket.NetworkLayer) {
	if src.IP.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, Id: 1,
			SrcIP: src.IP.AsSlice(), DstIP: dst.IP.AsSlice()}
		return eth(src, dst, layers.EthernetTypeIPv4), ip, ip
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.IP.AsSlice(), DstIP: dst.IP.AsSlice()}
	return eth(src, dst, layers.EthernetTypeIPv6), ip, ip
}

// UDP is a UDP datagram over IPv4 or IPv6 (by the addresses' family).
func UDP(src, dst Host, sport, dport uint16, payload []byte) []byte {
	e, ip, nl := ipLayers(src, dst, layers.IPProtocolUDP)
	u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = u.SetNetworkLayerForChecksum(nl)
	return Build(e, ip, u, gopacket.Payload(payload))
}

// TCP is a TCP segment (SYN when syn, else ACK).
func TCP(src, dst Host, sport, dport uint16, syn bool, payload []byte) []byte {
	e, ip, nl := ipLayers(src, dst, layers.IPProtocolTCP)
	t := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 1, Window: 1024,
		SYN: syn, ACK: !syn}
	_ = t.SetNetworkLayerForChecksum(nl)
	return Build(e, ip, t, gopacket.Payload(payload))
}

// ICMP is an ICMP (IPv4) or ICMPv6 message of the given type and code with body after the
// 4-byte type/code/checksum header. Neighbour discovery messages (133-137) get hop limit 255.
func ICMP(src, dst Host, typ, code uint8, body []byte) []byte {
	if src.IP.Is4() {
		e, ip, _ := ipLayers(src, dst, layers.IPProtocolICMPv4)
		return Build(e, ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}, gopacket.Payload(body))
	}
	e, ip, nl := ipLayers(src, dst, layers.IPProtocolICMPv6)
	if typ >= 133 && typ <= 137 {
		ip.(*layers.IPv6).HopLimit = 255 // neighbour discovery is sent with the link-only hop limit
	}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
	_ = ic.SetNetworkLayerForChecksum(nl)
	return Build(e, ip, ic, gopacket.Payload(body))
}

// Echo is an ICMP/ICMPv6 echo request.
func Echo(src, dst Host) []byte {
	if src.IP.Is4() {
		return ICMP(src, dst, 8, 0, []byte{0, 1, 0, 1, 'p', 'i', 'n', 'g'})
	}
	return ICMP(src, dst, 128, 0, []byte{0, 1, 0, 1, 'p', 'i', 'n', 'g'})
}

// NA is an ICMPv6 neighbour advertisement for target.
func NA(src, dst Host, target netip.Addr) []byte {
	body := make([]byte, 4, 20)
	body[0] = 0x60 // solicited, override
	body = append(body, target.AsSlice()...)
	return ICMP(src, dst, 136, 0, body)
}

// ARP is an ARP message; the Ethernet source is src.MAC, the destination broadcast.
func ARP(src Host, op uint16, sha net.HardwareAddr, spa netip.Addr, tpa netip.Addr) []byte {
	bcast := Host{MAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	a := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: op,
		SourceHwAddress: sha, SourceProtAddress: spa.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: tpa.AsSlice()}
	return Build(eth(src, bcast, layers.EthernetTypeARP), a)
}

// DHCPRequest is a DHCPDISCOVER from src (0.0.0.0 when src.IP is unset) to dst with chaddr.
func DHCPRequest(src, dst Host, op layers.DHCPOp, chaddr net.HardwareAddr, sport, dport uint16) []byte {
	if !src.IP.IsValid() {
		src.IP = netip.IPv4Unspecified()
	}
	e, ip, nl := ipLayers(src, dst, layers.IPProtocolUDP)
	u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = u.SetNetworkLayerForChecksum(nl)
	d := &layers.DHCPv4{Operation: op, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6,
		Xid: 0x1234, ClientHWAddr: chaddr,
		Options: layers.DHCPOptions{
			layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(layers.DHCPMsgTypeDiscover)}),
		}}
	return Build(e, ip, u, d)
}

// VLAN inserts an 802.1Q (or other TPID) tag after the MAC addresses.
func VLAN(frame []byte, tpid uint16, vid uint16) []byte {
	out := append([]byte(nil), frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, tpid)
	out = binary.BigEndian.AppendUint16(out, vid)
	return append(out, frame[12:]...)
}

// IPv4 builds a raw IPv4 frame: header with options (padded to 4 bytes), fragment field
// (flags<<13 | offset/8), and l4 bytes as payload. The checksum is computed.
func IPv4(src, dst Host, proto uint8, id, frag uint16, options []byte, l4 []byte) []byte {
	for len(options)%4 != 0 {
		options = append(options, 0)
	}
	hl := 20 + len(options)
	h := make([]byte, hl)
	h[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(h[2:], uint16(hl+len(l4)))
	binary.BigEndian.PutUint16(h[4:], id)
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8] = 64
	h[9] = proto
	copy(h[12:], src.IP.AsSlice())
	copy(h[16:], dst.IP.AsSlice())
	copy(h[20:], options)
	binary.BigEndian.PutUint16(h[10:], checksum(h))
	out := append(ethHeader(src, dst, 0x0800), h...)
	return append(out, l4...)
}

// IPv6 builds a raw IPv6 frame whose first next header is nh and whose payload (extension
// headers and upper layer) is rest.
func IPv6(src, dst Host, nh uint8, rest []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(rest)))
	h[6] = nh
	h[7] = 64
	copy(h[8:], src.IP.AsSlice())
	copy(h[24:], dst.IP.AsSlice())
	out := append(ethHeader(src, dst, 0x86dd), h...)
	return append(out, rest...)
}

// Opts is an 8-byte Hop-by-Hop or Destination Options header (PadN) followed by next.
func Opts(next uint8) []byte { return []byte{next, 0, 1, 4, 0, 0, 0, 0} }

// Routing is an 8-byte routing header of the given type.
func Routing(next, typ uint8) []byte { return []byte{next, 0, typ, 0, 0, 0, 0, 0} }

// Frag6 is an IPv6 fragment header: offset in bytes (multiple of 8), more fragments, id.
func Frag6(next uint8, offset int, more bool, id uint32) []byte {
	h := []byte{next, 0, 0, 0, 0, 0, 0, 0}
	fo := uint16(offset) & 0xfff8
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(h[2:], fo)
	binary.BigEndian.PutUint32(h[4:], id)
	return h
}

// UDPHeader is an 8-byte UDP header (length covers payload, checksum 0) plus payload.
func UDPHeader(sport, dport uint16, payload []byte) []byte {
	h := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(h, sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	return append(h, payload...)
}

// TCPHeader is a 20-byte TCP header with the given data offset (in 32-bit words) and flags.
func TCPHeader(sport, dport uint16, doff uint8, flags uint8) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h, sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	h[12] = doff << 4
	h[13] = flags
	binary.BigEndian.PutUint16(h[14:], 1024)
	return h
}

// Fragment4 splits an IPv4 frame (no options) into fragments carrying at most size payload
// bytes each (size is rounded down to a multiple of 8).
func Fragment4(frame []byte, size int) [][]byte {
	size &^= 7
	ipOff := 14
	hl := int(frame[ipOff]&0xf) * 4
	payload := frame[ipOff+hl:]
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		h := append([]byte(nil), frame[ipOff:ipOff+hl]...)
		frag := uint16(off / 8)
		if end < len(payload) {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(h[2:], uint16(hl+end-off))
		binary.BigEndian.PutUint16(h[6:], frag)
		h[10], h[11] = 0, 0
		binary.BigEndian.PutUint16(h[10:], checksum(h))
		f := append(append([]byte(nil), frame[:ipOff]...), h...)
		out = append(out, append(f, payload[off:end]...))
	}
	return out
}

func ethHeader(src, dst Host, t uint16) []byte {
	h := make([]byte, 14)
	copy(h, dst.MAC)
	copy(h[6:], src.MAC)
	binary.BigEndian.PutUint16(h[12:], t)
	return h
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// GroupMAC is the destination MAC of a frame to ip, a multicast group (01:00:5e or 33:33 and the
// group's low bits) or the limited broadcast 255.255.255.255 (ff:ff:ff:ff:ff:ff); nil for
// another address.
func GroupMAC(ip netip.Addr) net.HardwareAddr {
	a := ip.As16()
	switch {
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	case !ip.IsMulticast():
		return nil
	case ip.Is4():
		return net.HardwareAddr{1, 0, 0x5e, a[13] & 0x7f, a[14], a[15]}
	}
	return net.HardwareAddr{0x33, 0x33, a[12], a[13], a[14], a[15]}
}
