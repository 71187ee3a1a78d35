// Package fleet is the policy the hot and cold sections measure: a generated fleet whose
// device i has an identity computable from i (the cold build's BPF rewrites frames to device
// idx's MAC and address from idx alone), and the classes of frames its devices send.
package fleet

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
)

// segments is the number of segments devices are spread over.
const segments = 12

// maxDevices bounds the fleet so that every device address stays inside 10.16.0.0/12+.
const maxDevices = 1 << 23

// MAC is device i's MAC: 02:5a followed by i as a 32-bit big-endian number.
func MAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x5a, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
}

// V4 is device i's IPv4 address: 10.16.0.0 + i.
func V4(i int) netip.Addr {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], 0x0a100000+uint32(i))
	return netip.AddrFrom4(a)
}

// V6 is device i's IPv6 address: fd00:5a::/96 + i.
func V6(i int) netip.Addr {
	a := netip.MustParseAddr("fd00:5a::").As16()
	binary.BigEndian.PutUint32(a[12:], uint32(i))
	return netip.AddrFrom16(a)
}

// Destinations of the benchmark frames.
var (
	GatewayMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
	Dst4       = netip.MustParseAddr("203.0.113.7") // inside every segment's tcp/443 CIDR rule
	Dst6       = netip.MustParseAddr("2001:db8::7") // inside every segment's tcp/443 CIDR rule
)

// Policy is n devices in segments segments. Every segment allows tcp/443 to a public
// CIDR per family, tcp/8883 to the next segment (a peer rule), icmp to the gateway, and a third
// of them udp/5683 to another CIDR; every device has one IPv4 and one IPv6 address and zero or
// one rule of its own from four templates (so rule sets are shared, as in a fleet managed by
// profiles: 48 rule sets whatever n). DNS and DHCP are gateway services.
func Policy(n int) *policy.Policy {
	p := &policy.Policy{APIVersion: policy.APIVersion, Kind: policy.Kind, Metadata: policy.Metadata{Name: "bench"}}
	// The frames go to GatewayMAC: a gateway MAC the policy names, as nothing is attached (the
	// loader registers an interface's own MACs when it attaches).
	p.Spec.Gateway = policy.Gateway{IPv4: []string{"10.0.0.1"}, IPv6: []string{"fd00::1"},
		Services: []policy.Service{policy.ServiceDHCP, policy.ServiceDNS}, MACs: []string{GatewayMAC.String()}}
	p.Spec.Quarantine.Allow = []policy.Rule{{To: policy.Target{Gateway: true}, Proto: "icmp"}}
	port := func(p uint16) []policy.PortRange { return []policy.PortRange{{Lo: p, Hi: p}} }
	for s := range segments {
		seg := policy.Segment{Name: fmt.Sprintf("s%d", s), Allow: []policy.Rule{
			{To: policy.Target{CIDR: "203.0.113.0/24"}, Proto: "tcp", Ports: port(443)},
			{To: policy.Target{CIDR: "2001:db8::/32"}, Proto: "tcp", Ports: port(443)},
			{To: policy.Target{Segment: fmt.Sprintf("s%d", (s+1)%segments)}, Proto: "tcp", Ports: port(8883)},
			{To: policy.Target{Gateway: true}, Proto: "icmp"},
		}}
		if s%3 == 0 {
			seg.Allow = append(seg.Allow, policy.Rule{To: policy.Target{CIDR: "198.51.100.0/24"}, Proto: "udp",
				Ports: port(5683)})
		}
		p.Spec.Segments = append(p.Spec.Segments, seg)
	}
	templates := [][]policy.Rule{
		nil,
		{{To: policy.Target{Gateway: true}, Proto: "tcp", Ports: port(22)}},
		{{To: policy.Target{Segment: "s0"}, Proto: "udp", Ports: port(5683)}},
		{{To: policy.Target{CIDR: "192.0.2.0/24"}, Proto: "tcp", Ports: []policy.PortRange{{Lo: 8000, Hi: 8080}}}},
	}
	p.Spec.Devices = make([]policy.Device, n)
	for i := range n {
		p.Spec.Devices[i] = policy.Device{
			Name:    fmt.Sprintf("d%d", i),
			MAC:     MAC(i).String(),
			IPv4:    []string{V4(i).String()},
			IPv6:    []string{V6(i).String()},
			Segment: fmt.Sprintf("s%d", i%segments),
			Allow:   templates[(i/segments)%len(templates)],
		}
	}
	return p
}

// The snapshots compiled so far, by fleet size (the hot and cold sections share them).
var (
	mu    sync.Mutex
	cache = map[int]*policy.Snapshot{}
)

// Snapshot validates and compiles the fleet of n devices, once per process.
func Snapshot(cfg *core.Config, n int) (*policy.Snapshot, error) {
	mu.Lock()
	defer mu.Unlock()
	if s := cache[n]; s != nil {
		return s, nil
	}
	if n < 1 || n > maxDevices {
		return nil, fmt.Errorf("fleet of %d devices: must be between 1 and %d", n, maxDevices)
	}
	t0 := time.Now()
	p := Policy(n)
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("fleet of %d devices: %w", n, err)
	}
	s, err := policy.Compile(p, policy.CompileOptions{Revision: 1})
	if err != nil {
		return nil, fmt.Errorf("fleet of %d devices: %w", n, err)
	}
	cfg.Logf("fleet of %s devices compiled in %s (%d addrs, %d rules, %d prefixes)", core.Count(n),
		time.Since(t0).Round(time.Millisecond), len(s.Addrs), len(s.Rules), len(s.Prefixes))
	cache[n] = s
	return s, nil
}

// Limits are the capacities a datapath for the fleet snapshot s needs.
func Limits(s *policy.Snapshot) maps.Limits {
	return maps.Limits{Devices: len(s.Devices), Addrs: max(1, len(s.Addrs)), Rules: max(1, len(s.Rules)),
		Prefixes: max(1, len(s.Prefixes))}
}

// Class is one kind of frame the hot section replays: the frame device dev sends and what the
// datapath decides on it.
type Class struct {
	Name    string
	Frame   func(dev int) []byte
	Verdict bpf.Verdict
	Reason  bpf.Reason
}

// host is device i's MAC with its IPv6 or IPv4 address.
func host(i int, v6 bool) frames.Host {
	if v6 {
		return frames.Host{MAC: MAC(i), IP: V6(i)}
	}
	return frames.Host{MAC: MAC(i), IP: V4(i)}
}

// gateway is the gateway MAC with ip.
func gateway(ip netip.Addr) frames.Host { return frames.Host{MAC: GatewayMAC, IP: ip} }

// Classes are the frame classes of device dev. The allowed ones take the longest allowed
// path of the datapath: identity and source binding, the guards, a peer lookup of the
// destination (a miss: it is no device), then the prefix trie and the rule it points to.
var Classes = []Class{
	{Name: "allowed-v4", Verdict: bpf.VerdictPass, Reason: bpf.ReasonAllow, Frame: func(d int) []byte {
		return frames.TCP(host(d, false), gateway(Dst4), 40000, 443, true, nil)
	}},
	{Name: "allowed-v6", Verdict: bpf.VerdictPass, Reason: bpf.ReasonAllow, Frame: func(d int) []byte {
		return frames.TCP(host(d, true), gateway(Dst6), 40000, 443, true, nil)
	}},
	{Name: "no-rule-drop", Verdict: bpf.VerdictDrop, Reason: bpf.ReasonNoRule, Frame: func(d int) []byte {
		return frames.TCP(host(d, false), gateway(Dst4), 40000, 80, true, nil)
	}},
	{Name: "unknown-device-drop", Verdict: bpf.VerdictDrop, Reason: bpf.ReasonUnknownDevice, Frame: func(d int) []byte {
		h := host(d, false)
		h.MAC = net.HardwareAddr{0x02, 0x5b, 0, 0, 0, 1}
		return frames.TCP(h, gateway(Dst4), 40000, 443, true, nil)
	}},
	{Name: "spoofed-ip-drop", Verdict: bpf.VerdictDrop, Reason: bpf.ReasonSpoofIP, Frame: func(d int) []byte {
		h := host(d, false)
		h.IP = netip.MustParseAddr("10.0.0.99") // bound to no device
		return frames.TCP(h, gateway(Dst4), 40000, 443, true, nil)
	}},
}
