package policy

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/bpf"
)

func TestParseFromRules(t *testing.T) {
	doc := withSpec(`  gateway: {ipv4: [10.0.0.1], services: [dns]}
  quarantine:
    allow:
      - {to: {gateway: true}, proto: udp, ports: [53]}
      - {from: {gateway: true}, proto: tcp, ports: [22]}
  segments:
    - name: cams
      allow:
        - {from: {segment: cams}, proto: tcp, ports: [554]}
` + device + `      allow:
        - {to: {gateway: true}, from: {cidr: 192.0.2.0/24}, proto: tcp}
        - {from: {device: nope}, proto: tcp}
        - {from: {}, proto: udp}
        - proto: tcp
        - {from: {cidr: 10.0.0.1/24}, proto: icmp, icmp: [echo-request]}
        - {from: {cidr: 192.0.2.0/24, gateway: true}}
        - {from: {device: d1}, proto: udp, ports: [0]}
`)
	_, err := Parse("t.yaml", []byte(doc))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error = %v, want Errors", err)
	}
	want := []string{
		"t.yaml:10:16: spec.quarantine.allow[1].from: from: rules are not allowed in the quarantine",
		"t.yaml:19:39: spec.devices[0].allow[0].from: cannot be set together with to",
		`t.yaml:20:27: spec.devices[0].allow[1].from.device: device "nope" is not defined in spec.devices`,
		"t.yaml:21:11: spec.devices[0].allow[2].to: must set one of cidr, device, segment or gateway: true, " +
			"under to (a destination) or from (a source)",
		"t.yaml:22:11: spec.devices[0].allow[3].to: must set one of cidr",
		`t.yaml:23:25: spec.devices[0].allow[4].from.cidr: "10.0.0.1/24" has host bits set, use 10.0.0.0/24`,
		"t.yaml:24:18: spec.devices[0].allow[5].from: sets cidr and gateway, must set exactly one",
		"t.yaml:25:52: spec.devices[0].allow[6].ports[0]: port 0",
	}
	text := err.Error()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("error does not contain\n\t%s\ngot:\n%s", w, text)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("got %d errors, want %d:\n%s", len(errs), len(want), text)
	}

	// A valid from: rule round-trips through Marshal and keeps to: rules apart in the diff.
	ok := withSpec(`  gateway: {ipv4: [10.0.0.1]}
` + device + `      ipv4: [10.0.0.11]
      allow:
        - {to: {cidr: 192.0.2.0/24}, proto: tcp, ports: [443]}
        - {from: {cidr: 192.0.2.0/24}, proto: tcp, ports: [443]}
`)
	p, err := Parse("t.yaml", []byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	r := p.Spec.Devices[0].Allow[1]
	if !r.Inbound() || r.From.CIDR != "192.0.2.0/24" || r.To != (Target{}) {
		t.Fatalf("rule 1 = %+v, want a from: rule", r)
	}
	if got := r.String(); got != "from cidr 192.0.2.0/24 proto tcp ports 443" {
		t.Errorf("String = %q", got)
	}
	out, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "to: {}") || strings.Contains(string(out), "from: {}") {
		t.Errorf("Marshal writes an empty end:\n%s", out)
	}
	back, err := Parse("m.yaml", out)
	if err != nil || !reflect.DeepEqual(back, p) {
		t.Fatalf("Marshal round trip: %v\n%s", err, out)
	}
	swapped := strings.Replace(ok, "- {from: {cidr: 192.0.2.0/24}", "- {to: {cidr: 192.0.2.0/24}", 1)
	q, err := Parse("t.yaml", []byte(swapped))
	if err != nil {
		t.Fatal(err)
	}
	d := Compare(p, q)
	if len(d.Devices) != 1 || !reflect.DeepEqual(d.Devices[0].RulesRemoved, []string{r.String()}) {
		t.Errorf("diff of a from: rule turned into a to: rule = %+v", d.Devices)
	}
}

// fromPolicy has devices with and without from: rules, sharing them through a segment.
func fromPolicy() *Policy {
	return &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "from"}, Spec: Spec{
		Gateway: Gateway{IPv4: []string{"10.0.0.1"}, Services: []Service{ServiceDNS, ServiceNTP}},
		Segments: []Segment{{Name: "cams", Allow: []Rule{
			{From: Target{Device: "nvr"}, Proto: "tcp", Ports: []PortRange{one(554)}},
			{To: Target{Device: "nvr"}, Proto: "tcp", Ports: []PortRange{one(554)}},
		}}},
		Devices: []Device{
			{Name: "cam-1", MAC: "02:00:00:00:00:21", IPv4: []string{"10.0.0.21"}, Port: "eth1", Segment: "cams"},
			{Name: "cam-2", MAC: "02:00:00:00:00:22", IPv4: []string{"10.0.0.22"}, Segment: "cams"},
			{Name: "cam-3", MAC: "02:00:00:00:00:23", IPv4: []string{"10.0.0.23"}, Segment: "cams", Allow: []Rule{
				{From: Target{CIDR: "192.0.2.0/24"}, Proto: "tcp", Ports: []PortRange{one(443)}},
				{From: Target{Gateway: true}, Proto: "icmp", ICMP: []ICMPType{"echo-request"}},
			}},
			{Name: "nvr", MAC: "02:00:00:00:00:24", IPv4: []string{"10.0.0.24"}, Allow: []Rule{
				{To: Target{Segment: "cams"}, Proto: "tcp", Ports: []PortRange{one(554)}},
			}},
			{Name: "quiet", MAC: "02:00:00:00:00:25", IPv4: []string{"10.0.0.25"}, Quarantined: true, Allow: []Rule{
				{From: Target{Gateway: true}, Proto: "tcp", Ports: []PortRange{one(22)}},
			}},
		},
	}}
}

func TestCompileFromRules(t *testing.T) {
	p := fromPolicy()
	s := compileForExplain(t, p)
	rec := func(name string) bpf.DevRec {
		for i := range p.Spec.Devices {
			if d := &p.Spec.Devices[i]; d.Name == name {
				return s.Devices[devKey(mustMAC(d.MAC))]
			}
		}
		t.Fatalf("no device %s", name)
		return bpf.DevRec{}
	}
	entries := func(rs uint32) (rules []bpf.RuleKey, prefixes int) {
		for k := range s.Rules {
			if k.Ruleset == rs {
				rules = append(rules, k)
			}
		}
		for k := range s.Prefixes {
			if k.Ruleset == rs {
				prefixes++
			}
		}
		return rules, prefixes
	}
	c1, c2, c3, nvr := rec("cam-1"), rec("cam-2"), rec("cam-3"), rec("nvr")
	const in = bpf.DevInPeerRules | bpf.DevInPrefixRules

	// The segment's from: rule, shared; the outbound rule set is another.
	if c1.InRuleset != c2.InRuleset || c1.Ruleset != c2.Ruleset || c1.InRuleset == c1.Ruleset {
		t.Errorf("cam-1 and cam-2: rule sets %d/%d and %d/%d, want the same pair of two", c1.Ruleset, c1.InRuleset,
			c2.Ruleset, c2.InRuleset)
	}
	if c1.Flags&in != bpf.DevInPeerRules {
		t.Errorf("cam-1 flags %#x: want DevInPeerRules alone of the inbound flags", c1.Flags)
	}
	keys, _ := entries(c1.InRuleset)
	want := bpf.RuleKey{Ruleset: c1.InRuleset, SelKind: bpf.SelDevice, SelId: nvr.DevId, Proto: ProtoTCP}
	if len(keys) != 1 || keys[0] != want {
		t.Errorf("cam-1 inbound rules %+v, want only %+v", keys, want)
	}
	// No gateway services inbound, but outbound.
	for _, rs := range []uint32{c1.InRuleset, c3.InRuleset} {
		keys, _ := entries(rs)
		for _, k := range keys {
			if k.SelKind == bpf.SelGateway && k.Proto == ProtoUDP {
				t.Errorf("inbound rule set %d holds a gateway service: %+v", rs, k)
			}
		}
	}
	if _, ok := s.Rules[bpf.RuleKey{Ruleset: c1.Ruleset, SelKind: bpf.SelGateway, Proto: ProtoUDP}]; !ok {
		t.Errorf("cam-1's outbound rule set lacks the gateway services")
	}

	// cam-3: its own from: rules (a prefix, the gateway) on top of the segment's.
	if c3.InRuleset == c1.InRuleset || c3.Flags&in != in {
		t.Errorf("cam-3: inbound rule set %d flags %#x, want its own with both inbound flags", c3.InRuleset, c3.Flags)
	}
	if c3.Ruleset != c1.Ruleset {
		t.Errorf("cam-3: outbound rule set %d, want cam-1's %d (from: rules are not outbound)", c3.Ruleset, c1.Ruleset)
	}
	// The gateway for icmp, nvr for tcp, the prefix's group for tcp; no multicast closure.
	if keys, prefixes := entries(c3.InRuleset); len(keys) != 3 || prefixes != 1 {
		t.Errorf("cam-3 inbound: %d rules %+v, %d prefixes; want 3 and 1", len(keys), keys, prefixes)
	}

	// nvr has no from: rules: an empty inbound rule set, no inbound flags.
	if keys, prefixes := entries(nvr.InRuleset); len(keys)+prefixes != 0 || nvr.Flags&in != 0 {
		t.Errorf("nvr: inbound rule set %d holds %d rules, %d prefixes, flags %#x; want none", nvr.InRuleset,
			len(keys), prefixes, nvr.Flags)
	}
	if nvr.InRuleset == 0 {
		t.Errorf("nvr: inbound rule set 0, want the empty list's")
	}

	// The address index carries both rule sets and the flags.
	for _, d := range p.Spec.Devices {
		r := rec(d.Name)
		v := s.Addrs[bpf.AddrKey{Addr: in6(netip.MustParseAddr(d.IPv4[0]))}]
		if v.Ruleset != r.Ruleset || v.InRuleset != r.InRuleset || v.Flags != r.Flags {
			t.Errorf("%s: address index %+v, device record %+v", d.Name, v, r)
		}
	}
}

func TestExplainInbound(t *testing.T) {
	p := fromPolicy()
	s := compileForExplain(t, p)
	tests := []struct {
		name string
		q    Query
		want Explanation
	}{
		{name: "a device's from: cidr rule", q: Query{From: "192.0.2.7", To: "cam-3", Proto: "tcp", Port: 443},
			want: Explanation{Src: "192.0.2.7", Dst: "10.0.0.23", Verdict: "pass", Reason: "allow",
				Rule: "spec.devices[2].allow[0]", RuleText: "from cidr 192.0.2.0/24 proto tcp ports 443"}},
		{name: "another port", q: Query{From: "192.0.2.7", To: "cam-3", Proto: "tcp", Port: 22},
			want: Explanation{Src: "192.0.2.7", Dst: "10.0.0.23", Verdict: "drop", Reason: "inbound_denied"}},
		{name: "a segment's from: device rule, from the device's address",
			q: Query{From: "10.0.0.24", To: "cam-1", Proto: "tcp", Port: 554},
			want: Explanation{Src: "10.0.0.24", SrcDevice: "nvr", Dst: "10.0.0.21", Verdict: "pass", Reason: "allow",
				Rule: "spec.segments[0].allow[0]", RuleText: "from device nvr proto tcp ports 554"}},
		{name: "another device's address", q: Query{From: "10.0.0.22", To: "cam-1", Proto: "tcp", Port: 554},
			want: Explanation{Src: "10.0.0.22", SrcDevice: "cam-2", Dst: "10.0.0.21", Verdict: "drop",
				Reason: "inbound_denied"}},
		{name: "from the gateway, an echo request", q: Query{From: "gateway", To: "cam-3", Proto: "icmp"},
			want: Explanation{Src: "10.0.0.1", Dst: "10.0.0.23", Verdict: "pass", Reason: "allow",
				Rule: "spec.devices[2].allow[1]", RuleText: "from gateway proto icmp icmp echo-request"}},
		{name: "no gateway services inbound", q: Query{From: "gateway", To: "cam-3", Proto: "udp", Port: 53},
			want: Explanation{Src: "10.0.0.1", Dst: "10.0.0.23", Verdict: "drop", Reason: "inbound_denied"}},
		{name: "quarantined", q: Query{From: "gateway", To: "quiet", Proto: "tcp", Port: 22},
			want: Explanation{Src: "10.0.0.1", Dst: "10.0.0.25", Verdict: "drop", Reason: "quarantined"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Explain(p, s, tt.q)
			if err != nil {
				t.Fatalf("Explain(%+v): %v", tt.q, err)
			}
			want := tt.want
			want.Direction, want.From, want.DstDevice = DirectionInbound, tt.q.From, tt.q.To
			want.Proto, want.Port, want.Mode = tt.q.Proto, tt.q.Port, "enforce"
			if *got != want {
				t.Errorf("Explain(%+v):\n got %+v\nwant %+v", tt.q, *got, want)
			}
		})
	}

	// Between two devices: the outbound question, and its replies follow the flow.
	got, err := Explain(p, s, Query{From: "nvr", To: "cam-2", Proto: "tcp", Port: 554})
	if err != nil {
		t.Fatal(err)
	}
	if got.Direction != DirectionOutbound || got.Reason != "allow" || got.Rule != "spec.devices[3].allow[0]" ||
		got.Replies != RepliesFollowFlow {
		t.Errorf("nvr to cam-2: %+v", *got)
	}

	for _, tc := range []struct {
		q    Query
		want string
	}{
		{Query{From: "nowhere", To: "cam-1", Proto: "tcp", Port: 554}, `unknown source "nowhere"`},
		{Query{From: "192.0.2.7", To: "192.0.2.8", Proto: "tcp", Port: 554}, `unknown device "192.0.2.7"`},
		{Query{From: "fd00::9", To: "cam-1", Proto: "tcp", Port: 554}, `device "cam-1" has no IPv6 address`},
	} {
		if _, err := Explain(p, s, tc.q); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Explain(%+v) error = %v, want one containing %q", tc.q, err, tc.want)
		}
	}
}

func TestJSONFromRules(t *testing.T) {
	fast, slow, err := bothPaths(t, jsonFleet(2))
	if err != nil || fast == nil || !reflect.DeepEqual(fast, slow) {
		t.Fatalf("fast %v, YAML error %v", fast, err)
	}
	r := fast.Spec.Segments[1].Allow[0]
	if !r.Inbound() || r.From.CIDR != "192.0.2.0/24" || r.To != (Target{}) {
		t.Errorf("spec.segments[1].allow[0] = %+v, want from: cidr 192.0.2.0/24", r)
	}
}

func TestEditorFromRules(t *testing.T) {
	p := fromPolicy()
	p.Spec.Segments[0].Allow = p.Spec.Segments[0].Allow[:1] // only the from: rule names nvr
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	e, err := NewEditor(p, CompileOptions{Revision: 1, Ifindex: explainIfindex})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.PrepareDelete("nvr"); !errors.Is(err, ErrReferenced) {
		t.Errorf("delete nvr, the source of a segment's from: rule: %v", err)
	}
	// cam-2 gains a from: rule of its own: a new inbound rule set, the outbound one kept.
	nd := p.Spec.Devices[1]
	nd.Allow = []Rule{{From: Target{CIDR: "198.51.100.0/24"}, Proto: "udp"}}
	d, err := e.PreparePut("dev.yaml", "", &nd, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Commit(d)
	rec := e.Snapshot().Devices[devKey(mustMAC(nd.MAC))]
	want, err := Compile(e.Policy(), CompileOptions{Revision: d.Revision, Ifindex: explainIfindex})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := canonSnap(e.Snapshot()), canonSnap(want); a != b {
		t.Fatalf("editor and Compile differ:\n%s", firstDiff(a, b))
	}
	if rec.Flags&bpf.DevInPrefixRules == 0 {
		t.Errorf("cam-2 flags %#x: want DevInPrefixRules", rec.Flags)
	}
}

// TestExplainLateralFrom: from a device toward another whose from: rule (a segment's) lets it
// open the connection, the answer is the receiver's rule.
func TestExplainLateralFrom(t *testing.T) {
	p := fromPolicy()
	for i := range p.Spec.Devices {
		if p.Spec.Devices[i].Name == "nvr" {
			p.Spec.Devices[i].Allow = nil // no rule of its own
		}
	}
	s := compileForExplain(t, p)
	e, err := Explain(p, s, Query{From: "nvr", To: "cam-1", Proto: "tcp", Port: 554})
	if err != nil {
		t.Fatal(err)
	}
	if e.Verdict != "pass" || e.Rule != "spec.segments[0].allow[0]" ||
		e.RuleText != "from device nvr proto tcp ports 554" || e.Replies != RepliesFollowFlow {
		t.Errorf("Explain = %+v, want a pass by cam-1's segment's from: rule, replies following the flow", *e)
	}
}
