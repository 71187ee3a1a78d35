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

// threatCase is one U row of the project's threat matrix: a frame (arriving on the loopback
// device, the harness's port) and the verdict and reason the datapath must give.
type threatCase struct {
	row     int
	name    string
	frame   []byte
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

// at is a destination host: mac and ip.
func at(mac, ip string) frames.Host { return withIP(withMAC(frames.Host{}, mac), ip) }

// mdnsGroup is the mDNS group 224.0.0.251 at its group MAC.
var mdnsGroup = at("01:00:5e:00:00:fb", "224.0.0.251")

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
		{row: 1, name: "tcp 443 to allowed cidr", frame: frames.TCP(cam4, web4, 40000, 443, true, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "tcp 443 to allowed cidr v6", frame: frames.TCP(cam6, web6, 40000, 443, true, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "tcp 8883 to segment brokers",
			frame:   frames.TCP(v4(dptest.Sensor), to("10.0.0.13"), 40000, 8883, true, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "tcp 8883 to segment brokers v6",
			frame:   frames.TCP(v6(dptest.Sensor), to("fd00::13"), 40000, 8883, true, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "udp 5683 to device cam", frame: frames.UDP(v4(dptest.Sensor), to("10.0.0.11"), 40000, 5683, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "dns service to gateway", frame: frames.UDP(cam4, gw4, 40000, 53, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "dns service to gateway v6 tcp", frame: frames.TCP(cam6, gw6, 40000, 53, true, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "ntp service to gateway", frame: frames.UDP(cam4, gw4, 40000, 123, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "icmp echo to gateway", frame: frames.Echo(cam4, gw4), verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "icmpv6 echo to gateway", frame: frames.Echo(cam6, gw6), verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "udp 53 to ::/0 v6", frame: frames.UDP(v6(dptest.Broker), to("2001:db8::53"), 40000, 53, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "pinned device on its port", frame: frames.UDP(v4(dptest.Pinned), gw4, 40000, 9999, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		{row: 1, name: "any-protocol rule, sctp",
			frame:   frames.IPv4(v4(dptest.AnyProto), to("198.51.100.7"), 132, 1, 0, nil, udp443),
			verdict: pass, reason: bpf.ReasonAllow},
		// 2: bound device, forbidden port or destination.
		{row: 2, name: "tcp 80 to allowed cidr", frame: frames.TCP(cam4, web4, 40000, 80, true, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		{row: 2, name: "tcp 80 to allowed cidr v6", frame: frames.TCP(cam6, web6, 40000, 80, true, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		{row: 2, name: "tcp 443 outside the cidr", frame: frames.TCP(cam4, to("203.0.114.5"), 40000, 443, true, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		{row: 2, name: "udp 443 where only tcp is allowed", frame: frames.UDP(cam4, web4, 40000, 443, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		{row: 2, name: "lateral cam to sensor", frame: frames.TCP(cam4, to("10.0.0.12"), 40000, 8883, true, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		{row: 2, name: "lateral sensor to cam, wrong port",
			frame: frames.UDP(v4(dptest.Sensor), to("10.0.0.11"), 40000, 5684, nil), verdict: drop, reason: bpf.ReasonNoRule},
		{row: 2, name: "::/0 rule does not cover IPv4", frame: frames.UDP(v4(dptest.Broker), to("8.8.8.8"), 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		{row: 2, name: "audit device: would drop, passes as audit",
			frame: frames.UDP(v4(dptest.Auditor), web4, 40000, 80, nil), verdict: audit, reason: bpf.ReasonNoRule},
		// 3: unknown source MAC.
		{row: 3, name: "unknown mac", frame: frames.UDP(withMAC(cam4, "02:00:00:00:00:99"), gw4, 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonUnknownDevice},
		{row: 3, name: "unknown mac v6", frame: frames.UDP(withMAC(cam6, "02:00:00:00:00:99"), gw6, 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonUnknownDevice},
		// 4 (also N): a MAC bound to another port.
		{row: 4, name: "mac bound to another port", frame: frames.UDP(v4(dptest.Ghost), gw4, 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonSpoofMACPort},
		// 5: source address not bound to the device.
		{row: 5, name: "another device's address", frame: frames.UDP(withIP(cam4, "10.0.0.12"), gw4, 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonSpoofIP},
		{row: 5, name: "unassigned address", frame: frames.UDP(withIP(cam4, "10.0.0.99"), gw4, 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonSpoofIP},
		{row: 5, name: "another device's address v6", frame: frames.UDP(withIP(cam6, "fd00::12"), gw6, 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonSpoofIP},
		{row: 5, name: "unassigned address v6", frame: frames.UDP(withIP(cam6, "fd00::99"), gw6, 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonSpoofIP},
	}
	// 6: special sources.
	specials := []string{"10.0.0.1", "127.0.0.1", "255.255.255.255", "224.0.0.5", "240.0.0.1", "::1", "ff02::1",
		"fd00::1", "::ffff:10.0.0.11"}
	for _, ip := range specials {
		src := withIP(cam4, ip)
		dst := gw4
		if src.IP.Is6() {
			dst = gw6
		}
		cs = append(cs, threatCase{row: 6, name: "special source " + ip, frame: frames.UDP(src, dst, 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonSpoofIP})
	}
	cs = append(cs,
		threatCase{row: 6, name: "0.0.0.0 outside dhcp", frame: frames.UDP(unspec, gw4, 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonSpoofIP},
		threatCase{row: 6, name: ":: outside dad", frame: frames.UDP(withIP(cam6, "::"), gw6, 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonSpoofIP},
	)
	// 7: L2 sanity.
	for _, mac := range []string{"01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "33:33:00:00:00:01"} {
		cs = append(cs, threatCase{row: 7, name: "source mac " + mac,
			frame: frames.UDP(withMAC(cam4, mac), gw4, 40000, 53, nil), verdict: drop, reason: bpf.ReasonBadL2Src})
	}
	cs = append(cs, threatCase{row: 7, name: "source mac == destination",
		frame:   frames.UDP(cam4, frames.Host{MAC: cam4.MAC, IP: gw4.IP}, 40000, 53, nil),
		verdict: drop, reason: bpf.ReasonBadL2Src})
	// 8, 9: ARP.
	cs = append(cs,
		threatCase{row: 8, name: "arp request from the device", frame: frames.ARP(cam4, 1, cam4.MAC, cam4.IP, gw4.IP),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 8, name: "arp reply from the device", frame: frames.ARP(cam4, 2, cam4.MAC, cam4.IP, gw4.IP),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 8, name: "arp probe from 0.0.0.0",
			frame: frames.ARP(cam4, 1, cam4.MAC, netip.IPv4Unspecified(), cam4.IP), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 8, name: "arp reply from 0.0.0.0",
			frame: frames.ARP(cam4, 2, cam4.MAC, netip.IPv4Unspecified(), gw4.IP), verdict: drop, reason: bpf.ReasonARPSpoof},
		threatCase{row: 8, name: "arp reply claiming another device's ip",
			frame:   frames.ARP(cam4, 2, cam4.MAC, netip.MustParseAddr("10.0.0.12"), gw4.IP),
			verdict: drop, reason: bpf.ReasonARPSpoof},
		threatCase{row: 8, name: "arp claiming the gateway's ip", frame: frames.ARP(cam4, 2, cam4.MAC, gw4.IP, gw4.IP),
			verdict: drop, reason: bpf.ReasonARPSpoof},
		threatCase{row: 8, name: "arp sender mac differs from ethernet source",
			frame: frames.ARP(cam4, 1, v4(dptest.Sensor).MAC, cam4.IP, gw4.IP), verdict: drop, reason: bpf.ReasonARPSpoof},
		threatCase{row: 9, name: "gratuitous arp for a foreign ip",
			frame:   frames.ARP(cam4, 1, cam4.MAC, netip.MustParseAddr("10.0.0.99"), netip.MustParseAddr("10.0.0.99")),
			verdict: drop, reason: bpf.ReasonARPSpoof},
		threatCase{row: 20, name: "arp with a bad hardware type",
			frame: set16(frames.ARP(cam4, 1, cam4.MAC, cam4.IP, gw4.IP), 14, 6), verdict: drop, reason: bpf.ReasonMalformed},
	)
	// 11: router advertisements and redirects.
	ra := []byte{134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	cs = append(cs,
		threatCase{row: 11, name: "router advertisement", frame: frames.ICMP(cam6, to("ff02::1"), 134, 0, make([]byte, 12)),
			verdict: drop, reason: bpf.ReasonRouterGuard},
		threatCase{row: 11, name: "router advertisement behind hbh and destopts",
			frame:   frames.IPv6(cam6, to("ff02::1"), 0, cat(frames.Opts(60), frames.Opts(58), ra)),
			verdict: drop, reason: bpf.ReasonRouterGuard},
		threatCase{row: 11, name: "router advertisement, first fragment",
			frame:   frames.IPv6(cam6, to("ff02::1"), 44, cat(frames.Frag6(58, 0, true, 7), ra)),
			verdict: drop, reason: bpf.ReasonRouterGuard},
		threatCase{row: 11, name: "router advertisement, later fragment alone",
			frame:   frames.IPv6(cam6, to("ff02::1"), 44, cat(frames.Frag6(58, 16, false, 8), ra)),
			verdict: drop, reason: bpf.ReasonFragNoState},
		threatCase{row: 11, name: "icmp redirect", frame: frames.ICMP(cam4, gw4, 5, 1, make([]byte, 32)),
			verdict: drop, reason: bpf.ReasonRouterGuard},
		threatCase{row: 11, name: "icmpv6 redirect", frame: frames.ICMP(cam6, gw6, 137, 0, make([]byte, 36)),
			verdict: drop, reason: bpf.ReasonRouterGuard},
		threatCase{row: 11, name: "icmp router advertisement",
			frame: frames.ICMP(cam4, to("224.0.0.1"), 9, 0, make([]byte, 12)), verdict: drop, reason: bpf.ReasonRouterGuard},
	)
	// 12: neighbour discovery.
	cs = append(cs,
		threatCase{row: 12, name: "na for the device's own address", frame: frames.NA(cam6, gw6, cam6.IP),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 12, name: "na for another device's address",
			frame: frames.NA(cam6, gw6, netip.MustParseAddr("fd00::12")), verdict: drop, reason: bpf.ReasonNDSpoof},
		threatCase{row: 12, name: "na for the gateway's address", frame: frames.NA(cam6, to("ff02::1"), gw6.IP),
			verdict: drop, reason: bpf.ReasonNDSpoof},
		threatCase{row: 12, name: "dad ns from ::",
			frame:   frames.ICMP(withIP(cam6, "::"), to("ff02::1:ff00:11"), 135, 0, cat(make([]byte, 4), cam6.IP.AsSlice())),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 12, name: "na from ::", frame: frames.NA(withIP(cam6, "::"), to("ff02::1"), cam6.IP),
			verdict: drop, reason: bpf.ReasonSpoofIP},
		threatCase{row: 12, name: "router solicitation", frame: frames.ICMP(cam6, to("ff02::2"), 133, 0, make([]byte, 4)),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 20, name: "na cut before its target", frame: frames.ICMP(cam6, gw6, 136, 0, make([]byte, 8)),
			verdict: drop, reason: bpf.ReasonTruncated},
	)
	// 13-15: DHCP.
	cs = append(cs,
		threatCase{row: 13, name: "dhcp server reply from a device",
			frame: dhcp(cam4, bcast, layers.DHCPOpReply, cam4.MAC, 67, 68), verdict: drop, reason: bpf.ReasonDHCPServer},
		threatCase{row: 13, name: "bootreply to the server port",
			frame: dhcp(cam4, gw4, layers.DHCPOpReply, cam4.MAC, 68, 67), verdict: drop, reason: bpf.ReasonDHCPServer},
		threatCase{row: 13, name: "dhcpv6 server message from a device",
			frame: frames.UDP(cam6, to("fd00::12"), 547, 546, make([]byte, 8)), verdict: drop, reason: bpf.ReasonDHCPServer},
		threatCase{row: 14, name: "dhcp request, chaddr is another mac",
			frame:   dhcp(unspec, bcast, layers.DHCPOpRequest, v4(dptest.Sensor).MAC, 68, 67),
			verdict: drop, reason: bpf.ReasonDHCPChaddr},
		threatCase{row: 14, name: "dhcp request from a bound address, chaddr differs",
			frame:   dhcp(cam4, gw4, layers.DHCPOpRequest, v4(dptest.Sensor).MAC, 68, 67),
			verdict: drop, reason: bpf.ReasonDHCPChaddr},
		threatCase{row: 15, name: "dhcp bootstrap 0.0.0.0:68 to broadcast:67",
			frame: dhcp(unspec, bcast, layers.DHCPOpRequest, cam4.MAC, 68, 67), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 15, name: "dhcp renew to the gateway", frame: dhcp(cam4, gw4, layers.DHCPOpRequest, cam4.MAC, 68, 67),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 15, name: "0.0.0.0:68 to broadcast:68", frame: frames.UDP(unspec, bcast, 68, 68, make([]byte, 300)),
			verdict: drop, reason: bpf.ReasonSpoofIP},
		threatCase{row: 15, name: "0.0.0.0:68 to another host:67",
			frame:   dhcp(unspec, to("10.0.0.12"), layers.DHCPOpRequest, cam4.MAC, 68, 67),
			verdict: drop, reason: bpf.ReasonSpoofIP},
		threatCase{row: 15, name: "dhcpv6 solicit to ff02::1:2",
			frame: frames.UDP(cam6, to("ff02::1:2"), 546, 547, make([]byte, 8)), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 20, name: "dhcp request cut before chaddr", frame: frames.UDP(cam4, gw4, 68, 67, make([]byte, 20)),
			verdict: drop, reason: bpf.ReasonTruncated},
	)
	// 16-18: VLAN.
	tagged := v4(dptest.Tagged)
	cs = append(cs,
		threatCase{row: 16, name: "802.1q tag on an untagged device",
			frame: frames.VLAN(frames.UDP(cam4, gw4, 40000, 53, nil), 0x8100, 10), verdict: drop, reason: bpf.ReasonVLANDenied},
		threatCase{row: 16, name: "tagged device with its vid",
			frame: frames.VLAN(frames.UDP(tagged, gw4, 40000, 53, nil), 0x8100, 20), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 16, name: "tagged device with another vid",
			frame:   frames.VLAN(frames.UDP(tagged, gw4, 40000, 53, nil), 0x8100, 21),
			verdict: drop, reason: bpf.ReasonVLANDenied},
		threatCase{row: 16, name: "tagged device untagged", frame: frames.UDP(tagged, gw4, 40000, 53, nil),
			verdict: drop, reason: bpf.ReasonVLANDenied},
		threatCase{row: 17, name: "priority tag around a forbidden packet",
			frame:   frames.VLAN(frames.TCP(cam4, web4, 40000, 80, true, nil), 0x8100, 0),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 17, name: "priority tag around an allowed packet",
			frame:   frames.VLAN(frames.TCP(cam4, web4, 40000, 443, true, nil), 0x8100, 0x6000),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 18, name: "802.1ad outer tag",
			frame:   frames.VLAN(frames.VLAN(frames.UDP(cam4, gw4, 40000, 53, nil), 0x8100, 0), 0x88a8, 0),
			verdict: drop, reason: bpf.ReasonVLANDenied},
		threatCase{row: 18, name: "two 802.1q tags",
			frame:   frames.VLAN(frames.VLAN(frames.UDP(cam4, gw4, 40000, 53, nil), 0x8100, 0), 0x8100, 0),
			verdict: drop, reason: bpf.ReasonVLANDenied},
		threatCase{row: 18, name: "old qinq tpid 0x9100",
			frame: frames.VLAN(frames.UDP(cam4, gw4, 40000, 53, nil), 0x9100, 0), verdict: drop, reason: bpf.ReasonVLANDenied},
		threatCase{row: 18, name: "truncated tag", frame: frames.VLAN(frames.UDP(cam4, gw4, 40000, 53, nil), 0x8100, 0)[:16],
			verdict: drop, reason: bpf.ReasonTruncated},
	)
	// 19: non-IP ethertypes.
	for _, et := range []uint16{0x88cc, 0x8863, 0x8864, 0x8847, 0x0040, 0x05dc, 0x888e} {
		cs = append(cs, threatCase{row: 19, name: "ethertype " + hex16(et),
			frame: set16(frames.UDP(cam4, gw4, 40000, 53, nil), 12, et), verdict: drop, reason: bpf.ReasonEthertypeDenied})
	}
	// 21: IPv4 version / IHL.
	cs = append(cs,
		threatCase{row: 21, name: "ihl 4", frame: set(frames.UDP(cam4, gw4, 40000, 53, nil), 14, 0x44),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 21, name: "ihl 0", frame: set(frames.UDP(cam4, gw4, 40000, 53, nil), 14, 0x40),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 21, name: "version 6 under 0x0800", frame: set(frames.UDP(cam4, gw4, 40000, 53, nil), 14, 0x65),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 21, name: "version 4 under 0x86dd", frame: set(frames.UDP(cam6, gw6, 40000, 53, nil), 14, 0x45),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 21, name: "ihl beyond the frame", frame: set(frames.IPv4(cam4, gw4, 17, 1, 0, nil, nil), 14, 0x4f),
			verdict: drop, reason: bpf.ReasonTruncated},
	)
	// 22-23: IPv4 options.
	alert443 := []byte{0x94, 0x04, 0x01, 0xbb} // router alert whose bytes read as port 443 at offset 22
	cs = append(cs,
		threatCase{row: 22, name: "options shaped like port 443, real port 80",
			frame: frames.IPv4(cam4, web4, 6, 1, 0, alert443, tcp80), verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 22, name: "options, real port 443", frame: frames.IPv4(cam4, web4, 6, 1, 0, alert443, tcp443),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 23, name: "loose source route",
			frame:   frames.IPv4(cam4, web4, 6, 1, 0, []byte{0x83, 7, 4, 10, 0, 0, 1}, tcp443),
			verdict: drop, reason: bpf.ReasonIPOptions},
		threatCase{row: 23, name: "strict source route",
			frame:   frames.IPv4(cam4, web4, 6, 1, 0, []byte{1, 0x89, 7, 4, 10, 0, 0, 1}, tcp443),
			verdict: drop, reason: bpf.ReasonIPOptions},
		threatCase{row: 23, name: "option length past the header",
			frame: frames.IPv4(cam4, web4, 6, 1, 0, []byte{0x94, 12, 0, 0}, tcp443), verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 23, name: "option length 1", frame: frames.IPv4(cam4, web4, 6, 1, 0, []byte{0x94, 1, 0, 0}, tcp443),
			verdict: drop, reason: bpf.ReasonMalformed},
	)
	// 24: length lies.
	good := frames.UDP(cam4, gw4, 40000, 53, []byte("x"))
	cs = append(cs,
		threatCase{row: 24, name: "total length beyond the frame", frame: set16(good, 16, uint16(len(good))),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 24, name: "total length below the header", frame: set16(good, 16, 19),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 24, name: "udp length 7", frame: set16(good, 38, 7), verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 24, name: "tcp data offset 4",
			frame:   frames.IPv4(cam4, web4, 6, 1, 0, nil, frames.TCPHeader(1, 443, 4, 2)),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 24, name: "tcp data offset past the datagram",
			frame:   frames.IPv4(cam4, web4, 6, 1, 0, nil, frames.TCPHeader(1, 443, 15, 2)),
			verdict: drop, reason: bpf.ReasonTruncated},
		threatCase{row: 24, name: "ipv6 payload length beyond the frame",
			frame: set16(frames.UDP(cam6, gw6, 40000, 53, nil), 18, 200), verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 24, name: "ipv6 payload length short of the udp header",
			frame: set16(frames.UDP(cam6, gw6, 40000, 53, nil), 18, 4), verdict: drop, reason: bpf.ReasonTruncated},
	)
	// 25, 27-29: IPv4 fragments (the stateful ones run as sequences in TestFragmentSequences).
	cs = append(cs,
		threatCase{row: 25, name: "later fragment alone, shaped like udp 443",
			frame: frames.IPv4(cam4, web4, 17, 77, 1, nil, udp443), verdict: drop, reason: bpf.ReasonFragNoState},
		threatCase{row: 28, name: "tiny first fragment splitting the tcp header",
			frame: frames.IPv4(cam4, web4, 6, 78, 0x2000, nil, tcp443[:8]), verdict: drop, reason: bpf.ReasonFragTiny},
		threatCase{row: 28, name: "first fragment with 4 bytes of udp",
			frame: frames.IPv4(cam4, gw4, 17, 79, 0x2000, nil, udp443[:4]), verdict: drop, reason: bpf.ReasonFragTiny},
	)
	// 31-35: IPv6 extension headers and fragments.
	udp53 := frames.UDPHeader(40000, 53, []byte("query"))
	cs = append(cs,
		threatCase{row: 31, name: "atomic fragment of an allowed flow",
			frame:   frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(17, 0, false, 9), udp53)),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 31, name: "first fragment without the upper-layer header",
			frame:   frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(60, 0, true, 10), []byte{17, 1, 0, 0, 0, 0, 0, 0})),
			verdict: drop, reason: bpf.ReasonTruncated},
		threatCase{row: 31, name: "first fragment with 4 bytes of udp",
			frame:   frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(17, 0, true, 11), udp53[:4])),
			verdict: drop, reason: bpf.ReasonFragTiny},
		threatCase{row: 31, name: "lone later fragment",
			frame:   frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(17, 8, false, 12), udp53)),
			verdict: drop, reason: bpf.ReasonFragNoState},
		threatCase{row: 31, name: "two fragment headers",
			frame:   frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(44, 0, false, 13), frames.Frag6(17, 0, false, 13), udp53)),
			verdict: drop, reason: bpf.ReasonExtDenied},
		threatCase{row: 32, name: "allowed flow behind hbh and destopts",
			frame:   frames.IPv6(cam6, web6, 0, cat(frames.Opts(60), frames.Opts(6), tcp443)),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 32, name: "forbidden twin behind hbh and destopts",
			frame:   frames.IPv6(cam6, web6, 0, cat(frames.Opts(60), frames.Opts(6), tcp80)),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 32, name: "hop-by-hop not first",
			frame:   frames.IPv6(cam6, web6, 60, cat(frames.Opts(0), frames.Opts(6), tcp443)),
			verdict: drop, reason: bpf.ReasonExtDenied},
		threatCase{row: 33, name: "eight destopts headers (the limit)",
			frame: frames.IPv6(cam6, web6, 60, cat(chain(7), frames.Opts(6), tcp443)), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 33, name: "nine destopts headers",
			frame:   frames.IPv6(cam6, web6, 60, cat(chain(8), frames.Opts(6), tcp443)),
			verdict: drop, reason: bpf.ReasonExtDenied},
		threatCase{row: 34, name: "sctp shaped like tcp 443", frame: frames.IPv6(cam6, web6, 132, tcp443),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 34, name: "esp shaped like tcp 443", frame: frames.IPv6(cam6, web6, 50, tcp443),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 34, name: "no next header shaped like tcp 443", frame: frames.IPv6(cam6, web6, 59, tcp443),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 34, name: "gre shaped like tcp 443", frame: frames.IPv6(cam6, web6, 47, tcp443),
			verdict: drop, reason: bpf.ReasonEncapDenied},
		threatCase{row: 34, name: "ipv4 sctp shaped like tcp 443", frame: frames.IPv4(cam4, web4, 132, 1, 0, nil, tcp443),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 35, name: "routing header type 0",
			frame: frames.IPv6(cam6, web6, 43, cat(frames.Routing(6, 0), tcp443)), verdict: drop, reason: bpf.ReasonExtDenied},
		threatCase{row: 35, name: "segment routing header",
			frame:   frames.IPv6(cam6, web6, 0, cat(frames.Opts(43), frames.Routing(6, 4), tcp443)),
			verdict: drop, reason: bpf.ReasonExtDenied},
		threatCase{row: 35, name: "truncated extension header", frame: frames.IPv6(cam6, web6, 60, []byte{6, 0, 1}),
			verdict: drop, reason: bpf.ReasonTruncated},
		threatCase{row: 35, name: "extension length byte 255",
			frame:   frames.IPv6(cam6, web6, 60, cat([]byte{6, 255, 1, 4, 0, 0, 0, 0}, tcp443)),
			verdict: drop, reason: bpf.ReasonTruncated},
	)
	// 36: tunnels.
	tun := v4(dptest.Tunneler)
	inner := frames.TCP(cam4, web4, 1, 80, true, nil)[14:]
	cs = append(cs,
		threatCase{row: 36, name: "ip-in-ip", frame: frames.IPv4(cam4, web4, 4, 1, 0, nil, inner),
			verdict: drop, reason: bpf.ReasonEncapDenied},
		threatCase{row: 36, name: "6in4",
			frame:   frames.IPv4(cam4, web4, 41, 1, 0, nil, frames.TCP(cam6, web6, 1, 80, true, nil)[14:]),
			verdict: drop, reason: bpf.ReasonEncapDenied},
		threatCase{row: 36, name: "gre", frame: frames.IPv4(cam4, web4, 47, 1, 0, nil, cat([]byte{0, 0, 8, 0}, inner)),
			verdict: drop, reason: bpf.ReasonEncapDenied},
		threatCase{row: 36, name: "gre to an explicit gre rule",
			frame: frames.IPv4(tun, gw4, 47, 1, 0, nil, cat([]byte{0, 0, 8, 0}, inner)), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 36, name: "ip-in-ip where only gre is named", frame: frames.IPv4(tun, gw4, 4, 1, 0, nil, inner),
			verdict: drop, reason: bpf.ReasonEncapDenied},
		threatCase{row: 36, name: "vxlan to an explicit udp 4789 rule", frame: frames.UDP(tun, gw4, 40000, 4789, inner),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 36, name: "geneve where only vxlan is named", frame: frames.UDP(tun, gw4, 40000, 6081, inner),
			verdict: drop, reason: bpf.ReasonEncapDenied},
		threatCase{row: 36, name: "gre under an any-protocol rule",
			frame:   frames.IPv4(v4(dptest.AnyProto), to("198.51.100.7"), 47, 1, 0, nil, inner),
			verdict: drop, reason: bpf.ReasonEncapDenied},
		threatCase{row: 36, name: "vxlan under an any-protocol rule",
			frame:   frames.UDP(v4(dptest.AnyProto), to("198.51.100.7"), 1, 4789, inner),
			verdict: drop, reason: bpf.ReasonEncapDenied},
	)
	// 38: broadcast and multicast destinations.
	cs = append(cs,
		threatCase{row: 38, name: "ssdp to 255.255.255.255", frame: frames.UDP(cam4, bcast, 40000, 1900, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 38, name: "mdns to 224.0.0.251", frame: frames.UDP(cam4, to("224.0.0.251"), 5353, 5353, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 38, name: "mdns to ff02::fb", frame: frames.UDP(cam6, to("ff02::fb"), 5353, 5353, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
	)
	// 38: a broadcast or multicast frame (a bridge floods it) passes a CIDR rule only when the
	// rule's prefix lies inside 224.0.0.0/4 or ff00::/8, whatever wider rules allow.
	wide4, wide6, mdns := v4(dptest.Wide), v6(dptest.Wide), v4(dptest.MDNS)
	cs = append(cs,
		threatCase{row: 38, name: "0.0.0.0/0 udp 53: 255.255.255.255:53 to the broadcast mac",
			frame:   frames.UDP(wide4, at("ff:ff:ff:ff:ff:ff", "255.255.255.255"), 1, 53, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 38, name: "0.0.0.0/0 udp 53: 224.0.0.1:53 to its group mac",
			frame: frames.UDP(wide4, at("01:00:5e:00:00:01", "224.0.0.1"), 1, 53, nil), verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 38, name: "::/0 udp 5353: ff02::1:5353 to its group mac",
			frame: frames.UDP(wide6, at("33:33:00:00:00:01", "ff02::1"), 1, 5353, nil), verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 38, name: "0.0.0.0/0 udp 53: unicast 8.8.8.8:53", frame: frames.UDP(wide4, to("8.8.8.8"), 1, 53, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 38, name: "::/0 udp 5353: unicast 2001:db8::1:5353",
			frame: frames.UDP(wide6, to("2001:db8::1"), 1, 5353, nil), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 38, name: "224.0.0.251/32 udp 5353: mdns to its group mac",
			frame: frames.UDP(mdns, mdnsGroup, 5353, 5353, nil), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 38, name: "224.0.0.251/32 udp 5353: port 53 of 0.0.0.0/0 does not leak in",
			frame: frames.UDP(mdns, mdnsGroup, 1, 53, nil), verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 38, name: "224.0.0.251/32 udp 5353: another group",
			frame:   frames.UDP(mdns, at("01:00:5e:00:00:fc", "224.0.0.252"), 5353, 5353, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 38, name: "255.255.255.255/32 udp 1900: ssdp to the broadcast mac",
			frame:   frames.UDP(mdns, at("ff:ff:ff:ff:ff:ff", "255.255.255.255"), 1, 1900, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 38, name: "0.0.0.0/0 udp 53 next to 224.0.0.251/32: unicast 8.8.8.8:53",
			frame: frames.UDP(mdns, to("8.8.8.8"), 1, 53, nil), verdict: pass, reason: bpf.ReasonAllow},
	)
	// 51: layer-2 lateral movement. The destination MAC must be the gateway's, the owner's of the
	// IP destination, or the group the IP destination maps to.
	sensor4, sensor6 := v4(dptest.Sensor), v6(dptest.Sensor)
	sensorMAC, brokerMAC := sensor4.MAC.String(), v4(dptest.Broker).MAC.String()
	const bcastMAC, unknownMAC = "ff:ff:ff:ff:ff:ff", "02:00:00:00:99:99"
	ns := func(src, dst frames.Host, target string, opts ...byte) []byte {
		return frames.ICMP(src, dst, 135, 0, cat(make([]byte, 4), netip.MustParseAddr(target).AsSlice(), opts))
	}
	arpTo := func(mac []byte) []byte {
		return set(frames.ARP(cam4, 2, cam4.MAC, cam4.IP, netip.MustParseAddr("10.0.0.12")), 0, mac...)
	}
	cs = append(cs,
		threatCase{row: 51, name: "upstream-allowed ip to another device's mac",
			frame:   frames.TCP(cam4, at(sensorMAC, "203.0.113.5"), 1, 443, true, nil),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "upstream-allowed ip to another device's mac v6",
			frame:   frames.TCP(cam6, at(sensorMAC, "2001:db8:443::5"), 1, 443, true, nil),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "upstream-allowed ip to the broadcast mac",
			frame:   frames.TCP(cam4, at(bcastMAC, "203.0.113.5"), 1, 443, true, nil),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "upstream-allowed ip to a multicast mac",
			frame:   frames.TCP(cam4, at("01:00:5e:00:00:fb", "203.0.113.5"), 1, 443, true, nil),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "upstream-allowed ip to an unknown unicast mac",
			frame:   frames.TCP(cam4, at(unknownMAC, "203.0.113.5"), 1, 443, true, nil),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "upstream-allowed ip to an unknown unicast mac v6",
			frame:   frames.TCP(cam6, at(unknownMAC, "2001:db8:443::5"), 1, 443, true, nil),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "upstream-allowed ip to the policy's router mac",
			frame:   frames.TCP(cam4, at(dptest.RouterMAC.String(), "203.0.113.5"), 1, 443, true, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 51, name: "lateral: device mac, its address, allowed",
			frame:   frames.UDP(sensor4, at(cam4.MAC.String(), "10.0.0.11"), 1, 5683, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 51, name: "lateral: device mac, its address, allowed v6",
			frame: frames.UDP(sensor6, at(cam4.MAC.String(), "fd00::11"), 1, 5683, nil), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 51, name: "lateral: device mac, its address, no rule",
			frame: frames.TCP(cam4, at(sensorMAC, "10.0.0.12"), 1, 443, true, nil), verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 51, name: "lateral: device mac, another device's allowed address",
			frame: frames.UDP(sensor4, at(brokerMAC, "10.0.0.11"), 1, 5683, nil), verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "lateral: device mac, the gateway's address",
			frame: frames.UDP(cam4, at(sensorMAC, "10.0.0.1"), 1, 53, nil), verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "later fragment to another device's mac",
			frame:   frames.IPv4(cam4, at(sensorMAC, "203.0.113.5"), 6, 77, 0x0001, nil, tcp443),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "spoofed source to an unknown mac stays spoof_ip",
			frame:   frames.TCP(withIP(cam4, "10.0.0.12"), at(unknownMAC, "203.0.113.5"), 1, 443, true, nil),
			verdict: drop, reason: bpf.ReasonSpoofIP},
		threatCase{row: 51, name: "dhcp discover to the broadcast mac",
			frame:   dhcp(unspec, at(bcastMAC, "255.255.255.255"), layers.DHCPOpRequest, cam4.MAC, 68, 67),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 51, name: "dhcp discover to an unknown mac",
			frame:   dhcp(unspec, at(unknownMAC, "255.255.255.255"), layers.DHCPOpRequest, cam4.MAC, 68, 67),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "dhcp discover to a device's mac",
			frame:   dhcp(unspec, at(sensorMAC, "255.255.255.255"), layers.DHCPOpRequest, cam4.MAC, 68, 67),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "dhcpv6 solicit to its group mac",
			frame:   frames.UDP(cam6, at("33:33:00:01:00:02", "ff02::1:2"), 546, 547, make([]byte, 8)),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 51, name: "mdns to its group mac, no rule",
			frame: frames.UDP(cam4, mdnsGroup, 5353, 5353, nil), verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 51, name: "mdns to another group's mac",
			frame:   frames.UDP(cam4, at("01:00:5e:00:00:fc", "224.0.0.251"), 5353, 5353, nil),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "mdns v6 to another group's mac",
			frame:   frames.UDP(cam6, at("33:33:00:00:00:fc", "ff02::fb"), 5353, 5353, nil),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "ns to the solicited-node group mac",
			frame: ns(cam6, at("33:33:ff:00:00:01", "ff02::1:ff00:1"), "fd00::1"), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 51, name: "arp reply to a device's mac", frame: arpTo(v4(dptest.Sensor).MAC),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 51, name: "arp to a multicast mac", frame: arpTo([]byte{1, 0, 0x5e, 0, 0, 1}),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 51, name: "arp to an unknown mac", frame: arpTo([]byte{2, 0, 0, 0, 0x99, 0x99}),
			verdict: drop, reason: bpf.ReasonL2DstDenied},
	)
	// 52: neighbour discovery passes without a rule only when it stays on the link.
	lladdr := func(typ uint8, mac net.HardwareAddr) []byte { return cat([]byte{typ, 1}, mac) }
	cs = append(cs,
		threatCase{row: 52, name: "ns to a global upstream address", frame: ns(cam6, to("2001:db8::1"), "2001:db8::1"),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 52, name: "ns with hop limit 64 to the solicited-node group",
			frame: set(ns(cam6, to("ff02::1:ff00:1"), "fd00::1"), 14+7, 64), verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 52, name: "na to another device's address through the gateway",
			frame: frames.NA(cam6, to("fd00::12"), cam6.IP), verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 52, name: "na to a device by its mac and address",
			frame: frames.NA(cam6, at(sensorMAC, "fd00::12"), cam6.IP), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 52, name: "ns to a link-local address", frame: ns(cam6, to("fe80::1"), "fe80::1"),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 52, name: "rs upstream", frame: frames.ICMP(cam6, to("2001:db8::1"), 133, 0, make([]byte, 4)),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 52, name: "dad ns from :: to a global address",
			frame: ns(withIP(cam6, "::"), to("2001:db8::1"), "2001:db8::1"), verdict: drop, reason: bpf.ReasonSpoofIP},
		threatCase{row: 52, name: "ns to the gateway, not link scope, icmpv6 rule",
			frame: set(ns(cam6, gw6, "fd00::1"), 14+7, 64), verdict: pass, reason: bpf.ReasonAllow},
	)
	// 53: neighbour discovery link-layer address options must name the Ethernet source.
	cs = append(cs,
		threatCase{row: 53, name: "ns with its own source lladdr",
			frame: ns(cam6, to("ff02::1:ff00:1"), "fd00::1", lladdr(1, cam6.MAC)...), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 53, name: "ns with another device's source lladdr",
			frame:   ns(cam6, to("ff02::1:ff00:1"), "fd00::1", lladdr(1, sensor6.MAC)...),
			verdict: drop, reason: bpf.ReasonNDSpoof},
		threatCase{row: 53, name: "na without lladdr", frame: frames.NA(cam6, gw6, cam6.IP),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 53, name: "na with another device's target lladdr",
			frame:   set(cat(frames.NA(cam6, gw6, cam6.IP), lladdr(2, sensor6.MAC)), 14+5, 32),
			verdict: drop, reason: bpf.ReasonNDSpoof},
		threatCase{row: 53, name: "na, spoofed lladdr after a nonce option",
			frame:   set(cat(frames.NA(cam6, gw6, cam6.IP), []byte{14, 1, 1, 2, 3, 4, 5, 6}, lladdr(2, sensor6.MAC)), 14+5, 40),
			verdict: drop, reason: bpf.ReasonNDSpoof},
		threatCase{row: 53, name: "rs with another device's source lladdr",
			frame:   frames.ICMP(cam6, to("ff02::2"), 133, 0, cat(make([]byte, 4), lladdr(1, sensor6.MAC))),
			verdict: drop, reason: bpf.ReasonNDSpoof},
		threatCase{row: 53, name: "rs with its own source lladdr",
			frame:   frames.ICMP(cam6, to("ff02::2"), 133, 0, cat(make([]byte, 4), lladdr(1, cam6.MAC))),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 53, name: "nd option of length 0",
			frame:   ns(cam6, to("ff02::1:ff00:1"), "fd00::1", 1, 0, 0, 0, 0, 0, 0, 0),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 53, name: "nd option past the datagram",
			frame:   ns(cam6, to("ff02::1:ff00:1"), "fd00::1", 1, 2, 2, 0, 0, 0, 0, 0x0b),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 53, name: "more nd options than the walk follows",
			frame:   ns(cam6, to("ff02::1:ff00:1"), "fd00::1", cat(chainOpts(9)...)...),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 53, name: "as many nd options as the walk follows",
			frame: ns(cam6, to("ff02::1:ff00:1"), "fd00::1", cat(chainOpts(8)...)...), verdict: pass, reason: bpf.ReasonAllow},
	)
	// 54: audit mode does not cover identity failures unless the policy says so.
	ap, ai := v4(dptest.AuditPin), v4(dptest.AuditID)
	cs = append(cs,
		threatCase{row: 54, name: "audit device's mac on another port", frame: frames.UDP(ap, gw4, 1, 53, nil),
			verdict: drop, reason: bpf.ReasonSpoofMACPort},
		threatCase{row: 54, name: "audit device, spoofed ip",
			frame:   frames.UDP(withIP(v4(dptest.Auditor), "10.0.0.11"), gw4, 1, 9, nil),
			verdict: drop, reason: bpf.ReasonSpoofIP},
		threatCase{row: 54, name: "audit device, arp for a foreign ip",
			frame:   frames.ARP(v4(dptest.Auditor), 2, v4(dptest.Auditor).MAC, cam4.IP, gw4.IP),
			verdict: drop, reason: bpf.ReasonARPSpoof},
		threatCase{row: 54, name: "audit device, no rule: still audit", frame: frames.UDP(v4(dptest.Auditor), gw4, 1, 9, nil),
			verdict: audit, reason: bpf.ReasonNoRule},
		threatCase{row: 54, name: "audit device, lateral to another device's mac: audit",
			frame:   frames.UDP(v4(dptest.Auditor), at(sensorMAC, "203.0.113.5"), 1, 9, nil),
			verdict: audit, reason: bpf.ReasonL2DstDenied},
		threatCase{row: 54, name: "auditIdentity device, spoofed ip: audit",
			frame: frames.UDP(withIP(ai, "10.0.0.11"), gw4, 1, 9, nil), verdict: audit, reason: bpf.ReasonSpoofIP},
	)
	// 24: UDP length lies.
	cs = append(cs,
		threatCase{row: 24, name: "udp length past the datagram",
			frame:   set16(frames.UDP(cam4, gw4, 1, 53, make([]byte, 8)), 14+20+4, 17),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 24, name: "udp length past the datagram v6",
			frame:   set16(frames.UDP(cam6, gw6, 1, 53, make([]byte, 8)), 14+40+4, 17),
			verdict: drop, reason: bpf.ReasonMalformed},
		threatCase{row: 24, name: "udp length short of the datagram",
			frame: set16(frames.UDP(cam4, gw4, 1, 53, make([]byte, 8)), 14+20+4, 8), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 24, name: "udp first fragment, length of the whole datagram",
			frame: frames.IPv4(cam4, web4, 17, 78, 0x2000, nil,
				cat(frames.UDPHeader(1, 443, make([]byte, 64))[:8], make([]byte, 16))), verdict: drop, reason: bpf.ReasonNoRule},
	)
	// 55: ICMP types. A device allowed only echo requests sends no other ICMP message there.
	pg4, pg6, ping4 := v4(dptest.Pinger), v6(dptest.Pinger), to("198.51.100.7")
	body6 := make([]byte, 4) // the rest of the ICMPv6 header, which the datapath reads
	cs = append(cs,
		threatCase{row: 55, name: "icmp echo-request where allowed", frame: frames.ICMP(pg4, ping4, 8, 0, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 55, name: "icmp echo-request, any code", frame: frames.ICMP(pg4, ping4, 8, 7, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 55, name: "icmp unreachable quoting a made-up flow",
			frame: frames.ICMP(pg4, ping4, 3, 3, make([]byte, 28)), verdict: drop, reason: bpf.ReasonICMPNoFlow},
		threatCase{row: 55, name: "icmp echo-reply where only requests are allowed",
			frame: frames.ICMP(pg4, ping4, 0, 0, nil), verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 55, name: "icmp timestamp", frame: frames.ICMP(pg4, ping4, 13, 0, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		// An error passes only when it quotes a tracked flow, even where a rule lists its type.
		threatCase{row: 55, name: "icmp 3/3 to the gateway: listed, no flow", frame: frames.ICMP(pg4, gw4, 3, 3, nil),
			verdict: drop, reason: bpf.ReasonICMPNoFlow},
		threatCase{row: 55, name: "icmp 3/1 to the gateway: not listed, no flow", frame: frames.ICMP(pg4, gw4, 3, 1, nil),
			verdict: drop, reason: bpf.ReasonICMPNoFlow},
		threatCase{row: 55, name: "icmp echo-request to the gateway: no rule", frame: frames.ICMP(pg4, gw4, 8, 0, nil),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 55, name: "icmpv6 echo-request where allowed",
			frame: frames.ICMP(pg6, to("2001:db8::7"), 128, 0, body6), verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 55, name: "icmpv6 echo-reply", frame: frames.ICMP(pg6, to("2001:db8::7"), 129, 0, body6),
			verdict: drop, reason: bpf.ReasonNoRule},
		threatCase{row: 55, name: "icmpv6 packet-too-big", frame: frames.ICMP(pg6, to("2001:db8::7"), 2, 0, body6),
			verdict: drop, reason: bpf.ReasonICMPNoFlow},
		threatCase{row: 55, name: "icmp without types still allows every type (cam to the gateway)",
			frame: frames.ICMP(cam4, gw4, 13, 0, nil), verdict: pass, reason: bpf.ReasonAllow},
	)
	// Quarantine.
	q := v4(dptest.Quar)
	cs = append(cs,
		threatCase{row: 47, name: "quarantined: icmp to the gateway", frame: frames.Echo(q, gw4),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 47, name: "quarantined: dns service", frame: frames.UDP(q, gw4, 1, 53, nil),
			verdict: pass, reason: bpf.ReasonAllow},
		threatCase{row: 47, name: "quarantined: its segment's rule no longer applies",
			frame: frames.TCP(q, web4, 1, 443, true, nil), verdict: drop, reason: bpf.ReasonQuarantined},
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
