// Package policy is ztgate's policy: the YAML document operators write, its validation, its
// compilation into a map Snapshot, and the pure-Go reference model of the datapath (the
// specification the XDP program must match on every frame).
package policy

// APIVersion and Kind are the only accepted values of the document header.
const (
	APIVersion = "ztgate/v1"
	Kind       = "Policy"
)

// Policy is one policy document.
type Policy struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   Metadata `yaml:"metadata"`
	Spec       Spec     `yaml:"spec"`
}

// Metadata names the policy. Revision is informational in the file; the agent assigns the
// revision that the datapath carries.
type Metadata struct {
	Name     string `yaml:"name"`
	Revision uint64 `yaml:"revision,omitempty"`
}

// Mode is enforce or audit. Empty inherits (device from segment, segment from policy,
// policy defaults to enforce).
type Mode string

const (
	ModeEnforce Mode = "enforce"
	ModeAudit   Mode = "audit"
)

// Spec is the body of a policy.
type Spec struct {
	Mode Mode `yaml:"mode,omitempty"`
	// AuditIdentity extends audit mode to identity failures (spoof_mac_port, spoof_ip, arp_spoof,
	// nd_spoof, dhcp_chaddr): without it, an audit-mode device's impersonations still drop.
	// True here, on a segment or on a device applies to the devices under it.
	AuditIdentity bool       `yaml:"auditIdentity,omitempty"`
	Gateway       Gateway    `yaml:"gateway"`
	Quarantine    Quarantine `yaml:"quarantine,omitempty"`
	Segments      []Segment  `yaml:"segments,omitempty"`
	Devices       []Device   `yaml:"devices,omitempty"`
}

// Service names a gateway service devices may use without a rule.
type Service string

const (
	ServiceDHCP   Service = "dhcp"   // DHCPv4 client requests (UDP 68 -> 67, broadcast or gateway)
	ServiceDHCPv6 Service = "dhcpv6" // DHCPv6 client messages (UDP 546 -> 547, ff02::1:2 or gateway)
	ServiceDNS    Service = "dns"    // UDP and TCP 53 to the gateway
	ServiceNTP    Service = "ntp"    // UDP 123 to the gateway
)

// Gateway describes the gateway itself: its own addresses (at most 4 per family), services, and
// MACs (at most 4) that frames to the gateway may carry besides its interfaces' own, which the
// agent registers: on a bridged gateway, the upstream router's.
type Gateway struct {
	IPv4     []string  `yaml:"ipv4,omitempty"`
	IPv6     []string  `yaml:"ipv6,omitempty"`
	Services []Service `yaml:"services,omitempty"`
	MACs     []string  `yaml:"macs,omitempty"`
}

// Quarantine is the allow-set of quarantined devices (in addition to gateway dhcp/dhcpv6/dns
// when the gateway offers them).
type Quarantine struct {
	Allow []Rule `yaml:"allow,omitempty"`
}

// Segment is a trust segment: its rules apply to every device in it.
type Segment struct {
	Name          string `yaml:"name"`
	Mode          Mode   `yaml:"mode,omitempty"`
	AuditIdentity bool   `yaml:"auditIdentity,omitempty"` // see Spec.AuditIdentity
	Allow         []Rule `yaml:"allow,omitempty"`
}

// Device is one device: its identity (MAC, addresses, optional gateway port and VLAN) and
// its own rules on top of its segment's.
type Device struct {
	Name        string   `yaml:"name"`
	MAC         string   `yaml:"mac"`
	IPv4        []string `yaml:"ipv4,omitempty"`
	IPv6        []string `yaml:"ipv6,omitempty"`
	Port        string   `yaml:"port,omitempty"`
	VLAN        uint16   `yaml:"vlan,omitempty"`
	Segment     string   `yaml:"segment,omitempty"`
	Mode        Mode     `yaml:"mode,omitempty"`
	Quarantined bool     `yaml:"quarantined,omitempty"`
	// AuditIdentity: see Spec.AuditIdentity.
	AuditIdentity bool   `yaml:"auditIdentity,omitempty"`
	Allow         []Rule `yaml:"allow,omitempty"`
}

// Rule allows traffic, for a protocol, to destination ports or ICMP types: with To, from the
// devices it applies to toward a destination; with From, from a source toward those devices
// (their ports). A rule sets exactly one of To and From.
type Rule struct {
	To    Target      `yaml:"to,omitempty"`
	From  Target      `yaml:"from,omitempty"`  // inbound: connections toward the device from this source
	Proto string      `yaml:"proto,omitempty"` // tcp, udp, icmp, icmpv6, any (default) or 0-254
	Ports []PortRange `yaml:"ports,omitempty"` // only with tcp or udp; empty = every port
	ICMP  []ICMPType  `yaml:"icmp,omitempty"`  // only with icmp or icmpv6; empty = every type
}

// Target is exactly one of: a CIDR, a device name, a segment name, or the gateway.
type Target struct {
	CIDR    string `yaml:"cidr,omitempty"`
	Device  string `yaml:"device,omitempty"`
	Segment string `yaml:"segment,omitempty"`
	Gateway bool   `yaml:"gateway,omitempty"`
}

// Inbound reports whether r is a from: rule (it allows connections toward the device).
func (r *Rule) Inbound() bool { return r.From != Target{} }

// Peer is r's other end: the destination of a to: rule, the source of a from: rule.
func (r *Rule) Peer() Target {
	if r.Inbound() {
		return r.From
	}
	return r.To
}

// PortRange is an inclusive range; a single port has Lo == Hi. In YAML: 443, "443" or "8000-8080".
type PortRange struct {
	Lo, Hi uint16
}
