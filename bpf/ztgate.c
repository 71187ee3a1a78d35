//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* ztgate.c: the XDP entry point and the decision order of the design notes, step by step: L2 source
 * (1), VLAN (2), identity (3), ethertype (5), ARP (6), IP header and source (7), IPv6 extension
 * headers (8), destination MAC (8b), fragments (9), guards (10), allow-list (11, 13; quarantine, 4,
 * picks its rule set). The Go reference model (policy/model.go) is the specification and must agree
 * on every frame. */
#include <linux/pkt_cls.h>
#include "parsing.h"
#include "maps.h"
#include "pkt.h"
#include "clock.h"
#include "addr.h"
#include "rules.h"
#include "frag.h"
#include "ext.h"
#include "flow.h"
#include "todevice.h"
#include "account.h"
#include "events.h"

/* ff02::1:2, all DHCP relay agents and servers (RFC 8415), as two 64-bit halves. */
#define ZT_ALL_DHCP_AGENTS_HI 0xff02000000000000ULL
#define ZT_ALL_DHCP_AGENTS_LO 0x0000000000010002ULL

char __license[] SEC("license") = "Dual BSD/GPL";

/* zt_arp is step 6, ARP: the sender must be the device itself (or a probe from 0.0.0.0). */
static __always_inline int zt_arp(const struct xdp_md *ctx, struct zt_pkt *pkt)
{
	const struct arp_ipv4 *arp = zt_parse(arp_ipv4, ctx, pkt->l3off);
	__be32 spa;
	__u16 op;

	if (!arp)
		return ZT_R_TRUNCATED;
	op = bpf_ntohs(arp->hdr.ar_op);
	if (arp->hdr.ar_hrd != bpf_htons(ARPHRD_ETHER) || arp->hdr.ar_pro != bpf_htons(ETH_P_IP) ||
	    arp->hdr.ar_hln != ETH_ALEN || arp->hdr.ar_pln != sizeof(spa) || (op != ARPOP_REQUEST && op != ARPOP_REPLY))
		return ZT_R_MALFORMED;
	if (!zt_mac_eq(arp->ar_sha, pkt->smac))
		return ZT_R_ARP_SPOOF;
	__builtin_memcpy(&spa, arp->ar_sip, sizeof(spa));
	if (spa == 0) {
		if (op != ARPOP_REQUEST)
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

/* zt_ipv4_options checks the IPv4 options in [start, start + len): ZT_CONTINUE if acceptable, else a
 * reason. A global function, so the verifier checks the bounded walk once, not once per path. */
__noinline int zt_ipv4_options(struct xdp_md *ctx, __u32 start, __u32 len)
{
	__u32 i;

	if (!ctx || len > ZT_MAX_IPV4_OPTS)
		return ZT_R_MALFORMED;
	for (i = 0; i < ZT_MAX_IPV4_OPTS;) {
		const __u8 *o;

		if (i >= len)
			break;
		o = zt_ptr(ctx, start + i, 1);
		if (!o)
			return ZT_R_TRUNCATED;
		/* An option is a type byte, then (except END and NOOP) a length byte covering both. */
		if (o[0] == IPOPT_END)
			break;
		if (o[0] == IPOPT_NOOP) {
			i++;
			continue;
		}
		if (i + 1 >= len)
			return ZT_R_MALFORMED;
		o = zt_ptr(ctx, start + i, 2);
		if (!o)
			return ZT_R_TRUNCATED;
		if (o[1] < ZT_IPOPT_MIN_LEN || i + o[1] > len)
			return ZT_R_MALFORMED;
		if (o[0] == IPOPT_LSRR || o[0] == IPOPT_SSRR)
			return ZT_R_IP_OPTIONS;
		i += o[1];
	}
	return ZT_CONTINUE;
}

/* zt_ipv4 is step 7 for IPv4: header consistency, source binding, options. */
static __always_inline int zt_ipv4(struct xdp_md *ctx, struct zt_pkt *pkt)
{
	const struct iphdr *iph = zt_parse(iphdr, ctx, pkt->l3off);
	__u32 hl, tot;
	__be32 src, dst;
	int r;

	if (!iph)
		return ZT_R_TRUNCATED;
	if (iph->version != ZT_IPV4_VERSION || iph->ihl < ZT_IPV4_MIN_IHL)
		return ZT_R_MALFORMED;
	hl = iph->ihl * ZT_IHL_UNIT;
	if (!zt_ptr(ctx, pkt->l3off, hl))
		return ZT_R_TRUNCATED;
	tot = bpf_ntohs(iph->tot_len);
	if (tot < hl || pkt->l3off + tot > zt_frame_len(ctx))
		return ZT_R_MALFORMED;
	zt_ipv4_datagram(iph, hl, tot, ZT_NO_CAP, pkt);
	src = iph->saddr;
	dst = iph->daddr;
	zt_in6_from_v4(&pkt->saddr, src);
	zt_in6_from_v4(&pkt->daddr, dst);

	if (src == 0)
		pkt->unspec = 1;
	else if (!zt_bound_v4(pkt->dev, src))
		return ZT_R_SPOOF_IP;

	if (hl > sizeof(*iph)) { /* most datagrams carry no options: no call to the walk */
		r = zt_ipv4_options(ctx, pkt->l3off + sizeof(*iph), hl - sizeof(*iph));
		if (zt_decided(r))
			return r;
	}
	if (!pkt->unspec)
		pkt->counted = 1;
	return ZT_CONTINUE;
}

/* zt_ipv6 is steps 7-8 for IPv6: header consistency, source binding, extension-header walk. */
static __always_inline int zt_ipv6(const struct xdp_md *ctx, struct zt_pkt *pkt)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u32 off = 0;
	__u8 nh = 0;
	int r = zt_ipv6_hdr(data, data_end, zt_frame_len(ctx), ZT_NO_CAP, pkt, &off, &nh);

	if (zt_decided(r))
		return r;

	{
		const __u64 *s = (const __u64 *)pkt->saddr.b;

		if (s[0] == 0 && s[1] == 0)
			pkt->unspec = 1;
		else if (!zt_bound_v6(pkt->dev, &pkt->saddr))
			return ZT_R_SPOOF_IP;
	}
	if (!pkt->unspec)
		pkt->counted = 1;
	return zt_ipv6_ext(data, data_end, pkt, off, nh);
}

/* zt_nd_options checks the neighbour discovery options in [start, end): a source or target
 * link-layer address option must name the Ethernet source (mac, from zt_mac_u64). ZT_CONTINUE if
 * acceptable, else a reason. A global function, like zt_ipv4_options. */
__noinline int zt_nd_options(struct xdp_md *ctx, __u32 start, __u32 end, __u64 mac)
{
	__u32 i, off = start;

	if (!ctx)
		return ZT_R_MALFORMED;
	for (i = 0; i < ZT_MAX_ND_OPTS; i++) {
		const struct zt_nd_lladdr *o;

		if (off >= end)
			return ZT_CONTINUE;
		if (off + ND_OPT_UNIT > end)
			return ZT_R_MALFORMED;
		o = zt_parse(nd_lladdr, ctx, off);
		if (!o)
			return ZT_R_TRUNCATED;
		if (o->hdr.nd_opt_len == 0 || off + o->hdr.nd_opt_len * ND_OPT_UNIT > end)
			return ZT_R_MALFORMED;
		if ((o->hdr.nd_opt_type == ND_OPT_SOURCE_LL_ADDR || o->hdr.nd_opt_type == ND_OPT_TARGET_LL_ADDR) &&
		    zt_mac_u64(o->addr) != mac)
			return ZT_R_ND_SPOOF;
		off += o->hdr.nd_opt_len * ND_OPT_UNIT;
	}
	return off >= end ? ZT_CONTINUE : ZT_R_MALFORMED; /* more options than the walk follows */
}

/* zt_guards is step 10: infrastructure guards, plus the DHCP/ND plumbing that passes without a
 * rule. Returns a reason, or ZT_CONTINUE to go on to the allow-list. */
static __always_inline int zt_guards(const struct xdp_md *ctx, struct zt_pkt *pkt)
{
	__u32 tiny = pkt->first_frag ? ZT_R_FRAG_TINY : ZT_R_TRUNCATED;
	__u32 need = zt_l4_need(pkt->l4proto);
	const union zt_l4hdr *l4 = zt_parse(l4hdr, ctx, pkt->l4off);

	if (pkt->l4off + need > pkt->end)
		return tiny;
	if (need) {
		if (!l4)
			return tiny;
		pkt->icmp_type = l4->icmp6.icmp6_type;
		if (pkt->l4proto == IPPROTO_ICMP || pkt->l4proto == IPPROTO_ICMPV6) {
			pkt->dport = zt_icmp_key(pkt->icmp_type, l4->icmp6.icmp6_code);
			pkt->icmp_id = bpf_ntohs(l4->icmp6.icmp6_identifier);
		}
	}
	if (pkt->l4proto == IPPROTO_TCP) {
		const struct tcphdr *tcp = zt_parse(tcphdr, ctx, pkt->l4off);

		if (!tcp)
			return tiny;
		if (tcp->doff < ZT_TCP_MIN_DOFF)
			return ZT_R_MALFORMED;
		if (pkt->l4off + tcp->doff * ZT_IHL_UNIT > pkt->end)
			return tiny;
	}
	if (pkt->l4proto == IPPROTO_TCP || pkt->l4proto == IPPROTO_UDP) {
		if (!l4)
			return tiny;
		pkt->sport = bpf_ntohs(l4->udp.source);
		pkt->dport = bpf_ntohs(l4->udp.dest);
	}
	if (pkt->l4proto == IPPROTO_UDP && l4) {
		__u32 ulen = bpf_ntohs(l4->udp.len);

		/* A first fragment's UDP length covers the whole datagram, not this fragment. */
		if (ulen < sizeof(struct udphdr) || (!pkt->first_frag && pkt->l4off + ulen > pkt->end))
			return ZT_R_MALFORMED;
	}

	if (pkt->family == 4) {
		if (pkt->l4proto == IPPROTO_UDP) {
			if (pkt->sport == ZT_PORT_DHCP_SERVER)
				return ZT_R_DHCP_SERVER;
			if (pkt->dport == ZT_PORT_DHCP_SERVER) {
				__u32 bootp = pkt->l4off + sizeof(struct udphdr);
				const __u8 *b;

				if (bootp + ZT_DHCP_MIN_LEN > pkt->end)
					return tiny;
				b = zt_ptr(ctx, bootp, ZT_DHCP_MIN_LEN);
				if (!b)
					return tiny;
				if (b[0] != ZT_BOOTREQUEST)
					return ZT_R_DHCP_SERVER;
				if (!zt_mac_eq(b + ZT_DHCP_CHADDR_OFF, pkt->smac))
					return ZT_R_DHCP_CHADDR;
				if (pkt->sport == ZT_PORT_DHCP_CLIENT && (pkt->cfg->flags & ZT_CFG_SVC_DHCP) &&
				    (zt_in6_v4(&pkt->daddr) == ZT_V4_BROADCAST || zt_is_gateway(pkt))) {
					pkt->counted = 1;
					return ZT_R_ALLOW;
				}
			}
		}
		if (pkt->unspec)
			return ZT_R_SPOOF_IP;
		if (pkt->l4proto == IPPROTO_ICMP &&
		    (pkt->icmp_type == ICMP_REDIRECT || pkt->icmp_type == ICMP_ROUTERADVERT))
			return ZT_R_ROUTER_GUARD;
		return ZT_CONTINUE;
	}

	if (pkt->unspec && !(pkt->l4proto == IPPROTO_ICMPV6 && pkt->icmp_type == NDISC_NEIGHBOUR_SOLICITATION))
		return ZT_R_SPOOF_IP;
	if (pkt->l4proto == IPPROTO_UDP) {
		if (pkt->sport == ZT_PORT_DHCP6_SERVER)
			return ZT_R_DHCP_SERVER;
		if (pkt->sport == ZT_PORT_DHCP6_CLIENT && pkt->dport == ZT_PORT_DHCP6_SERVER &&
		    (pkt->cfg->flags & ZT_CFG_SVC_DHCPV6)) {
			const __u64 *d = (const __u64 *)pkt->daddr.b;

			if ((d[0] == bpf_cpu_to_be64(ZT_ALL_DHCP_AGENTS_HI) &&
			     d[1] == bpf_cpu_to_be64(ZT_ALL_DHCP_AGENTS_LO)) ||
			    zt_is_gateway(pkt))
				return ZT_R_ALLOW;
		}
	}
	if (pkt->l4proto == IPPROTO_ICMPV6) {
		switch (pkt->icmp_type) {
		case NDISC_ROUTER_ADVERTISEMENT:
		case NDISC_REDIRECT:
			return ZT_R_ROUTER_GUARD;
		case NDISC_NEIGHBOUR_ADVERTISEMENT:
		case NDISC_NEIGHBOUR_SOLICITATION:
		case NDISC_ROUTER_SOLICITATION: {
			/* A router solicitation's options follow its 8-byte header; NS and NA carry a target. */
			__u32 opts = pkt->l4off + (pkt->icmp_type == NDISC_ROUTER_SOLICITATION ? sizeof(struct icmp6hdr)
											       : sizeof(struct nd_msg));
			int r;

			if (opts > pkt->end)
				return tiny;
			if (pkt->icmp_type == NDISC_NEIGHBOUR_ADVERTISEMENT) {
				const struct zt_in6 *t =
				    zt_ptr(ctx, pkt->l4off + __builtin_offsetof(struct nd_msg, target), sizeof(*t));

				if (!t)
					return tiny;
				if (!zt_bound_v6(pkt->dev, t))
					return ZT_R_ND_SPOOF;
			}
			r = zt_nd_options((struct xdp_md *)ctx, opts, pkt->end, zt_mac_u64(pkt->smac));
			if (zt_decided(r))
				return r;
			/* Plumbing only on the link; anything else needs a rule like any packet. */
			if (zt_nd_link_scope(pkt))
				return ZT_R_ALLOW;
			if (pkt->unspec)
				return ZT_R_SPOOF_IP;
		}
		}
	}
	return ZT_CONTINUE;
}

/* zt_flow_step is step 12 for a frame from a device: an ICMP error passes if it quotes a live flow,
 * a packet of a live flow passes on one lookup (the fast path), and a packet the allow-list passes
 * opens its flow. To another device, the receiver's from: rules may allow what the sender's
 * allow-list does not (a unicast frame only); the flow is then charged to the receiver.
 * Broadcast and multicast frames open no flow. */
static __always_inline int zt_flow_step(struct xdp_md *ctx, struct zt_pkt *pkt)
{
	struct zt_flow_key k;
	__u32 peer = 0;
	__u16 fs, fd;
	__u8 side = 0, kind;
	int r;

	if (zt_icmp_error(pkt->l4proto, pkt->icmp_type))
		return zt_flow_related((void *)(long)ctx->data, (void *)(long)ctx->data_end, pkt);
	if (pkt->l2 == ZT_L2_BCAST || pkt->l2 == ZT_L2_MCAST)
		return zt_allow_list(pkt);
	kind = zt_flow_ports(pkt->l4proto, pkt->icmp_type, pkt->icmp_id, pkt->sport, pkt->dport, &fs, &fd);
	if (kind) { /* an untracked protocol has no flow to look up or open */
		side = zt_flow_key_of(&k, &pkt->saddr, fs, &pkt->daddr, fd, pkt->l4proto, kind);
		r = zt_flow_hit(pkt, &k, side);
		if (zt_decided(r))
			return r;
	}
	r = zt_allow_list(pkt);
	if ((r == ZT_R_NO_RULE || r == ZT_R_ENCAP_DENIED) && (peer = zt_peer_from_rules(pkt)))
		r = ZT_R_ALLOW;
	if (r == ZT_R_ALLOW && kind && kind != ZT_FK_ECHO_REPLY) /* a reply opens nothing */
		r = peer ? zt_flow_open(pkt, &k, side, ZT_FLOW_IN, peer)
			 : zt_flow_open(pkt, &k, side, ZT_FLOW_OUT, pkt->dev->dev_id);
	return r;
}

/* zt_decide runs the decision steps in order and returns the frame's reason. */
static __always_inline int zt_decide(struct xdp_md *ctx, struct zt_pkt *pkt)
{
	const struct ethhdr *eth = zt_parse(ethhdr, ctx, 0);
	const __u8 *src;
	struct zt_dev_key key = {};
	void *devices;
	__u16 proto;
	int r;

	if (!pkt->cfg)
		return ZT_R_NO_POLICY;
	/* Step 1: L2 sanity. */
	if (!eth)
		return ZT_R_TRUNCATED;
	src = eth->h_source;
	__builtin_memcpy(pkt->smac, src, ETH_ALEN);
	if ((src[0] & ZT_MAC_GROUP) || !(src[0] | src[1] | src[2] | src[3] | src[4] | src[5]) ||
	    zt_mac_eq(eth->h_dest, src))
		return ZT_R_BAD_L2_SRC;
	/* Step 2: VLAN. One 802.1Q tag at most; VID 0 is a priority tag. */
	r = zt_vlan((void *)(long)ctx->data, (void *)(long)ctx->data_end, eth, pkt, &proto);
	if (zt_decided(r))
		return r;
	/* Step 3: identity. */
	devices = bpf_map_lookup_elem(&zt_devices, &pkt->slot);
	if (!devices)
		return ZT_R_NO_POLICY;
	__builtin_memcpy(key.mac, pkt->smac, ETH_ALEN);
	pkt->dev = bpf_map_lookup_elem(devices, &key);
	if (!pkt->dev)
		return ZT_R_UNKNOWN_DEVICE;
	if (pkt->dev->ifindex && pkt->dev->ifindex != pkt->ifindex)
		return ZT_R_SPOOF_MAC_PORT;
	if (pkt->vid != pkt->dev->vlan)
		return ZT_R_VLAN_DENIED;
	__builtin_memcpy(pkt->dmac, eth->h_dest, ETH_ALEN);
	/* Step 4 (quarantine) selects the rule set in step 13. Step 5: ethertype. */
	if (proto == ETH_P_ARP)
		return zt_arp(ctx, pkt);
	if (proto == ETH_P_IP) {
		pkt->family = 4;
		r = zt_ipv4(ctx, pkt);
	} else if (proto == ETH_P_IPV6) {
		pkt->family = 6;
		r = zt_ipv6(ctx, pkt);
	} else {
		return ZT_R_ETHERTYPE_DENIED;
	}
	if (zt_decided(r))
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
	if ((!zt_decided(r) || r == ZT_R_ALLOW) && pkt->l2 == ZT_L2_DENY)
		r = ZT_R_L2_DST_DENIED;
	if (!zt_decided(r))
		r = zt_flow_step(ctx, pkt);
	if (r == ZT_R_ALLOW && pkt->first_frag)
		r = zt_frag_record(pkt);
	return r;
}

/* zt_dev_audits reports whether the device's audit mode passes a frame dropped for reason. Identity failures (the
 * sender is not who it claims) stay enforced unless the device's audit covers identity too. */
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

/* zt_verdict is the verdict of a frame decided for reason: audit where the device (or, for frames of
 * no device, the policy) is in audit mode and the reason is one audit covers. */
static __always_inline __u32 zt_verdict(const struct zt_pkt *pkt, int reason)
{
	__u32 audit;

	if (reason == ZT_R_ALLOW)
		return ZT_V_PASS;
	audit = pkt->dev ? zt_dev_audits(pkt->dev->flags, reason) : pkt->cfg && (pkt->cfg->flags & ZT_CFG_AUDIT);
	return reason != ZT_R_NO_POLICY && audit ? ZT_V_AUDIT : ZT_V_DROP;
}

/* zt_slot reads the active slot into pkt, and its configuration (NULL before the first policy). */
static __always_inline void zt_slot(struct zt_pkt *pkt)
{
	__u32 zero = 0, *slot = bpf_map_lookup_elem(&zt_active, &zero);

	if (slot) {
		pkt->slot = *slot & (ZT_SLOTS - 1);
		pkt->cfg = bpf_map_lookup_elem(&zt_cfg, &pkt->slot);
	}
}

/* zt_xdp decides each frame, charges it and reports it when it is dropped or audited. */
SEC("xdp")
int zt_xdp(struct xdp_md *ctx)
{
	struct zt_pkt pkt = {.dir = ZT_DIR_FROM_DEVICE, .ifindex = ctx->ingress_ifindex};
	__u32 len = zt_frame_len(ctx), verdict;
	struct zt_event *e;
	int reason;

#ifdef ZT_BENCH_COLD
	/* Benchmark build only (bench/bpf): rewrite the frame to come from the next device. */
	zt_bench_rewrite(ctx);
#endif
	zt_slot(&pkt);
	reason = zt_decide(ctx, &pkt);
	if (reason < 0 || reason >= ZT_R_MAX)
		reason = ZT_R_MALFORMED;
	verdict = zt_verdict(&pkt, reason);
	zt_account(&pkt, verdict, reason, len);
	if (verdict != ZT_V_PASS && (e = zt_event_reserve(&pkt, verdict, reason, len))) {
		if (bpf_xdp_load_bytes(ctx, 0, e->data, zt_event_cap(len)))
			e->cap_len = 0;
		bpf_ringbuf_submit(e, 0);
	}
	return verdict == ZT_V_DROP ? XDP_DROP : XDP_PASS;
}

/* zt_tc decides each frame leaving for a device port (TC egress), charges it to its device and
 * reports it when it is dropped or audited. A pass is TC_ACT_UNSPEC: the next program or filter
 * of the hook, if any, still sees the frame. */
SEC("tc")
int zt_tc(struct __sk_buff *skb)
{
	struct zt_pkt pkt = {.dir = ZT_DIR_TO_DEVICE, .ifindex = skb->ifindex};
	__u32 len = skb->len, verdict;
	struct zt_event *e;
	int reason;

	/* The headers into the linear part, for direct access; a failure shows as truncated. Headers
	 * are read from the first ZT_TC_PULL bytes only (zt_pkt.lim), however much is linear. */
	bpf_skb_pull_data(skb, len < ZT_TC_PULL ? len : ZT_TC_PULL);
	zt_slot(&pkt);
	reason = zt_to_device((void *)(long)skb->data, (void *)(long)skb->data_end, len, &pkt);
	if (reason == ZT_R_ALLOW && pkt.first_frag && pkt.dev)
		reason = zt_frag_record(&pkt);
	if (reason < 0 || reason >= ZT_R_MAX)
		reason = ZT_R_MALFORMED;
	verdict = zt_verdict(&pkt, reason);
	zt_account(&pkt, verdict, reason, len);
	if (verdict != ZT_V_PASS && (e = zt_event_reserve(&pkt, verdict, reason, len))) {
		if (bpf_skb_load_bytes(skb, 0, e->data, zt_event_cap(len)))
			e->cap_len = 0;
		bpf_ringbuf_submit(e, 0);
	}
	return verdict == ZT_V_DROP ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
