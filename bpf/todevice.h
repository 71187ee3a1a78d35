/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* todevice.h: the decision for a frame leaving the gateway for a device port (the TC egress
 * program), whatever sent it: the uplink, another device, the gateway itself. Steps: L2 and VLAN
 * (T1), broadcast and multicast (T2), the destination device (T3), IP header (T4), fragments (T5),
 * link plumbing (T6), upper-layer header (T7), ICMP errors (T8), flows (T9), the device's from:
 * rules (T10). The Go model (policy/model_to.go) is the specification. */
#ifndef ZT_TODEVICE_H
#define ZT_TODEVICE_H

#include "parsing.h"
#include "pkt.h"
#include "addr.h"
#include "rules.h"
#include "frag.h"
#include "ext.h"
#include "flow.h"

/* ZT_TC_PULL is how many of a frame's first bytes the TC program reads headers from: a header
 * beyond them counts as truncated. */
#define ZT_TC_PULL 512

/* zt_group_ip reports whether the IP destination of pkt is a broadcast or multicast address. */
static __always_inline int zt_group_ip(const struct zt_pkt *pkt)
{
	if (pkt->family == 4) {
		__be32 d = zt_in6_v4(&pkt->daddr);

		return d == ZT_V4_BROADCAST || (bpf_ntohl(d) >> 28) == 0xe; /* 224.0.0.0/4 */
	}
	return pkt->daddr.b[0] == 0xff;
}

/* zt_to_ip4 is T4 for IPv4: header consistency; options are refused (a unicast datagram toward a
 * device has no use for them). */
static __always_inline int zt_to_ip4(void *data, void *data_end, __u32 len, struct zt_pkt *pkt)
{
	const struct iphdr *iph = zt_parse_iphdr_in(data, data_end, pkt->l3off);
	__u32 tot;

	if (!iph)
		return ZT_R_TRUNCATED;
	if (iph->version != ZT_IPV4_VERSION || iph->ihl < ZT_IPV4_MIN_IHL)
		return ZT_R_MALFORMED;
	tot = bpf_ntohs(iph->tot_len);
	if (tot < iph->ihl * ZT_IHL_UNIT || pkt->l3off + tot > len)
		return ZT_R_MALFORMED;
	zt_in6_from_v4(&pkt->saddr, iph->saddr);
	zt_in6_from_v4(&pkt->daddr, iph->daddr);
	if (iph->ihl != ZT_IPV4_MIN_IHL)
		return zt_group_ip(pkt) ? ZT_R_ALLOW : ZT_R_IP_OPTIONS;
	zt_ipv4_datagram(iph, sizeof(*iph), tot, ZT_TC_PULL, pkt);
	return ZT_CONTINUE;
}

/* zt_to_ip6 is T4 for IPv6: header consistency and the extension-header walk of frames from devices. */
static __always_inline int zt_to_ip6(void *data, void *data_end, __u32 len, struct zt_pkt *pkt)
{
	__u32 off = 0;
	__u8 nh = 0;
	int r = zt_ipv6_hdr(data, data_end, len, ZT_TC_PULL, pkt, &off, &nh);

	if (zt_decided(r))
		return r;
	return zt_ipv6_ext(data, data_end, pkt, off, nh);
}

/* Who sent a frame toward a device, by its source MAC (zt_src_of). */
#define ZT_SRC_OTHER  0 /* anyone else: a host beyond the gateway, or a frame routed by the gateway */
#define ZT_SRC_SELF   1 /* one of the gateway's own MACs (zt_gwmacs): the gateway, or what it routes */
#define ZT_SRC_ROUTER 2 /* a MAC the policy names for the gateway (spec.gateway.macs: a router) */
#define ZT_SRC_DEVICE 3 /* a known device's MAC: a bridge forwarding a frame decided where it was sent */

/* zt_src_of classifies the source MAC smac of a frame toward a device (ZT_SRC_*). */
static __always_inline int zt_src_of(const struct zt_pkt *pkt, void *devices, const __u8 *smac)
{
	struct zt_dev_key k = {};

	__builtin_memcpy(k.mac, smac, ETH_ALEN);
	if (bpf_map_lookup_elem(&zt_gwmacs, &k))
		return ZT_SRC_SELF;
	if (zt_cfg_gwmac(pkt->cfg, smac))
		return ZT_SRC_ROUTER;
	return bpf_map_lookup_elem(devices, &k) ? ZT_SRC_DEVICE : ZT_SRC_OTHER;
}

/* zt_link_local reports whether IPv6 address a is link-local unicast (fe80::/10). */
static __always_inline int zt_link_local(const struct zt_in6 *a)
{
	return a->b[0] == ZT_V6_LL0 && (a->b[1] & ZT_V6_LL1_MASK) == ZT_V6_LL1;
}

/* zt_to_plumbing reports whether pkt is link plumbing every device needs, passed without a rule
 * (T6), from its source class src: neighbour discovery confined to the link (hop limit 255, which
 * nothing the gateway routes keeps) from the gateway or a router the policy names; a DHCP server
 * message from such a router or from the gateway's own address; a DHCPv6 one from a link-local
 * address of either. */
static __always_inline int zt_to_plumbing(const struct zt_pkt *pkt, void *devices, const __u8 *smac)
{
	int nd = pkt->l4proto == IPPROTO_ICMPV6 && pkt->icmp_type >= NDISC_ROUTER_SOLICITATION &&
		 pkt->icmp_type <= NDISC_REDIRECT;
	int dhcp = pkt->l4proto == IPPROTO_UDP &&
		   (pkt->family == 4 ? pkt->sport == ZT_PORT_DHCP_SERVER && pkt->dport == ZT_PORT_DHCP_CLIENT
				     : pkt->sport == ZT_PORT_DHCP6_SERVER && pkt->dport == ZT_PORT_DHCP6_CLIENT);
	int src;

	if (!nd && !dhcp)
		return 0;
	src = zt_src_of(pkt, devices, smac);
	if (src != ZT_SRC_SELF && src != ZT_SRC_ROUTER)
		return 0;
	if (nd)
		return pkt->hoplimit == ZT_ND_HOPLIMIT;
	if (pkt->family == 4)
		return src == ZT_SRC_ROUTER || zt_cfg_gateway(pkt->cfg, 4, &pkt->saddr);
	return zt_link_local(&pkt->saddr);
}

/* zt_to_l4 is T7: the upper-layer header a first fragment or whole datagram must carry. */
static __always_inline int zt_to_l4(void *data, void *data_end, struct zt_pkt *pkt)
{
	__u32 tiny = pkt->first_frag ? ZT_R_FRAG_TINY : ZT_R_TRUNCATED;
	__u32 need = zt_l4_need(pkt->l4proto);
	const union zt_l4hdr *l4 = zt_parse_l4hdr_in(data, data_end, pkt->l4off);

	if (!need)
		return ZT_CONTINUE;
	if (pkt->l4off + need > pkt->lim || !l4)
		return tiny;
	if (pkt->l4proto == IPPROTO_TCP) {
		const struct tcphdr *tcp = zt_parse_tcphdr_in(data, data_end, pkt->l4off);

		if (!tcp)
			return tiny;
		if (tcp->doff < ZT_TCP_MIN_DOFF)
			return ZT_R_MALFORMED;
	}
	if (pkt->l4proto == IPPROTO_TCP || pkt->l4proto == IPPROTO_UDP) {
		pkt->sport = bpf_ntohs(l4->udp.source);
		pkt->dport = bpf_ntohs(l4->udp.dest);
		return ZT_CONTINUE;
	}
	pkt->icmp_type = l4->icmp6.icmp6_type;
	pkt->dport = zt_icmp_key(pkt->icmp_type, l4->icmp6.icmp6_code);
	pkt->icmp_id = bpf_ntohs(l4->icmp6.icmp6_identifier);
	return ZT_CONTINUE;
}

/* zt_src_quarantined reports whether the source address of pkt belongs to a quarantined device,
 * which opens nothing outside its quarantine set, whatever another device's from: rules say. */
static __always_inline int zt_src_quarantined(const struct zt_pkt *pkt)
{
	struct zt_addr_key ak = {.addr = pkt->saddr};
	struct zt_addr_val *a;
	__u32 slot = pkt->slot;
	void *inner = bpf_map_lookup_elem(&zt_addrs, &slot);

	if (!inner)
		return 0;
	a = bpf_map_lookup_elem(inner, &ak);
	return a && a->kind == ZT_ADDR_DEVICE && (a->flags & ZT_DEV_QUARANTINED);
}

/* zt_from_rules is T10: the from: rules of the destination device, matched on the frame's source.
 * A quarantined device has none, and a quarantined source opens nothing. */
static __always_inline int zt_from_rules(const struct zt_pkt *pkt)
{
	const struct zt_dev_rec *dev = pkt->dev;
	struct zt_match m = {
	    .daddr = pkt->saddr,
	    .slot = pkt->slot,
	    .ruleset = dev->in_ruleset,
	    .flags = zt_in_flags(dev->flags),
	    .dport = pkt->dport,
	    .l4proto = pkt->l4proto,
	    .to_gateway = zt_cfg_gateway(pkt->cfg, pkt->family, &pkt->saddr),
	    .l2 = ZT_L2_DEV,
	};
	int r;

	if (dev->flags & ZT_DEV_QUARANTINED)
		return ZT_R_QUARANTINED;
	r = zt_match_rules(&m);
	if (r == ZT_R_ALLOW && zt_src_quarantined(pkt))
		return ZT_R_INBOUND_DENIED;
	return r == ZT_R_NO_RULE ? ZT_R_INBOUND_DENIED : r;
}

/* zt_to_device decides a frame of len bytes leaving for a device port and returns its reason. The
 * frame's first bytes are [data, data_end) (the TC program pulls ZT_TC_PULL of them in). */
static __always_inline int zt_to_device(void *data, void *data_end, __u32 len, struct zt_pkt *pkt)
{
	const struct ethhdr *eth = zt_parse_ethhdr_in(data, data_end, 0);
	struct zt_dev_key key = {};
	struct zt_flow_key k;
	void *devices;
	__u16 proto, fs, fd;
	__u8 side, kind;
	int r;

	/* No devices map in the slot: no policy installed yet, nothing goes to a device. */
	devices = bpf_map_lookup_elem(&zt_devices, &pkt->slot);
	if (!pkt->cfg || !devices)
		return ZT_R_NO_POLICY;
	/* T1: L2 and VLAN. One 802.1Q tag at most. */
	if (!eth)
		return ZT_R_TRUNCATED;
	r = zt_vlan(data, data_end, eth, pkt, &proto);
	if (zt_decided(r))
		return r;
	if (proto == ETH_P_ARP)
		return ZT_R_ALLOW; /* decided where a device sends it; the gateway's own are plumbing */
	if (proto == ETH_P_IP)
		pkt->family = 4;
	else if (proto == ETH_P_IPV6)
		pkt->family = 6;
	else
		return ZT_R_ETHERTYPE_DENIED;
	/* T2: a broadcast or multicast frame carries a group IP destination and passes when the
	 * gateway, a router the policy names or a device sent it (a device's was decided where it was
	 * sent; the gateway routes no multicast); no device's from: rule can speak for a group. */
	if (eth->h_dest[0] & ZT_MAC_GROUP) {
		r = pkt->family == 4 ? zt_to_ip4(data, data_end, len, pkt) : zt_to_ip6(data, data_end, len, pkt);
		if (zt_decided(r) && r != ZT_R_ALLOW)
			return r;
		if (!zt_group_ip(pkt))
			return ZT_R_L2_DST_DENIED;
		return zt_src_of(pkt, devices, eth->h_source) == ZT_SRC_OTHER ? ZT_R_INBOUND_DENIED : ZT_R_ALLOW;
	}
	/* T3: the destination device, by MAC, on its port. */
	__builtin_memcpy(key.mac, eth->h_dest, ETH_ALEN);
	pkt->dev = bpf_map_lookup_elem(devices, &key);
	if (!pkt->dev)
		return ZT_R_UNKNOWN_DEVICE;
	if (pkt->dev->ifindex && pkt->dev->ifindex != pkt->ifindex)
		return ZT_R_SPOOF_MAC_PORT;
	/* T4: IP header; the destination must be the device's own address (or T6 plumbing). */
	r = pkt->family == 4 ? zt_to_ip4(data, data_end, len, pkt) : zt_to_ip6(data, data_end, len, pkt);
	if (zt_decided(r))
		return r == ZT_R_ALLOW ? ZT_R_L2_DST_DENIED : r;
	pkt->counted = 1;
	/* T5: later fragments follow their first fragment. */
	if (pkt->foff)
		return zt_frag_later(pkt);
	r = zt_to_l4(data, data_end, pkt);
	if (zt_decided(r))
		return r;
	if (zt_to_plumbing(pkt, devices, eth->h_source))
		return ZT_R_ALLOW;
	if (pkt->family == 4 ? !zt_bound_v4(pkt->dev, zt_in6_v4(&pkt->daddr)) : !zt_bound_v6(pkt->dev, &pkt->daddr))
		return ZT_R_L2_DST_DENIED;
	/* T8: an ICMP error goes to the device only about a flow of the device's. */
	if (zt_icmp_error(pkt->l4proto, pkt->icmp_type))
		return zt_flow_related(data, data_end, pkt);
	/* T9, T10: a live flow, else the from: rules, which open one. */
	if (!(kind = zt_flow_ports(pkt->l4proto, pkt->icmp_type, pkt->icmp_id, pkt->sport, pkt->dport, &fs, &fd)))
		return zt_from_rules(pkt);
	side = zt_flow_key_of(&k, &pkt->saddr, fs, &pkt->daddr, fd, pkt->l4proto, kind);
	r = zt_flow_hit(pkt, &k, side);
	if (zt_decided(r))
		return r;
	r = zt_from_rules(pkt);
	if (r == ZT_R_ALLOW && kind != ZT_FK_ECHO_REPLY) /* a reply opens nothing */
		r = zt_flow_open(pkt, &k, side, ZT_FLOW_IN, pkt->dev->dev_id);
	return r;
}

#endif
