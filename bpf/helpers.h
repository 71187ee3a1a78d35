/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* helpers.h: address matching, rule lookup, fragment state, accounting and events.
 * policy/model.go has a Go twin for each decision helper; keep them in step. */
#ifndef ZT_HELPERS_H
#define ZT_HELPERS_H

#include "maps.h"
#include "parsing.h"

/* Runtime knobs, set by the loader before load (volatile const: the verifier sees the value). */
volatile const __u64 zt_frag_timeout_ns = 30ULL * 1000000000ULL; /* first-fragment record lifetime */
volatile const __u64 zt_event_window_ns = 1000000000ULL;         /* event budget window */
volatile const __u64 zt_event_burst = 10;                        /* events per (device, reason, window) */
volatile const __u8 zt_events_enabled = 1;                       /* 0: count only, no events */
volatile const __u32 zt_event_limit_mask = 4095;                 /* zt_event_limit capacity - 1 */
volatile const __u32 zt_event_limit_seed = 0;                    /* random per load: slots cannot be aimed at */
volatile const __u32 zt_devstats_stride = 0;                     /* zt_devstats entries per CPU: max devices + 1 */

/* Destination MAC classes (struct zt_pkt.l2). */
#define ZT_L2_DENY 0  /* the destination MAC does not fit the frame: drop as l2_dst_denied */
#define ZT_L2_GW 1    /* one of the gateway's MACs (zt_gwmacs or the policy's) */
#define ZT_L2_DEV 2   /* a known device's MAC, and the IP destination is bound to it */
#define ZT_L2_BCAST 3 /* ff:ff:ff:ff:ff:ff */
#define ZT_L2_MCAST 4 /* the group MAC of the IP destination */

/* Per-frame state shared by the decision steps. */
struct zt_pkt {
	const struct zt_config *cfg;
	const struct zt_dev_rec *dev;
	struct zt_in6 saddr;
	struct zt_in6 daddr;
	__u32 slot;
	__u32 l3off;     /* start of the IP/ARP header */
	__u32 end;       /* end of the IP datagram (from its length field) */
	__u32 l4off;     /* start of the upper-layer header */
	__u32 fp_start;  /* start of the fragmentable part (fragment offsets count from here) */
	__u32 foff;      /* fragment offset in bytes */
	__u32 frag_id;
	__u16 vid;
	__u16 sport;
	__u16 dport;
	__u8 smac[6];
	__u8 dmac[6];
	__u8 l2;         /* zt_l2 of the frame */
	__u8 hoplimit;   /* IPv6 hop limit */
	__u8 family;     /* 4 or 6 */
	__u8 l4proto;
	__u8 mf;         /* more-fragments flag */
	__u8 first_frag; /* offset 0 with more fragments to come */
	__u8 unspec;     /* source is 0.0.0.0 or :: */
	__u8 counted;    /* passed identity and source checks: charge the device */
	__u8 icmp_type;
};

/* zt_now is the datapath's clock for what needs no precision finer than a scheduler tick
 * (fragment timeouts, event-budget windows and timestamps, last seen): CLOCK_MONOTONIC_COARSE,
 * read at most once per jiffy on each CPU and cached in zt_clock (bpf_jiffies64 is a plain load
 * the verifier inlines; bpf_ktime_get_coarse_ns is a helper call, ~14 ns here). It is the
 * timeline of bpf_ktime_get_ns (CLOCK_MONOTONIC) and lags it by about two ticks (a jiffy's
 * cache can hold the time of the tick before it). Another CPU's zt_now can be ahead of this
 * one's: differences of two zt_now values are compared through zt_elapsed. */
static __always_inline __u64 zt_now(void)
{
	__u32 zero = 0;
	struct zt_clock *c = bpf_map_lookup_elem(&zt_clock, &zero);
	__u64 j = bpf_jiffies64();

	if (!c)
		return bpf_ktime_get_coarse_ns();
	if (c->jiffies != j) {
		c->ns = bpf_ktime_get_coarse_ns();
		c->jiffies = j;
	}
	return c->ns;
}

/* How long ago zt_now value then was, as of now: negative (another CPU's clock a tick ahead)
 * reads as 0. */
static __always_inline __u64 zt_elapsed(__u64 now, __u64 then)
{
	__s64 d = (__s64)(now - then);

	return d < 0 ? 0 : (__u64)d;
}

static __always_inline int zt_in6_eq(const struct zt_in6 *a, const struct zt_in6 *b)
{
	const __u64 *x = (const __u64 *)a->b;
	const __u64 *y = (const __u64 *)b->b;

	return x[0] == y[0] && x[1] == y[1];
}

static __always_inline void zt_in6_from_v4(struct zt_in6 *a, __be32 v4)
{
	__u64 *w = (__u64 *)a->b;

	w[0] = 0;
	w[1] = ((__u64)v4 << 32) | bpf_htonl(0x0000ffff);
}

static __always_inline __be32 zt_in6_v4(const struct zt_in6 *a)
{
	return *(const __be32 *)&a->b[12];
}

static __always_inline int zt_bound_v4(const struct zt_dev_rec *dev, __be32 a)
{
	__u32 i;

#pragma unroll
	for (i = 0; i < ZT_MAX_V4; i++)
		if (i < dev->n_v4 && dev->v4[i] == a)
			return 1;
	return 0;
}

static __always_inline int zt_bound_v6(const struct zt_dev_rec *dev, const struct zt_in6 *a)
{
	__u32 i;

#pragma unroll
	for (i = 0; i < ZT_MAX_V6; i++)
		if (i < dev->n_v6 && zt_in6_eq(&dev->v6[i], a))
			return 1;
	return 0;
}

/* Is the destination one of the gateway's own addresses? */
static __always_inline int zt_is_gateway(const struct zt_pkt *pkt)
{
	const struct zt_config *cfg = pkt->cfg;
	__u32 i;

	if (pkt->family == 4) {
		__be32 d = zt_in6_v4(&pkt->daddr);
#pragma unroll
		for (i = 0; i < ZT_MAX_GW; i++)
			if (i < cfg->n_gw4 && cfg->gw4[i] == d)
				return 1;
		return 0;
	}
#pragma unroll
	for (i = 0; i < ZT_MAX_GW; i++)
		if (i < cfg->n_gw6 && zt_in6_eq(&cfg->gw6[i], &pkt->daddr))
			return 1;
	return 0;
}

/* Is mac one the policy names for the gateway (a router behind a bridged gateway)? */
static __always_inline int zt_cfg_gwmac(const struct zt_config *cfg, const __u8 *mac)
{
	__u32 i;

#pragma unroll
	for (i = 0; i < ZT_MAX_GW; i++)
		if (i < cfg->n_gwmac && zt_mac_eq(cfg->gwmac[i].b, mac))
			return 1;
	return 0;
}

/* What zt_l2 needs of a frame: no pointers, so that it can be a global function's argument. */
struct zt_l2q {
	struct zt_in6 daddr;
	__u32 slot;
	__u8 dmac[6];
	__u8 family; /* 4 or 6; 0 for ARP */
	__u8 pad;
};

/* Whom is the frame for, and may it go there? Returns the ZT_L2_* class of the destination
 * MAC, or ZT_L2_DENY: unicast to neither the gateway (zt_gwmacs, the policy's MACs) nor a
 * known device; a device's MAC with an IP destination not bound to that device; broadcast
 * other than 255.255.255.255 or ARP; a group MAC other than the one the IP group maps to (ARP
 * never). A global function: the verifier checks it once, and the caller sees one unknown
 * class instead of a path per class. */
__noinline int zt_l2(struct zt_l2q *q)
{
	const struct zt_dev_rec *peer;
	const struct zt_config *cfg;
	struct zt_dev_key k = {};
	const __u8 *m, *a;
	void *devices;
	__u32 slot;

	if (!q)
		return ZT_L2_DENY;
	m = q->dmac;
	a = q->daddr.b;
	if (m[0] & 1) {
		if ((m[0] & m[1] & m[2] & m[3] & m[4] & m[5]) == 0xff)
			return q->family == 6 || (q->family == 4 && zt_in6_v4(&q->daddr) != 0xffffffff)
				       ? ZT_L2_DENY : ZT_L2_BCAST;
		if (q->family == 4 && (a[12] >> 4) == 0xe && m[0] == 0x01 && m[1] == 0x00 && m[2] == 0x5e &&
		    m[3] == (a[13] & 0x7f) && m[4] == a[14] && m[5] == a[15])
			return ZT_L2_MCAST;
		if (q->family == 6 && a[0] == 0xff && m[0] == 0x33 && m[1] == 0x33 && m[2] == a[12] &&
		    m[3] == a[13] && m[4] == a[14] && m[5] == a[15])
			return ZT_L2_MCAST;
		return ZT_L2_DENY;
	}
	slot = q->slot;
	__builtin_memcpy(k.mac, m, 6);
	if (bpf_map_lookup_elem(&zt_gwmacs, &k))
		return ZT_L2_GW;
	cfg = bpf_map_lookup_elem(&zt_cfg, &slot);
	if (cfg && zt_cfg_gwmac(cfg, m))
		return ZT_L2_GW;
	devices = bpf_map_lookup_elem(&zt_devices, &slot);
	if (!devices)
		return ZT_L2_DENY;
	peer = bpf_map_lookup_elem(devices, &k);
	if (!peer)
		return ZT_L2_DENY;
	if (q->family == 0 || (q->family == 4 ? zt_bound_v4(peer, zt_in6_v4(&q->daddr))
					      : zt_bound_v6(peer, &q->daddr)))
		return ZT_L2_DEV;
	return ZT_L2_DENY;
}

/* zt_l2 for the frame pkt describes (its IP destination once parsed). */
static __always_inline int zt_l2_of(const struct zt_pkt *pkt)
{
	struct zt_l2q q = {.daddr = pkt->daddr, .slot = pkt->slot, .family = pkt->family};

	__builtin_memcpy(q.dmac, pkt->dmac, 6);
	return zt_l2(&q);
}

/* Is a neighbour discovery message confined to the link? Hop limit 255 (RFC 4861), and a
 * destination no router forwards: link-local unicast, link-local multicast, the gateway, or a
 * device on the link addressed by its own MAC (zt_l2 holds the IP destination to it). */
static __always_inline int zt_nd_link_scope(const struct zt_pkt *pkt)
{
	const __u8 *a = pkt->daddr.b;

	if (pkt->hoplimit != 255)
		return 0;
	if (pkt->l2 == ZT_L2_DEV)
		return 1;
	if ((a[0] == 0xfe && (a[1] & 0xc0) == 0x80) || (a[0] == 0xff && a[1] == 0x02))
		return 1;
	return zt_is_gateway(pkt);
}

/* The six bytes of a MAC address as an integer (a scalar a global function can take). */
static __always_inline __u64 zt_mac_u64(const __u8 *m)
{
	return ((__u64)m[0] << 40) | ((__u64)m[1] << 32) | ((__u64)m[2] << 24) | ((__u64)m[3] << 16) |
	       ((__u64)m[4] << 8) | m[5];
}

/* Does a rule value allow this frame? proto_key is the protocol the rule was stored under. */
static __always_inline int zt_ports_ok(const struct zt_rule_val *v, __u32 proto_key, __u32 l4proto,
				  __u32 dport, __u32 tunnel)
{
	__u32 i, n;

	if (!v)
		return 0;
	if (proto_key == ZT_PROTO_ANY)
		return !tunnel; /* a wildcard never opens a tunnel */
	if (l4proto != IPPROTO_TCP_ && l4proto != IPPROTO_UDP_)
		return 1; /* protocol without ports: the explicit protocol rule decides */
	if (v->flags & ZT_RULE_ALL_PORTS)
		return !tunnel; /* "all UDP ports" does not name VXLAN or Geneve */
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

/* What the allow-list needs of a frame: no pointers, so that it can be a global function's
 * argument and the verifier checks the rule lookups once, not once per path. */
struct zt_match {
	struct zt_in6 daddr;
	__u32 slot;
	__u32 ruleset;
	__u32 flags;    /* ZT_DEV_PEER_RULES | ZT_DEV_PREFIX_RULES | ZT_DEV_QUARANTINED */
	__u16 dport;
	__u8 l4proto;
	__u8 to_gateway;
	__u8 l2;        /* ZT_L2_* of the destination MAC */
	__u8 pad[3];
};

/* Try (rule set, selector) under the frame's protocol, then under the wildcard. */
static __always_inline int zt_try(void *rules, const struct zt_match *m, __u8 kind, __u32 id,
				  __u32 tunnel)
{
	struct zt_rule_key k = {.ruleset = m->ruleset, .sel_id = id, .sel_kind = kind,
				.proto = m->l4proto};

	if (zt_ports_ok(bpf_map_lookup_elem(rules, &k), m->l4proto, m->l4proto, m->dport, tunnel))
		return 1;
	k.proto = ZT_PROTO_ANY;
	return zt_ports_ok(bpf_map_lookup_elem(rules, &k), ZT_PROTO_ANY, m->l4proto, m->dport,
			   tunnel);
}

/* Step 13 (with step 11): the allow-list of the device (device + segment rules) or the
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
	tunnel = p == IPPROTO_IPIP_ || p == IPPROTO_IPV6_ || p == IPPROTO_GRE_ ||
		 (p == IPPROTO_UDP_ && (m->dport == ZT_PORT_VXLAN || m->dport == ZT_PORT_GENEVE));
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
		struct zt_prefix_key k = {.prefixlen = 32 + 128, .ruleset = m->ruleset, .addr = m->daddr};
		struct zt_prefix_val *g = bpf_map_lookup_elem(inner, &k);

		if (g && zt_try(rules, m, group ? ZT_SEL_MCAST : ZT_SEL_PREFIX, g->group, tunnel))
			return ZT_R_ALLOW;
	}
	if (m->flags & ZT_DEV_QUARANTINED)
		return ZT_R_QUARANTINED;
	return tunnel ? ZT_R_ENCAP_DENIED : ZT_R_NO_RULE;
}

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

static __always_inline void zt_frag_key(const struct zt_pkt *pkt, struct zt_frag_key *k)
{
	k->saddr = pkt->saddr;
	k->daddr = pkt->daddr;
	k->id = pkt->frag_id;
	k->proto = pkt->family == 4 ? pkt->l4proto : 0;
	k->family = pkt->family;
	k->pad = 0;
}

/* Step 9, later fragment: follow the verdict recorded for the first fragment. */
static __always_inline int zt_frag_later(const struct zt_pkt *pkt)
{
	struct zt_frag_key k;
	struct zt_frag_val *v;

	zt_frag_key(pkt, &k);
	v = bpf_map_lookup_elem(&zt_frags, &k);
	if (!v)
		return ZT_R_FRAG_NO_STATE;
	if (zt_elapsed(zt_now(), v->ts) > zt_frag_timeout_ns) {
		bpf_map_delete_elem(&zt_frags, &k);
		return ZT_R_FRAG_NO_STATE;
	}
	if (v->dev_id != pkt->dev->dev_id)
		return ZT_R_FRAG_NO_STATE;
	if (pkt->foff < v->covered)
		return ZT_R_FRAG_OVERLAP;
	if (!pkt->mf)
		bpf_map_delete_elem(&zt_frags, &k);
	return ZT_R_ALLOW;
}

/* Step 9, first fragment that passed: remember it; no room means drop. */
static __always_inline int zt_frag_record(const struct zt_pkt *pkt)
{
	struct zt_frag_key k;
	struct zt_frag_val v = {
		.ts = zt_now(),
		.dev_id = pkt->dev->dev_id,
		.covered = pkt->end - pkt->fp_start,
	};

	zt_frag_key(pkt, &k);
	if (bpf_map_update_elem(&zt_frags, &k, &v, BPF_ANY))
		return ZT_R_FRAG_TABLE_FULL;
	return ZT_R_ALLOW;
}

static __always_inline void zt_account(const struct zt_pkt *pkt, __u32 verdict, __u32 reason,
				       __u32 len)
{
	__u32 idx = verdict * ZT_R_MAX + reason;
	struct zt_counter *c = bpf_map_lookup_elem(&zt_counters, &idx);

	if (c) {
		c->packets++;
		c->bytes += len;
	}
	/* dev_id 0 is no device's (row 0's entry 0 is the agent's); beyond the stride is another
	 * CPU's row. Userspace installs neither; the datapath does not trust that. */
	if (pkt->counted && pkt->dev && verdict < ZT_V_MAX && pkt->dev->dev_id != 0 &&
	    pkt->dev->dev_id < zt_devstats_stride) {
		__u32 idx = bpf_get_smp_processor_id() * zt_devstats_stride + pkt->dev->dev_id;
		struct zt_dev_stats *s = bpf_map_lookup_elem(&zt_devstats, &idx);

		if (s) {
			s->packets[verdict]++;
			s->bytes[verdict] += len;
			s->last_seen = zt_now();
		}
	}
}

/* The first of the two budget slots (it and its neighbour, index ^ 1) a (device, reason) may
 * use: a seeded hash, so that which keys share slots differs on every load and cannot be chosen
 * from outside. */
static __always_inline __u32 zt_limit_index(__u32 dev_id, __u32 reason)
{
	__u32 h = (dev_id * 0x9e3779b1U) ^ (reason * 0x85ebca77U) ^ zt_event_limit_seed;

	h ^= h >> 15;
	h *= 0x2c1b3c6dU;
	h ^= h >> 12;
	return h & zt_event_limit_mask;
}

/* Does slot s hold (device, reason)'s window (open or closed)? */
static __always_inline int zt_limit_owns(const struct zt_limit_slot *s, __u32 dev_id, __u32 reason)
{
	return s->dev_id == dev_id && s->reason == reason;
}

/* Is slot s's window still open at now? */
static __always_inline int zt_limit_open(const struct zt_limit_slot *s, __u64 now)
{
	return zt_elapsed(now, s->window_start) < zt_event_window_ns;
}

static __always_inline void zt_event(struct xdp_md *ctx, const struct zt_pkt *pkt, __u32 verdict,
				     __u32 reason, __u32 len)
{
	__u32 zero = 0, dev_id = pkt->dev ? pkt->dev->dev_id : ZT_NO_DEVICE, idx, cap;
	struct zt_event_stats *st;
	struct zt_limit_slot *lim;
	struct zt_event *e;
	__u64 now;

	if (!zt_events_enabled)
		return;
	idx = zt_limit_index(dev_id, reason);
	st = bpf_map_lookup_elem(&zt_evstats, &zero);
	lim = bpf_map_lookup_elem(&zt_event_limit, &idx);
	if (!st || !lim)
		return;
	now = zt_now(); /* only when events are on */
	if (!zt_limit_owns(lim, dev_id, reason)) {
		/* The key's own slot, if either is; else the first slot unless it is another key's
		 * open window and the neighbour is not. When both hold open windows of other keys,
		 * the key shares the first one's budget (fewer events, never more). */
		__u32 alt = idx ^ 1;
		struct zt_limit_slot *l2 = bpf_map_lookup_elem(&zt_event_limit, &alt);

		if (l2 && (zt_limit_owns(l2, dev_id, reason) ||
			   (zt_limit_open(lim, now) && !zt_limit_open(l2, now))))
			lim = l2;
	}
	if (zt_limit_open(lim, now)) {
		if (lim->count >= zt_event_burst) {
			st->suppressed++;
			return;
		}
		__sync_fetch_and_add(&lim->count, 1);
	} else {
		/* Racy against another CPU opening the same window: a few extra events at worst. */
		lim->dev_id = dev_id;
		lim->reason = reason;
		lim->window_start = now;
		lim->count = 1;
	}
	e = bpf_ringbuf_reserve(&zt_events, sizeof(*e), 0);
	if (!e) {
		st->lost++;
		return;
	}
	e->ts = now;
	e->dev_id = dev_id;
	e->ifindex = ctx->ingress_ifindex;
	e->revision = pkt->cfg ? pkt->cfg->revision : 0;
	e->verdict = verdict;
	e->reason = reason;
	e->frame_len = len;
	e->pad = 0;
	cap = len < ZT_EVENT_CAPTURE ? len : ZT_EVENT_CAPTURE;
	/* cap = ((cap - 1) & 127) + 1 with an AND the compiler cannot drop, so that the verifier
	 * sees 1 <= cap <= 128 on the very register passed to the helper. */
	cap -= 1;
	asm volatile("%0 &= 127" : "+r"(cap));
	cap += 1;
	e->cap_len = cap;
	if (bpf_xdp_load_bytes(ctx, 0, e->data, cap))
		e->cap_len = 0;
	bpf_ringbuf_submit(e, 0);
	st->emitted++;
}

#endif
