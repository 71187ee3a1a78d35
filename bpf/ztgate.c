//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* ztgate.c: the XDP entry point. Implements the decision order of the design notes; the Go
 * reference model (policy/model.go) is the specification and must agree on every frame. */
#include "helpers.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Step 6: ARP. The sender must be the device itself (or a probe from 0.0.0.0). */
static __always_inline int zt_arp(const struct xdp_md *ctx, struct zt_pkt *pkt)
{
	const __u8 *a = zt_ptr(ctx, pkt->l3off, 28);
	__be32 spa;
	__u16 op;

	if (!a)
		return ZT_R_TRUNCATED;
	op = zt_be16(a + 6);
	if (zt_be16(a) != 1 || zt_be16(a + 2) != ETH_P_IP_ || a[4] != 6 || a[5] != 4 ||
	    (op != 1 && op != 2))
		return ZT_R_MALFORMED;
	if (!zt_mac_eq(a + 8, pkt->smac))
		return ZT_R_ARP_SPOOF;
	__builtin_memcpy(&spa, a + 14, 4);
	if (spa == 0) {
		if (op != 1)
			return ZT_R_ARP_SPOOF;
	} else if (!zt_bound_v4(pkt->dev, spa)) {
		return ZT_R_ARP_SPOOF;
	}
	pkt->counted = 1;
	/* ARP goes to the gateway, to a device on the link, or to everyone; never to a group. */
	if (zt_l2_of(pkt) == ZT_L2_DENY)
		return ZT_R_L2_DST_DENIED;
	return ZT_R_ALLOW;
}

/* IPv4 options in [start, start + len): -1 if acceptable, else a reason. A global function, so
 * the verifier checks the bounded walk once instead of once per path that reaches it. */
__noinline int zt_ipv4_options(struct xdp_md *ctx, __u32 start, __u32 len)
{
	__u32 i;

	if (!ctx || len > ZT_MAX_IPV4_OPTS)
		return ZT_R_MALFORMED;
	for (i = 0; i < ZT_MAX_IPV4_OPTS; ) {
		const __u8 *o;

		if (i >= len)
			break;
		o = zt_ptr(ctx, start + i, 1);
		if (!o)
			return ZT_R_TRUNCATED;
		if (o[0] == 0) /* end of options */
			break;
		if (o[0] == 1) { /* no-op */
			i++;
			continue;
		}
		if (i + 1 >= len)
			return ZT_R_MALFORMED;
		o = zt_ptr(ctx, start + i, 2);
		if (!o)
			return ZT_R_TRUNCATED;
		if (o[1] < 2 || i + o[1] > len)
			return ZT_R_MALFORMED;
		if (o[0] == 0x83 || o[0] == 0x89) /* loose / strict source route */
			return ZT_R_IP_OPTIONS;
		i += o[1];
	}
	return -1;
}

/* Neighbour discovery options in [start, end): a source or target link-layer address option
 * must name the Ethernet source (mac, from zt_mac_u64). -1 if acceptable, else a reason. A
 * global function, like zt_ipv4_options. */
__noinline int zt_nd_options(struct xdp_md *ctx, __u32 start, __u32 end, __u64 mac)
{
	__u32 i, off = start;

	if (!ctx)
		return ZT_R_MALFORMED;
	for (i = 0; i < ZT_MAX_ND_OPTS; i++) {
		const __u8 *o;

		if (off >= end)
			return -1;
		if (off + 8 > end)
			return ZT_R_MALFORMED;
		o = zt_ptr(ctx, off, 8);
		if (!o)
			return ZT_R_TRUNCATED;
		if (o[1] == 0 || off + o[1] * 8 > end)
			return ZT_R_MALFORMED;
		if ((o[0] == ZT_ND_SLLA || o[0] == ZT_ND_TLLA) && zt_mac_u64(o + 2) != mac)
			return ZT_R_ND_SPOOF;
		off += o[1] * 8;
	}
	return off >= end ? -1 : ZT_R_MALFORMED; /* more options than the walk follows */
}

/* Step 7 for IPv4: header consistency, source binding, options. */
static __always_inline int zt_ipv4(struct xdp_md *ctx, struct zt_pkt *pkt)
{
	const __u8 *ip = zt_ptr(ctx, pkt->l3off, 20);
	__u32 hl, tot, frag;
	__be32 src, dst;
	int r;

	if (!ip)
		return ZT_R_TRUNCATED;
	if ((ip[0] >> 4) != 4 || (ip[0] & 0xf) < 5)
		return ZT_R_MALFORMED;
	hl = (ip[0] & 0xf) * 4;
	if (!zt_ptr(ctx, pkt->l3off, hl))
		return ZT_R_TRUNCATED;
	tot = zt_be16(ip + 2);
	if (tot < hl || pkt->l3off + tot > zt_frame_len(ctx))
		return ZT_R_MALFORMED;
	pkt->end = pkt->l3off + tot;
	pkt->l4off = pkt->l3off + hl;
	pkt->fp_start = pkt->l4off;
	pkt->l4proto = ip[9];
	pkt->frag_id = zt_be16(ip + 4);
	frag = zt_be16(ip + 6);
	pkt->mf = (frag & 0x2000) != 0;
	pkt->foff = (frag & 0x1fff) * 8;
	pkt->first_frag = pkt->mf && pkt->foff == 0;
	__builtin_memcpy(&src, ip + 12, 4);
	__builtin_memcpy(&dst, ip + 16, 4);
	zt_in6_from_v4(&pkt->saddr, src);
	zt_in6_from_v4(&pkt->daddr, dst);

	if (src == 0)
		pkt->unspec = 1;
	else if (!zt_bound_v4(pkt->dev, src))
		return ZT_R_SPOOF_IP;

	if (hl > 20) { /* most datagrams carry no options: no call to the walk */
		r = zt_ipv4_options(ctx, pkt->l3off + 20, hl - 20);
		if (r >= 0)
			return r;
	}
	if (!pkt->unspec)
		pkt->counted = 1;
	return -1; /* go on */
}

/* Steps 7-8 for IPv6: header consistency, source binding, extension-header walk. */
static __always_inline int zt_ipv6(const struct xdp_md *ctx, struct zt_pkt *pkt)
{
	const __u8 *ip = zt_ptr(ctx, pkt->l3off, 40);
	__u32 off, i, seen_frag = 0;
	__u8 nh;

	if (!ip)
		return ZT_R_TRUNCATED;
	if ((ip[0] >> 4) != 6)
		return ZT_R_MALFORMED;
	if (pkt->l3off + 40 + zt_be16(ip + 4) > zt_frame_len(ctx))
		return ZT_R_MALFORMED;
	pkt->end = pkt->l3off + 40 + zt_be16(ip + 4);
	__builtin_memcpy(pkt->saddr.b, ip + 8, 16);
	__builtin_memcpy(pkt->daddr.b, ip + 24, 16);
	nh = ip[6];
	pkt->hoplimit = ip[7];

	{
		const __u64 *s = (const __u64 *)pkt->saddr.b;

		if (s[0] == 0 && s[1] == 0)
			pkt->unspec = 1;
		else if (!zt_bound_v6(pkt->dev, &pkt->saddr))
			return ZT_R_SPOOF_IP;
	}
	if (!pkt->unspec)
		pkt->counted = 1;

	off = pkt->l3off + 40;
	pkt->fp_start = off;
	for (i = 0; i < ZT_MAX_EXT_HDRS; i++) {
		const __u8 *h;

		if (!zt_is_ext(nh))
			break;
		if (nh == IPPROTO_ROUTING_ || (nh == IPPROTO_HOPOPTS_ && i != 0))
			return ZT_R_EXT_DENIED;
		if (off + 8 > pkt->end)
			return ZT_R_TRUNCATED;
		h = zt_ptr(ctx, off, 8);
		if (!h)
			return ZT_R_TRUNCATED;
		if (nh == IPPROTO_FRAGMENT_) {
			__u16 fo = zt_be16(h + 2);

			if (seen_frag)
				return ZT_R_EXT_DENIED;
			seen_frag = 1;
			nh = h[0];
			off += 8;
			pkt->fp_start = off;
			pkt->foff = fo & 0xfff8;
			pkt->mf = fo & 1;
			pkt->frag_id = ((__u32)zt_be16(h + 4) << 16) | zt_be16(h + 6);
			pkt->first_frag = pkt->mf && pkt->foff == 0;
			if (pkt->foff)
				break; /* a later fragment: the rest is payload */
			continue;
		}
		nh = h[0];
		off += (h[1] + 1) * 8;
		if (off > pkt->end)
			return ZT_R_TRUNCATED;
	}
	if (!pkt->foff && zt_is_ext(nh))
		return ZT_R_EXT_DENIED; /* chain longer than the parser limit */
	pkt->l4proto = nh;
	pkt->l4off = off;
	return -1;
}

/* Step 10: infrastructure guards, plus the DHCP/ND plumbing that passes without a rule.
 * Returns a reason, or -1 to go on to the allow-list. */
static __always_inline int zt_guards(const struct xdp_md *ctx, struct zt_pkt *pkt)
{
	__u32 tiny = pkt->first_frag ? ZT_R_FRAG_TINY : ZT_R_TRUNCATED;
	__u32 need = zt_l4_need(pkt->l4proto);
	const __u8 *l4 = zt_ptr(ctx, pkt->l4off, 8);

	if (pkt->l4off + need > pkt->end)
		return tiny;
	if (need) {
		if (!l4)
			return tiny;
		pkt->icmp_type = l4[0];
	}
	if (pkt->l4proto == IPPROTO_TCP_) {
		const __u8 *t = zt_ptr(ctx, pkt->l4off, 20);

		if (!t)
			return tiny;
		if ((t[12] >> 4) < 5)
			return ZT_R_MALFORMED;
		if (pkt->l4off + (t[12] >> 4) * 4 > pkt->end)
			return tiny;
	}
	if (pkt->l4proto == IPPROTO_TCP_ || pkt->l4proto == IPPROTO_UDP_) {
		if (!l4)
			return tiny;
		pkt->sport = zt_be16(l4);
		pkt->dport = zt_be16(l4 + 2);
	}
	if (pkt->l4proto == IPPROTO_UDP_ && l4) {
		__u32 ulen = zt_be16(l4 + 4);

		/* A first fragment's UDP length covers the whole datagram, not this fragment. */
		if (ulen < 8 || (!pkt->first_frag && pkt->l4off + ulen > pkt->end))
			return ZT_R_MALFORMED;
	}

	if (pkt->family == 4) {
		if (pkt->l4proto == IPPROTO_UDP_) {
			if (pkt->sport == ZT_PORT_DHCP_SERVER)
				return ZT_R_DHCP_SERVER;
			if (pkt->dport == ZT_PORT_DHCP_SERVER) {
				const __u8 *b;

				if (pkt->l4off + 8 + ZT_DHCP_MIN_LEN > pkt->end)
					return tiny;
				b = zt_ptr(ctx, pkt->l4off + 8, ZT_DHCP_MIN_LEN);
				if (!b)
					return tiny;
				if (b[0] != 1) /* BOOTREPLY */
					return ZT_R_DHCP_SERVER;
				if (!zt_mac_eq(b + ZT_DHCP_CHADDR_OFF, pkt->smac))
					return ZT_R_DHCP_CHADDR;
				if (pkt->sport == ZT_PORT_DHCP_CLIENT && (pkt->cfg->flags & ZT_CFG_SVC_DHCP) &&
				    (zt_in6_v4(&pkt->daddr) == 0xffffffff || zt_is_gateway(pkt))) {
					pkt->counted = 1;
					return ZT_R_ALLOW;
				}
			}
		}
		if (pkt->unspec)
			return ZT_R_SPOOF_IP;
		if (pkt->l4proto == IPPROTO_ICMP_ &&
		    (pkt->icmp_type == ZT_ICMP_REDIRECT || pkt->icmp_type == ZT_ICMP_ROUTER_ADVERT))
			return ZT_R_ROUTER_GUARD;
		return -1;
	}

	if (pkt->unspec && !(pkt->l4proto == IPPROTO_ICMPV6_ && pkt->icmp_type == ZT_ICMP6_NS))
		return ZT_R_SPOOF_IP;
	if (pkt->l4proto == IPPROTO_UDP_) {
		if (pkt->sport == ZT_PORT_DHCP6_SERVER)
			return ZT_R_DHCP_SERVER;
		if (pkt->sport == ZT_PORT_DHCP6_CLIENT && pkt->dport == ZT_PORT_DHCP6_SERVER &&
		    (pkt->cfg->flags & ZT_CFG_SVC_DHCPV6)) {
			const __u64 *d = (const __u64 *)pkt->daddr.b;

			/* ff02::1:2, all DHCP relay agents and servers */
			if ((d[0] == bpf_cpu_to_be64(0xff02000000000000ULL) &&
			     d[1] == bpf_cpu_to_be64(0x0000000000010002ULL)) ||
			    zt_is_gateway(pkt))
				return ZT_R_ALLOW;
		}
	}
	if (pkt->l4proto == IPPROTO_ICMPV6_) {
		switch (pkt->icmp_type) {
		case ZT_ICMP6_RA:
		case ZT_ICMP6_REDIRECT:
			return ZT_R_ROUTER_GUARD;
		case ZT_ICMP6_NA:
		case ZT_ICMP6_NS:
		case ZT_ICMP6_RS: {
			__u32 opts = pkt->l4off + (pkt->icmp_type == ZT_ICMP6_RS ? 8 : ZT_ND_LEN);
			int r;

			if (opts > pkt->end)
				return tiny;
			if (pkt->icmp_type == ZT_ICMP6_NA) {
				const struct zt_in6 *t = zt_ptr(ctx, pkt->l4off + 8, 16);

				if (!t)
					return tiny;
				if (!zt_bound_v6(pkt->dev, t))
					return ZT_R_ND_SPOOF;
			}
			r = zt_nd_options((struct xdp_md *)ctx, opts, pkt->end, zt_mac_u64(pkt->smac));
			if (r >= 0)
				return r;
			/* Plumbing only on the link; anything else needs a rule like any packet. */
			if (zt_nd_link_scope(pkt))
				return ZT_R_ALLOW;
			if (pkt->unspec)
				return ZT_R_SPOOF_IP;
		}
		}
	}
	return -1;
}

static __always_inline int zt_decide(struct xdp_md *ctx, struct zt_pkt *pkt)
{
	const __u8 *eth = zt_ptr(ctx, 0, 14);
	struct zt_dev_key key = {};
	void *devices;
	__u16 proto;
	int r;

	if (!pkt->cfg)
		return ZT_R_NO_POLICY;
	/* Step 1: L2 sanity. */
	if (!eth)
		return ZT_R_TRUNCATED;
	__builtin_memcpy(pkt->smac, eth + 6, 6);
	if ((eth[6] & 1) || !(eth[6] | eth[7] | eth[8] | eth[9] | eth[10] | eth[11]) ||
	    zt_mac_eq(eth, eth + 6))
		return ZT_R_BAD_L2_SRC;
	/* Step 2: VLAN. One 802.1Q tag at most; VID 0 is a priority tag. */
	proto = zt_be16(eth + 12);
	pkt->l3off = 14;
	if (proto == ETH_P_8021AD_ || proto == ETH_P_QINQ_OLD_)
		return ZT_R_VLAN_DENIED;
	if (proto == ETH_P_8021Q_) {
		const __u8 *tag = zt_ptr(ctx, 14, 4);

		if (!tag)
			return ZT_R_TRUNCATED;
		pkt->vid = zt_be16(tag) & 0x0fff;
		proto = zt_be16(tag + 2);
		pkt->l3off = 18;
		if (proto == ETH_P_8021Q_ || proto == ETH_P_8021AD_ || proto == ETH_P_QINQ_OLD_)
			return ZT_R_VLAN_DENIED;
	}
	/* Step 3: identity. */
	devices = bpf_map_lookup_elem(&zt_devices, &pkt->slot);
	if (!devices)
		return ZT_R_NO_POLICY;
	__builtin_memcpy(key.mac, pkt->smac, 6);
	pkt->dev = bpf_map_lookup_elem(devices, &key);
	if (!pkt->dev)
		return ZT_R_UNKNOWN_DEVICE;
	if (pkt->dev->ifindex && pkt->dev->ifindex != ctx->ingress_ifindex)
		return ZT_R_SPOOF_MAC_PORT;
	if (pkt->vid != pkt->dev->vlan)
		return ZT_R_VLAN_DENIED;
	__builtin_memcpy(pkt->dmac, eth, 6);
	/* Step 4 (quarantine) selects the rule set in step 13. Step 5: ethertype. */
	if (proto == ETH_P_ARP_)
		return zt_arp(ctx, pkt);
	if (proto == ETH_P_IP_) {
		pkt->family = 4;
		r = zt_ipv4(ctx, pkt);
	} else if (proto == ETH_P_IPV6_) {
		pkt->family = 6;
		r = zt_ipv6(ctx, pkt);
	} else {
		return ZT_R_ETHERTYPE_DENIED;
	}
	if (r >= 0)
		return r;
	/* Step 8b: whom the frame is for. Enforced after the sender's identity checks, so that a
	 * spoof is reported as one whatever its destination MAC. */
	pkt->l2 = zt_l2_of(pkt);
	/* Step 9: later fragments follow their first fragment, to the same receiver. */
	if (pkt->foff)
		return pkt->l2 == ZT_L2_DENY ? ZT_R_L2_DST_DENIED : zt_frag_later(pkt);
	/* Steps 10-11, 13. The destination MAC must fit the IP destination: a frame the guards
	 * let through as plumbing too. */
	r = zt_guards(ctx, pkt);
	if ((r < 0 || r == ZT_R_ALLOW) && pkt->l2 == ZT_L2_DENY)
		r = ZT_R_L2_DST_DENIED;
	if (r < 0)
		r = zt_allow_list(pkt);
	if (r == ZT_R_ALLOW && pkt->first_frag)
		r = zt_frag_record(pkt);
	return r;
}

/* Does the device's audit mode pass a frame dropped for reason? Identity failures (the sender
 * is not who it claims) stay enforced unless the device's audit covers identity too. */
static __always_inline __u32 zt_dev_audits(__u16 flags, int reason)
{
	if (!(flags & ZT_DEV_AUDIT))
		return 0;
	switch (reason) {
	case ZT_R_SPOOF_MAC_PORT:
	case ZT_R_SPOOF_IP:
	case ZT_R_ARP_SPOOF:
	case ZT_R_ND_SPOOF:
	case ZT_R_DHCP_CHADDR:
		return flags & ZT_DEV_AUDIT_IDENTITY;
	}
	return 1;
}

SEC("xdp")
int zt_xdp(struct xdp_md *ctx)
{
	struct zt_pkt pkt = {};
	__u32 zero = 0, len = zt_frame_len(ctx), verdict, *slot;
	int reason;

#ifdef ZT_BENCH_COLD
	/* Benchmark build only (bench/bpf): rewrite the frame to come from the next device. */
	zt_bench_rewrite(ctx);
#endif
	slot = bpf_map_lookup_elem(&zt_active, &zero);
	if (slot) {
		pkt.slot = *slot & (ZT_SLOTS - 1);
		pkt.cfg = bpf_map_lookup_elem(&zt_cfg, &pkt.slot);
	}
	reason = zt_decide(ctx, &pkt);
	if (reason < 0 || reason >= ZT_R_MAX)
		reason = ZT_R_MALFORMED;
	verdict = ZT_V_PASS;
	if (reason != ZT_R_ALLOW) {
		__u32 audit = pkt.dev ? zt_dev_audits(pkt.dev->flags, reason)
				      : pkt.cfg && (pkt.cfg->flags & ZT_CFG_AUDIT);

		verdict = reason != ZT_R_NO_POLICY && audit ? ZT_V_AUDIT : ZT_V_DROP;
	}
	zt_account(&pkt, verdict, reason, len);
	if (verdict != ZT_V_PASS)
		zt_event(ctx, &pkt, verdict, reason, len);
	return verdict == ZT_V_DROP ? XDP_DROP : XDP_PASS;
}
