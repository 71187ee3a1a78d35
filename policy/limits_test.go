package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/bpf"
)

// segmentsPolicy has n segments s0..s(n-1), a device in the first and one in the last, and a
// device allowed to reach the last segment only.
func segmentsPolicy(n int) *Policy {
	segs := make([]Segment, n)
	for i := range segs {
		segs[i].Name = fmt.Sprintf("s%d", i)
	}
	last := segs[n-1].Name
	return &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "segments"}, Spec: Spec{
		Segments: segs,
		Devices: []Device{
			{Name: "first", MAC: "02:00:00:00:00:01", IPv4: []string{"10.0.0.1"}, Segment: "s0"},
			{Name: "last", MAC: "02:00:00:00:00:02", IPv4: []string{"10.0.0.2"}, Segment: last},
			{Name: "client", MAC: "02:00:00:00:00:03", IPv4: []string{"10.0.0.3"},
				Allow: []Rule{{To: Target{Segment: last}}}},
		},
	}}
}

func TestSegmentLimit(t *testing.T) {
	p := segmentsPolicy(maxSegments + 2) // the last would take id 1, the first's, if ids wrapped
	err := p.Validate()
	if err == nil || !strings.Contains(err.Error(), "spec.segments: has 65537 segments, at most 65535") {
		t.Fatalf("Validate: %v, want too many segments at spec.segments", err)
	}
	_, err = Compile(p, CompileOptions{Revision: 1})
	var pe *PathError
	if !errors.As(err, &pe) || pe.Path != "spec.segments" {
		t.Fatalf("Compile: %v, want a PathError at spec.segments", err)
	}

	p = segmentsPolicy(maxSegments)
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate %d segments: %v", maxSegments, err)
	}
	s, err := Compile(p, CompileOptions{Revision: 1})
	if err != nil {
		t.Fatalf("Compile %d segments: %v", maxSegments, err)
	}
	if got := s.Devices[DevKey(mustMAC("02:00:00:00:00:02"))].Segment; got != maxSegments {
		t.Fatalf("last segment id %d, want %d", got, maxSegments)
	}
	client := s.Devices[DevKey(mustMAC("02:00:00:00:00:03"))]
	for k := range s.Rules {
		if k.Ruleset == client.Ruleset && k.SelKind == bpf.SelSegment && k.SelId != maxSegments {
			t.Errorf("the client's rule to the last segment allows segment %d", k.SelId)
		}
	}
}

// TestPortLimits: a port that does not fit 16 bits is an error in YAML and JSON (never a
// wrapped port), and more distinct ranges for one destination than a rule holds are refused.
func TestPortLimits(t *testing.T) {
	rule := "  quarantine:\n    allow:\n      - to: {gateway: true}\n        proto: tcp\n        ports: "
	for _, doc := range []string{
		withSpec(rule + "[65536]\n"),
		withSpec(rule + "[65536-65999]\n"),
		`{"apiVersion": "ztgate/v1", "kind": "Policy", "metadata": {"name": "p"}, "spec": {"quarantine": ` +
			`{"allow": [{"to": {"gateway": true}, "proto": "tcp", "ports": [65536]}]}}}`,
		`{"apiVersion": "ztgate/v1", "kind": "Policy", "metadata": {"name": "p"}, "spec": {"quarantine": ` +
			`{"allow": [{"to": {"gateway": true}, "proto": "tcp", "ports": [65997]}]}}}`,
	} {
		_, err := Parse("t", []byte(doc))
		if err == nil || !strings.Contains(err.Error(), "spec.quarantine.allow[0].ports[0]") ||
			!strings.Contains(err.Error(), "out of range 1-65535") {
			t.Errorf("%s: %v, want the port out of range", doc, err)
		}
	}

	var ranges []PortRange
	for i := range len(bpf.RuleVal{}.Ranges) + 1 {
		ranges = append(ranges, PortRange{Lo: uint16(1000 + 2*i), Hi: uint16(1000 + 2*i)})
	}
	p := &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "ports"}, Spec: Spec{
		Devices: []Device{{Name: "a", MAC: "02:00:00:00:00:01", Allow: []Rule{
			{To: Target{CIDR: "10.0.0.0/8"}, Proto: "tcp", Ports: ranges}}}}}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	_, err := Compile(p, CompileOptions{Revision: 1})
	var pe *PathError
	if !errors.As(err, &pe) || pe.Path != "spec.devices[0].allow" || !strings.Contains(err.Error(), "at most 16") {
		t.Fatalf("Compile: %v, want too many port ranges at spec.devices[0].allow", err)
	}
	p.Spec.Devices[0].Allow[0].Ports = ranges[:len(ranges)-1]
	if _, err := Compile(p, CompileOptions{Revision: 1}); err != nil {
		t.Fatalf("Compile 16 ranges: %v", err)
	}
}

// TestIDLimits lowers each id limit of the compiler: a policy that needs one id more is
// refused with an error naming the field, never compiled with a wrapped id.
func TestIDLimits(t *testing.T) {
	base := func() *Policy {
		return &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "ids"}, Spec: Spec{
			Devices: []Device{
				{Name: "a", MAC: "02:00:00:00:00:01", Allow: []Rule{{To: Target{CIDR: "10.1.0.0/16"}}}},
				{Name: "b", MAC: "02:00:00:00:00:02", Allow: []Rule{{To: Target{CIDR: "10.2.0.0/16"}},
					{To: Target{CIDR: "10.3.0.0/16"}}}},
			},
		}}
	}
	for _, tc := range []struct {
		name  string
		limit *uint64
		fits  uint64 // the largest limit that still fails; one more compiles
		path  string
	}{
		{name: "devices", limit: &maxDevID, fits: 1, path: "spec.devices"},
		// Rule set 1 is the quarantine's, 2 device a's, 3 device b's.
		{name: "rule sets", limit: &maxRulesetID, fits: 2, path: "spec.devices[1].allow"},
		// Groups 1 for a's prefix, 2 and 3 for b's.
		{name: "prefix groups", limit: &maxGroupID, fits: 2, path: "spec.devices[1].allow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := *tc.limit
			t.Cleanup(func() { *tc.limit = old })
			*tc.limit = tc.fits
			_, err := Compile(base(), CompileOptions{Revision: 1})
			var pe *PathError
			if !errors.As(err, &pe) || pe.Path != tc.path {
				t.Fatalf("limit %d: %v, want an error at %s", tc.fits, err, tc.path)
			}
			*tc.limit = tc.fits + 1
			if _, err := Compile(base(), CompileOptions{Revision: 1}); err != nil {
				t.Fatalf("limit %d: %v", tc.fits+1, err)
			}
		})
	}
}

// TestCompileCapacity: devices and addresses over capacity are refused before anything is
// compiled (the policy's port, which no resolver could resolve, is never looked at), and
// rules and prefixes as soon as the snapshot holds one more than fits.
func TestCompileCapacity(t *testing.T) {
	p := segmentsPolicy(3)
	p.Spec.Devices[0].Port = "eth9" // compiling it fails: no Ifindex resolver
	p.Spec.Devices[0].IPv4 = append(p.Spec.Devices[0].IPv4, "10.0.0.9")
	// A segment of 300 prefixes and 50 devices in it with a rule of their own each: 15,000
	// prefix entries and more rule entries if compiled whole.
	big := &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "big"}}
	seg := Segment{Name: "s"}
	for i := range 300 {
		seg.Allow = append(seg.Allow, tcpRule(Target{CIDR: fmt.Sprintf("172.16.%d.0/24", i%256)}, one(uint16(1+i))))
	}
	big.Spec.Segments = []Segment{seg}
	for i := range 50 {
		big.Spec.Devices = append(big.Spec.Devices, Device{Name: fmt.Sprintf("d%d", i),
			MAC: fmt.Sprintf("02:00:00:00:01:%02x", i), Segment: "s",
			Allow: []Rule{{To: Target{CIDR: fmt.Sprintf("192.168.0.%d/32", i)}}}})
	}
	if err := big.Validate(); err != nil {
		t.Fatal(err)
	}
	// Devices and addresses are counted whole; rules and prefixes stop the compile at one too many.
	for _, tc := range []struct {
		p       *Policy
		lim     Limits
		want    string
		count   int
		atLeast bool
	}{
		{p: p, lim: Limits{Devices: 2}, want: bpf.ZtgateMapZtDevices, count: 3},
		{p: p, lim: Limits{Addrs: 3}, want: bpf.ZtgateMapZtAddrs, count: 4},
		{p: big, lim: Limits{Prefixes: 1000}, want: bpf.ZtgateMapZtPrefixes, count: 1001, atLeast: true},
		{p: big, lim: Limits{Rules: 1000}, want: bpf.ZtgateMapZtRules, count: 1001, atLeast: true},
	} {
		_, err := Compile(tc.p, CompileOptions{Revision: 1, Limits: tc.lim})
		var ce *CapacityError
		if !errors.As(err, &ce) || ce.Map != tc.want || ce.Count != tc.count || ce.AtLeast != tc.atLeast {
			t.Errorf("limits %+v: %v, want %d entries (at least: %v) over the capacity of %s",
				tc.lim, err, tc.count, tc.atLeast, tc.want)
		}
	}
}

// keyPrefix is the prefix a zt_prefixes key stands for (IPv4 as itself, not v4-mapped).
func keyPrefix(t *testing.T, k bpf.PrefixKey) netip.Prefix {
	t.Helper()
	addr, bits := netip.AddrFrom16(k.Addr.B), int(k.Prefixlen)-32
	if addr.Is4In6() {
		addr, bits = addr.Unmap(), bits-96
	}
	pfx := netip.PrefixFrom(addr, bits)
	if !pfx.IsValid() {
		t.Fatalf("prefix key %+v is no prefix", k)
	}
	return pfx
}

// randomPorts is no port range (all ports) one time in three, else one range of up to three
// ports within 1-102.
func randomPorts(rnd *rand.Rand) []PortRange {
	if rnd.IntN(3) == 0 {
		return nil
	}
	lo := uint16(1 + rnd.IntN(100))
	return []PortRange{{Lo: lo, Hi: lo + uint16(rnd.IntN(3))}}
}

// compileOneDevice compiles the policy name of one device allowed rules; it returns the
// snapshot and the device's rule set.
func compileOneDevice(name string, rules []Rule) (*Snapshot, uint32, error) {
	const mac = "02:00:00:00:00:01"
	p := &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: name}, Spec: Spec{
		Devices: []Device{{Name: "d", MAC: mac, Allow: rules}}}}
	s, err := Compile(p, CompileOptions{Revision: 1})
	if err != nil {
		return nil, 0, err
	}
	return s, s.Devices[DevKey(mustMAC(mac))].Ruleset, nil
}

// TestPrefixClosure checks the compiled prefix groups against their definition: the rules of
// the longest matching prefix are those of every prefix of the list that contains it.
func TestPrefixClosure(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		var rules []Rule
		for range 1 + rnd.IntN(60) {
			bits := rnd.IntN(33)
			a := netip.AddrFrom4([4]byte{10, byte(rnd.IntN(4)), byte(rnd.IntN(4)), 0})
			if rnd.IntN(4) == 0 {
				a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(rnd.IntN(4))})
				bits = 16 + rnd.IntN(113)
			}
			pfx := netip.PrefixFrom(a, bits).Masked()
			r := Rule{To: Target{CIDR: pfx.String()}, Proto: []string{"tcp", "udp", "icmp"}[rnd.IntN(3)]}
			if r.Proto != "icmp" {
				r.Ports = randomPorts(rnd)
			}
			rules = append(rules, r)
		}
		s, rs, err := compileOneDevice("closure", rules)
		if err != nil {
			continue // over 16 port ranges for one destination: refused, nothing to check
		}
		for k, v := range s.Prefixes {
			if k.Ruleset != rs {
				continue
			}
			pfx := keyPrefix(t, k)
			want := protoPorts{}
			for _, r := range rules {
				q := netip.MustParsePrefix(r.To.CIDR)
				if contains(q, pfx) {
					proto, _ := ParseProto(r.Proto)
					want.add(r, proto)
				}
			}
			for proto, ps := range want {
				got, ok := s.Rules[bpf.RuleKey{Ruleset: rs, SelId: v.Group, SelKind: bpf.SelPrefix, Proto: proto}]
				if !ok {
					t.Fatalf("round %d: %s: no rule for proto %d", round, pfx, proto)
				}
				if ps.all != (got.Flags&bpf.RuleAllPorts != 0) {
					t.Fatalf("round %d: %s proto %d: all ports %v, want %v", round, pfx, proto, !ps.all, ps.all)
				}
				if ps.all {
					continue
				}
				var gotRanges []PortRange
				for _, r := range got.Ranges[:got.N] {
					gotRanges = append(gotRanges, PortRange{Lo: r.Lo, Hi: r.Hi})
				}
				if m := ps.merged(); !slices.Equal(m, gotRanges) {
					t.Fatalf("round %d: %s proto %d: ranges %v, want %v", round, pfx, proto, gotRanges, m)
				}
			}
		}
	}
}

// TestMulticastClosure checks the entries broadcast and multicast frames are decided by
// (ZT_SEL_MCAST) against their definition: the rules of every prefix of the list that contains
// the longest match and lies inside 224.0.0.0/4 or ff00::/8; none for a prefix outside them,
// whatever wider rules allow.
func TestMulticastClosure(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	v4 := []string{"0.0.0.0/0", "128.0.0.0/1", "224.0.0.0/3", "224.0.0.0/4", "224.0.0.0/24", "224.0.0.251/32",
		"239.0.0.0/8", "239.255.255.250/32", "255.255.255.255/32", "10.0.0.0/8"}
	v6 := []string{"::/0", "ff00::/8", "ff02::/16", "ff02::fb/128", "fe00::/7", "2001:db8::/32"}
	for round := range 50 {
		var rules []Rule
		for range 1 + rnd.IntN(12) {
			cidr := v4[rnd.IntN(len(v4))]
			if rnd.IntN(3) == 0 {
				cidr = v6[rnd.IntN(len(v6))]
			}
			r := Rule{To: Target{CIDR: cidr}, Proto: []string{"tcp", "udp", "icmp", "any"}[rnd.IntN(4)]}
			if r.Proto == "tcp" || r.Proto == "udp" {
				r.Ports = randomPorts(rnd)
			}
			rules = append(rules, r)
		}
		s, rs, err := compileOneDevice("mcast", rules)
		if err != nil {
			t.Fatal(err)
		}
		groups := map[uint32]bool{}
		for k, v := range s.Prefixes {
			if k.Ruleset != rs {
				continue
			}
			groups[v.Group] = true
			pfx := keyPrefix(t, k)
			want := protoPorts{}
			for _, r := range rules {
				q := netip.MustParsePrefix(r.To.CIDR)
				if contains(q, pfx) && multicast(q) {
					proto, _ := ParseProto(r.Proto)
					want.add(r, proto)
				}
			}
			for proto := range 256 {
				got, ok := s.Rules[bpf.RuleKey{Ruleset: rs, SelId: v.Group, SelKind: bpf.SelMcast, Proto: uint8(proto)}]
				ps := want[uint8(proto)]
				if ok != (ps != nil) {
					t.Fatalf("round %d: %s proto %d: entry %v, want %v (rules %+v)", round, pfx, proto, ok, ps != nil, rules)
				}
				if !ok {
					continue
				}
				if ps.all != (got.Flags&bpf.RuleAllPorts != 0) {
					t.Fatalf("round %d: %s proto %d: all ports %v, want %v", round, pfx, proto, !ps.all, ps.all)
				}
				var gotRanges []PortRange
				for _, r := range got.Ranges[:got.N] {
					gotRanges = append(gotRanges, PortRange{Lo: r.Lo, Hi: r.Hi})
				}
				if m := ps.merged(); !ps.all && !slices.Equal(m, gotRanges) {
					t.Fatalf("round %d: %s proto %d: ranges %v, want %v", round, pfx, proto, gotRanges, m)
				}
			}
		}
		for k := range s.Rules {
			if k.SelKind == bpf.SelMcast && (k.Ruleset != rs || !groups[k.SelId]) {
				t.Fatalf("round %d: entry %+v of no prefix group", round, k)
			}
		}
	}
}
