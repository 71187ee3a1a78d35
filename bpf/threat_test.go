package bpf_test

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket/layers"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/internal/frames"
)

// threatCase is one U row of ../shared/docs/threat-matrix.md: a frame, the port it arrives on,
// and the verdict and reason the datapath must give.
type threatCase struct {
	row     int
	name    string
	frame   []byte
	ingress uint32
	verdict bpf.Verdict
	reason  bpf.Reason
}

var (
	v4    = func(n int) frames.Host { return dptest.Host(n, false) }
	v6    = func(n int) frames.Host { return dptest.Host(n, true) }
	to    = dptest.To
	pass  = bpf.VerdictPass
	drop  = bpf.VerdictDrop
	audit = bpf.VerdictAudit
)

func withMAC(h frames.Host, mac string) frames.Host {
	m, err := net.ParseMAC(mac)
	if err != nil {
		panic(err)
	}
	h.MAC = m
	return h
}

func withIP(h frames.Host, ip string) frames.Host {
	h.IP = netip.MustParseAddr(ip)
	return h
}

// set returns a copy of f with b written at off.
func set(f []byte, off int, b ...byte) []byte {
	g := append([]byte(nil), f...)
	copy(g[off:], b)
	return g
}

func set16(f []byte, off int, v uint16) []byte {
	return set(f, off, byte(v>>8), byte(v))
}

func threatCases() []threatCase {
	cam4, cam6 := v4(dptest.Cam), v6(dptest.Cam)
	gw4, gw6 := to("10.0.0.1"), to("fd00::1")
	web4, web6 := to("203.0.113.5"), to("2001:db8:443::5")
	udp443 := frames.UDPHeader(40000, 443, []byte("payload!"))
	tcp443 := frames.TCPHeader(40000, 443, 5, 0x02)
	tcp80 := frames.TCPHeader(40000, 80, 5, 0x02)
	dhcp := func(src frames.Host, dst frames.Host, op layers.DHCPOp, chaddr net.HardwareAddr, sp, dp uint16) []byte {
		return frames.DHCPRequest(src, dst, op, chaddr, sp, dp)
	}
	unspec := withIP(cam4, "0.0.0.0")
	bcast := to("255.255.255.255")

	cs := []threatCase{
		// 1: allowed flows.
		{1, "tcp 443 to allowed cidr", frames.TCP(cam4, web4, 40000, 443, true, nil), 1, pass, bpf.ReasonAllow},
		{1, "tcp 443 to allowed cidr v6", frames.TCP(cam6, web6, 40000, 443, true, nil), 1, pass, bpf.ReasonAllow},
		{1, "tcp 8883 to segment brokers", frames.TCP(v4(dptest.Sensor), to("10.0.0.13"), 40000, 8883, true, nil), 1, pass, bpf.ReasonAllow},
		{1, "tcp 8883 to segment brokers v6", frames.TCP(v6(dptest.Sensor), to("fd00::13"), 40000, 8883, true, nil), 1, pass, bpf.ReasonAllow},
		{1, "udp 5683 to device cam", frames.UDP(v4(dptest.Sensor), to("10.0.0.11"), 40000, 5683, nil), 1, pass, bpf.ReasonAllow},
		{1, "dns service to gateway", frames.UDP(cam4, gw4, 40000, 53, nil), 1, pass, bpf.ReasonAllow},
		{1, "dns service to gateway v6 tcp", frames.TCP(cam6, gw6, 40000, 53, true, nil), 1, pass, bpf.ReasonAllow},
		{1, "ntp service to gateway", frames.UDP(cam4, gw4, 40000, 123, nil), 1, pass, bpf.ReasonAllow},
		{1, "icmp echo to gateway", frames.Echo(cam4, gw4), 1, pass, bpf.ReasonAllow},
		{1, "icmpv6 echo to gateway", frames.Echo(cam6, gw6), 1, pass, bpf.ReasonAllow},
		{1, "udp 53 to ::/0 v6", frames.UDP(v6(dptest.Broker), to("2001:db8::53"), 40000, 53, nil), 1, pass, bpf.ReasonAllow},
		{1, "pinned device on its port", frames.UDP(v4(dptest.Pinned), gw4, 40000, 9999, nil), dptest.IfLoopback, pass, bpf.ReasonAllow},
		{1, "any-protocol rule, sctp", frames.IPv4(v4(dptest.AnyProto), to("198.51.100.7"), 132, 1, 0, nil, udp443), 1, pass, bpf.ReasonAllow},
		// 2: bound device, forbidden port or destination.
		{2, "tcp 80 to allowed cidr", frames.TCP(cam4, web4, 40000, 80, true, nil), 1, drop, bpf.ReasonNoRule},
		{2, "tcp 80 to allowed cidr v6", frames.TCP(cam6, web6, 40000, 80, true, nil), 1, drop, bpf.ReasonNoRule},
		{2, "tcp 443 outside the cidr", frames.TCP(cam4, to("203.0.114.5"), 40000, 443, true, nil), 1, drop, bpf.ReasonNoRule},
		{2, "udp 443 where only tcp is allowed", frames.UDP(cam4, web4, 40000, 443, nil), 1, drop, bpf.ReasonNoRule},
		{2, "lateral cam to sensor", frames.TCP(cam4, to("10.0.0.12"), 40000, 8883, true, nil), 1, drop, bpf.ReasonNoRule},
		{2, "lateral sensor to cam, wrong port", frames.UDP(v4(dptest.Sensor), to("10.0.0.11"), 40000, 5684, nil), 1, drop, bpf.ReasonNoRule},
		{2, "::/0 rule does not cover IPv4", frames.UDP(v4(dptest.Broker), to("8.8.8.8"), 40000, 53, nil), 1, drop, bpf.ReasonNoRule},
		{2, "audit device: would drop, passes as audit", frames.UDP(v4(dptest.Auditor), web4, 40000, 80, nil), 1, audit, bpf.ReasonNoRule},
		// 3: unknown source MAC.
		{3, "unknown mac", frames.UDP(withMAC(cam4, "02:00:00:00:00:99"), gw4, 40000, 53, nil), 1, drop, bpf.ReasonUnknownDevice},
		{3, "unknown mac v6", frames.UDP(withMAC(cam6, "02:00:00:00:00:99"), gw6, 40000, 53, nil), 1, drop, bpf.ReasonUnknownDevice},
		// 4 (also N): a MAC bound to another port.
		{4, "mac bound to another port", frames.UDP(v4(dptest.Ghost), gw4, 40000, 53, nil), dptest.IfLoopback, drop, bpf.ReasonSpoofMACPort},
		// 5: source address not bound to the device.
		{5, "another device's address", frames.UDP(withIP(cam4, "10.0.0.12"), gw4, 40000, 53, nil), 1, drop, bpf.ReasonSpoofIP},
		{5, "unassigned address", frames.UDP(withIP(cam4, "10.0.0.99"), gw4, 40000, 53, nil), 1, drop, bpf.ReasonSpoofIP},
		{5, "another device's address v6", frames.UDP(withIP(cam6, "fd00::12"), gw6, 40000, 53, nil), 1, drop, bpf.ReasonSpoofIP},
		{5, "unassigned address v6", frames.UDP(withIP(cam6, "fd00::99"), gw6, 40000, 53, nil), 1, drop, bpf.ReasonSpoofIP},
	}
	// 6: special sources.
	for _, ip := range []string{"10.0.0.1", "127.0.0.1", "255.255.255.255", "224.0.0.5", "240.0.0.1", "::1", "ff02::1", "fd00::1", "::ffff:10.0.0.11"} {
		src := withIP(cam4, ip)
		dst := gw4
		if src.IP.Is6() {
			dst = gw6
		}
		cs = append(cs, threatCase{6, "special source " + ip, frames.UDP(src, dst, 40000, 53, nil), 1, drop, bpf.ReasonSpoofIP})
	}
	cs = append(cs,
		threatCase{6, "0.0.0.0 outside dhcp", frames.UDP(unspec, gw4, 40000, 53, nil), 1, drop, bpf.ReasonSpoofIP},
		threatCase{6, ":: outside dad", frames.UDP(withIP(cam6, "::"), gw6, 40000, 53, nil), 1, drop, bpf.ReasonSpoofIP},
	)
	// 7: L2 sanity.
	for _, mac := range []string{"01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "33:33:00:00:00:01"} {
		cs = append(cs, threatCase{7, "source mac " + mac, frames.UDP(withMAC(cam4, mac), gw4, 40000, 53, nil), 1, drop, bpf.ReasonBadL2Src})
	}
	cs = append(cs, threatCase{7, "source mac == destination", frames.UDP(cam4, frames.Host{MAC: cam4.MAC, IP: gw4.IP}, 40000, 53, nil), 1, drop, bpf.ReasonBadL2Src})
	// 8, 9: ARP.
	cs = append(cs,
		threatCase{8, "arp request from the device", frames.ARP(cam4, 1, cam4.MAC, cam4.IP, gw4.IP), 1, pass, bpf.ReasonAllow},
		threatCase{8, "arp reply from the device", frames.ARP(cam4, 2, cam4.MAC, cam4.IP, gw4.IP), 1, pass, bpf.ReasonAllow},
		threatCase{8, "arp probe from 0.0.0.0", frames.ARP(cam4, 1, cam4.MAC, netip.IPv4Unspecified(), cam4.IP), 1, pass, bpf.ReasonAllow},
		threatCase{8, "arp reply from 0.0.0.0", frames.ARP(cam4, 2, cam4.MAC, netip.IPv4Unspecified(), gw4.IP), 1, drop, bpf.ReasonARPSpoof},
		threatCase{8, "arp reply claiming another device's ip", frames.ARP(cam4, 2, cam4.MAC, netip.MustParseAddr("10.0.0.12"), gw4.IP), 1, drop, bpf.ReasonARPSpoof},
		threatCase{8, "arp claiming the gateway's ip", frames.ARP(cam4, 2, cam4.MAC, gw4.IP, gw4.IP), 1, drop, bpf.ReasonARPSpoof},
		threatCase{8, "arp sender mac differs from ethernet source", frames.ARP(cam4, 1, v4(dptest.Sensor).MAC, cam4.IP, gw4.IP), 1, drop, bpf.ReasonARPSpoof},
		threatCase{9, "gratuitous arp for a foreign ip", frames.ARP(cam4, 1, cam4.MAC, netip.MustParseAddr("10.0.0.99"), netip.MustParseAddr("10.0.0.99")), 1, drop, bpf.ReasonARPSpoof},
		threatCase{20, "arp with a bad hardware type", set16(frames.ARP(cam4, 1, cam4.MAC, cam4.IP, gw4.IP), 14, 6), 1, drop, bpf.ReasonMalformed},
	)
	// 11: router advertisements and redirects.
	ra := []byte{134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	cs = append(cs,
		threatCase{11, "router advertisement", frames.ICMP(cam6, to("ff02::1"), 134, 0, make([]byte, 12)), 1, drop, bpf.ReasonRouterGuard},
		threatCase{11, "router advertisement behind hbh and destopts", frames.IPv6(cam6, to("ff02::1"), 0, cat(frames.Opts(60), frames.Opts(58), ra)), 1, drop, bpf.ReasonRouterGuard},
		threatCase{11, "router advertisement, first fragment", frames.IPv6(cam6, to("ff02::1"), 44, cat(frames.Frag6(58, 0, true, 7), ra)), 1, drop, bpf.ReasonRouterGuard},
		threatCase{11, "router advertisement, later fragment alone", frames.IPv6(cam6, to("ff02::1"), 44, cat(frames.Frag6(58, 16, false, 8), ra)), 1, drop, bpf.ReasonFragNoState},
		threatCase{11, "icmp redirect", frames.ICMP(cam4, gw4, 5, 1, make([]byte, 32)), 1, drop, bpf.ReasonRouterGuard},
		threatCase{11, "icmpv6 redirect", frames.ICMP(cam6, gw6, 137, 0, make([]byte, 36)), 1, drop, bpf.ReasonRouterGuard},
		threatCase{11, "icmp router advertisement", frames.ICMP(cam4, to("224.0.0.1"), 9, 0, make([]byte, 12)), 1, drop, bpf.ReasonRouterGuard},
	)
	// 12: neighbour discovery.
	cs = append(cs,
		threatCase{12, "na for the device's own address", frames.NA(cam6, gw6, cam6.IP), 1, pass, bpf.ReasonAllow},
		threatCase{12, "na for another device's address", frames.NA(cam6, gw6, netip.MustParseAddr("fd00::12")), 1, drop, bpf.ReasonNDSpoof},
		threatCase{12, "na for the gateway's address", frames.NA(cam6, to("ff02::1"), gw6.IP), 1, drop, bpf.ReasonNDSpoof},
		threatCase{12, "dad ns from ::", frames.ICMP(withIP(cam6, "::"), to("ff02::1:ff00:11"), 135, 0, cat(make([]byte, 4), cam6.IP.AsSlice())), 1, pass, bpf.ReasonAllow},
		threatCase{12, "na from ::", frames.NA(withIP(cam6, "::"), to("ff02::1"), cam6.IP), 1, drop, bpf.ReasonSpoofIP},
		threatCase{12, "router solicitation", frames.ICMP(cam6, to("ff02::2"), 133, 0, make([]byte, 4)), 1, pass, bpf.ReasonAllow},
		threatCase{20, "na cut before its target", frames.ICMP(cam6, gw6, 136, 0, make([]byte, 8)), 1, drop, bpf.ReasonTruncated},
	)
	// 13-15: DHCP.
	cs = append(cs,
		threatCase{13, "dhcp server reply from a device", dhcp(cam4, bcast, layers.DHCPOpReply, cam4.MAC, 67, 68), 1, drop, bpf.ReasonDHCPServer},
		threatCase{13, "bootreply to the server port", dhcp(cam4, gw4, layers.DHCPOpReply, cam4.MAC, 68, 67), 1, drop, bpf.ReasonDHCPServer},
		threatCase{13, "dhcpv6 server message from a device", frames.UDP(cam6, to("fd00::12"), 547, 546, make([]byte, 8)), 1, drop, bpf.ReasonDHCPServer},
		threatCase{14, "dhcp request, chaddr is another mac", dhcp(unspec, bcast, layers.DHCPOpRequest, v4(dptest.Sensor).MAC, 68, 67), 1, drop, bpf.ReasonDHCPChaddr},
		threatCase{14, "dhcp request from a bound address, chaddr differs", dhcp(cam4, gw4, layers.DHCPOpRequest, v4(dptest.Sensor).MAC, 68, 67), 1, drop, bpf.ReasonDHCPChaddr},
		threatCase{15, "dhcp bootstrap 0.0.0.0:68 to broadcast:67", dhcp(unspec, bcast, layers.DHCPOpRequest, cam4.MAC, 68, 67), 1, pass, bpf.ReasonAllow},
		threatCase{15, "dhcp renew to the gateway", dhcp(cam4, gw4, layers.DHCPOpRequest, cam4.MAC, 68, 67), 1, pass, bpf.ReasonAllow},
		threatCase{15, "0.0.0.0:68 to broadcast:68", frames.UDP(unspec, bcast, 68, 68, make([]byte, 300)), 1, drop, bpf.ReasonSpoofIP},
		threatCase{15, "0.0.0.0:68 to another host:67", dhcp(unspec, to("10.0.0.12"), layers.DHCPOpRequest, cam4.MAC, 68, 67), 1, drop, bpf.ReasonSpoofIP},
		threatCase{15, "dhcpv6 solicit to ff02::1:2", frames.UDP(cam6, to("ff02::1:2"), 546, 547, make([]byte, 8)), 1, pass, bpf.ReasonAllow},
		threatCase{20, "dhcp request cut before chaddr", frames.UDP(cam4, gw4, 68, 67, make([]byte, 20)), 1, drop, bpf.ReasonTruncated},
	)
	// 16-18: VLAN.
	tagged := v4(dptest.Tagged)
	cs = append(cs,
		threatCase{16, "802.1q tag on an untagged device", frames.VLAN(frames.UDP(cam4, gw4, 40000, 53, nil), 0x8100, 10), 1, drop, bpf.ReasonVLANDenied},
		threatCase{16, "tagged device with its vid", frames.VLAN(frames.UDP(tagged, gw4, 40000, 53, nil), 0x8100, 20), 1, pass, bpf.ReasonAllow},
		threatCase{16, "tagged device with another vid", frames.VLAN(frames.UDP(tagged, gw4, 40000, 53, nil), 0x8100, 21), 1, drop, bpf.ReasonVLANDenied},
		threatCase{16, "tagged device untagged", frames.UDP(tagged, gw4, 40000, 53, nil), 1, drop, bpf.ReasonVLANDenied},
		threatCase{17, "priority tag around a forbidden packet", frames.VLAN(frames.TCP(cam4, web4, 40000, 80, true, nil), 0x8100, 0), 1, drop, bpf.ReasonNoRule},
		threatCase{17, "priority tag around an allowed packet", frames.VLAN(frames.TCP(cam4, web4, 40000, 443, true, nil), 0x8100, 0x6000), 1, pass, bpf.ReasonAllow},
		threatCase{18, "802.1ad outer tag", frames.VLAN(frames.VLAN(frames.UDP(cam4, gw4, 40000, 53, nil), 0x8100, 0), 0x88a8, 0), 1, drop, bpf.ReasonVLANDenied},
		threatCase{18, "two 802.1q tags", frames.VLAN(frames.VLAN(frames.UDP(cam4, gw4, 40000, 53, nil), 0x8100, 0), 0x8100, 0), 1, drop, bpf.ReasonVLANDenied},
		threatCase{18, "old qinq tpid 0x9100", frames.VLAN(frames.UDP(cam4, gw4, 40000, 53, nil), 0x9100, 0), 1, drop, bpf.ReasonVLANDenied},
		threatCase{18, "truncated tag", frames.VLAN(frames.UDP(cam4, gw4, 40000, 53, nil), 0x8100, 0)[:16], 1, drop, bpf.ReasonTruncated},
	)
	// 19: non-IP ethertypes.
	for _, et := range []uint16{0x88cc, 0x8863, 0x8864, 0x8847, 0x0040, 0x05dc, 0x888e} {
		cs = append(cs, threatCase{19, "ethertype " + hex16(et), set16(frames.UDP(cam4, gw4, 40000, 53, nil), 12, et), 1, drop, bpf.ReasonEthertypeDenied})
	}
	// 21: IPv4 version / IHL.
	cs = append(cs,
		threatCase{21, "ihl 4", set(frames.UDP(cam4, gw4, 40000, 53, nil), 14, 0x44), 1, drop, bpf.ReasonMalformed},
		threatCase{21, "ihl 0", set(frames.UDP(cam4, gw4, 40000, 53, nil), 14, 0x40), 1, drop, bpf.ReasonMalformed},
		threatCase{21, "version 6 under 0x0800", set(frames.UDP(cam4, gw4, 40000, 53, nil), 14, 0x65), 1, drop, bpf.ReasonMalformed},
		threatCase{21, "version 4 under 0x86dd", set(frames.UDP(cam6, gw6, 40000, 53, nil), 14, 0x45), 1, drop, bpf.ReasonMalformed},
		threatCase{21, "ihl beyond the frame", set(frames.IPv4(cam4, gw4, 17, 1, 0, nil, nil), 14, 0x4f), 1, drop, bpf.ReasonTruncated},
	)
	// 22-23: IPv4 options.
	alert443 := []byte{0x94, 0x04, 0x01, 0xbb} // router alert whose bytes read as port 443 at offset 22
	cs = append(cs,
		threatCase{22, "options shaped like port 443, real port 80", frames.IPv4(cam4, web4, 6, 1, 0, alert443, tcp80), 1, drop, bpf.ReasonNoRule},
		threatCase{22, "options, real port 443", frames.IPv4(cam4, web4, 6, 1, 0, alert443, tcp443), 1, pass, bpf.ReasonAllow},
		threatCase{23, "loose source route", frames.IPv4(cam4, web4, 6, 1, 0, []byte{0x83, 7, 4, 10, 0, 0, 1}, tcp443), 1, drop, bpf.ReasonIPOptions},
		threatCase{23, "strict source route", frames.IPv4(cam4, web4, 6, 1, 0, []byte{1, 0x89, 7, 4, 10, 0, 0, 1}, tcp443), 1, drop, bpf.ReasonIPOptions},
		threatCase{23, "option length past the header", frames.IPv4(cam4, web4, 6, 1, 0, []byte{0x94, 12, 0, 0}, tcp443), 1, drop, bpf.ReasonMalformed},
		threatCase{23, "option length 1", frames.IPv4(cam4, web4, 6, 1, 0, []byte{0x94, 1, 0, 0}, tcp443), 1, drop, bpf.ReasonMalformed},
	)
	// 24: length lies.
	good := frames.UDP(cam4, gw4, 40000, 53, []byte("x"))
	cs = append(cs,
		threatCase{24, "total length beyond the frame", set16(good, 16, uint16(len(good))), 1, drop, bpf.ReasonMalformed},
		threatCase{24, "total length below the header", set16(good, 16, 19), 1, drop, bpf.ReasonMalformed},
		threatCase{24, "udp length 7", set16(good, 38, 7), 1, drop, bpf.ReasonMalformed},
		threatCase{24, "tcp data offset 4", frames.IPv4(cam4, web4, 6, 1, 0, nil, frames.TCPHeader(1, 443, 4, 2)), 1, drop, bpf.ReasonMalformed},
		threatCase{24, "tcp data offset past the datagram", frames.IPv4(cam4, web4, 6, 1, 0, nil, frames.TCPHeader(1, 443, 15, 2)), 1, drop, bpf.ReasonTruncated},
		threatCase{24, "ipv6 payload length beyond the frame", set16(frames.UDP(cam6, gw6, 40000, 53, nil), 18, 200), 1, drop, bpf.ReasonMalformed},
		threatCase{24, "ipv6 payload length short of the udp header", set16(frames.UDP(cam6, gw6, 40000, 53, nil), 18, 4), 1, drop, bpf.ReasonTruncated},
	)
	// 25, 27-29: IPv4 fragments (the stateful ones run as sequences in TestFragmentSequences).
	cs = append(cs,
		threatCase{25, "later fragment alone, shaped like udp 443", frames.IPv4(cam4, web4, 17, 77, 1, nil, udp443), 1, drop, bpf.ReasonFragNoState},
		threatCase{28, "tiny first fragment splitting the tcp header", frames.IPv4(cam4, web4, 6, 78, 0x2000, nil, tcp443[:8]), 1, drop, bpf.ReasonFragTiny},
		threatCase{28, "first fragment with 4 bytes of udp", frames.IPv4(cam4, gw4, 17, 79, 0x2000, nil, udp443[:4]), 1, drop, bpf.ReasonFragTiny},
	)
	// 31-35: IPv6 extension headers and fragments.
	udp53 := frames.UDPHeader(40000, 53, []byte("query"))
	cs = append(cs,
		threatCase{31, "atomic fragment of an allowed flow", frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(17, 0, false, 9), udp53)), 1, pass, bpf.ReasonAllow},
		threatCase{31, "first fragment without the upper-layer header", frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(60, 0, true, 10), []byte{17, 1, 0, 0, 0, 0, 0, 0})), 1, drop, bpf.ReasonTruncated},
		threatCase{31, "first fragment with 4 bytes of udp", frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(17, 0, true, 11), udp53[:4])), 1, drop, bpf.ReasonFragTiny},
		threatCase{31, "lone later fragment", frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(17, 8, false, 12), udp53)), 1, drop, bpf.ReasonFragNoState},
		threatCase{31, "two fragment headers", frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(44, 0, false, 13), frames.Frag6(17, 0, false, 13), udp53)), 1, drop, bpf.ReasonExtDenied},
		threatCase{32, "allowed flow behind hbh and destopts", frames.IPv6(cam6, web6, 0, cat(frames.Opts(60), frames.Opts(6), tcp443)), 1, pass, bpf.ReasonAllow},
		threatCase{32, "forbidden twin behind hbh and destopts", frames.IPv6(cam6, web6, 0, cat(frames.Opts(60), frames.Opts(6), tcp80)), 1, drop, bpf.ReasonNoRule},
		threatCase{32, "hop-by-hop not first", frames.IPv6(cam6, web6, 60, cat(frames.Opts(0), frames.Opts(6), tcp443)), 1, drop, bpf.ReasonExtDenied},
		threatCase{33, "eight destopts headers (the limit)", frames.IPv6(cam6, web6, 60, cat(chain(7), frames.Opts(6), tcp443)), 1, pass, bpf.ReasonAllow},
		threatCase{33, "nine destopts headers", frames.IPv6(cam6, web6, 60, cat(chain(8), frames.Opts(6), tcp443)), 1, drop, bpf.ReasonExtDenied},
		threatCase{34, "sctp shaped like tcp 443", frames.IPv6(cam6, web6, 132, tcp443), 1, drop, bpf.ReasonNoRule},
		threatCase{34, "esp shaped like tcp 443", frames.IPv6(cam6, web6, 50, tcp443), 1, drop, bpf.ReasonNoRule},
		threatCase{34, "no next header shaped like tcp 443", frames.IPv6(cam6, web6, 59, tcp443), 1, drop, bpf.ReasonNoRule},
		threatCase{34, "gre shaped like tcp 443", frames.IPv6(cam6, web6, 47, tcp443), 1, drop, bpf.ReasonEncapDenied},
		threatCase{34, "ipv4 sctp shaped like tcp 443", frames.IPv4(cam4, web4, 132, 1, 0, nil, tcp443), 1, drop, bpf.ReasonNoRule},
		threatCase{35, "routing header type 0", frames.IPv6(cam6, web6, 43, cat(frames.Routing(6, 0), tcp443)), 1, drop, bpf.ReasonExtDenied},
		threatCase{35, "segment routing header", frames.IPv6(cam6, web6, 0, cat(frames.Opts(43), frames.Routing(6, 4), tcp443)), 1, drop, bpf.ReasonExtDenied},
		threatCase{35, "truncated extension header", frames.IPv6(cam6, web6, 60, []byte{6, 0, 1}), 1, drop, bpf.ReasonTruncated},
		threatCase{35, "extension length byte 255", frames.IPv6(cam6, web6, 60, cat([]byte{6, 255, 1, 4, 0, 0, 0, 0}, tcp443)), 1, drop, bpf.ReasonTruncated},
	)
	// 36: tunnels.
	tun := v4(dptest.Tunneler)
	inner := frames.TCP(cam4, web4, 1, 80, true, nil)[14:]
	cs = append(cs,
		threatCase{36, "ip-in-ip", frames.IPv4(cam4, web4, 4, 1, 0, nil, inner), 1, drop, bpf.ReasonEncapDenied},
		threatCase{36, "6in4", frames.IPv4(cam4, web4, 41, 1, 0, nil, frames.TCP(cam6, web6, 1, 80, true, nil)[14:]), 1, drop, bpf.ReasonEncapDenied},
		threatCase{36, "gre", frames.IPv4(cam4, web4, 47, 1, 0, nil, cat([]byte{0, 0, 8, 0}, inner)), 1, drop, bpf.ReasonEncapDenied},
		threatCase{36, "gre to an explicit gre rule", frames.IPv4(tun, gw4, 47, 1, 0, nil, cat([]byte{0, 0, 8, 0}, inner)), 1, pass, bpf.ReasonAllow},
		threatCase{36, "ip-in-ip where only gre is named", frames.IPv4(tun, gw4, 4, 1, 0, nil, inner), 1, drop, bpf.ReasonEncapDenied},
		threatCase{36, "vxlan to an explicit udp 4789 rule", frames.UDP(tun, gw4, 40000, 4789, inner), 1, pass, bpf.ReasonAllow},
		threatCase{36, "geneve where only vxlan is named", frames.UDP(tun, gw4, 40000, 6081, inner), 1, drop, bpf.ReasonEncapDenied},
		threatCase{36, "gre under an any-protocol rule", frames.IPv4(v4(dptest.AnyProto), to("198.51.100.7"), 47, 1, 0, nil, inner), 1, drop, bpf.ReasonEncapDenied},
		threatCase{36, "vxlan under an any-protocol rule", frames.UDP(v4(dptest.AnyProto), to("198.51.100.7"), 1, 4789, inner), 1, drop, bpf.ReasonEncapDenied},
	)
	// 38: broadcast and multicast destinations.
	cs = append(cs,
		threatCase{38, "ssdp to 255.255.255.255", frames.UDP(cam4, bcast, 40000, 1900, nil), 1, drop, bpf.ReasonNoRule},
		threatCase{38, "mdns to 224.0.0.251", frames.UDP(cam4, to("224.0.0.251"), 5353, 5353, nil), 1, drop, bpf.ReasonNoRule},
		threatCase{38, "mdns to ff02::fb", frames.UDP(cam6, to("ff02::fb"), 5353, 5353, nil), 1, drop, bpf.ReasonNoRule},
	)
	// 38: a broadcast or multicast frame (a bridge floods it) passes a CIDR rule only when the
	// rule's prefix lies inside 224.0.0.0/4 or ff00::/8, whatever wider rules allow.
	wide4, wide6, mdns := v4(dptest.Wide), v6(dptest.Wide), v4(dptest.MDNS)
	group := func(mac, ip string) frames.Host { return withIP(withMAC(frames.Host{}, mac), ip) }
	cs = append(cs,
		threatCase{38, "0.0.0.0/0 udp 53: 255.255.255.255:53 to the broadcast mac", frames.UDP(wide4, group("ff:ff:ff:ff:ff:ff", "255.255.255.255"), 1, 53, nil), 1, drop, bpf.ReasonNoRule},
		threatCase{38, "0.0.0.0/0 udp 53: 224.0.0.1:53 to its group mac", frames.UDP(wide4, group("01:00:5e:00:00:01", "224.0.0.1"), 1, 53, nil), 1, drop, bpf.ReasonNoRule},
		threatCase{38, "::/0 udp 5353: ff02::1:5353 to its group mac", frames.UDP(wide6, group("33:33:00:00:00:01", "ff02::1"), 1, 5353, nil), 1, drop, bpf.ReasonNoRule},
		threatCase{38, "0.0.0.0/0 udp 53: unicast 8.8.8.8:53", frames.UDP(wide4, to("8.8.8.8"), 1, 53, nil), 1, pass, bpf.ReasonAllow},
		threatCase{38, "::/0 udp 5353: unicast 2001:db8::1:5353", frames.UDP(wide6, to("2001:db8::1"), 1, 5353, nil), 1, pass, bpf.ReasonAllow},
		threatCase{38, "224.0.0.251/32 udp 5353: mdns to its group mac", frames.UDP(mdns, group("01:00:5e:00:00:fb", "224.0.0.251"), 5353, 5353, nil), 1, pass, bpf.ReasonAllow},
		threatCase{38, "224.0.0.251/32 udp 5353: port 53 of 0.0.0.0/0 does not leak in", frames.UDP(mdns, group("01:00:5e:00:00:fb", "224.0.0.251"), 1, 53, nil), 1, drop, bpf.ReasonNoRule},
		threatCase{38, "224.0.0.251/32 udp 5353: another group", frames.UDP(mdns, group("01:00:5e:00:00:fc", "224.0.0.252"), 5353, 5353, nil), 1, drop, bpf.ReasonNoRule},
		threatCase{38, "255.255.255.255/32 udp 1900: ssdp to the broadcast mac", frames.UDP(mdns, group("ff:ff:ff:ff:ff:ff", "255.255.255.255"), 1, 1900, nil), 1, drop, bpf.ReasonNoRule},
		threatCase{38, "0.0.0.0/0 udp 53 next to 224.0.0.251/32: unicast 8.8.8.8:53", frames.UDP(mdns, to("8.8.8.8"), 1, 53, nil), 1, pass, bpf.ReasonAllow},
	)
	// 51: layer-2 lateral movement. The destination MAC must be the gateway's, the owner's of the
	// IP destination, or the group the IP destination maps to.
	sensor4, sensor6 := v4(dptest.Sensor), v6(dptest.Sensor)
	at := func(mac string, ip string) frames.Host { return withIP(withMAC(frames.Host{}, mac), ip) }
	sensorMAC, brokerMAC := sensor4.MAC.String(), v4(dptest.Broker).MAC.String()
	const bcastMAC, unknownMAC = "ff:ff:ff:ff:ff:ff", "02:00:00:00:99:99"
	ns := func(src, dst frames.Host, target string, opts ...byte) []byte {
		return frames.ICMP(src, dst, 135, 0, cat(make([]byte, 4), netip.MustParseAddr(target).AsSlice(), opts))
	}
	arpTo := func(mac []byte) []byte {
		return set(frames.ARP(cam4, 2, cam4.MAC, cam4.IP, netip.MustParseAddr("10.0.0.12")), 0, mac...)
	}
	cs = append(cs,
		threatCase{51, "upstream-allowed ip to another device's mac", frames.TCP(cam4, at(sensorMAC, "203.0.113.5"), 1, 443, true, nil), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "upstream-allowed ip to another device's mac v6", frames.TCP(cam6, at(sensorMAC, "2001:db8:443::5"), 1, 443, true, nil), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "upstream-allowed ip to the broadcast mac", frames.TCP(cam4, at(bcastMAC, "203.0.113.5"), 1, 443, true, nil), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "upstream-allowed ip to a multicast mac", frames.TCP(cam4, at("01:00:5e:00:00:fb", "203.0.113.5"), 1, 443, true, nil), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "upstream-allowed ip to an unknown unicast mac", frames.TCP(cam4, at(unknownMAC, "203.0.113.5"), 1, 443, true, nil), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "upstream-allowed ip to an unknown unicast mac v6", frames.TCP(cam6, at(unknownMAC, "2001:db8:443::5"), 1, 443, true, nil), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "upstream-allowed ip to the policy's router mac", frames.TCP(cam4, at(dptest.RouterMAC.String(), "203.0.113.5"), 1, 443, true, nil), 1, pass, bpf.ReasonAllow},
		threatCase{51, "lateral: device mac, its address, allowed", frames.UDP(sensor4, at(cam4.MAC.String(), "10.0.0.11"), 1, 5683, nil), 1, pass, bpf.ReasonAllow},
		threatCase{51, "lateral: device mac, its address, allowed v6", frames.UDP(sensor6, at(cam4.MAC.String(), "fd00::11"), 1, 5683, nil), 1, pass, bpf.ReasonAllow},
		threatCase{51, "lateral: device mac, its address, no rule", frames.TCP(cam4, at(sensorMAC, "10.0.0.12"), 1, 443, true, nil), 1, drop, bpf.ReasonNoRule},
		threatCase{51, "lateral: device mac, another device's allowed address", frames.UDP(sensor4, at(brokerMAC, "10.0.0.11"), 1, 5683, nil), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "lateral: device mac, the gateway's address", frames.UDP(cam4, at(sensorMAC, "10.0.0.1"), 1, 53, nil), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "later fragment to another device's mac", frames.IPv4(cam4, at(sensorMAC, "203.0.113.5"), 6, 77, 0x0001, nil, tcp443), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "spoofed source to an unknown mac stays spoof_ip", frames.TCP(withIP(cam4, "10.0.0.12"), at(unknownMAC, "203.0.113.5"), 1, 443, true, nil), 1, drop, bpf.ReasonSpoofIP},
		threatCase{51, "dhcp discover to the broadcast mac", dhcp(unspec, at(bcastMAC, "255.255.255.255"), layers.DHCPOpRequest, cam4.MAC, 68, 67), 1, pass, bpf.ReasonAllow},
		threatCase{51, "dhcp discover to an unknown mac", dhcp(unspec, at(unknownMAC, "255.255.255.255"), layers.DHCPOpRequest, cam4.MAC, 68, 67), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "dhcp discover to a device's mac", dhcp(unspec, at(sensorMAC, "255.255.255.255"), layers.DHCPOpRequest, cam4.MAC, 68, 67), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "dhcpv6 solicit to its group mac", frames.UDP(cam6, at("33:33:00:01:00:02", "ff02::1:2"), 546, 547, make([]byte, 8)), 1, pass, bpf.ReasonAllow},
		threatCase{51, "mdns to its group mac, no rule", frames.UDP(cam4, at("01:00:5e:00:00:fb", "224.0.0.251"), 5353, 5353, nil), 1, drop, bpf.ReasonNoRule},
		threatCase{51, "mdns to another group's mac", frames.UDP(cam4, at("01:00:5e:00:00:fc", "224.0.0.251"), 5353, 5353, nil), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "mdns v6 to another group's mac", frames.UDP(cam6, at("33:33:00:00:00:fc", "ff02::fb"), 5353, 5353, nil), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "ns to the solicited-node group mac", ns(cam6, at("33:33:ff:00:00:01", "ff02::1:ff00:1"), "fd00::1"), 1, pass, bpf.ReasonAllow},
		threatCase{51, "arp reply to a device's mac", arpTo(v4(dptest.Sensor).MAC), 1, pass, bpf.ReasonAllow},
		threatCase{51, "arp to a multicast mac", arpTo([]byte{1, 0, 0x5e, 0, 0, 1}), 1, drop, bpf.ReasonL2DstDenied},
		threatCase{51, "arp to an unknown mac", arpTo([]byte{2, 0, 0, 0, 0x99, 0x99}), 1, drop, bpf.ReasonL2DstDenied},
	)
	// 52: neighbour discovery passes without a rule only when it stays on the link.
	lladdr := func(typ uint8, mac net.HardwareAddr) []byte { return cat([]byte{typ, 1}, mac) }
	cs = append(cs,
		threatCase{52, "ns to a global upstream address", ns(cam6, to("2001:db8::1"), "2001:db8::1"), 1, drop, bpf.ReasonNoRule},
		threatCase{52, "ns with hop limit 64 to the solicited-node group", set(ns(cam6, to("ff02::1:ff00:1"), "fd00::1"), 14+7, 64), 1, drop, bpf.ReasonNoRule},
		threatCase{52, "na to another device's address through the gateway", frames.NA(cam6, to("fd00::12"), cam6.IP), 1, drop, bpf.ReasonNoRule},
		threatCase{52, "na to a device by its mac and address", frames.NA(cam6, at(sensorMAC, "fd00::12"), cam6.IP), 1, pass, bpf.ReasonAllow},
		threatCase{52, "ns to a link-local address", ns(cam6, to("fe80::1"), "fe80::1"), 1, pass, bpf.ReasonAllow},
		threatCase{52, "rs upstream", frames.ICMP(cam6, to("2001:db8::1"), 133, 0, make([]byte, 4)), 1, drop, bpf.ReasonNoRule},
		threatCase{52, "dad ns from :: to a global address", ns(withIP(cam6, "::"), to("2001:db8::1"), "2001:db8::1"), 1, drop, bpf.ReasonSpoofIP},
		threatCase{52, "ns to the gateway, not link scope, icmpv6 rule", set(ns(cam6, gw6, "fd00::1"), 14+7, 64), 1, pass, bpf.ReasonAllow},
	)
	// 53: neighbour discovery link-layer address options must name the Ethernet source.
	cs = append(cs,
		threatCase{53, "ns with its own source lladdr", ns(cam6, to("ff02::1:ff00:1"), "fd00::1", lladdr(1, cam6.MAC)...), 1, pass, bpf.ReasonAllow},
		threatCase{53, "ns with another device's source lladdr", ns(cam6, to("ff02::1:ff00:1"), "fd00::1", lladdr(1, sensor6.MAC)...), 1, drop, bpf.ReasonNDSpoof},
		threatCase{53, "na without lladdr", frames.NA(cam6, gw6, cam6.IP), 1, pass, bpf.ReasonAllow},
		threatCase{53, "na with another device's target lladdr", set(cat(frames.NA(cam6, gw6, cam6.IP), lladdr(2, sensor6.MAC)), 14+5, 32), 1, drop, bpf.ReasonNDSpoof},
		threatCase{53, "na, spoofed lladdr after a nonce option", set(cat(frames.NA(cam6, gw6, cam6.IP), []byte{14, 1, 1, 2, 3, 4, 5, 6}, lladdr(2, sensor6.MAC)), 14+5, 40), 1, drop, bpf.ReasonNDSpoof},
		threatCase{53, "rs with another device's source lladdr", frames.ICMP(cam6, to("ff02::2"), 133, 0, cat(make([]byte, 4), lladdr(1, sensor6.MAC))), 1, drop, bpf.ReasonNDSpoof},
		threatCase{53, "rs with its own source lladdr", frames.ICMP(cam6, to("ff02::2"), 133, 0, cat(make([]byte, 4), lladdr(1, cam6.MAC))), 1, pass, bpf.ReasonAllow},
		threatCase{53, "nd option of length 0", ns(cam6, to("ff02::1:ff00:1"), "fd00::1", 1, 0, 0, 0, 0, 0, 0, 0), 1, drop, bpf.ReasonMalformed},
		threatCase{53, "nd option past the datagram", ns(cam6, to("ff02::1:ff00:1"), "fd00::1", 1, 2, 2, 0, 0, 0, 0, 0x0b), 1, drop, bpf.ReasonMalformed},
		threatCase{53, "more nd options than the walk follows", ns(cam6, to("ff02::1:ff00:1"), "fd00::1", cat(chainOpts(9)...)...), 1, drop, bpf.ReasonMalformed},
		threatCase{53, "as many nd options as the walk follows", ns(cam6, to("ff02::1:ff00:1"), "fd00::1", cat(chainOpts(8)...)...), 1, pass, bpf.ReasonAllow},
	)
	// 54: audit mode does not cover identity failures unless the policy says so.
	ap, ai := v4(dptest.AuditPin), v4(dptest.AuditID)
	cs = append(cs,
		threatCase{54, "audit device's mac on another port", frames.UDP(ap, gw4, 1, 53, nil), 1, drop, bpf.ReasonSpoofMACPort},
		threatCase{54, "audit device, spoofed ip", frames.UDP(withIP(v4(dptest.Auditor), "10.0.0.11"), gw4, 1, 9, nil), 1, drop, bpf.ReasonSpoofIP},
		threatCase{54, "audit device, arp for a foreign ip", frames.ARP(v4(dptest.Auditor), 2, v4(dptest.Auditor).MAC, cam4.IP, gw4.IP), 1, drop, bpf.ReasonARPSpoof},
		threatCase{54, "audit device, no rule: still audit", frames.UDP(v4(dptest.Auditor), gw4, 1, 9, nil), 1, audit, bpf.ReasonNoRule},
		threatCase{54, "audit device, lateral to another device's mac: audit", frames.UDP(v4(dptest.Auditor), at(sensorMAC, "203.0.113.5"), 1, 9, nil), 1, audit, bpf.ReasonL2DstDenied},
		threatCase{54, "auditIdentity device, spoofed ip: audit", frames.UDP(withIP(ai, "10.0.0.11"), gw4, 1, 9, nil), 1, audit, bpf.ReasonSpoofIP},
	)
	// 24: UDP length lies.
	cs = append(cs,
		threatCase{24, "udp length past the datagram", set16(frames.UDP(cam4, gw4, 1, 53, make([]byte, 8)), 14+20+4, 17), 1, drop, bpf.ReasonMalformed},
		threatCase{24, "udp length past the datagram v6", set16(frames.UDP(cam6, gw6, 1, 53, make([]byte, 8)), 14+40+4, 17), 1, drop, bpf.ReasonMalformed},
		threatCase{24, "udp length short of the datagram", set16(frames.UDP(cam4, gw4, 1, 53, make([]byte, 8)), 14+20+4, 8), 1, pass, bpf.ReasonAllow},
		threatCase{24, "udp first fragment, length of the whole datagram", frames.IPv4(cam4, web4, 17, 78, 0x2000, nil, cat(frames.UDPHeader(1, 443, make([]byte, 64))[:8], make([]byte, 16))), 1, drop, bpf.ReasonNoRule},
	)
	// Quarantine.
	q := v4(dptest.Quar)
	cs = append(cs,
		threatCase{47, "quarantined: icmp to the gateway", frames.Echo(q, gw4), 1, pass, bpf.ReasonAllow},
		threatCase{47, "quarantined: dns service", frames.UDP(q, gw4, 1, 53, nil), 1, pass, bpf.ReasonAllow},
		threatCase{47, "quarantined: its segment's rule no longer applies", frames.TCP(q, web4, 1, 443, true, nil), 1, drop, bpf.ReasonQuarantined},
	)
	return cs
}

// chainOpts is n ND nonce options (8 bytes each).
func chainOpts(n int) [][]byte {
	var out [][]byte
	for range n {
		out = append(out, []byte{14, 1, 1, 2, 3, 4, 5, 6})
	}
	return out
}

// chain is n Destination Options headers each followed by another.
func chain(n int) []byte {
	var b []byte
	for range n {
		b = append(b, frames.Opts(60)...)
	}
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func hex16(v uint16) string {
	b := binary.BigEndian.AppendUint16(nil, v)
	const digits = "0123456789abcdef"
	return "0x" + string([]byte{digits[b[0]>>4], digits[b[0]&15], digits[b[1]>>4], digits[b[1]&15]})
}
