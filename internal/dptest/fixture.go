// Package dptest holds what the datapath tests share: the fixture policy, the hosts in it, and
// a harness that loads the real XDP program into the kernel and runs frames through it with
// BPF_PROG_TEST_RUN next to the Go reference model.
package dptest

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/policy"
)

// Ifindexes the fixture binds ports to. BPF_PROG_TEST_RUN runs frames as if received on the
// loopback device (ifindex 1 in every namespace); "ghost" is a port no test frame arrives on.
const (
	IfLoopback = 1
	IfGhost    = 9999
)

// Host returns a host of the fixture: MAC 02:00:00:00:00:<n>, 10.0.0.<n>, fd00::<n>.
func Host(n int, v6 bool) frames.Host {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, byte(n)}
	if v6 {
		return frames.Host{MAC: mac, IP: netip.MustParseAddr(fmt.Sprintf("fd00::%d", n))}
	}
	return frames.Host{MAC: mac, IP: netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", n))}
}

// Fixture device numbers.
const (
	Cam      = 11 // segment cameras: tcp 443 to 203.0.113.0/24 and 2001:db8:443::/48, icmp to gateway
	Sensor   = 12 // segment sensors: tcp 8883 to segment brokers, udp 5683 to device cam
	Broker   = 13 // segment brokers: udp 53 to ::/0 (IPv6 only); from sensor udp 9000, from 203.0.113.0/24 tcp 22
	Pinned   = 14 // port lo: udp 9999 to the gateway
	Ghost    = 15 // port ghost
	Tagged   = 16 // vlan 20, segment cameras
	Auditor  = 17 // mode audit, no rules
	Quar     = 18 // quarantined, segment cameras
	Tunneler = 19 // gre and vxlan (udp 4789) to the gateway, explicitly
	AnyProto = 20 // any protocol to 198.51.100.0/24
	AuditPin = 21 // mode audit, port ghost, no rules
	AuditID  = 22 // mode audit with auditIdentity, no rules
	Wide     = 23 // udp 53 to 0.0.0.0/0, udp 5353 to ::/0
	MDNS     = 24 // udp 53 to 0.0.0.0/0, udp 5353 to 224.0.0.251/32, udp 1900 to 255.255.255.255/32
	Pinger   = 25 // icmp echo-request to 198.51.100.0/24, icmp 3/3 to the gateway, icmpv6 echo-request to ::/0
	Gateway  = 1  // the gateway's addresses: 10.0.0.1, fd00::1
)

// GatewayMAC is the destination MAC of fixture frames (the harness registers it as the
// gateway interface's); RouterMAC is a router's the policy lists in spec.gateway.macs.
var (
	GatewayMAC = net.HardwareAddr{2, 0, 0, 0, 0, 0xfe}
	RouterMAC  = net.HardwareAddr{2, 0, 0, 0, 0, 0xfd}
)

// To returns a destination host with the gateway's MAC.
func To(ip string) frames.Host {
	return frames.Host{MAC: GatewayMAC, IP: netip.MustParseAddr(ip)}
}

func dev(n int, name, seg string, allow ...policy.Rule) policy.Device {
	return policy.Device{
		Name: name, MAC: Host(n, false).MAC.String(), Segment: seg, Allow: allow,
		IPv4: []string{Host(n, false).IP.String()}, IPv6: []string{Host(n, true).IP.String()},
	}
}

func rule(to policy.Target, proto string, ports ...policy.PortRange) policy.Rule {
	return policy.Rule{To: to, Proto: proto, Ports: ports}
}

func port(p uint16) policy.PortRange { return policy.PortRange{Lo: p, Hi: p} }

// Fixture is the policy the threat-matrix tests run against.
func Fixture() *policy.Policy {
	p := &policy.Policy{APIVersion: policy.APIVersion, Kind: policy.Kind, Metadata: policy.Metadata{Name: "fixture"}}
	p.Spec.Gateway = policy.Gateway{IPv4: []string{"10.0.0.1"}, IPv6: []string{"fd00::1"},
		Services: []policy.Service{policy.ServiceDHCP, policy.ServiceDHCPv6, policy.ServiceDNS, policy.ServiceNTP},
		MACs:     []string{RouterMAC.String()}}
	p.Spec.Quarantine.Allow = []policy.Rule{rule(policy.Target{Gateway: true}, "icmp")}
	p.Spec.Segments = []policy.Segment{
		{Name: "cameras", Allow: []policy.Rule{
			rule(policy.Target{CIDR: "203.0.113.0/24"}, "tcp", port(443)),
			rule(policy.Target{CIDR: "2001:db8:443::/48"}, "tcp", port(443)),
			rule(policy.Target{Gateway: true}, "icmp"),
			rule(policy.Target{Gateway: true}, "icmpv6"),
		}},
		{Name: "sensors", Allow: []policy.Rule{
			rule(policy.Target{Segment: "brokers"}, "tcp", port(8883)),
			rule(policy.Target{Device: "cam"}, "udp", port(5683)),
		}},
		{Name: "brokers", Allow: []policy.Rule{
			rule(policy.Target{CIDR: "::/0"}, "udp", port(53)),
		}},
	}
	pinned := dev(Pinned, "pinned", "", rule(policy.Target{Gateway: true}, "udp", port(9999)))
	pinned.Port = "lo"
	ghost := dev(Ghost, "ghost", "")
	ghost.Port = "ghost"
	tagged := dev(Tagged, "tagged", "cameras")
	tagged.VLAN = 20
	auditor := dev(Auditor, "auditor", "")
	auditor.Mode = policy.ModeAudit
	auditPin := dev(AuditPin, "auditpin", "")
	auditPin.Mode = policy.ModeAudit
	auditPin.Port = "ghost"
	auditID := dev(AuditID, "auditid", "")
	auditID.Mode = policy.ModeAudit
	auditID.AuditIdentity = true
	quar := dev(Quar, "quar", "cameras")
	quar.Quarantined = true
	p.Spec.Devices = []policy.Device{
		dev(Cam, "cam", "cameras"),
		dev(Sensor, "sensor", "sensors"),
		dev(Broker, "broker", "brokers",
			policy.Rule{From: policy.Target{Device: "sensor"}, Proto: "udp", Ports: []policy.PortRange{port(9000)}},
			policy.Rule{From: policy.Target{CIDR: "203.0.113.0/24"}, Proto: "tcp", Ports: []policy.PortRange{port(22)}}),
		pinned, ghost, tagged, auditor, quar,
		dev(Tunneler, "tunneler", "",
			rule(policy.Target{Gateway: true}, "47"),
			rule(policy.Target{Gateway: true}, "udp", port(4789))),
		dev(AnyProto, "anyproto", "", rule(policy.Target{CIDR: "198.51.100.0/24"}, "any")),
		auditPin, auditID,
		dev(Wide, "wide", "",
			rule(policy.Target{CIDR: "0.0.0.0/0"}, "udp", port(53)),
			rule(policy.Target{CIDR: "::/0"}, "udp", port(5353))),
		dev(MDNS, "mdns", "",
			rule(policy.Target{CIDR: "0.0.0.0/0"}, "udp", port(53)),
			rule(policy.Target{CIDR: "224.0.0.251/32"}, "udp", port(5353)),
			rule(policy.Target{CIDR: "255.255.255.255/32"}, "udp", port(1900))),
		dev(Pinger, "pinger", "",
			policy.Rule{To: policy.Target{CIDR: "198.51.100.0/24"}, Proto: "icmp", ICMP: []policy.ICMPType{"echo-request"}},
			policy.Rule{To: policy.Target{Gateway: true}, Proto: "icmp", ICMP: []policy.ICMPType{"3/3"}},
			policy.Rule{To: policy.Target{CIDR: "::/0"}, Proto: "icmpv6", ICMP: []policy.ICMPType{"echo-request"}}),
	}
	return p
}

// Ifindex resolves the fixture's port names.
func Ifindex(name string) (uint32, error) {
	switch name {
	case "lo":
		return IfLoopback, nil
	case "ghost":
		return IfGhost, nil
	}
	return 0, fmt.Errorf("no interface %q", name)
}

// Compile validates and compiles p with the fixture's port names.
func Compile(p *policy.Policy, rev uint64) (*policy.Snapshot, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return policy.Compile(p, policy.CompileOptions{Revision: rev, Ifindex: Ifindex})
}
