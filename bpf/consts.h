/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* consts.h: every constant of the ztgate datapath, one comment each.
 * The Go reference model (policy/model.go) mirrors these through bpf2go -type. */
#ifndef ZT_CONSTS_H
#define ZT_CONSTS_H

/* Verdicts. AUDIT = the policy would drop, audit mode passes it and reports it. */
enum zt_verdict {
	ZT_V_PASS = 0,
	ZT_V_DROP = 1,
	ZT_V_AUDIT = 2,
	ZT_V_MAX = 3, /* sentinel: number of verdicts */
};

/* Directions: frames from a device are decided by the XDP program where they arrive, frames toward a
 * device by the TC program where they leave for its port. */
enum zt_dir {
	ZT_DIR_FROM_DEVICE = 0,
	ZT_DIR_TO_DEVICE = 1,
	ZT_DIR_MAX = 2, /* sentinel: number of directions */
};

/* Why a frame got its verdict. One enum, shared with Go (metric label = lower-case name). */
enum zt_reason {
	ZT_R_ALLOW = 0,		   /* matched an allow rule, a service, or protocol plumbing (ARP, ND) */
	ZT_R_BAD_L2_SRC = 1,	   /* source MAC multicast/broadcast/zero, or source == destination */
	ZT_R_VLAN_DENIED = 2,	   /* tag not configured for the device, QinQ, 802.1ad, stacked tags */
	ZT_R_UNKNOWN_DEVICE = 3,   /* no device record for the source MAC */
	ZT_R_SPOOF_MAC_PORT = 4,   /* device bound to another gateway port */
	ZT_R_QUARANTINED = 5,	   /* quarantined device, outside its quarantine allow-set */
	ZT_R_ETHERTYPE_DENIED = 6, /* not ARP, IPv4 or IPv6 (includes 802.3 length frames) */
	ZT_R_ARP_SPOOF = 7,	   /* ARP sender MAC/IP not the device's own */
	ZT_R_TRUNCATED = 8,	   /* frame ends inside a header the datapath must read */
	ZT_R_MALFORMED = 9,	   /* header fields inconsistent (version, IHL, lengths, offsets) */
	ZT_R_SPOOF_IP = 10,	   /* source address not bound to the device */
	ZT_R_IP_OPTIONS = 11,	   /* IPv4 source-route options (LSRR/SSRR) */
	ZT_R_EXT_DENIED = 12,	   /* IPv6 routing header, misplaced HBH, chain longer than the parser limit */
	ZT_R_FRAG_TINY = 13,	   /* first fragment does not carry the whole L4 header */
	ZT_R_FRAG_OVERLAP = 14,	   /* later fragment overlaps the first fragment's bytes */
	ZT_R_FRAG_NO_STATE = 15,   /* later fragment without a recorded first-fragment pass */
	ZT_R_FRAG_TABLE_FULL = 16, /* no room to record a first fragment: fail closed */
	ZT_R_ROUTER_GUARD = 17,	   /* router advertisement or redirect from a device */
	ZT_R_DHCP_SERVER = 18,	   /* DHCP/DHCPv6 server or relay message from a device */
	ZT_R_DHCP_CHADDR = 19,	   /* DHCP request whose chaddr differs from the source MAC */
	ZT_R_ND_SPOOF = 20,	   /* neighbour advertisement for an address not bound to the device */
	ZT_R_ENCAP_DENIED = 21,	   /* tunnel (IPIP, 6in4, GRE, VXLAN, Geneve) without an explicit rule */
	ZT_R_NO_RULE = 22,	   /* default deny: no allow rule matched */
	ZT_R_NO_POLICY = 23,	   /* no policy revision installed yet: fail closed */
	ZT_R_L2_DST_DENIED = 24,   /* destination MAC not the gateway's, the IP owner's, or its group */
	ZT_R_INBOUND_DENIED = 25,  /* toward a device: no flow it is part of, no from: rule allows it */
	ZT_R_FLOW_TABLE_FULL = 26, /* a new flow, and the flow table or the device's flow quota is full */
	ZT_R_ICMP_NO_FLOW = 27,	   /* ICMP error that quotes no tracked flow of its receiver */
	ZT_R_MAX = 28,		   /* sentinel: number of reasons */
};

/* Device record flags (struct zt_dev_rec.flags). */
enum zt_dev_flags {
	ZT_DEV_AUDIT = 1 << 0,		 /* audit mode resolved from device, segment or policy */
	ZT_DEV_QUARANTINED = 1 << 1,	 /* use the quarantine rule set */
	ZT_DEV_PEER_RULES = 1 << 2,	 /* rule set names devices or segments: look up the destination */
	ZT_DEV_PREFIX_RULES = 1 << 3,	 /* rule set has CIDR rules: look up the prefix trie */
	ZT_DEV_AUDIT_IDENTITY = 1 << 4,	 /* audit mode covers identity failures too (spoofs pass as audit) */
	ZT_DEV_IN_PEER_RULES = 1 << 5,	 /* from: rules name devices or segments: look up the source */
	ZT_DEV_IN_PREFIX_RULES = 1 << 6, /* from: rules have CIDRs: look up the prefix trie */
};

/* Slot configuration flags (struct zt_config.flags). */
enum zt_config_flags {
	ZT_CFG_AUDIT = 1 << 0,		/* policy-wide audit: frames dropped before identity pass as audit */
	ZT_CFG_SVC_DHCP = 1 << 1,	/* gateway serves DHCPv4: client requests pass */
	ZT_CFG_SVC_DHCPV6 = 1 << 2,	/* gateway serves DHCPv6: client messages pass */
	ZT_CFG_Q_PEER_RULES = 1 << 3,	/* quarantine rule set names devices or segments */
	ZT_CFG_Q_PREFIX_RULES = 1 << 4, /* quarantine rule set has CIDR rules */
};

/* Rule selector kinds (struct zt_rule_key.sel_kind). */
enum zt_sel_kind {
	ZT_SEL_GATEWAY = 1, /* destination is one of the gateway's addresses; sel_id 0 */
	ZT_SEL_DEVICE = 2,  /* destination bound to device sel_id */
	ZT_SEL_SEGMENT = 3, /* destination bound to a device of segment sel_id */
	ZT_SEL_PREFIX = 4,  /* destination inside prefix group sel_id (from the LPM trie) */
	ZT_SEL_MCAST = 5,   /* as ZT_SEL_PREFIX for a broadcast or multicast frame: only rules whose
			     * prefix lies inside 224.0.0.0/4 or ff00::/8 */
};

/* Rule value flags (struct zt_rule_val.flags). */
enum zt_rule_flags {
	ZT_RULE_ALL_PORTS = 1 << 0, /* no port list: any port (or a protocol without ports) */
};

/* Who opened a flow, and what allowed it (struct zt_flow_val). */
enum zt_flow_flags {
	ZT_FLOW_A_OPENED = 0, /* endpoint a of the key sent the first packet */
	ZT_FLOW_B_OPENED = 1, /* endpoint b did */
	ZT_FLOW_OUT = 0,      /* the opener is a device and its rules allowed the flow */
	ZT_FLOW_IN = 1,	      /* the responder is a device and its from: rules allowed the flow */
	ZT_ECHO_A_ASKS = 1,   /* zt_flow_key.echo: endpoint a sends the echo requests */
	ZT_ECHO_B_ASKS = 2,   /* zt_flow_key.echo: endpoint b does */
	ZT_FLOW_NO_SIDE = 2,  /* a lookup for no endpoint's packet (an ICMP error about the flow) */
};

/* What a packet is to the flow table (zt_flow_ports). */
enum zt_flow_kind {
	ZT_FK_NONE = 0,	      /* no flow tracks it */
	ZT_FK_PORTS = 1,      /* TCP or UDP */
	ZT_FK_ECHO_REQ = 2,   /* ICMP or ICMPv6 echo request */
	ZT_FK_ECHO_REPLY = 3, /* ICMP or ICMPv6 echo reply */
};

/* Address kinds (struct zt_addr_val.kind). */
enum zt_addr_kind {
	ZT_ADDR_DEVICE = 1, /* bound to a device */
};

#define ZT_PROTO_ANY	   255	  /* rule protocol wildcard (IANA reserved value) */
#define ZT_MAX_V4	   4	  /* IPv4 addresses bound to one device (inline in the record) */
#define ZT_MAX_V6	   4	  /* IPv6 addresses bound to one device (inline in the record) */
#define ZT_MAX_GW	   4	  /* gateway addresses per family, and MACs the policy names */
#define ZT_MAX_GWMACS	   64	  /* entries of zt_gwmacs: MACs of the protected interfaces and their masters */
#define ZT_MAX_ND_OPTS	   8	  /* neighbour discovery options walked before dropping the frame */
#define ZT_MAX_PORT_RANGES 16	  /* port ranges per (rule set, selector, protocol) */
#define ZT_MAX_EXT_HDRS	   8	  /* IPv6 extension headers walked before dropping the frame */
#define ZT_MAX_IPV4_OPTS   40	  /* bytes of IPv4 options (IHL 15 - 5) x 4 */
#define ZT_EVENT_CAPTURE   128	  /* frame bytes copied into each event */
#define ZT_NO_DEVICE	   0	  /* dev_id of frames with no identified device */
#define ZT_SLOTS	   2	  /* policy slots: the active one and the one being written */
#define ZT_MAX_OFF	   0x3fff /* largest header offset the parser follows (bounds the verifier) */

/* Well-known ports the guards and the allow-list inspect. */
#define ZT_PORT_DHCP_SERVER  67	  /* DHCPv4 server (BOOTP) */
#define ZT_PORT_DHCP_CLIENT  68	  /* DHCPv4 client */
#define ZT_PORT_DHCP6_CLIENT 546  /* DHCPv6 client */
#define ZT_PORT_DHCP6_SERVER 547  /* DHCPv6 server and relay agent */
#define ZT_PORT_VXLAN	     4789 /* VXLAN: a tunnel, opened only by an explicit port */
#define ZT_PORT_GENEVE	     6081 /* Geneve: a tunnel, opened only by an explicit port */

#endif
