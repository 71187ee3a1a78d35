package bpf

import "fmt"

// reasonNames maps every reason of enum zt_reason to its metric label, in enum order.
var reasonNames = [...]string{
	ZtgateZtReasonZT_R_ALLOW:            "allow",
	ZtgateZtReasonZT_R_BAD_L2SRC:        "bad_l2_src",
	ZtgateZtReasonZT_R_VLAN_DENIED:      "vlan_denied",
	ZtgateZtReasonZT_R_UNKNOWN_DEVICE:   "unknown_device",
	ZtgateZtReasonZT_R_SPOOF_MAC_PORT:   "spoof_mac_port",
	ZtgateZtReasonZT_R_QUARANTINED:      "quarantined",
	ZtgateZtReasonZT_R_ETHERTYPE_DENIED: "ethertype_denied",
	ZtgateZtReasonZT_R_ARP_SPOOF:        "arp_spoof",
	ZtgateZtReasonZT_R_TRUNCATED:        "truncated",
	ZtgateZtReasonZT_R_MALFORMED:        "malformed",
	ZtgateZtReasonZT_R_SPOOF_IP:         "spoof_ip",
	ZtgateZtReasonZT_R_IP_OPTIONS:       "ip_options",
	ZtgateZtReasonZT_R_EXT_DENIED:       "ext_denied",
	ZtgateZtReasonZT_R_FRAG_TINY:        "frag_tiny",
	ZtgateZtReasonZT_R_FRAG_OVERLAP:     "frag_overlap",
	ZtgateZtReasonZT_R_FRAG_NO_STATE:    "frag_no_state",
	ZtgateZtReasonZT_R_FRAG_TABLE_FULL:  "frag_table_full",
	ZtgateZtReasonZT_R_ROUTER_GUARD:     "router_guard",
	ZtgateZtReasonZT_R_DHCP_SERVER:      "dhcp_server",
	ZtgateZtReasonZT_R_DHCP_CHADDR:      "dhcp_chaddr",
	ZtgateZtReasonZT_R_ND_SPOOF:         "nd_spoof",
	ZtgateZtReasonZT_R_ENCAP_DENIED:     "encap_denied",
	ZtgateZtReasonZT_R_NO_RULE:          "no_rule",
	ZtgateZtReasonZT_R_NO_POLICY:        "no_policy",
	ZtgateZtReasonZT_R_L2DST_DENIED:     "l2_dst_denied",
	ZtgateZtReasonZT_R_INBOUND_DENIED:   "inbound_denied",
	ZtgateZtReasonZT_R_FLOW_TABLE_FULL:  "flow_table_full",
	ZtgateZtReasonZT_R_ICMP_NO_FLOW:     "icmp_no_flow",
}

var verdictNames = [...]string{
	ZtgateZtVerdictZT_V_PASS:  "pass",
	ZtgateZtVerdictZT_V_DROP:  "drop",
	ZtgateZtVerdictZT_V_AUDIT: "audit",
}

var dirNames = [...]string{
	ZtgateZtDirZT_DIR_FROM_DEVICE: "from_device",
	ZtgateZtDirZT_DIR_TO_DEVICE:   "to_device",
}

// NumReasons, NumVerdicts and NumDirs are the enums' _MAX sentinels.
const (
	NumReasons  = int(ZtgateZtReasonZT_R_MAX)
	NumVerdicts = int(ZtgateZtVerdictZT_V_MAX)
	NumDirs     = int(ZtgateZtDirZT_DIR_MAX)
)

func (d ZtgateZtDir) String() string {
	if int(d) < len(dirNames) {
		return dirNames[d]
	}
	return fmt.Sprintf("dir(%d)", uint32(d))
}

func (r ZtgateZtReason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint32(r))
}

func (v ZtgateZtVerdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", uint32(v))
}

// ParseReason returns the reason whose label is s.
func ParseReason(s string) (Reason, bool) {
	for i, n := range reasonNames {
		if n == s {
			return Reason(i), true
		}
	}
	return 0, false
}

// CounterIndex is the zt_counters index of (direction, verdict, reason).
func CounterIndex(d Dir, v Verdict, r Reason) uint32 {
	return (uint32(d)*uint32(NumVerdicts)+uint32(v))*uint32(NumReasons) + uint32(r)
}
