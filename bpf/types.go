package bpf

// Short names for the types bpf2go generates from structs.h and consts.h.
type (
	In6        = ZtgateZtIn6
	DevKey     = ZtgateZtDevKey
	DevRec     = ZtgateZtDevRec
	AddrKey    = ZtgateZtAddrKey
	AddrVal    = ZtgateZtAddrVal
	PrefixKey  = ZtgateZtPrefixKey
	PrefixVal  = ZtgateZtPrefixVal
	RuleKey    = ZtgateZtRuleKey
	RuleVal    = ZtgateZtRuleVal
	Config     = ZtgateZtConfig
	FragKey    = ZtgateZtFragKey
	FragVal    = ZtgateZtFragVal
	Counter    = ZtgateZtCounter
	DevStats   = ZtgateZtDevStats
	EventStats = ZtgateZtEventStats
	Event      = ZtgateZtEvent
	Reason     = ZtgateZtReason
	Verdict    = ZtgateZtVerdict
	FlowKey    = ZtgateZtFlowKey
	FlowVal    = ZtgateZtFlowVal
	Dir        = ZtgateZtDir
)

// Short names for the flag and kind enums of consts.h.
const (
	DevAudit         = uint16(ZtgateZtDevFlagsZT_DEV_AUDIT)
	DevQuarantined   = uint16(ZtgateZtDevFlagsZT_DEV_QUARANTINED)
	DevPeerRules     = uint16(ZtgateZtDevFlagsZT_DEV_PEER_RULES)
	DevPrefixRules   = uint16(ZtgateZtDevFlagsZT_DEV_PREFIX_RULES)
	DevAuditIdentity = uint16(ZtgateZtDevFlagsZT_DEV_AUDIT_IDENTITY)
	DevInPeerRules   = uint16(ZtgateZtDevFlagsZT_DEV_IN_PEER_RULES)
	DevInPrefixRules = uint16(ZtgateZtDevFlagsZT_DEV_IN_PREFIX_RULES)

	CfgAudit        = uint16(ZtgateZtConfigFlagsZT_CFG_AUDIT)
	CfgSvcDHCP      = uint16(ZtgateZtConfigFlagsZT_CFG_SVC_DHCP)
	CfgSvcDHCPv6    = uint16(ZtgateZtConfigFlagsZT_CFG_SVC_DHCPV6)
	CfgQPeerRules   = uint16(ZtgateZtConfigFlagsZT_CFG_Q_PEER_RULES)
	CfgQPrefixRules = uint16(ZtgateZtConfigFlagsZT_CFG_Q_PREFIX_RULES)
	SelGateway      = uint8(ZtgateZtSelKindZT_SEL_GATEWAY)
	SelDevice       = uint8(ZtgateZtSelKindZT_SEL_DEVICE)
	SelSegment      = uint8(ZtgateZtSelKindZT_SEL_SEGMENT)
	SelPrefix       = uint8(ZtgateZtSelKindZT_SEL_PREFIX)
	SelMcast        = uint8(ZtgateZtSelKindZT_SEL_MCAST)
	RuleAllPorts    = uint16(ZtgateZtRuleFlagsZT_RULE_ALL_PORTS)
	AddrDevice      = uint8(ZtgateZtAddrKindZT_ADDR_DEVICE)
	VerdictPass     = ZtgateZtVerdictZT_V_PASS
	VerdictDrop     = ZtgateZtVerdictZT_V_DROP
	VerdictAudit    = ZtgateZtVerdictZT_V_AUDIT
	DirFromDevice   = ZtgateZtDirZT_DIR_FROM_DEVICE
	DirToDevice     = ZtgateZtDirZT_DIR_TO_DEVICE
	FlowAOpened     = uint8(ZtgateZtFlowFlagsZT_FLOW_A_OPENED)
	FlowBOpened     = uint8(ZtgateZtFlowFlagsZT_FLOW_B_OPENED)
	FlowOut         = uint8(ZtgateZtFlowFlagsZT_FLOW_OUT)
	FlowIn          = uint8(ZtgateZtFlowFlagsZT_FLOW_IN)
	EchoAAsks       = uint8(ZtgateZtFlowFlagsZT_ECHO_A_ASKS)
	EchoBAsks       = uint8(ZtgateZtFlowFlagsZT_ECHO_B_ASKS)
	FlowKindNone    = uint8(ZtgateZtFlowKindZT_FK_NONE)
	FlowKindPorts   = uint8(ZtgateZtFlowKindZT_FK_PORTS)
	FlowKindEchoReq = uint8(ZtgateZtFlowKindZT_FK_ECHO_REQ)
	FlowKindEchoRep = uint8(ZtgateZtFlowKindZT_FK_ECHO_REPLY)
)

// Reasons of enum zt_reason, short names.
const (
	ReasonAllow           = ZtgateZtReasonZT_R_ALLOW
	ReasonBadL2Src        = ZtgateZtReasonZT_R_BAD_L2SRC
	ReasonVLANDenied      = ZtgateZtReasonZT_R_VLAN_DENIED
	ReasonUnknownDevice   = ZtgateZtReasonZT_R_UNKNOWN_DEVICE
	ReasonSpoofMACPort    = ZtgateZtReasonZT_R_SPOOF_MAC_PORT
	ReasonQuarantined     = ZtgateZtReasonZT_R_QUARANTINED
	ReasonEthertypeDenied = ZtgateZtReasonZT_R_ETHERTYPE_DENIED
	ReasonARPSpoof        = ZtgateZtReasonZT_R_ARP_SPOOF
	ReasonTruncated       = ZtgateZtReasonZT_R_TRUNCATED
	ReasonMalformed       = ZtgateZtReasonZT_R_MALFORMED
	ReasonSpoofIP         = ZtgateZtReasonZT_R_SPOOF_IP
	ReasonIPOptions       = ZtgateZtReasonZT_R_IP_OPTIONS
	ReasonExtDenied       = ZtgateZtReasonZT_R_EXT_DENIED
	ReasonFragTiny        = ZtgateZtReasonZT_R_FRAG_TINY
	ReasonFragOverlap     = ZtgateZtReasonZT_R_FRAG_OVERLAP
	ReasonFragNoState     = ZtgateZtReasonZT_R_FRAG_NO_STATE
	ReasonFragTableFull   = ZtgateZtReasonZT_R_FRAG_TABLE_FULL
	ReasonRouterGuard     = ZtgateZtReasonZT_R_ROUTER_GUARD
	ReasonDHCPServer      = ZtgateZtReasonZT_R_DHCP_SERVER
	ReasonDHCPChaddr      = ZtgateZtReasonZT_R_DHCP_CHADDR
	ReasonNDSpoof         = ZtgateZtReasonZT_R_ND_SPOOF
	ReasonEncapDenied     = ZtgateZtReasonZT_R_ENCAP_DENIED
	ReasonNoRule          = ZtgateZtReasonZT_R_NO_RULE
	ReasonNoPolicy        = ZtgateZtReasonZT_R_NO_POLICY
	ReasonL2DstDenied     = ZtgateZtReasonZT_R_L2DST_DENIED
	ReasonInboundDenied   = ZtgateZtReasonZT_R_INBOUND_DENIED
	ReasonFlowTableFull   = ZtgateZtReasonZT_R_FLOW_TABLE_FULL
	ReasonICMPNoFlow      = ZtgateZtReasonZT_R_ICMP_NO_FLOW
)
