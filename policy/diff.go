package policy

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Diff is what applying one policy over another would change, by item.
//
// Settings are in the order spec.mode, spec.gateway.ipv4, spec.gateway.ipv6,
// spec.gateway.services, spec.quarantine.allow. Segments and Devices are each sorted by name
// (whatever their Op); an unchanged item is not listed.
type Diff struct {
	Settings []FieldChange `json:"settings,omitempty"` // spec.mode, spec.gateway.*, spec.quarantine.allow
	Segments []ItemChange  `json:"segments,omitempty"`
	Devices  []ItemChange  `json:"devices,omitempty"`
	// MoreDevices counts the changed devices Devices does not list (Limit), by Op.
	MoreDevices *ItemCounts `json:"more_devices,omitempty"`
}

// ItemCounts counts items by Op.
type ItemCounts struct {
	Added   int `json:"added"`
	Removed int `json:"removed"`
	Changed int `json:"changed"`
}

// add counts one item changed by op.
func (c *ItemCounts) add(op string) {
	switch op {
	case OpAdded:
		c.Added++
	case OpRemoved:
		c.Removed++
	default:
		c.Changed++
	}
}

// ListedDevices is how many changed devices the agent lists in the answer to a whole-policy
// apply or diff; the rest are counted (a fleet-wide change would otherwise answer with a line
// per device, a hundred megabytes at a million devices).
const ListedDevices = 1000

// Limit keeps the first n devices of d (by name) and counts the others in MoreDevices.
func (d Diff) Limit(n int) Diff {
	if len(d.Devices) <= n {
		return d
	}
	more := &ItemCounts{}
	if d.MoreDevices != nil {
		*more = *d.MoreDevices
	}
	for _, c := range d.Devices[n:] {
		more.add(c.Op)
	}
	d.Devices, d.MoreDevices = d.Devices[:n:n], more
	return d
}

// Ops of ItemChange.
const (
	OpAdded   = "added"
	OpRemoved = "removed"
	OpChanged = "changed"
)

// ItemChange is one segment or device added, removed or changed. Only changed items carry
// Fields, RulesAdded and RulesRemoved; an added or removed item is its Op and Name.
type ItemChange struct {
	Op           string        `json:"op"`
	Name         string        `json:"name"`
	Fields       []FieldChange `json:"fields,omitempty"`        // changed fields other than allow
	RulesAdded   []string      `json:"rules_added,omitempty"`   // Rule.String of rules only in the new policy
	RulesRemoved []string      `json:"rules_removed,omitempty"` // Rule.String of rules only in the old policy
}

// FieldChange is one field whose value changes (values in their YAML spelling, "" for unset).
// Lists are joined with ","; quarantine rules (Field "spec.quarantine.allow") are their
// Rule.String joined with "; ".
type FieldChange struct {
	Field string `json:"field"`
	Old   string `json:"old"`
	New   string `json:"new"`
}

// String spells r on one line, the same way for every rule that compiles the same:
// "to <target> proto <proto>[ ports <p>,<lo>-<hi>][ icmp <type>[/<code>],...]", or "from
// <target> ..." for a from: rule. The target is "cidr <prefix>", "device <name>", "segment
// <name>" or "gateway"; the protocol is tcp, udp, icmp, icmpv6, any (also for an empty proto)
// or its number; ports are sorted and deduplicated; icmp types are named where they have a
// name, sorted and deduplicated.
func (r Rule) String() string {
	var b strings.Builder
	if r.Inbound() {
		b.WriteString("from ")
	} else {
		b.WriteString("to ")
	}
	switch t := r.Peer(); {
	case t.Gateway:
		b.WriteString("gateway")
	case t.Device != "":
		b.WriteString("device " + t.Device)
	case t.Segment != "":
		b.WriteString("segment " + t.Segment)
	case t.CIDR != "":
		cidr := t.CIDR
		if p, err := netip.ParsePrefix(cidr); err == nil {
			cidr = p.String()
		}
		b.WriteString("cidr " + cidr)
	default:
		b.WriteString("nothing")
	}
	b.WriteString(" proto " + protoName(r.Proto))
	if len(r.Ports) > 0 {
		ports := slices.Clone(r.Ports)
		slices.SortFunc(ports, func(a, b PortRange) int {
			if a.Lo != b.Lo {
				return int(a.Lo) - int(b.Lo)
			}
			return int(a.Hi) - int(b.Hi)
		})
		ports = slices.Compact(ports)
		s := make([]string, len(ports))
		for i, pr := range ports {
			s[i] = pr.String()
		}
		b.WriteString(" ports " + strings.Join(s, ","))
	}
	if len(r.ICMP) > 0 {
		b.WriteString(" icmp " + icmpList(r.ICMP, r.Proto))
	}
	return b.String()
}

// icmpList spells a rule's icmp types for Rule.String: each by its name when it has one (an
// invalid entry as written), sorted and deduplicated.
func icmpList(types []ICMPType, proto string) string {
	p, _ := ParseProto(proto)
	s := make([]string, len(types))
	for i, t := range types {
		s[i] = string(t)
		if m, err := ParseICMPType(string(t), p); err == nil {
			s[i] = m.text(p)
		}
	}
	slices.Sort(s)
	return strings.Join(slices.Compact(s), ",")
}

// protoName is the canonical name of a rule's proto: the name of a named protocol (also when
// written as its number), any for "" and "any", the number otherwise. An invalid proto is
// returned as written.
func protoName(s string) string {
	n, err := ParseProto(s)
	if err != nil {
		return s
	}
	return protoNumberName(n)
}

// protoNumberName names an IP protocol number as a rule's proto would.
func protoNumberName(n uint8) string {
	switch n {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	case ProtoAny:
		return "any"
	}
	return strconv.Itoa(int(n))
}

// Compare returns what replacing old with new changes. A nil policy counts as an empty one:
// with old nil every segment and device of new is added and every setting new sets changes
// from "".
//
// Values are compared in a normal form (MACs and addresses parsed, rule lists as sets of
// Rule.String) and reported as written, so respelling a value is not a change.
func Compare(old, new *Policy) Diff {
	if old == nil {
		old = &Policy{}
	}
	if new == nil {
		new = &Policy{}
	}
	var d Diff
	os, ns := &old.Spec, &new.Spec
	og, ng := &os.Gateway, &ns.Gateway
	d.Settings = appendField(d.Settings, "spec.mode", string(os.Mode), string(ns.Mode), nil)
	d.Settings = appendField(d.Settings, "spec.gateway.ipv4", joinList(og.IPv4), joinList(ng.IPv4), normAddrs)
	d.Settings = appendField(d.Settings, "spec.gateway.ipv6", joinList(og.IPv6), joinList(ng.IPv6), normAddrs)
	d.Settings = appendField(d.Settings, "spec.gateway.services", joinList(og.Services), joinList(ng.Services), normSet)
	d.Settings = appendField(d.Settings, "spec.gateway.macs", joinList(og.MACs), joinList(ng.MACs), normSet)
	d.Settings = appendField(d.Settings, "spec.auditIdentity", boolString(os.AuditIdentity),
		boolString(ns.AuditIdentity), nil)
	if added, removed := ruleDiff(os.Quarantine.Allow, ns.Quarantine.Allow); len(added)+len(removed) > 0 {
		d.Settings = append(d.Settings, FieldChange{Field: "spec.quarantine.allow",
			Old: joinRules(os.Quarantine.Allow), New: joinRules(ns.Quarantine.Allow)})
	}

	d.Segments = compareItems(os.Segments, ns.Segments, func(s *Segment) string { return s.Name },
		func(o, n *Segment) ItemChange {
			c := ItemChange{Fields: appendField(nil, "mode", string(o.Mode), string(n.Mode), nil)}
			c.Fields = appendField(c.Fields, "auditIdentity", boolString(o.AuditIdentity), boolString(n.AuditIdentity), nil)
			c.RulesAdded, c.RulesRemoved = ruleDiff(o.Allow, n.Allow)
			return c
		})
	d.Devices = compareItems(os.Devices, ns.Devices, func(d *Device) string { return d.Name },
		func(o, n *Device) ItemChange {
			if sameDevice(o, n) {
				return ItemChange{} // written the same: unchanged (the common case of a large policy)
			}
			var fs []FieldChange
			fs = appendField(fs, "mac", o.MAC, n.MAC, normMAC)
			fs = appendField(fs, "ipv4", joinList(o.IPv4), joinList(n.IPv4), normAddrs)
			fs = appendField(fs, "ipv6", joinList(o.IPv6), joinList(n.IPv6), normAddrs)
			fs = appendField(fs, "port", o.Port, n.Port, nil)
			fs = appendField(fs, "vlan", vlanString(o.VLAN), vlanString(n.VLAN), nil)
			fs = appendField(fs, "segment", o.Segment, n.Segment, nil)
			fs = appendField(fs, "mode", string(o.Mode), string(n.Mode), nil)
			fs = appendField(fs, "quarantined", boolString(o.Quarantined), boolString(n.Quarantined), nil)
			fs = appendField(fs, "auditIdentity", boolString(o.AuditIdentity), boolString(n.AuditIdentity), nil)
			c := ItemChange{Fields: fs}
			c.RulesAdded, c.RulesRemoved = ruleDiff(o.Allow, n.Allow)
			return c
		})
	return d
}

// compareItems matches items by name (the first of a duplicated name counts) and returns the
// added, removed and changed ones sorted by name. changed returns the differences of two
// items with the same name; no Fields and no rules means unchanged.
func compareItems[T any](old, new []T, name func(*T) string, changed func(o, n *T) ItemChange) []ItemChange {
	index := func(items []T) map[string]int {
		m := make(map[string]int, len(items))
		for i := range items {
			if _, dup := m[name(&items[i])]; !dup {
				m[name(&items[i])] = i
			}
		}
		return m
	}
	om, nm := index(old), index(new)
	var out []ItemChange
	for n := range om {
		if _, ok := nm[n]; !ok {
			out = append(out, ItemChange{Op: OpRemoved, Name: n})
		}
	}
	for n, i := range nm {
		o, ok := om[n]
		if !ok {
			out = append(out, ItemChange{Op: OpAdded, Name: n})
			continue
		}
		c := changed(&old[o], &new[i])
		if len(c.Fields)+len(c.RulesAdded)+len(c.RulesRemoved) > 0 {
			c.Op, c.Name = OpChanged, n
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b ItemChange) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// sameDevice reports whether o and n are written the same (then they compare unchanged).
func sameDevice(o, n *Device) bool {
	return o.MAC == n.MAC && slices.Equal(o.IPv4, n.IPv4) && slices.Equal(o.IPv6, n.IPv6) && o.Port == n.Port &&
		o.VLAN == n.VLAN && o.Segment == n.Segment && o.Mode == n.Mode && o.Quarantined == n.Quarantined &&
		o.AuditIdentity == n.AuditIdentity &&
		slices.EqualFunc(o.Allow, n.Allow, func(a, b Rule) bool {
			return a.To == b.To && a.From == b.From && a.Proto == b.Proto && slices.Equal(a.Ports, b.Ports) &&
				slices.Equal(a.ICMP, b.ICMP)
		})
}

// appendField appends a FieldChange when old and new differ once normalised by norm (nil:
// compared as written).
func appendField(fs []FieldChange, field, old, new string, norm func(string) string) []FieldChange {
	o, n := old, new
	if norm != nil {
		o, n = norm(old), norm(new)
	}
	if o == n {
		return fs
	}
	return append(fs, FieldChange{Field: field, Old: old, New: new})
}

// joinList joins l with ",".
func joinList[S ~string](l []S) string {
	s := make([]string, len(l))
	for i, v := range l {
		s[i] = string(v)
	}
	return strings.Join(s, ",")
}

// normAddrs parses a ","-joined address list (order matters: the first address of a family
// is the one a device or the gateway is reached at).
func normAddrs(s string) string {
	if s == "" {
		return ""
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if a, err := netip.ParseAddr(p); err == nil {
			parts[i] = a.String()
		}
	}
	return strings.Join(parts, ",")
}

// normSet sorts and deduplicates a ","-joined list whose order does not matter.
func normSet(s string) string {
	if s == "" {
		return ""
	}
	parts := strings.Split(s, ",")
	sort.Strings(parts)
	return strings.Join(slices.Compact(parts), ",")
}

// normMAC is s in the canonical MAC address form, or s itself if it is none.
func normMAC(s string) string {
	if m, err := net.ParseMAC(s); err == nil {
		return m.String()
	}
	return s
}

// vlanString is v in decimal, or "" (unset) for 0.
func vlanString(v uint16) string {
	if v == 0 {
		return ""
	}
	return strconv.Itoa(int(v))
}

// boolString is "true", or "" (unset) for false.
func boolString(b bool) string {
	if b {
		return "true"
	}
	return ""
}

// ruleDiff returns the Rule.String of the rules only in new and of those only in old, sorted.
func ruleDiff(old, new []Rule) (added, removed []string) {
	set := func(rs []Rule) map[string]bool {
		m := make(map[string]bool, len(rs))
		for _, r := range rs {
			m[r.String()] = true
		}
		return m
	}
	om, nm := set(old), set(new)
	for s := range nm {
		if !om[s] {
			added = append(added, s)
		}
	}
	for s := range om {
		if !nm[s] {
			removed = append(removed, s)
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	return added, removed
}

// joinRules joins the rules' String forms with "; ".
func joinRules(rs []Rule) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, "; ")
}

// Empty reports whether d changes nothing.
func (d Diff) Empty() bool {
	return len(d.Settings) == 0 && len(d.Segments) == 0 && len(d.Devices) == 0 && d.MoreDevices == nil
}

// String renders d one change a line: settings first, then devices, then segments.
//
//	~ spec.mode: enforce -> audit
//	+ device cam-2
//	- device old-sensor
//	~ device thermostat: + to device hvac proto udp ports 5683
//	~ segment sensors: - to cidr 0.0.0.0/0 proto any
//
// A changed item lists its fields, then its removed and added rules; an empty Diff renders
// "no changes\n".
func (d Diff) String() string {
	if d.Empty() {
		return "no changes\n"
	}
	var b strings.Builder
	for _, f := range d.Settings {
		fmt.Fprintf(&b, "~ %s: %s -> %s\n", f.Field, showValue(f.Old), showValue(f.New))
	}
	items := func(kind string, cs []ItemChange) {
		for _, c := range cs {
			switch c.Op {
			case OpAdded:
				fmt.Fprintf(&b, "+ %s %s\n", kind, c.Name)
			case OpRemoved:
				fmt.Fprintf(&b, "- %s %s\n", kind, c.Name)
			default:
				for _, f := range c.Fields {
					fmt.Fprintf(&b, "~ %s %s: %s %s -> %s\n", kind, c.Name, f.Field, showValue(f.Old), showValue(f.New))
				}
				for _, r := range c.RulesRemoved {
					fmt.Fprintf(&b, "~ %s %s: - %s\n", kind, c.Name, r)
				}
				for _, r := range c.RulesAdded {
					fmt.Fprintf(&b, "~ %s %s: + %s\n", kind, c.Name, r)
				}
			}
		}
	}
	items("device", d.Devices)
	if m := d.MoreDevices; m != nil {
		fmt.Fprintf(&b, "... and %d more devices (%d added, %d removed, %d changed)\n",
			m.Added+m.Removed+m.Changed, m.Added, m.Removed, m.Changed)
	}
	items("segment", d.Segments)
	return b.String()
}

// showValue is s as a diff line shows it ("" for an unset value).
func showValue(s string) string {
	if s == "" {
		return `""`
	}
	return s
}
