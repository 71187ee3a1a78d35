package policy

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func pr(lo, hi uint16) PortRange { return PortRange{Lo: lo, Hi: hi} }

func TestRuleString(t *testing.T) {
	tests := []struct {
		r    Rule
		want string
	}{
		{
			r:    Rule{To: Target{Device: "hvac-ctl"}, Proto: "udp", Ports: []PortRange{pr(5683, 5683)}},
			want: "to device hvac-ctl proto udp ports 5683",
		},
		{
			r:    Rule{To: Target{CIDR: "203.0.113.0/24"}, Proto: "tcp", Ports: []PortRange{pr(443, 443), pr(8000, 8080)}},
			want: "to cidr 203.0.113.0/24 proto tcp ports 443,8000-8080",
		},
		{r: Rule{To: Target{Segment: "brokers"}, Proto: "any"}, want: "to segment brokers proto any"},
		{r: Rule{To: Target{Segment: "brokers"}}, want: "to segment brokers proto any"},
		{r: Rule{To: Target{Gateway: true}, Proto: "icmp"}, want: "to gateway proto icmp"},
		{r: Rule{To: Target{Gateway: true}, Proto: "icmpv6"}, want: "to gateway proto icmpv6"},
		{r: Rule{To: Target{Gateway: true}, Proto: "47"}, want: "to gateway proto 47"},
		// Numbers of named protocols, unsorted and repeated ports, a non-canonical prefix.
		{
			r: Rule{To: Target{CIDR: "2001:DB8::/32"}, Proto: "6",
				Ports: []PortRange{pr(8000, 8080), pr(443, 443), pr(443, 443)}},
			want: "to cidr 2001:db8::/32 proto tcp ports 443,8000-8080",
		},
		{
			r:    Rule{To: Target{Gateway: true}, Proto: "17", Ports: []PortRange{pr(53, 53)}},
			want: "to gateway proto udp ports 53",
		},
		{r: Rule{To: Target{Gateway: true}, Proto: "bogus"}, want: "to gateway proto bogus"},
		{r: Rule{}, want: "to nothing proto any"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.r, got, tt.want)
		}
	}
}

// diffBase is the policy the Compare tests change.
func diffBase() *Policy {
	return &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "p"}, Spec: Spec{
		Mode:    ModeEnforce,
		Gateway: Gateway{IPv4: []string{"10.0.0.1"}, IPv6: []string{"fd00::1"}, Services: []Service{ServiceDNS}},
		Quarantine: Quarantine{Allow: []Rule{
			{To: Target{Gateway: true}, Proto: "icmp"},
		}},
		Segments: []Segment{
			{Name: "sensors", Allow: []Rule{{To: Target{CIDR: "0.0.0.0/0"}}}},
			{Name: "brokers"},
		},
		Devices: []Device{
			{Name: "thermostat", MAC: "02:00:00:00:00:05", IPv4: []string{"10.0.0.5"}, Segment: "sensors"},
			{Name: "old-sensor", MAC: "02:00:00:00:00:06", IPv4: []string{"10.0.0.6"}, Segment: "sensors"},
			{Name: "hvac", MAC: "02:00:00:00:00:07", IPv4: []string{"10.0.0.7"}, Segment: "brokers"},
		},
	}}
}

func TestCompare(t *testing.T) {
	tests := []struct {
		name   string
		change func(p *Policy)
		want   Diff
	}{
		{name: "identical", change: func(p *Policy) {}, want: Diff{}},
		{name: "respelled values and repeated rules are no change", change: func(p *Policy) {
			p.Spec.Devices[0].MAC = "02-00-00-00-00-05"
			p.Spec.Devices[1].MAC = "0200.0000.0006"
			p.Spec.Gateway.IPv6 = []string{"fd00:0::1"}
			p.Spec.Segments[0].Allow = []Rule{{To: Target{CIDR: "0.0.0.0/0"}, Proto: "any"}}
			p.Spec.Quarantine.Allow = append(p.Spec.Quarantine.Allow, p.Spec.Quarantine.Allow[0])
		}, want: Diff{}},
		{
			name: "settings",
			change: func(p *Policy) {
				p.Spec.Mode = ModeAudit
				p.Spec.Gateway.IPv4 = []string{"10.0.0.1", "10.0.1.1"}
				p.Spec.Gateway.IPv6 = nil
				p.Spec.Gateway.Services = []Service{ServiceDNS, ServiceNTP}
				dns := Rule{To: Target{Gateway: true}, Proto: "udp", Ports: []PortRange{pr(53, 53)}}
				p.Spec.Quarantine.Allow = append(p.Spec.Quarantine.Allow, dns)
			},
			want: Diff{Settings: []FieldChange{
				{"spec.mode", "enforce", "audit"},
				{"spec.gateway.ipv4", "10.0.0.1", "10.0.0.1,10.0.1.1"},
				{"spec.gateway.ipv6", "fd00::1", ""},
				{"spec.gateway.services", "dns", "dns,ntp"},
				{"spec.quarantine.allow", "to gateway proto icmp", "to gateway proto icmp; to gateway proto udp ports 53"},
			}},
		},
		{name: "devices added, removed and changed", change: func(p *Policy) {
			p.Spec.Devices = []Device{
				{Name: "thermostat", MAC: "02:00:00:00:00:15", IPv4: []string{"10.0.0.15"}, IPv6: []string{"fd00::15"},
					Port: "eth1", VLAN: 20, Mode: ModeAudit, Quarantined: true,
					Allow: []Rule{{To: Target{Device: "hvac"}, Proto: "udp", Ports: []PortRange{pr(5683, 5683)}}}},
				{Name: "hvac", MAC: "02:00:00:00:00:07", IPv4: []string{"10.0.0.7"}, Segment: "brokers"},
				{Name: "cam-2", MAC: "02:00:00:00:00:08"},
			}
		}, want: Diff{Devices: []ItemChange{
			{Op: OpAdded, Name: "cam-2"},
			{Op: OpRemoved, Name: "old-sensor"},
			{Op: OpChanged, Name: "thermostat", Fields: []FieldChange{
				{"mac", "02:00:00:00:00:05", "02:00:00:00:00:15"},
				{"ipv4", "10.0.0.5", "10.0.0.15"},
				{"ipv6", "", "fd00::15"},
				{"port", "", "eth1"},
				{"vlan", "", "20"},
				{"segment", "sensors", ""},
				{"mode", "", "audit"},
				{"quarantined", "", "true"},
			}, RulesAdded: []string{"to device hvac proto udp ports 5683"}},
		}}},
		{name: "device rules only", change: func(p *Policy) {
			p.Spec.Devices[2].Allow = []Rule{
				{To: Target{Gateway: true}, Proto: "icmp"},
				{To: Target{CIDR: "203.0.113.0/24"}, Proto: "tcp", Ports: []PortRange{pr(443, 443)}},
			}
		}, want: Diff{Devices: []ItemChange{{Op: OpChanged, Name: "hvac",
			RulesAdded: []string{"to cidr 203.0.113.0/24 proto tcp ports 443", "to gateway proto icmp"}}}}},
		{
			name: "segments added, removed and changed",
			change: func(p *Policy) {
				p.Spec.Segments = []Segment{
					{Name: "sensors", Mode: ModeAudit, Allow: []Rule{
						{To: Target{Segment: "brokers"}, Proto: "tcp", Ports: []PortRange{pr(8883, 8883)}}}},
					{Name: "cameras"},
				}
				p.Spec.Devices[2].Segment = ""
			},
			want: Diff{
				Segments: []ItemChange{
					{Op: OpRemoved, Name: "brokers"},
					{Op: OpAdded, Name: "cameras"},
					{Op: OpChanged, Name: "sensors", Fields: []FieldChange{{"mode", "", "audit"}},
						RulesAdded:   []string{"to segment brokers proto tcp ports 8883"},
						RulesRemoved: []string{"to cidr 0.0.0.0/0 proto any"}},
				},
				Devices: []ItemChange{{Op: OpChanged, Name: "hvac", Fields: []FieldChange{{"segment", "brokers", ""}}}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, new := diffBase(), diffBase()
			tt.change(new)
			got := Compare(old, new)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Compare:\n got %+v\nwant %+v", got, tt.want)
			}
			if got.Empty() != tt.want.Empty() {
				t.Errorf("Empty() = %v", got.Empty())
			}
			if back := Compare(new, new); !back.Empty() {
				t.Errorf("Compare(new, new) = %+v, want empty", back)
			}
		})
	}
}

func TestCompareServiceOrder(t *testing.T) {
	old, new := diffBase(), diffBase()
	old.Spec.Gateway.Services = []Service{ServiceDNS, ServiceNTP}
	new.Spec.Gateway.Services = []Service{ServiceNTP, ServiceDNS}
	if d := Compare(old, new); !d.Empty() {
		t.Errorf("reordering services: Compare = %+v, want empty", d)
	}
	new.Spec.Gateway.Services = []Service{ServiceNTP}
	want := []FieldChange{{"spec.gateway.services", "dns,ntp", "ntp"}}
	if d := Compare(old, new); !reflect.DeepEqual(d.Settings, want) {
		t.Errorf("dropping a service: Settings = %+v, want %+v", d.Settings, want)
	}
}

func TestCompareNil(t *testing.T) {
	p := diffBase()
	got := Compare(nil, p)
	want := Diff{
		Settings: []FieldChange{
			{"spec.mode", "", "enforce"},
			{"spec.gateway.ipv4", "", "10.0.0.1"},
			{"spec.gateway.ipv6", "", "fd00::1"},
			{"spec.gateway.services", "", "dns"},
			{"spec.quarantine.allow", "", "to gateway proto icmp"},
		},
		Segments: []ItemChange{{Op: OpAdded, Name: "brokers"}, {Op: OpAdded, Name: "sensors"}},
		Devices: []ItemChange{
			{Op: OpAdded, Name: "hvac"}, {Op: OpAdded, Name: "old-sensor"}, {Op: OpAdded, Name: "thermostat"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Compare(nil, p):\n got %+v\nwant %+v", got, want)
	}
	if got.Empty() {
		t.Error("Compare(nil, p).Empty() = true")
	}
	if d := Compare(nil, nil); !d.Empty() {
		t.Errorf("Compare(nil, nil) = %+v, want empty", d)
	}
	rev := Compare(p, nil)
	if len(rev.Devices) != 3 || rev.Devices[0].Op != OpRemoved ||
		len(rev.Segments) != 2 || rev.Segments[1].Op != OpRemoved {
		t.Errorf("Compare(p, nil) = %+v, want everything removed", rev)
	}
}

func TestDiffEmpty(t *testing.T) {
	tests := []struct {
		d    Diff
		want bool
	}{
		{d: Diff{}, want: true},
		{d: Diff{Settings: []FieldChange{{"spec.mode", "", "audit"}}}, want: false},
		{d: Diff{Segments: []ItemChange{{Op: OpAdded, Name: "s"}}}, want: false},
		{d: Diff{Devices: []ItemChange{{Op: OpRemoved, Name: "d"}}}, want: false},
	}
	for _, tt := range tests {
		if got := tt.d.Empty(); got != tt.want {
			t.Errorf("%+v.Empty() = %v, want %v", tt.d, got, tt.want)
		}
	}
}

func TestDiffString(t *testing.T) {
	if got := (Diff{}).String(); got != "no changes\n" {
		t.Errorf("empty Diff.String() = %q", got)
	}

	old := diffBase()
	old.Spec.Devices = append(old.Spec.Devices, Device{Name: "hvac-ctl", MAC: "02:00:00:00:00:09"})
	new := diffBase()
	new.Spec.Mode = ModeAudit
	new.Spec.Devices = []Device{
		{Name: "thermostat", MAC: "02:00:00:00:00:05", IPv4: []string{"10.0.0.6"}, Segment: "sensors",
			Allow: []Rule{{To: Target{Device: "hvac"}, Proto: "udp", Ports: []PortRange{pr(5683, 5683)}}}},
		{Name: "hvac", MAC: "02:00:00:00:00:07", IPv4: []string{"10.0.0.7"}, Segment: "brokers"},
		{Name: "cam-2", MAC: "02:00:00:00:00:08", Port: "eth1"},
	}
	new.Spec.Segments[0].Allow = nil
	new.Spec.Segments[1].Allow = []Rule{{To: Target{Gateway: true}, Proto: "icmp"}}
	want := strings.Join([]string{
		"~ spec.mode: enforce -> audit",
		"+ device cam-2",
		`- device hvac-ctl`,
		"- device old-sensor",
		"~ device thermostat: ipv4 10.0.0.5 -> 10.0.0.6",
		"~ device thermostat: + to device hvac proto udp ports 5683",
		"~ segment brokers: + to gateway proto icmp",
		"~ segment sensors: - to cidr 0.0.0.0/0 proto any",
	}, "\n") + "\n"
	if got := Compare(old, new).String(); got != want {
		t.Errorf("Diff.String():\n%s\nwant:\n%s", got, want)
	}

	// Unset values, several fields, removed rules before added ones.
	d := Diff{Devices: []ItemChange{{Op: OpChanged, Name: "d", Fields: []FieldChange{
		{"port", "", "eth1"}, {"vlan", "20", ""}},
		RulesAdded: []string{"to gateway proto icmp"}, RulesRemoved: []string{"to gateway proto any"}}}}
	want = `~ device d: port "" -> eth1
~ device d: vlan 20 -> ""
~ device d: - to gateway proto any
~ device d: + to gateway proto icmp
`
	if got := d.String(); got != want {
		t.Errorf("Diff.String():\n%s\nwant:\n%s", got, want)
	}
}

// TestCompileDeterministic: compiling the same policy twice gives the same snapshot (the agent
// relies on it to recognise the policy it pinned before a restart).
func TestCompileDeterministic(t *testing.T) {
	p := &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "det"}}
	p.Spec.Gateway = Gateway{IPv4: []string{"10.0.0.1"}}
	var rules []Rule
	for i := range 12 {
		port := uint16(100 + i)
		rules = append(rules, Rule{To: Target{CIDR: fmt.Sprintf("10.%d.0.0/%d", i, 16+i%8)}, Proto: "tcp",
			Ports: []PortRange{{Lo: port, Hi: port}}})
	}
	rules = append(rules, Rule{To: Target{CIDR: "10.0.0.0/8"}, Proto: "udp"}, Rule{To: Target{CIDR: "2001:db8::/32"}})
	p.Spec.Devices = []Device{{Name: "d", MAC: "02:00:00:00:00:01", IPv4: []string{"10.0.0.5"}, Allow: rules}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	first, err := Compile(p, CompileOptions{Revision: 1})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := Compile(p, CompileOptions{Revision: 1, Prev: first})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(first.Prefixes, again.Prefixes) || !reflect.DeepEqual(first.Rules, again.Rules) ||
			!reflect.DeepEqual(first.Devices, again.Devices) {
			t.Fatal("two compilations of one policy differ")
		}
	}
}

// TestDiffLimit: past the limit, changed devices are counted by op, not listed.
func TestDiffLimit(t *testing.T) {
	dev := func(name, mac string, port uint16) Device {
		rule := Rule{To: Target{Gateway: true}, Proto: "tcp", Ports: []PortRange{pr(port, port)}}
		return Device{Name: name, MAC: mac, Allow: []Rule{rule}}
	}
	old := &Policy{Spec: Spec{Devices: []Device{dev("a", "02:00:00:00:00:01", 1), dev("b", "02:00:00:00:00:02", 1),
		dev("c", "02:00:00:00:00:03", 1), dev("d", "02:00:00:00:00:04", 1), dev("e", "02:00:00:00:00:05", 1)}}}
	// a unchanged, b changed, c removed, d changed, e changed, f added.
	new := &Policy{Spec: Spec{Devices: []Device{dev("a", "02:00:00:00:00:01", 1), dev("b", "02:00:00:00:00:02", 2),
		dev("d", "02:00:00:00:00:04", 2), dev("e", "02:00:00:00:00:05", 2), dev("f", "02:00:00:00:00:06", 1)}}}
	full := Compare(old, new)
	if len(full.Devices) != 5 || full.MoreDevices != nil {
		t.Fatalf("Compare: %+v", full)
	}
	if got := full.Limit(5); !reflect.DeepEqual(got, full) {
		t.Fatalf("Limit(5) changed a diff of 5 devices: %+v", got)
	}
	got := full.Limit(2)
	if len(got.Devices) != 2 || got.Devices[0].Name != "b" || got.Devices[1].Name != "c" {
		t.Fatalf("Limit(2) lists %+v, want b and c", got.Devices)
	}
	if want := (ItemCounts{Added: 1, Changed: 2}); got.MoreDevices == nil || *got.MoreDevices != want {
		t.Fatalf("Limit(2) counts %+v, want %+v", got.MoreDevices, want)
	}
	again := got.Limit(1)
	if again.MoreDevices == nil || *again.MoreDevices != (ItemCounts{Added: 1, Removed: 1, Changed: 2}) ||
		*got.MoreDevices != (ItemCounts{Added: 1, Changed: 2}) {
		t.Fatalf("Limit(1) of the limited diff: %+v (and the first one became %+v)", again.MoreDevices, got.MoreDevices)
	}
	const more = "... and 3 more devices (1 added, 0 removed, 2 changed)\n"
	if s := got.String(); !strings.Contains(s, more) || strings.Contains(s, "device f") {
		t.Fatalf("String:\n%s", s)
	}
	if (Diff{MoreDevices: &ItemCounts{Changed: 1}}).Empty() {
		t.Fatal("a diff counting unlisted devices is empty")
	}
}
