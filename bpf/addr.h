/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* addr.h: address matching: the device's bound addresses, the gateway's addresses and MACs, and
 * the destination MAC check (zt_l2). */
#ifndef ZT_ADDR_H
#define ZT_ADDR_H

#include "maps.h"
#include "pkt.h"

#define ZT_V4_MAPPED	   0x0000ffff /* bytes 8-11 of an IPv4-mapped IPv6 address (::ffff:a.b.c.d) */
#define ZT_V4_BROADCAST	   0xffffffff /* 255.255.255.255, the limited broadcast */
#define ZT_V4_MCAST_NIBBLE 0xe	      /* top four bits of an IPv4 multicast address (224.0.0.0/4) */
#define ZT_V4_MCAST_MAC0   0x01	      /* 01:00:5e: the MAC prefix of IPv4 multicast groups (RFC 1112) */
#define ZT_V4_MCAST_MAC1   0x00
#define ZT_V4_MCAST_MAC2   0x5e
#define ZT_V4_MCAST_MASK   0x7f /* the group's second byte keeps its low 7 bits in the MAC */
#define ZT_V6_MCAST_MAC	   0x33 /* 33:33: the MAC prefix of IPv6 multicast groups (RFC 2464) */
#define ZT_V6_MCAST	   0xff /* first byte of an IPv6 multicast address (ff00::/8) */
#define ZT_V6_LL0	   0xfe /* fe80::/10, link-local unicast: first byte */
#define ZT_V6_LL1_MASK	   0xc0 /* fe80::/10: the bits of the second byte the prefix covers */
#define ZT_V6_LL1	   0x80 /* fe80::/10: those bits */
#define ZT_V6_SCOPE_LINK   0x02 /* second byte of ff02::/16, link-local multicast */

/* zt_in6_eq reports whether two addresses are equal. */
static __always_inline int zt_in6_eq(const struct zt_in6 *a, const struct zt_in6 *b)
{
	const __u64 *x = (const __u64 *)a->b;
	const __u64 *y = (const __u64 *)b->b;

	return x[0] == y[0] && x[1] == y[1];
}

/* zt_in6_from_v4 stores v4 in a as ::ffff:v4. */
static __always_inline void zt_in6_from_v4(struct zt_in6 *a, __be32 v4)
{
	__u64 *w = (__u64 *)a->b;

	w[0] = 0;
	w[1] = ((__u64)v4 << 32) | bpf_htonl(ZT_V4_MAPPED);
}

/* zt_in6_v4 is the IPv4 address of an IPv4-mapped address. */
static __always_inline __be32 zt_in6_v4(const struct zt_in6 *a)
{
	return *(const __be32 *)&a->b[12];
}

/* zt_bound_v4 reports whether the device owns IPv4 address a. */
static __always_inline int zt_bound_v4(const struct zt_dev_rec *dev, __be32 a)
{
	__u32 i;

#pragma unroll
	for (i = 0; i < ZT_MAX_V4; i++)
		if (i < dev->n_v4 && dev->v4[i] == a)
			return 1;
	return 0;
}

/* zt_bound_v6 reports whether the device owns IPv6 address a. */
static __always_inline int zt_bound_v6(const struct zt_dev_rec *dev, const struct zt_in6 *a)
{
	__u32 i;

#pragma unroll
	for (i = 0; i < ZT_MAX_V6; i++)
		if (i < dev->n_v6 && zt_in6_eq(&dev->v6[i], a))
			return 1;
	return 0;
}

/* zt_cfg_gateway reports whether a (of family 4 or 6) is one of the gateway's own addresses in cfg. */
static __always_inline int zt_cfg_gateway(const struct zt_config *cfg, __u8 family, const struct zt_in6 *a)
{
	__u32 i;

	if (family == 4) {
		__be32 d = zt_in6_v4(a);
#pragma unroll
		for (i = 0; i < ZT_MAX_GW; i++)
			if (i < cfg->n_gw4 && cfg->gw4[i] == d)
				return 1;
		return 0;
	}
#pragma unroll
	for (i = 0; i < ZT_MAX_GW; i++)
		if (i < cfg->n_gw6 && zt_in6_eq(&cfg->gw6[i], a))
			return 1;
	return 0;
}

/* zt_is_gateway reports whether the destination is one of the gateway's own addresses. */
static __always_inline int zt_is_gateway(const struct zt_pkt *pkt)
{
	return zt_cfg_gateway(pkt->cfg, pkt->family, &pkt->daddr);
}

/* zt_cfg_gwmac reports whether mac is one the policy names for the gateway (a router behind a
 * bridged gateway). */
static __always_inline int zt_cfg_gwmac(const struct zt_config *cfg, const __u8 *mac)
{
	__u32 i;

#pragma unroll
	for (i = 0; i < ZT_MAX_GW; i++)
		if (i < cfg->n_gwmac && zt_mac_eq(cfg->gwmac[i].b, mac))
			return 1;
	return 0;
}

/* zt_l2q is what zt_l2 needs of a frame: no pointers, so that it can be a global function's argument. */
struct zt_l2q {
	struct zt_in6 daddr;
	__u32 slot;
	__u8 dmac[ETH_ALEN];
	__u8 family; /* 4 or 6; 0 for ARP */
	__u8 pad;
};

/* zt_l2 decides whom the frame is for, and whether it may go there. Returns the ZT_L2_* class of the destination
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
	if (m[0] & ZT_MAC_GROUP) {
		if ((m[0] & m[1] & m[2] & m[3] & m[4] & m[5]) == 0xff) /* ff:ff:ff:ff:ff:ff */
			return q->family == 6 || (q->family == 4 && zt_in6_v4(&q->daddr) != ZT_V4_BROADCAST)
				   ? ZT_L2_DENY
				   : ZT_L2_BCAST;
		if (q->family == 4 && (a[12] >> 4) == ZT_V4_MCAST_NIBBLE && m[0] == ZT_V4_MCAST_MAC0 &&
		    m[1] == ZT_V4_MCAST_MAC1 && m[2] == ZT_V4_MCAST_MAC2 && m[3] == (a[13] & ZT_V4_MCAST_MASK) &&
		    m[4] == a[14] && m[5] == a[15])
			return ZT_L2_MCAST;
		if (q->family == 6 && a[0] == ZT_V6_MCAST && m[0] == ZT_V6_MCAST_MAC && m[1] == ZT_V6_MCAST_MAC &&
		    m[2] == a[12] && m[3] == a[13] && m[4] == a[14] && m[5] == a[15])
			return ZT_L2_MCAST;
		return ZT_L2_DENY;
	}
	slot = q->slot;
	__builtin_memcpy(k.mac, m, ETH_ALEN);
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
	if (q->family == 0 || (q->family == 4 ? zt_bound_v4(peer, zt_in6_v4(&q->daddr)) : zt_bound_v6(peer, &q->daddr)))
		return ZT_L2_DEV;
	return ZT_L2_DENY;
}

/* zt_l2_of is zt_l2 for the frame pkt describes (its IP destination once parsed). */
static __always_inline int zt_l2_of(const struct zt_pkt *pkt)
{
	struct zt_l2q q = {.daddr = pkt->daddr, .slot = pkt->slot, .family = pkt->family};

	__builtin_memcpy(q.dmac, pkt->dmac, ETH_ALEN);
	return zt_l2(&q);
}

/* zt_nd_link_scope reports whether a neighbour discovery message is confined to the link: hop limit 255 (RFC 4861), and
 * a destination no router forwards: link-local unicast, link-local multicast, the gateway, or a device on the link
 * addressed by its own MAC (zt_l2 holds the IP destination to it). */
static __always_inline int zt_nd_link_scope(const struct zt_pkt *pkt)
{
	const __u8 *a = pkt->daddr.b;

	if (pkt->hoplimit != ZT_ND_HOPLIMIT)
		return 0;
	if (pkt->l2 == ZT_L2_DEV)
		return 1;
	if ((a[0] == ZT_V6_LL0 && (a[1] & ZT_V6_LL1_MASK) == ZT_V6_LL1) ||
	    (a[0] == ZT_V6_MCAST && a[1] == ZT_V6_SCOPE_LINK))
		return 1;
	return zt_is_gateway(pkt);
}

/* zt_mac_u64 is the six bytes of a MAC address as an integer (a scalar a global function can take). */
static __always_inline __u64 zt_mac_u64(const __u8 *m)
{
	return ((__u64)m[0] << 40) | ((__u64)m[1] << 32) | ((__u64)m[2] << 24) | ((__u64)m[3] << 16) |
	       ((__u64)m[4] << 8) | m[5];
}

#endif
