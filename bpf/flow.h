/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* flow.h: the flow table. A flow is a connection the policy allowed: its key holds both endpoints in
 * a fixed order, so that either direction, and an ICMP error quoting either, finds it in one lookup.
 * A flow records the revision that allowed it and is decided again, as its first packet was, on its
 * first packet under another revision; an expired or no longer allowed flow is deleted. New flows
 * are charged to a device, up to zt_flow_quota each, and a full table refuses them (fail closed). */
#ifndef ZT_FLOW_H
#define ZT_FLOW_H

#include <linux/errno.h>
#include "clock.h"
#include "pkt.h"
#include "rules.h"

/* Flow knobs, set by the loader before load. */
volatile const __u32 zt_flow_quota = 1024;		       /* flows one device may hold */
volatile const __u64 zt_flow_tcp_ns = 7200ULL * 1000000000ULL; /* idle lifetime of a TCP flow */
volatile const __u64 zt_flow_udp_ns = 120ULL * 1000000000ULL;  /* idle lifetime of a UDP flow */
volatile const __u64 zt_flow_other_ns = 30ULL * 1000000000ULL; /* idle lifetime of an ICMP echo flow */

/* ICMP types of the flow table; linux/icmp.h cannot be included (see parsing.h), the names are
 * the kernel's. ICMPv6's come from linux/icmpv6.h. */
#define ICMP_ECHOREPLY	   0  /* echo reply */
#define ICMP_DEST_UNREACH  3  /* destination unreachable: quotes the datagram */
#define ICMP_SOURCE_QUENCH 4  /* source quench (deprecated): quotes the datagram */
#define ICMP_ECHO	   8  /* echo request */
#define ICMP_TIME_EXCEEDED 11 /* time exceeded: quotes the datagram */
#define ICMP_PARAMETERPROB 12 /* parameter problem: quotes the datagram */
#define ZT_ICMP_QUOTE_L4   8  /* bytes of the quoted datagram's upper-layer header an error carries */
#define ZT_ICMP_QUOTE_OFF  8  /* an error's quote starts after its 8-byte header */

/* zt_icmp_error reports whether an ICMP (proto IPPROTO_ICMP) or ICMPv6 type is an error message,
 * which quotes the datagram that caused it. */
static __always_inline int zt_icmp_error(__u8 proto, __u8 type)
{
	if (proto == IPPROTO_ICMP)
		return type == ICMP_DEST_UNREACH || type == ICMP_SOURCE_QUENCH || type == ICMP_TIME_EXCEEDED ||
		       type == ICMP_PARAMETERPROB;
	return proto == IPPROTO_ICMPV6 && type >= ICMPV6_DEST_UNREACH && type <= ICMPV6_PARAMPROB;
}

/* zt_flow_ports gives the flow ports of a packet from its sender's side (TCP and UDP ports; an ICMP
 * echo's identifier twice) and returns its enum zt_flow_kind (ZT_FK_NONE: no flow tracks it). */
static __always_inline __u8 zt_flow_ports(__u8 proto, __u8 type, __u16 id, __u16 sport, __u16 dport, __u16 *fs,
					  __u16 *fd)
{
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		*fs = sport;
		*fd = dport;
		return ZT_FK_PORTS;
	}
	*fs = *fd = id;
	if ((proto == IPPROTO_ICMP && type == ICMP_ECHO) || (proto == IPPROTO_ICMPV6 && type == ICMPV6_ECHO_REQUEST))
		return ZT_FK_ECHO_REQ;
	if ((proto == IPPROTO_ICMP && type == ICMP_ECHOREPLY) || (proto == IPPROTO_ICMPV6 && type == ICMPV6_ECHO_REPLY))
		return ZT_FK_ECHO_REPLY;
	return ZT_FK_NONE;
}

/* zt_flow_key_of fills k with the flow of a packet of kind (enum zt_flow_kind) from (s, sp) to
 * (d, dp) and returns which endpoint of the key the sender is (ZT_FLOW_A_OPENED: a). Endpoint a
 * is the lower (address, port), addresses compared as two native-order 64-bit words (the Go model
 * does the same). */
static __always_inline __u8 zt_flow_key_of(struct zt_flow_key *k, const struct zt_in6 *s, __u16 sp,
					   const struct zt_in6 *d, __u16 dp, __u8 proto, __u8 kind)
{
	const __u64 *x = (const __u64 *)s->b;
	const __u64 *y = (const __u64 *)d->b;
	int sfirst;

	if (x[0] != y[0])
		sfirst = x[0] < y[0];
	else if (x[1] != y[1])
		sfirst = x[1] < y[1];
	else
		sfirst = sp <= dp;
	if (sfirst) {
		k->a = *s;
		k->b = *d;
		k->aport = sp;
		k->bport = dp;
	} else {
		k->a = *d;
		k->b = *s;
		k->aport = dp;
		k->bport = sp;
	}
	k->proto = proto;
	k->echo = 0;
	if (kind == ZT_FK_ECHO_REQ)
		k->echo = sfirst ? ZT_ECHO_A_ASKS : ZT_ECHO_B_ASKS;
	else if (kind == ZT_FK_ECHO_REPLY)
		k->echo = sfirst ? ZT_ECHO_B_ASKS : ZT_ECHO_A_ASKS;
	k->pad[0] = k->pad[1] = 0;
	return sfirst ? ZT_FLOW_A_OPENED : ZT_FLOW_B_OPENED;
}

/* zt_flow_timeout is the idle lifetime of a flow of IP protocol proto: its protocol's once the
 * responder has answered, zt_flow_other_ns (an echo's) until then, so that connections nobody
 * answers (spoofed or scanning ones) give their quota back soon. */
static __always_inline __u64 zt_flow_timeout(__u8 proto, __u8 replied)
{
	if (!replied)
		return zt_flow_other_ns;
	if (proto == IPPROTO_TCP)
		return zt_flow_tcp_ns;
	if (proto == IPPROTO_UDP)
		return zt_flow_udp_ns;
	return zt_flow_other_ns;
}

/* zt_flow_count_of is the zt_flow_count index of device dev_id's flows allowed by `by`: one row of
 * ids for the flows its own rules opened, one for those its from: rules did, each with its own
 * quota, so that a flood toward a device's open port cannot keep it from opening connections. */
static __always_inline __u32 zt_flow_count_of(__u32 dev_id, __u8 by)
{
	return by == ZT_FLOW_IN ? dev_id + zt_devstats_stride : dev_id;
}

/* zt_flow_delete removes flow k (value v) and gives its device its quota back. */
static __always_inline void zt_flow_delete(const struct zt_flow_key *k, const struct zt_flow_val *v)
{
	__u32 idx = zt_flow_count_of(v->dev_id, v->by);
	__u32 *n;

	if (bpf_map_delete_elem(&zt_flows, k))
		return; /* another CPU, or the agent, deleted it and gave the quota back */
	n = bpf_map_lookup_elem(&zt_flow_count, &idx);
	if (n && *n)
		__sync_fetch_and_add(n, (__u32)-1); /* xadd: BPF v1 has no atomic subtract */
}

/* zt_flow_allowed reports whether the policy of slot (configuration cfg) still allows flow k (v) of
 * an address family as it allowed its first packet: by the opener device's rules (ZT_FLOW_OUT) or
 * by the responder device's from: rules (ZT_FLOW_IN), that device still holding the address it had. */
static __always_inline int zt_flow_allowed(const struct zt_config *cfg, __u32 slot, __u8 family,
					   const struct zt_flow_key *k, const struct zt_flow_val *v)
{
	const struct zt_in6 *op = v->opener == ZT_FLOW_A_OPENED ? &k->a : &k->b;
	const struct zt_in6 *rs = v->opener == ZT_FLOW_A_OPENED ? &k->b : &k->a;
	__u16 rport = v->opener == ZT_FLOW_A_OPENED ? k->bport : k->aport;
	const struct zt_in6 *peer = v->by == ZT_FLOW_OUT ? rs : op;
	struct zt_addr_key ak = {.addr = v->by == ZT_FLOW_OUT ? *op : *rs};
	struct zt_match m = {.daddr = *peer, .slot = slot, .l4proto = k->proto, .l2 = ZT_L2_DEV};
	struct zt_addr_val *a;
	void *inner;

	inner = bpf_map_lookup_elem(&zt_addrs, &m.slot);
	if (!inner)
		return 0;
	a = bpf_map_lookup_elem(inner, &ak);
	if (!a || a->kind != ZT_ADDR_DEVICE || a->dev_id != v->dev_id)
		return 0;
	/* The rules of an ICMP echo flow matched its request's type and code. */
	if (k->proto == IPPROTO_ICMP)
		m.dport = zt_icmp_key(ICMP_ECHO, 0);
	else if (k->proto == IPPROTO_ICMPV6)
		m.dport = zt_icmp_key(ICMPV6_ECHO_REQUEST, 0);
	else
		m.dport = rport;
	m.to_gateway = zt_cfg_gateway(cfg, family, peer);
	if (v->by == ZT_FLOW_IN) {
		struct zt_addr_val *o;

		if (a->flags & ZT_DEV_QUARANTINED)
			return 0;
		/* A device that opened it must not be quarantined since: its quarantine set decides
		 * what it opens, and no from: rule of another device overrides that. */
		ak.addr = *op;
		o = bpf_map_lookup_elem(inner, &ak);
		if (o && o->kind == ZT_ADDR_DEVICE && (o->flags & ZT_DEV_QUARANTINED))
			return 0;
		m.ruleset = a->in_ruleset;
		m.flags = zt_in_flags(a->flags);
	} else if (a->flags & ZT_DEV_QUARANTINED) {
		m.ruleset = cfg->quarantine_ruleset;
		m.flags = ZT_DEV_QUARANTINED | (cfg->flags & ZT_CFG_Q_PEER_RULES ? ZT_DEV_PEER_RULES : 0) |
			  (cfg->flags & ZT_CFG_Q_PREFIX_RULES ? ZT_DEV_PREFIX_RULES : 0);
	} else {
		m.ruleset = a->ruleset;
		m.flags = a->flags & (ZT_DEV_PEER_RULES | ZT_DEV_PREFIX_RULES);
	}
	return zt_match_rules(&m) == ZT_R_ALLOW;
}

/* zt_flow_lookup returns ZT_R_ALLOW when flow k is live and allowed under the revision of slot
 * (an address family's flow), refreshing it for a packet of endpoint side (ZT_FLOW_A_OPENED or
 * ZT_FLOW_B_OPENED: its sender; ZT_FLOW_NO_SIDE: an ICMP error, which refreshes nothing);
 * otherwise ZT_CONTINUE, having deleted a flow that expired or that the revision no longer
 * allows. A global function: the verifier checks it once, not at each caller on each path. */
__noinline int zt_flow_lookup(const struct zt_flow_key *k, __u32 slot, __u32 family, __u32 side)
{
	struct zt_config *cfg;
	struct zt_flow_val *v;
	__u64 now;

	if (!k)
		return ZT_CONTINUE;
	v = bpf_map_lookup_elem(&zt_flows, k);
	if (!v)
		return ZT_CONTINUE;
	cfg = bpf_map_lookup_elem(&zt_cfg, &slot);
	if (!cfg)
		return ZT_CONTINUE;
	now = zt_now();
	if (zt_elapsed(now, v->ts) > zt_flow_timeout(k->proto, v->replied)) {
		zt_flow_delete(k, v);
		return ZT_CONTINUE;
	}
	/* Refreshed before a re-decision, which deletes it if the revision no longer allows it:
	 * nothing lives across that call but k and v (the stack of three calls is bounded). */
	if (side != ZT_FLOW_NO_SIDE) {
		if (!v->replied && side != v->opener)
			v->replied = 1;
		if (v->ts != now) /* once per tick: no store (and no cache line bouncing) on most packets */
			v->ts = now;
	}
	if (v->revision != cfg->revision) {
		if (!zt_flow_allowed(cfg, slot, family, k, v)) {
			zt_flow_delete(k, v);
			return ZT_CONTINUE;
		}
		v->revision = cfg->revision;
	}
	return ZT_R_ALLOW;
}

/* zt_flow_hit is zt_flow_lookup for a packet of pkt's revision and family sent by endpoint side of
 * k (ZT_FLOW_NO_SIDE: an ICMP error): ZT_R_ALLOW or ZT_CONTINUE. */
static __always_inline int zt_flow_hit(const struct zt_pkt *pkt, const struct zt_flow_key *k, __u8 side)
{
	return zt_flow_lookup(k, pkt->slot, pkt->family, side) == ZT_R_ALLOW ? ZT_R_ALLOW : ZT_CONTINUE;
}

/* zt_flow_open records flow k, opened by its endpoint opener and allowed by (ZT_FLOW_OUT or
 * ZT_FLOW_IN), charged to device dev_id. Returns ZT_R_ALLOW, or ZT_R_FLOW_TABLE_FULL when the
 * device is at its quota for flows allowed that way or the table is full. */
static __always_inline int zt_flow_open(const struct zt_pkt *pkt, const struct zt_flow_key *k, __u8 opener, __u8 by,
					__u32 dev_id)
{
	struct zt_flow_val v = {
	    .ts = zt_now(),
	    .revision = pkt->cfg->revision,
	    .dev_id = dev_id,
	    .opener = opener,
	    .by = by,
	};
	__u32 idx = zt_flow_count_of(dev_id, by), *n;
	long err;

	if (dev_id == ZT_NO_DEVICE || dev_id >= zt_devstats_stride)
		return ZT_R_FLOW_TABLE_FULL;
	n = bpf_map_lookup_elem(&zt_flow_count, &idx);
	if (!n || *n >= zt_flow_quota)
		return ZT_R_FLOW_TABLE_FULL;
	err = bpf_map_update_elem(&zt_flows, k, &v, BPF_NOEXIST);
	if (err == -EEXIST)
		return ZT_R_ALLOW; /* another CPU opened it first */
	if (err)
		return ZT_R_FLOW_TABLE_FULL;
	__sync_fetch_and_add(n, 1);
	return ZT_R_ALLOW;
}

/* zt_quote is the flow an ICMP error quotes: the endpoints of the datagram it carries. */
struct zt_quote {
	struct zt_in6 saddr;
	struct zt_in6 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 kind; /* enum zt_flow_kind */
};

/* zt_parse_quote reads the datagram an ICMP error of pkt quotes (an IP header without options or
 * extension headers, then 8 bytes of TCP, UDP or an ICMP echo) into q. Returns 1, or 0 when
 * the quote is not one the flow table could hold. */
static __always_inline int zt_parse_quote_in(void *data, void *data_end, const struct zt_pkt *pkt, struct zt_quote *q)
{
	__u32 off = pkt->l4off + ZT_ICMP_QUOTE_OFF, l4;
	const __u8 *u;
	__u8 type = 0;
	__u16 id = 0;

	if (pkt->family == 4) {
		const struct iphdr *ip = zt_parse_iphdr_in(data, data_end, off);

		if (!ip || ip->version != ZT_IPV4_VERSION || ip->ihl != ZT_IPV4_MIN_IHL ||
		    (ip->frag_off & bpf_htons(IP_OFFSET)))
			return 0;
		zt_in6_from_v4(&q->saddr, ip->saddr);
		zt_in6_from_v4(&q->daddr, ip->daddr);
		q->proto = ip->protocol;
		l4 = off + sizeof(*ip);
	} else {
		const struct ipv6hdr *ip6 = zt_parse_ipv6hdr_in(data, data_end, off);

		if (!ip6 || ip6->version != ZT_IPV6_VERSION)
			return 0;
		__builtin_memcpy(q->saddr.b, &ip6->saddr, sizeof(q->saddr));
		__builtin_memcpy(q->daddr.b, &ip6->daddr, sizeof(q->daddr));
		q->proto = ip6->nexthdr;
		l4 = off + sizeof(*ip6);
	}
	if (q->proto != (pkt->family == 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6) && q->proto != IPPROTO_TCP &&
	    q->proto != IPPROTO_UDP)
		return 0;
	if (l4 + ZT_ICMP_QUOTE_L4 > pkt->lim)
		return 0;
	u = zt_ptr_in(data, data_end, l4, ZT_ICMP_QUOTE_L4);
	if (!u)
		return 0;
	type = u[0];
	id = (__u16)u[4] << 8 | u[5];
	q->kind =
	    zt_flow_ports(q->proto, type, id, (__u16)u[0] << 8 | u[1], (__u16)u[2] << 8 | u[3], &q->sport, &q->dport);
	return q->kind != ZT_FK_NONE;
}

/* zt_flow_related decides an ICMP error of pkt: ZT_R_ALLOW when it goes back to the sender of a
 * datagram of a live flow (its quote), else ZT_R_ICMP_NO_FLOW. An error from a device must also come
 * from that datagram's receiver: a device is an endpoint, never a router on another's path. */
static __always_inline int zt_flow_related(void *data, void *data_end, const struct zt_pkt *pkt)
{
	struct zt_quote q = {};
	struct zt_flow_key k;

	if (!zt_parse_quote_in(data, data_end, pkt, &q) || !zt_in6_eq(&q.saddr, &pkt->daddr))
		return ZT_R_ICMP_NO_FLOW;
	if (pkt->dir == ZT_DIR_FROM_DEVICE && !zt_in6_eq(&q.daddr, &pkt->saddr))
		return ZT_R_ICMP_NO_FLOW;
	zt_flow_key_of(&k, &q.saddr, q.sport, &q.daddr, q.dport, q.proto, q.kind);
	return zt_flow_hit(pkt, &k, ZT_FLOW_NO_SIDE) == ZT_R_ALLOW ? ZT_R_ALLOW : ZT_R_ICMP_NO_FLOW;
}

/* zt_peer_from_rules returns the dev_id of the device the IP destination of pkt is bound to when
 * that device's from: rules allow pkt's sender (a device) to open this connection to it; 0
 * otherwise, and for a quarantined destination. A lateral connection opens with either side's
 * rule: the sender's allow-list or the receiver's from: rules. */
static __always_inline __u32 zt_peer_from_rules(const struct zt_pkt *pkt)
{
	struct zt_match m = {
	    .daddr = pkt->saddr,
	    .slot = pkt->slot,
	    .dport = pkt->dport,
	    .l4proto = pkt->l4proto,
	    .l2 = ZT_L2_DEV,
	};
	struct zt_addr_key ak = {.addr = pkt->daddr};
	struct zt_addr_val *a;
	void *inner;

	inner = bpf_map_lookup_elem(&zt_addrs, &m.slot);
	if (!inner)
		return 0;
	a = bpf_map_lookup_elem(inner, &ak);
	if (!a || a->kind != ZT_ADDR_DEVICE || (a->flags & ZT_DEV_QUARANTINED))
		return 0;
	m.ruleset = a->in_ruleset;
	m.flags = zt_in_flags(a->flags);
	return zt_match_rules(&m) == ZT_R_ALLOW ? a->dev_id : 0;
}

#endif
