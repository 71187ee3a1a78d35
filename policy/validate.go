package policy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Limits of the document format.
const (
	maxNameLen     = 63    // metadata, segment and device names
	maxFamilyAddrs = 4     // addresses per family, of the gateway and of each device
	maxVLAN        = 4094  // largest VLAN id; 0 is untagged
	maxGatewayMACs = 4     // spec.gateway.macs (ZT_MAX_GW)
	maxIfnameLen   = 15    // IFNAMSIZ - 1
	maxSegments    = 65535 // segment ids are 16-bit and 0 means no segment
)

// validName reports whether s matches ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ (a DNS label in lower
// case); a loop, as it runs for every device of a fleet.
func validName(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// index appends "[i]" to path.
func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// Validate checks a policy built in Go with the rules Parse applies to a document. The error,
// when not nil, is an Errors whose entries have no position (Line and Col are 0).
func (p *Policy) Validate() error {
	errs := &errorList{}
	if p == nil {
		errs.add(&FieldError{Msg: "policy is nil"})
	} else {
		(&validator{errs: errs}).policy(p)
	}
	return errs.err()
}

// validator checks a decoded policy. Parse sets locate, to give errors their position in the
// document, and skip, to stay silent about fields that already failed to decode.
type validator struct {
	file   string
	errs   *errorList
	locate func(path string) (line, col int)
	skip   func(path string) bool

	spec     *Spec
	segments map[string]int      // name -> index of its first definition
	devices  map[string]int      // name -> index of its first definition
	gateway  map[netip.Addr]bool // the gateway's valid addresses
	macs     map[string]int      // normalised MAC -> device index
	owners   map[netip.Addr]int  // device address -> device index

	// One device checked against a policy in force (see Editor): its path in its own
	// document, and the indexes above are read, never written (they belong to the Editor).
	single     bool
	singlePath string
	singleIdx  int    // its index: where it replaces a device, or len(spec.devices)
	singleName string // its name
}

// errorf records an error for the field at path, unless v skips that path.
func (v *validator) errorf(path, format string, args ...any) {
	if v.skip != nil && v.skip(path) {
		return
	}
	e := &FieldError{File: v.file, Path: path, Msg: fmt.Sprintf(format, args...)}
	if v.locate != nil && v.errs.len() < maxCollected {
		e.Line, e.Col = v.locate(path)
	}
	v.errs.add(e)
}

// policy validates the whole of p.
func (v *validator) policy(p *Policy) {
	v.fixed("apiVersion", p.APIVersion, APIVersion)
	v.fixed("kind", p.Kind, Kind)
	v.name("metadata.name", p.Metadata.Name)

	s := &p.Spec
	v.spec = s
	v.segments = firstIndex(len(s.Segments), func(i int) string { return s.Segments[i].Name })
	v.devices = firstIndex(len(s.Devices), func(i int) string { return s.Devices[i].Name })
	v.gateway = map[netip.Addr]bool{}
	v.macs = make(map[string]int, len(s.Devices))
	v.owners = make(map[netip.Addr]int, len(s.Devices))

	if n := len(s.Segments); n > maxSegments {
		v.errorf("spec.segments", "has %d segments, at most %d are allowed", n, maxSegments)
	}
	v.mode("spec.mode", s.Mode)
	v.gatewaySpec(&s.Gateway)
	v.rules("spec.quarantine.allow", s.Quarantine.Allow)
	for i := range s.Quarantine.Allow {
		if s.Quarantine.Allow[i].Inbound() {
			v.errorf(index("spec.quarantine.allow", i)+".from",
				"from: rules are not allowed in the quarantine: a quarantined device accepts no new connections")
		}
	}
	for i := range s.Segments {
		v.segment(i, &s.Segments[i])
	}
	for i := range s.Devices {
		v.device(i, &s.Devices[i])
	}
}

// firstIndex maps each name to the index of its first occurrence.
func firstIndex(n int, name func(int) string) map[string]int {
	m := make(map[string]int, n)
	for i := range n {
		if _, ok := m[name(i)]; !ok {
			m[name(i)] = i
		}
	}
	return m
}

// fixed checks a header field that has exactly one allowed value.
func (v *validator) fixed(path, got, want string) {
	switch got {
	case want:
	case "":
		v.errorf(path, "is required, must be %s", quote(want))
	default:
		v.errorf(path, "must be %s, got %s", quote(want), quote(got))
	}
}

// CheckName says why s is not a valid policy, segment or device name, if it is not.
func CheckName(s string) error {
	errs := &errorList{}
	(&validator{errs: errs}).name("name", s)
	return errs.err()
}

// name checks a policy, segment or device name and reports whether it is valid.
func (v *validator) name(path, s string) bool {
	switch {
	case s == "":
		v.errorf(path, "is required")
	case len(s) > maxNameLen:
		v.errorf(path, "%s is longer than %d characters", quote(s), maxNameLen)
	case !validName(s):
		v.errorf(path, "%s is not a valid name: use lowercase letters, digits and '-', "+
			"starting and ending with a letter or digit", quote(s))
	default:
		return true
	}
	return false
}

// mode validates a mode: empty, enforce or audit.
func (v *validator) mode(path string, m Mode) {
	if m != "" && m != ModeEnforce && m != ModeAudit {
		v.errorf(path, "%s is not a mode, use enforce or audit", quote(string(m)))
	}
}

// gatewaySpec validates spec.gateway and records its addresses.
func (v *validator) gatewaySpec(g *Gateway) {
	for _, la := range v.addrList("spec.gateway.ipv4", g.IPv4, false) {
		v.gateway[la.addr] = true
	}
	for _, la := range v.addrList("spec.gateway.ipv6", g.IPv6, true) {
		v.gateway[la.addr] = true
	}
	if len(g.MACs) > maxGatewayMACs {
		v.errorf("spec.gateway.macs", "%d MAC addresses, at most %d", len(g.MACs), maxGatewayMACs)
	}
	seenMAC := map[string]int{}
	for i, s := range g.MACs {
		path := index("spec.gateway.macs", i)
		hw, err := net.ParseMAC(s)
		switch {
		case err != nil || len(hw) != 6:
			v.errorf(path, "%s is not a 6-byte MAC address", quote(s))
		case hw[0]&1 != 0:
			v.errorf(path, "%s is a multicast or broadcast MAC address", quote(s))
		case bytes.Equal(hw, make(net.HardwareAddr, 6)):
			v.errorf(path, "%s is the all-zero MAC address", quote(s))
		default:
			if j, dup := seenMAC[hw.String()]; dup {
				v.errorf(path, "duplicate MAC address %s, also spec.gateway.macs[%d]", hw, j)
			}
			seenMAC[hw.String()] = i
		}
	}
	seen := map[Service]bool{}
	for i, s := range g.Services {
		path := fmt.Sprintf("spec.gateway.services[%d]", i)
		switch {
		case s != ServiceDHCP && s != ServiceDHCPv6 && s != ServiceDNS && s != ServiceNTP:
			v.errorf(path, "%s is not a gateway service, use dhcp, dhcpv6, dns or ntp", quote(string(s)))
		case seen[s]:
			v.errorf(path, "duplicate service %s", s)
		}
		seen[s] = true
	}
}

// segment validates spec.segments[i].
func (v *validator) segment(i int, s *Segment) {
	path := fmt.Sprintf("spec.segments[%d]", i)
	if v.name(path+".name", s.Name) && v.segments[s.Name] != i {
		v.errorf(path+".name", "duplicate segment name %s, also used by spec.segments[%d]", quote(s.Name), v.segments[s.Name])
	}
	v.mode(path+".mode", s.Mode)
	v.rules(path+".allow", s.Allow)
}

// device validates spec.devices[i] (or the single device of an Editor change).
func (v *validator) device(i int, d *Device) {
	path := index("spec.devices", i)
	if v.single {
		path = v.singlePath
	}
	at := func(field string) string { return joinPath(path, field) }
	if v.name(at("name"), d.Name) && !v.single && v.devices[d.Name] != i {
		v.errorf(at("name"), "duplicate device name %s, also used by spec.devices[%d]", quote(d.Name), v.devices[d.Name])
	}
	v.mac(i, at("mac"), d.MAC)
	v.deviceAddrs(i, at("ipv4"), d.IPv4, false)
	v.deviceAddrs(i, at("ipv6"), d.IPv6, true)
	if d.Port != "" {
		if why := checkIfname(d.Port); why != "" {
			v.errorf(at("port"), "%s is not a valid interface name: %s", quote(d.Port), why)
		}
	}
	if d.VLAN > maxVLAN {
		v.errorf(at("vlan"), "%d is out of range 0-%d", d.VLAN, maxVLAN)
	}
	if _, ok := v.segments[d.Segment]; d.Segment != "" && !ok {
		v.errorf(at("segment"), "segment %s is not defined in spec.segments", quote(d.Segment))
	}
	v.mode(at("mode"), d.Mode)
	v.rules(at("allow"), d.Allow)
}

// deviceLabel names device i in messages.
func (v *validator) deviceLabel(i int) string {
	if v.single && i == v.singleIdx {
		return quote(v.singleName)
	}
	if name := v.spec.Devices[i].Name; name != "" {
		return quote(name)
	}
	return fmt.Sprintf("spec.devices[%d]", i)
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// mac validates the MAC address of device dev: a unicast, non-zero address that neither the
// gateway nor another device has.
func (v *validator) mac(dev int, path, s string) {
	if s == "" {
		v.errorf(path, "is required")
		return
	}
	hw, err := net.ParseMAC(s)
	switch {
	case err != nil:
		v.errorf(path, "%s is not a MAC address", quote(s))
	case len(hw) != 6:
		v.errorf(path, "%s is not a 6-byte MAC address", quote(s))
	case bytes.Equal(hw, broadcastMAC):
		v.errorf(path, "%s is the broadcast MAC address", quote(s))
	case hw[0]&1 != 0:
		v.errorf(path, "%s is a multicast MAC address", quote(s))
	case bytes.Equal(hw, make(net.HardwareAddr, 6)):
		v.errorf(path, "%s is the all-zero MAC address", quote(s))
	default:
		key := hw.String()
		if v.isGatewayMAC(hw) {
			v.errorf(path, "MAC address %s is the gateway's (spec.gateway.macs)", key)
			return
		}
		if other, dup := v.macs[key]; dup && other != dev {
			v.errorf(path, "MAC address %s is already used by device %s", key, v.deviceLabel(other))
			return
		}
		if !v.single {
			v.macs[key] = dev
		}
	}
}

// isGatewayMAC reports whether hw is one of spec.gateway.macs.
func (v *validator) isGatewayMAC(hw net.HardwareAddr) bool {
	if v.spec == nil {
		return false
	}
	for _, s := range v.spec.Gateway.MACs {
		if g, err := net.ParseMAC(s); err == nil && bytes.Equal(g, hw) {
			return true
		}
	}
	return false
}

// deviceAddrs validates the addresses of device dev: neither the gateway's nor another device's.
func (v *validator) deviceAddrs(dev int, path string, list []string, v6 bool) {
	for _, la := range v.addrList(path, list, v6) {
		if v.gateway[la.addr] {
			v.errorf(la.path, "%s is a gateway address", la.addr)
			continue
		}
		if other, taken := v.owners[la.addr]; taken && other != dev {
			v.errorf(la.path, "address %s of device %s is already bound to device %s",
				la.addr, v.deviceLabel(dev), v.deviceLabel(other))
			continue
		}
		if !v.single {
			v.owners[la.addr] = dev
		}
	}
}

// listedAddr is a valid address of an address list and its path.
type listedAddr struct {
	path string
	addr netip.Addr
}

// addrList checks an ipv4 or ipv6 list and returns its valid, distinct addresses.
func (v *validator) addrList(path string, list []string, v6 bool) []listedAddr {
	if len(list) > maxFamilyAddrs {
		v.errorf(path, "has %d addresses, at most %d are allowed", len(list), maxFamilyAddrs)
	}
	var out []listedAddr
	var seen map[netip.Addr]bool // for long (invalid) lists; a short one is searched
	if len(list) > 2*maxFamilyAddrs {
		seen = make(map[netip.Addr]bool, len(list))
	}
	listed := func(a netip.Addr) bool {
		if seen != nil {
			return seen[a]
		}
		return slices.ContainsFunc(out, func(l listedAddr) bool { return l.addr == a })
	}
	for i, s := range list {
		ipath := index(path, i)
		a, why := checkAddr(s, v6)
		switch {
		case why != "":
			v.errorf(ipath, "%s", why)
		case listed(a):
			v.errorf(ipath, "duplicate address %s", a)
		default:
			if seen != nil {
				seen[a] = true
			}
			out = append(out, listedAddr{ipath, a})
		}
	}
	return out
}

// checkAddr parses an address of one family and says why it cannot be used, if it cannot.
func checkAddr(s string, v6 bool) (netip.Addr, string) {
	family := "IPv4"
	if v6 {
		family = "IPv6"
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, fmt.Sprintf("%s is not an %s address", quote(s), family)
	case a.Zone() != "":
		return a, fmt.Sprintf("%s has a zone, zones are not allowed", quote(s))
	case !v6 && !a.Is4():
		return a, fmt.Sprintf("%s is an IPv6 address, list it under ipv6", quote(s))
	case v6 && a.Is4():
		return a, fmt.Sprintf("%s is an IPv4 address, list it under ipv4", quote(s))
	case a.Is4In6():
		return a, fmt.Sprintf("%s is an IPv4-mapped IPv6 address, list the IPv4 address under ipv4", quote(s))
	}
	if why := specialAddr(a); why != "" {
		return a, fmt.Sprintf("%s is %s", quote(s), why)
	}
	return a, ""
}

// specialAddr says why a cannot be the address of a host, if it cannot.
func specialAddr(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "the unspecified address"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsMulticast():
		return "a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	case a.Is4() && a.As4()[0] >= 240:
		return "in the reserved range 240.0.0.0/4"
	}
	return ""
}

// checkIfname says why s is not a valid Linux interface name (see dev_valid_name), if it is
// not. s is not empty.
func checkIfname(s string) string {
	switch {
	case len(s) > maxIfnameLen:
		return fmt.Sprintf("longer than %d bytes", maxIfnameLen)
	case s == "." || s == "..":
		return "reserved name"
	case strings.ContainsRune(s, '/'):
		return "contains '/'"
	case strings.ContainsRune(s, ':'):
		return "contains ':'"
	case strings.IndexByte(s, 0) >= 0:
		return "contains a NUL byte"
	case strings.IndexFunc(s, unicode.IsSpace) >= 0, strings.IndexByte(s, 0xa0) >= 0:
		// The kernel's isspace() also counts the byte 0xa0.
		return "contains whitespace"
	}
	return ""
}

// rules validates every rule of a list.
func (v *validator) rules(path string, rules []Rule) {
	for i := range rules {
		v.rule(index(path, i), &rules[i])
	}
}

// rule validates r's destination (to) or source (from), protocol, ports and ICMP types.
func (v *validator) rule(path string, r *Rule) {
	switch to, from := r.To != (Target{}), r.Inbound(); {
	case !to && !from:
		v.errorf(path+".to", "must set one of cidr, device, segment or gateway: true, "+
			"under to (a destination) or from (a source)")
	case to && from:
		v.errorf(path+".from", "cannot be set together with to: a rule allows connections either from "+
			"the device (to) or toward it (from)")
		v.target(path+".to", &r.To)
		v.target(path+".from", &r.From)
	case from:
		v.target(path+".from", &r.From)
	default:
		v.target(path+".to", &r.To)
	}
	proto, err := ParseProto(r.Proto)
	switch {
	case err != nil:
		v.errorf(path+".proto", "%s", err)
	case len(r.Ports) > 0 && len(r.ICMP) > 0:
		v.errorf(path+".icmp", "ports and icmp cannot be set together")
	case len(r.Ports) > 0 && proto != ProtoTCP && proto != ProtoUDP:
		v.errorf(path+".ports", "ports are only allowed with proto tcp or udp")
	case len(r.ICMP) > 0 && icmpNames(proto) == nil:
		v.errorf(path+".icmp", "icmp types need proto icmp or icmpv6")
	case len(r.ICMP) > 0:
		for i, t := range r.ICMP {
			if _, err := ParseICMPType(string(t), proto); err != nil {
				v.errorf(index(path+".icmp", i), "%s", err)
			}
		}
	}
	for i, pr := range r.Ports {
		if err := pr.check(); err != nil {
			v.errorf(fmt.Sprintf("%s.ports[%d]", path, i), "%s", err)
		}
	}
}

// target validates a rule destination: exactly one of its kinds.
func (v *validator) target(path string, t *Target) {
	var set []string
	if t.CIDR != "" {
		set = append(set, "cidr")
		v.cidr(path+".cidr", t.CIDR)
	}
	if t.Device != "" {
		set = append(set, "device")
		if _, ok := v.devices[t.Device]; !ok {
			v.errorf(path+".device", "device %s is not defined in spec.devices", quote(t.Device))
		}
	}
	if t.Segment != "" {
		set = append(set, "segment")
		if _, ok := v.segments[t.Segment]; !ok {
			v.errorf(path+".segment", "segment %s is not defined in spec.segments", quote(t.Segment))
		}
	}
	if t.Gateway {
		set = append(set, "gateway")
	}
	switch len(set) {
	case 0:
		v.errorf(path, "must set one of cidr, device, segment or gateway: true")
	case 1:
	default:
		v.errorf(path, "sets %s, must set exactly one", strings.Join(set, " and "))
	}
}

// cidr validates a CIDR destination.
func (v *validator) cidr(path, s string) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			v.errorf(path, "%s is not a CIDR prefix, write %s for the single address", quote(s), netip.PrefixFrom(a, a.BitLen()))
			return
		}
		v.errorf(path, "%s is not a CIDR prefix", quote(s))
		return
	}
	if p.Addr().Is4In6() {
		v.errorf(path, "%s is an IPv4-mapped prefix, write it as an IPv4 prefix", quote(s))
		return
	}
	if m := p.Masked(); m != p {
		v.errorf(path, "%s has host bits set, use %s", quote(s), m)
	}
}

// ParseProto returns the IP protocol number a rule's proto stands for: tcp 6, udp 17, icmp 1,
// icmpv6 58 and a decimal number 0-254 itself. "" and "any" return 255, which means every
// protocol.
func ParseProto(s string) (uint8, error) {
	switch s {
	case "", "any":
		return 255, nil
	case "tcp":
		return 6, nil
	case "udp":
		return 17, nil
	case "icmp":
		return 1, nil
	case "icmpv6":
		return 58, nil
	}
	if !isDigits(s) {
		return 0, fmt.Errorf("%s is not a protocol, use tcp, udp, icmp, icmpv6, any or a number 0-254", quote(s))
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("protocol %s has a leading zero, remove it", quote(s))
	}
	n, err := strconv.ParseUint(s, 10, 8)
	switch {
	case err == nil && n == 255:
		return 0, fmt.Errorf("protocol 255 is reserved, use any for every protocol")
	case err != nil:
		return 0, fmt.Errorf("protocol %s is out of range 0-254", clip(s))
	}
	return uint8(n), nil
}

// ParsePortRange parses the string forms of a port range: "443" or "8000-8080" (inclusive,
// 1-65535, low end first).
func ParsePortRange(s string) (PortRange, error) {
	los, his, isRange := strings.Cut(s, "-")
	if !isRange {
		his = los
	}
	if !isDigits(los) || !isDigits(his) {
		return PortRange{}, fmt.Errorf(`%s is not a port (443) or a port range ("8000-8080")`, quote(s))
	}
	var r PortRange
	for _, end := range []struct {
		s    string
		port *uint16
	}{{los, &r.Lo}, {his, &r.Hi}} {
		n, err := strconv.ParseUint(end.s, 10, 16)
		if err != nil || n == 0 {
			return PortRange{}, fmt.Errorf("port %s is out of range 1-65535", clip(end.s))
		}
		*end.port = uint16(n)
	}
	return r, r.check()
}

// check reports why r is not a valid port range, if it is not.
func (r PortRange) check() error {
	switch {
	case r.Lo == 0 || r.Hi == 0:
		return fmt.Errorf("port 0 is out of range 1-65535")
	case r.Lo > r.Hi:
		return fmt.Errorf("port range %d-%d is reversed, write %d-%d", r.Lo, r.Hi, r.Hi, r.Lo)
	}
	return nil
}

// isDigits reports whether s is a non-empty string of decimal digits.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
