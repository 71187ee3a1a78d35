package policy

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/bpf"
)

// icmpDoc is a policy whose device d1 has one rule to the gateway with proto and the rest of
// the rule (a YAML flow mapping's remaining fields, e.g. `icmp: [8]`); the rule is on line 10.
func icmpDoc(proto, rest string) string {
	return withSpec(device + fmt.Sprintf("      allow:\n        - {to: {gateway: true}, proto: %s, %s}\n", proto, rest))
}

func TestParseICMP(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proto string
		rest  string
		want  []ICMPType
	}{
		{name: "icmp names", proto: "icmp", rest: "icmp: [echo-request, echo-reply, timestamp-reply]",
			want: []ICMPType{"echo-request", "echo-reply", "timestamp-reply"}},
		{name: "icmpv6 names", proto: "icmpv6", rest: "icmp: [packet-too-big, neighbor-solicitation, redirect]",
			want: []ICMPType{"packet-too-big", "neighbor-solicitation", "redirect"}},
		{name: "numbers", proto: "icmp", rest: "icmp: [0, 8, 255, \"3\"]", want: []ICMPType{"0", "8", "255", "3"}},
		{name: "codes", proto: "icmp", rest: `icmp: [3/4, "destination-unreachable/3", 11/0, 255/255]`,
			want: []ICMPType{"3/4", "destination-unreachable/3", "11/0", "255/255"}},
		{name: "proto by number", proto: `"58"`, rest: "icmp: [echo-request]", want: []ICMPType{"echo-request"}},
		{name: "icmp proto by number", proto: `"1"`, rest: "icmp: [router-solicitation]",
			want: []ICMPType{"router-solicitation"}},
		{name: "empty list is every type", proto: "icmp", rest: "icmp: []"},
		{name: "no icmp", proto: "icmp", rest: "ports: []"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := icmpDoc(tc.proto, tc.rest)
			p, err := Parse("t.yaml", []byte(doc))
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, doc)
			}
			if got := p.Spec.Devices[0].Allow[0].ICMP; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("icmp = %q, want %q", got, tc.want)
			}
			js := toJSON(t, []byte(doc), false)
			fast, slow, err := bothPaths(t, js)
			if err != nil || fast == nil || !reflect.DeepEqual(fast, slow) || !reflect.DeepEqual(fast, p) {
				t.Errorf("JSON: fast %+v, YAML path %+v (%v), want %+v\n%s", fast, slow, err, p, js)
			}
		})
	}
}

func TestParseICMPErrors(t *testing.T) {
	const at = "t.yaml:10:"
	const path = "spec.devices[0].allow[0]"
	for _, tc := range []struct {
		name  string
		proto string
		rest  string
		want  string
	}{
		{name: "proto tcp", proto: "tcp", rest: "icmp: [echo-request]",
			want: at + "51: " + path + ".icmp: icmp types need proto icmp or icmpv6"},
		{name: "proto any", proto: "any", rest: "icmp: [8]",
			want: at + "51: " + path + ".icmp: icmp types need proto icmp or icmpv6"},
		{name: "ports and icmp", proto: "icmp", rest: "ports: [80], icmp: [8]",
			want: at + "65: " + path + ".icmp: ports and icmp cannot be set together"},
		{name: "unknown name", proto: "icmp", rest: "icmp: [echo, 8]",
			want: at + "53: " + path + `.icmp[0]: "echo" is not an icmp type, use a number 0-255 or one of ` +
				"echo-reply, destination-unreachable"},
		{name: "name of the other family", proto: "icmp", rest: "icmp: [packet-too-big]",
			want: path + `.icmp[0]: icmp type "packet-too-big" in "packet-too-big" is an icmpv6 type, not an icmp one`},
		{name: "icmp name under icmpv6", proto: "icmpv6", rest: "icmp: [8, source-quench]",
			want: at + "58: " + path + `.icmp[1]: icmp type "source-quench" in "source-quench" is an icmp type`},
		{name: "type 256", proto: "icmp", rest: "icmp: [256]",
			want: path + `.icmp[0]: icmp type 256 in "256" is out of range 0-255`},
		{name: "code 256", proto: "icmp", rest: `icmp: ["3/256"]`,
			want: path + `.icmp[0]: icmp code 256 in "3/256" is out of range 0-255`},
		{name: "empty code", proto: "icmp", rest: `icmp: ["3/"]`,
			want: path + `.icmp[0]: icmp code "" in "3/" is not a number 0-255`},
		{name: "named code", proto: "icmp", rest: `icmp: ["3/port"]`,
			want: path + `.icmp[0]: icmp code "port" in "3/port" is not a number 0-255`},
		{name: "two codes", proto: "icmp", rest: `icmp: ["3/1/2"]`,
			want: path + `.icmp[0]: icmp code "1/2" in "3/1/2" is not a number 0-255`},
		{name: "leading zero", proto: "icmp", rest: `icmp: ["08"]`,
			want: path + `.icmp[0]: icmp type "08" in "08" has a leading zero, remove it`},
		{name: "negative", proto: "icmp", rest: `icmp: [-1]`,
			want: path + `.icmp[0]: "-1" is not an icmp type`},
		{name: "upper case", proto: "icmp", rest: `icmp: [Echo-Request]`,
			want: path + `.icmp[0]: "Echo-Request" is not an icmp type`},
		{name: "empty entry", proto: "icmp", rest: `icmp: [""]`,
			want: path + `.icmp[0]: "" is not an icmp type`},
		{name: "not a list", proto: "icmp", rest: `icmp: echo-request`,
			want: path + `.icmp: expected a list, got string "echo-request"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := icmpDoc(tc.proto, tc.rest)
			_, err := Parse("t.yaml", []byte(doc))
			var errs Errors
			if !errors.As(err, &errs) || len(errs) != 1 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one error containing\n\t%s", err, tc.want)
			}
			checkMessage(t, errs[0].Msg)
			// The JSON form is rejected with the same error (at its own position).
			_, jerr := Parse("t.yaml", toJSON(t, []byte(doc), false))
			var jerrs Errors
			if !errors.As(jerr, &jerrs) || len(jerrs) != 1 || jerrs[0].Path != errs[0].Path || jerrs[0].Msg != errs[0].Msg {
				t.Errorf("JSON error = %v, want %v", jerr, err)
			}
		})
	}
}

func TestParseICMPType(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry string
		proto uint8
		want  PortRange
	}{
		{name: "echo-request", entry: "echo-request", proto: ProtoICMP, want: PortRange{0x0800, 0x08ff}},
		{name: "echo-reply is type 0", entry: "echo-reply", proto: ProtoICMP, want: PortRange{0x0000, 0x00ff}},
		{name: "type and code", entry: "3/4", proto: ProtoICMP, want: PortRange{0x0304, 0x0304}},
		{name: "name and code", entry: "destination-unreachable/3", proto: ProtoICMP, want: PortRange{0x0303, 0x0303}},
		{name: "v6 echo-request", entry: "echo-request", proto: ProtoICMPv6, want: PortRange{0x8000, 0x80ff}},
		{name: "v6 unreachable", entry: "destination-unreachable/4", proto: ProtoICMPv6, want: PortRange{0x0104, 0x0104}},
		{name: "v6 neighbor-advertisement", entry: "neighbor-advertisement", proto: ProtoICMPv6,
			want: PortRange{0x8800, 0x88ff}},
		{name: "type 255 code 255", entry: "255/255", proto: ProtoICMPv6, want: PortRange{0xffff, 0xffff}},
		{name: "type 0 code 0", entry: "0/0", proto: ProtoICMP, want: PortRange{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseICMPType(tc.entry, tc.proto)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Range(); got != tc.want {
				t.Errorf("range = %#04x-%#04x, want %#04x-%#04x", got.Lo, got.Hi, tc.want.Lo, tc.want.Hi)
			}
		})
	}
	if _, err := ParseICMPType("8", ProtoTCP); err == nil {
		t.Errorf("ParseICMPType for tcp: no error")
	}
}

// gatewayRule is the compiled rule of device name's rule set to the gateway for proto.
func gatewayRule(t *testing.T, s *Snapshot, p *Policy, name string, proto uint8) (bpf.RuleVal, uint32) {
	t.Helper()
	for _, d := range p.Spec.Devices {
		if d.Name != name {
			continue
		}
		rs := s.Devices[devKey(mustMAC(d.MAC))].Ruleset
		v, ok := s.Rules[bpf.RuleKey{Ruleset: rs, SelKind: bpf.SelGateway, Proto: proto}]
		if !ok {
			t.Fatalf("%s: no gateway rule for proto %d", name, proto)
		}
		return v, rs
	}
	t.Fatalf("no device %s", name)
	return bpf.RuleVal{}, 0
}

// ranges lists the ranges of a compiled rule value.
func ranges(v bpf.RuleVal) []PortRange {
	out := make([]PortRange, v.N)
	for i := range out {
		out[i] = PortRange{v.Ranges[i].Lo, v.Ranges[i].Hi}
	}
	return out
}

func TestCompileICMP(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules string // the device's allow list, one flow mapping per line
		proto uint8
		all   bool
		want  []PortRange
	}{
		{name: "echo-request", rules: "{to: {gateway: true}, proto: icmp, icmp: [echo-request]}", proto: ProtoICMP,
			want: []PortRange{{0x0800, 0x08ff}}},
		{name: "type and code", rules: "{to: {gateway: true}, proto: icmp, icmp: [3/4]}", proto: ProtoICMP,
			want: []PortRange{{0x0304, 0x0304}}},
		{name: "sorted and merged", proto: ProtoICMP,
			rules: "{to: {gateway: true}, proto: icmp, icmp: [11, 3/4, echo-request, 3/5, 9, 3/4, 12/1]}",
			want:  []PortRange{{0x0304, 0x0305}, {0x0800, 0x09ff}, {0x0b00, 0x0b00 | 0xff}, {0x0c01, 0x0c01}}},
		{name: "code inside its type", proto: ProtoICMP,
			rules: "{to: {gateway: true}, proto: icmp, icmp: [3/1, destination-unreachable]}",
			want:  []PortRange{{0x0300, 0x03ff}}},
		{name: "rules merged", proto: ProtoICMPv6,
			rules: "{to: {gateway: true}, proto: icmpv6, icmp: [echo-request]}\n" +
				"        - {to: {gateway: true}, proto: \"58\", icmp: [echo-reply, 1/4]}",
			want: []PortRange{{0x0104, 0x0104}, {0x8000, 0x81ff}}},
		{name: "no icmp is every type", rules: "{to: {gateway: true}, proto: icmp}", proto: ProtoICMP, all: true},
		{name: "a rule without icmp allows every type", proto: ProtoICMPv6, all: true,
			rules: "{to: {gateway: true}, proto: icmpv6, icmp: [echo-request]}\n" +
				"        - {to: {gateway: true}, proto: icmpv6}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := withSpec(device + "      allow:\n        - " + tc.rules + "\n")
			p, err := Parse("t.yaml", []byte(doc))
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, doc)
			}
			s, err := Compile(p, CompileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			v, _ := gatewayRule(t, s, p, "d1", tc.proto)
			if all := v.Flags&bpf.RuleAllPorts != 0; all != tc.all {
				t.Fatalf("all = %v, want %v", all, tc.all)
			}
			if got := ranges(v); !tc.all && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ranges = %x, want %x", got, tc.want)
			}
		})
	}
}

func TestCompileICMPTooManyRanges(t *testing.T) {
	var types []string
	for i := range 17 {
		types = append(types, fmt.Sprintf("%d/0", 2*i))
	}
	doc := withSpec(device + "      allow:\n        - {to: {gateway: true}, proto: icmp, icmp: [" +
		strings.Join(types, ", ") + "]}\n")
	p, err := Parse("t.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Compile(p, CompileOptions{}); err == nil ||
		!strings.Contains(err.Error(), "17 distinct port ranges for one destination and protocol 1, at most 16") {
		t.Fatalf("Compile = %v, want the 16-range error", err)
	}
}

// TestICMPListKey: devices whose rule lists differ only by icmp types get different rule sets.
func TestICMPListKey(t *testing.T) {
	doc := withSpec(`  devices:
    - name: a
      mac: 02:00:00:00:00:01
      allow: [{to: {gateway: true}, proto: icmp, icmp: [echo-request]}]
    - name: b
      mac: 02:00:00:00:00:02
      allow: [{to: {gateway: true}, proto: icmp, icmp: [echo-reply]}]
    - name: c
      mac: 02:00:00:00:00:03
      allow: [{to: {gateway: true}, proto: icmp}]
    - name: d
      mac: 02:00:00:00:00:04
      allow: [{to: {gateway: true}, proto: icmp, icmp: [echo-request]}]
`)
	p, err := Parse("t.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Compile(p, CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	va, rsa := gatewayRule(t, s, p, "a", ProtoICMP)
	vb, rsb := gatewayRule(t, s, p, "b", ProtoICMP)
	vc, rsc := gatewayRule(t, s, p, "c", ProtoICMP)
	_, rsd := gatewayRule(t, s, p, "d", ProtoICMP)
	if rsa == rsb || rsa == rsc || rsb == rsc {
		t.Errorf("rule sets a %d, b %d, c %d: want three different ones", rsa, rsb, rsc)
	}
	if rsa != rsd {
		t.Errorf("rule sets a %d, d %d: the same list, want one rule set", rsa, rsd)
	}
	if got := ranges(va); !reflect.DeepEqual(got, []PortRange{{0x0800, 0x08ff}}) {
		t.Errorf("a: ranges %x", got)
	}
	if got := ranges(vb); !reflect.DeepEqual(got, []PortRange{{0x0000, 0x00ff}}) {
		t.Errorf("b: ranges %x", got)
	}
	if vc.Flags&bpf.RuleAllPorts == 0 {
		t.Errorf("c: not every type")
	}
	r := []Rule{{To: Target{Gateway: true}, Proto: "icmp", ICMP: []ICMPType{"8"}}}
	r2 := []Rule{{To: Target{Gateway: true}, Proto: "icmp", ICMP: []ICMPType{"8/0"}}}
	if string(listKey(nil, "", r, false)) == string(listKey(nil, "", r2, false)) {
		t.Errorf("listKey does not tell icmp [8] from [8/0]")
	}
}

func TestICMPRoundTrip(t *testing.T) {
	doc := withSpec(`  devices:
    - name: a
      mac: 02:00:00:00:00:01
      allow:
        - {to: {gateway: true}, proto: icmp, icmp: [echo-request, 8, "3/4", "destination-unreachable/3", 255]}
        - {to: {cidr: "fd00::/64"}, proto: icmpv6, icmp: [packet-too-big, 135, "1/4"]}
`)
	p, err := Parse("t.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "- 8\n") || !strings.Contains(string(out), "- 3/4\n") {
		t.Errorf("Marshal does not write 8 as a number and 3/4 plainly:\n%s", out)
	}
	back, err := Parse("m.yaml", out)
	if err != nil {
		t.Fatalf("Parse(Marshal): %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, p) {
		t.Errorf("round trip differs:\n%+v\n%+v\n%s", back.Spec.Devices, p.Spec.Devices, out)
	}
}

func TestICMPRuleString(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule Rule
		want string
	}{
		{name: "named, sorted, deduplicated",
			rule: Rule{To: Target{Gateway: true}, Proto: "icmp", ICMP: []ICMPType{"8", "3/4", "echo-request", "200"}},
			want: "to gateway proto icmp icmp 200,destination-unreachable/4,echo-request"},
		{name: "icmpv6 names",
			rule: Rule{To: Target{Gateway: true}, Proto: "58", ICMP: []ICMPType{"128", "2"}},
			want: "to gateway proto icmpv6 icmp echo-request,packet-too-big"},
		{name: "none", rule: Rule{To: Target{Gateway: true}, Proto: "icmp"}, want: "to gateway proto icmp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.rule.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestICMPDiff(t *testing.T) {
	base := func(icmp ...ICMPType) *Policy {
		return &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "t"}, Spec: Spec{
			Devices: []Device{{Name: "a", MAC: "02:00:00:00:00:01",
				Allow: []Rule{{To: Target{Gateway: true}, Proto: "icmp", ICMP: icmp}}}}}}
	}
	if d := Compare(base("echo-request"), base("8")); len(d.Devices) != 0 {
		t.Errorf("respelling echo-request as 8 is a change: %+v", d)
	}
	d := Compare(base("echo-request"), base("echo-reply"))
	if len(d.Devices) != 1 || !strings.Contains(fmt.Sprint(d.Devices), "echo-reply") {
		t.Errorf("Compare = %+v, want device a changed to echo-reply", d)
	}
}

// icmpExplainPolicy has a device that may only ping the gateway and get unreachables from
// 198.51.100.0/24, and a device whose icmpv6 rule to the gateway lists no types.
func icmpExplainPolicy() *Policy {
	return &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "icmp"}, Spec: Spec{
		Gateway: Gateway{IPv4: []string{"10.0.0.1"}, IPv6: []string{"fd00::1"}},
		Devices: []Device{
			{Name: "pinger", MAC: "02:00:00:00:00:0b", IPv4: []string{"10.0.0.11"}, IPv6: []string{"fd00::11"},
				Allow: []Rule{
					{To: Target{Gateway: true}, Proto: "icmp", ICMP: []ICMPType{"echo-request"}},
					{To: Target{CIDR: "198.51.100.0/24"}, Proto: "icmp", ICMP: []ICMPType{"3/4"}},
					{To: Target{Gateway: true}, Proto: "icmpv6", ICMP: []ICMPType{"echo-request", "packet-too-big"}},
				}},
			{Name: "open", MAC: "02:00:00:00:00:0c", IPv4: []string{"10.0.0.12"}, IPv6: []string{"fd00::12"},
				Allow: []Rule{{To: Target{Gateway: true}, Proto: "icmpv6"}}},
		},
	}}
}

func TestExplainICMP(t *testing.T) {
	p := icmpExplainPolicy()
	s := compileForExplain(t, p)
	for _, tc := range []struct {
		name    string
		q       Query
		verdict string
		rule    string
		icmp    string
		reason  string // of a drop; no_rule when empty
	}{
		{name: "echo-request allowed", q: Query{From: "pinger", To: "gateway", Proto: "icmp", ICMP: "echo-request"},
			verdict: "pass", rule: "spec.devices[0].allow[0]", icmp: "echo-request/0"},
		{name: "default is an echo request", q: Query{From: "pinger", To: "gateway", Proto: "icmp"},
			verdict: "pass", rule: "spec.devices[0].allow[0]"},
		{name: "echo request with another code", q: Query{From: "pinger", To: "gateway", Proto: "icmp", ICMP: "8/7"},
			verdict: "pass", rule: "spec.devices[0].allow[0]", icmp: "echo-request/7"},
		{name: "timestamp denied", q: Query{From: "pinger", To: "gateway", Proto: "icmp", ICMP: "timestamp"},
			verdict: "drop", icmp: "timestamp/0"},
		// An error passes only when it quotes a tracked flow, whatever the rules list: a probe
		// quotes none.
		{name: "3/4 listed, no flow", q: Query{From: "pinger", To: "198.51.100.9", Proto: "icmp",
			ICMP: "destination-unreachable/4"}, verdict: "drop", icmp: "destination-unreachable/4", reason: "icmp_no_flow"},
		{name: "3/3 not listed, no flow", q: Query{From: "pinger", To: "198.51.100.9", Proto: "icmp", ICMP: "3/3"},
			verdict: "drop", icmp: "destination-unreachable/3", reason: "icmp_no_flow"},
		{name: "v6 packet-too-big listed, no flow", q: Query{From: "pinger", To: "gateway", Proto: "icmpv6", ICMP: "2"},
			verdict: "drop", icmp: "packet-too-big/0", reason: "icmp_no_flow"},
		{name: "v6 echo-reply denied", q: Query{From: "pinger", To: "gateway", Proto: "icmpv6", ICMP: "echo-reply"},
			verdict: "drop", icmp: "echo-reply/0"},
		{name: "no icmp list allows every type", q: Query{From: "open", To: "gateway", Proto: "icmpv6", ICMP: "200/9"},
			verdict: "pass", rule: "spec.devices[1].allow[0]", icmp: "200/9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Explain(p, s, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if e.Verdict != tc.verdict || e.Rule != tc.rule || e.ICMP != tc.icmp {
				t.Errorf("Explain = %+v, want verdict %s, rule %q, icmp %q", *e, tc.verdict, tc.rule, tc.icmp)
			}
			want := tc.reason
			if want == "" {
				want = "no_rule"
			}
			if tc.verdict == "drop" && e.Reason != want {
				t.Errorf("reason %s, want %s", e.Reason, want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		q    Query
		want string
	}{
		{name: "icmp with tcp", q: Query{From: "pinger", To: "gateway", Proto: "tcp", Port: 1, ICMP: "8"},
			want: "icmp types need proto icmp or icmpv6"},
		{name: "icmp with any", q: Query{From: "pinger", To: "gateway", ICMP: "8"},
			want: "icmp types need proto icmp or icmpv6"},
		{name: "unknown name", q: Query{From: "pinger", To: "gateway", Proto: "icmpv6", ICMP: "source-quench"},
			want: "is an icmp type, not an icmpv6 one"},
		{name: "code out of range", q: Query{From: "pinger", To: "gateway", Proto: "icmp", ICMP: "3/300"},
			want: "out of range 0-255"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Explain(p, s, tc.q); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestICMPJSONParity: the JSON fast path takes an icmp list only as the YAML path decodes it,
// and leaves every literal it does not take to the YAML path.
func TestICMPJSONParity(t *testing.T) {
	const doc = `{"apiVersion": "ztgate/v1", "kind": "Policy", "metadata": {"name": "t"}, "spec": {"devices": ` +
		`[{"name": "d1", "mac": "02:00:00:00:00:01", "allow": [{"to": {"gateway": true}, "proto": "icmp", "icmp": [%s]}]}]}}`
	for _, tc := range []struct {
		name    string
		literal string
		fast    bool // whether the fast path takes the document
	}{
		{name: "number", literal: "8", fast: true},
		{name: "zero", literal: "0", fast: true},
		{name: "255", literal: "255", fast: true},
		{name: "string number", literal: `"8"`, fast: true},
		{name: "name", literal: `"echo-request"`, fast: true},
		{name: "type and code", literal: `"3/4"`, fast: true},
		{name: "several", literal: `8, "3/4", 0, "timestamp"`, fast: true},
		{name: "256", literal: "256"},
		{name: "leading zero", literal: "08"},
		{name: "string leading zero", literal: `"08"`},
		{name: "float", literal: "8.0"},
		{name: "exponent", literal: "8e0"},
		{name: "negative", literal: "-8"},
		{name: "huge", literal: "123456789012345678901234"},
		{name: "bool", literal: "true"},
		{name: "null", literal: "null"},
		{name: "object", literal: `{"type": 8}`},
		{name: "unknown name", literal: `"ping"`},
		{name: "code 256", literal: `"3/256"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(fmt.Sprintf(doc, tc.literal))
			fast, slow, err := bothPaths(t, data)
			if (fast != nil) != tc.fast {
				t.Fatalf("fast path took it: %v, want %v (YAML path: %v)", fast != nil, tc.fast, err)
			}
			if fast != nil && (err != nil || !reflect.DeepEqual(fast, slow)) {
				t.Errorf("the paths differ:\nfast %+v\nslow %+v (%v)", fast, slow, err)
			}
		})
	}
}
