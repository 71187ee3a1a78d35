/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* rules.h: the allow-list: rule lookups by selector and the port ranges of a rule. */
#ifndef ZT_RULES_H
#define ZT_RULES_H

#include "addr.h"

/* ZT_PREFIX_EXACT is zt_prefix_key.prefixlen of a lookup: the rule set's 32 bits and all 128 of the address. */
#define ZT_PREFIX_EXACT (32 + 128)

/* zt_icmp_key is what the ranges of an ICMP or ICMPv6 rule hold in place of ports: the type in the high
 * byte, the code in the low one (a type with every code is the range type<<8 .. type<<8|0xff). */
static __always_inline __u16 zt_icmp_key(__u8 type, __u8 code)
{
	return (__u16)type << 8 | code;
}

/* zt_ports_ok reports whether a rule value allows this frame; proto_key is the protocol the rule was stored under,
 * dport the frame's destination port or, for ICMP and ICMPv6, its zt_icmp_key. */
static __always_inline int zt_ports_ok(const struct zt_rule_val *v, __u32 proto_key, __u32 l4proto, __u32 dport,
				       __u32 tunnel)
{
	__u32 i, n;

	if (!v)
		return 0;
	if (proto_key == ZT_PROTO_ANY)
		return !tunnel; /* a wildcard never opens a tunnel */
	if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP && l4proto != IPPROTO_ICMP && l4proto != IPPROTO_ICMPV6)
		return 1; /* protocol without ports or types: the explicit protocol rule decides */
	if (v->flags & ZT_RULE_ALL_PORTS)
		return !tunnel; /* "all UDP ports" does not name VXLAN or Geneve; "all types" of ICMP */
	n = v->n;
	for (i = 0; i < ZT_MAX_PORT_RANGES; i++) {
		if (i >= n)
			break;
		if (v->ranges[i].lo <= dport && dport <= v->ranges[i].hi &&
		    (!tunnel || v->ranges[i].lo == v->ranges[i].hi))
			return 1;
	}
	return 0;
}

/* zt_in_flags are the lookup flags of a device's from: rules: its ZT_DEV_IN_* flags as ZT_DEV_PEER_RULES
 * and ZT_DEV_PREFIX_RULES. */
static __always_inline __u32 zt_in_flags(__u16 flags)
{
	return (flags & ZT_DEV_IN_PEER_RULES ? ZT_DEV_PEER_RULES : 0) |
	       (flags & ZT_DEV_IN_PREFIX_RULES ? ZT_DEV_PREFIX_RULES : 0);
}

/* zt_match is what the allow-list needs of a frame: no pointers, so that it can be a global function's
 * argument and the verifier checks the rule lookups once, not once per path. */
struct zt_match {
	struct zt_in6 daddr;
	__u32 slot;
	__u32 ruleset;
	__u32 flags; /* ZT_DEV_PEER_RULES | ZT_DEV_PREFIX_RULES | ZT_DEV_QUARANTINED */
	__u16 dport;
	__u8 l4proto;
	__u8 to_gateway;
	__u8 l2; /* ZT_L2_* of the destination MAC */
	__u8 pad[3];
};

/* zt_try tries (rule set, selector) under the frame's protocol, then under the wildcard. */
static __always_inline int zt_try(void *rules, const struct zt_match *m, __u8 kind, __u32 id, __u32 tunnel)
{
	struct zt_rule_key k = {.ruleset = m->ruleset, .sel_id = id, .sel_kind = kind, .proto = m->l4proto};

	if (zt_ports_ok(bpf_map_lookup_elem(rules, &k), m->l4proto, m->l4proto, m->dport, tunnel))
		return 1;
	k.proto = ZT_PROTO_ANY;
	return zt_ports_ok(bpf_map_lookup_elem(rules, &k), ZT_PROTO_ANY, m->l4proto, m->dport, tunnel);
}

/* zt_match_rules is step 13 (with step 11): the allow-list of the device (device + segment rules) or the
 * quarantine set. A broadcast or multicast frame (which a bridge floods) matches only the
 * rules that name a multicast prefix: ZT_SEL_MCAST. Returns the reason. */
__noinline int zt_match_rules(struct zt_match *m)
{
	__u32 p, tunnel, slot, group;
	void *rules, *inner;

	if (!m)
		return ZT_R_NO_POLICY;
	p = m->l4proto;
	slot = m->slot;
	group = m->l2 == ZT_L2_BCAST || m->l2 == ZT_L2_MCAST;
	tunnel = p == IPPROTO_IPIP || p == IPPROTO_IPV6 || p == IPPROTO_GRE ||
		 (p == IPPROTO_UDP && (m->dport == ZT_PORT_VXLAN || m->dport == ZT_PORT_GENEVE));
	rules = bpf_map_lookup_elem(&zt_rules, &slot);
	if (!rules)
		return ZT_R_NO_POLICY;
	if (!group && m->to_gateway && zt_try(rules, m, ZT_SEL_GATEWAY, 0, tunnel))
		return ZT_R_ALLOW;
	if (!group && (m->flags & ZT_DEV_PEER_RULES) && (inner = bpf_map_lookup_elem(&zt_addrs, &slot))) {
		struct zt_addr_key ak = {.addr = m->daddr};
		struct zt_addr_val *a = bpf_map_lookup_elem(inner, &ak);

		if (a && a->kind == ZT_ADDR_DEVICE) {
			if (zt_try(rules, m, ZT_SEL_DEVICE, a->dev_id, tunnel))
				return ZT_R_ALLOW;
			if (a->segment && zt_try(rules, m, ZT_SEL_SEGMENT, a->segment, tunnel))
				return ZT_R_ALLOW;
		}
	}
	if ((m->flags & ZT_DEV_PREFIX_RULES) && (inner = bpf_map_lookup_elem(&zt_prefixes, &slot))) {
		struct zt_prefix_key k = {.prefixlen = ZT_PREFIX_EXACT, .ruleset = m->ruleset, .addr = m->daddr};
		struct zt_prefix_val *g = bpf_map_lookup_elem(inner, &k);

		if (g && zt_try(rules, m, group ? ZT_SEL_MCAST : ZT_SEL_PREFIX, g->group, tunnel))
			return ZT_R_ALLOW;
	}
	if (m->flags & ZT_DEV_QUARANTINED)
		return ZT_R_QUARANTINED;
	return tunnel ? ZT_R_ENCAP_DENIED : ZT_R_NO_RULE;
}

/* zt_allow_list runs the allow-list of the device, or the quarantine set, for pkt. */
static __always_inline int zt_allow_list(const struct zt_pkt *pkt)
{
	const struct zt_dev_rec *dev = pkt->dev;
	struct zt_match m = {
	    .daddr = pkt->daddr,
	    .slot = pkt->slot,
	    .ruleset = dev->ruleset,
	    .flags = dev->flags & (ZT_DEV_PEER_RULES | ZT_DEV_PREFIX_RULES),
	    .dport = pkt->dport,
	    .l4proto = pkt->l4proto,
	    .to_gateway = zt_is_gateway(pkt),
	    .l2 = pkt->l2,
	};

	if (dev->flags & ZT_DEV_QUARANTINED) {
		m.ruleset = pkt->cfg->quarantine_ruleset;
		m.flags = ZT_DEV_QUARANTINED;
		if (pkt->cfg->flags & ZT_CFG_Q_PEER_RULES)
			m.flags |= ZT_DEV_PEER_RULES;
		if (pkt->cfg->flags & ZT_CFG_Q_PREFIX_RULES)
			m.flags |= ZT_DEV_PREFIX_RULES;
	}
	return zt_match_rules(&m);
}

#endif
