/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* parsing.h: bounds-checked access to the frame.
 *
 * Contract: every read goes through zt_ptr(), which returns a pointer to n readable bytes at
 * offset off, or NULL when the frame is shorter. Offsets are byte offsets from the start of
 * the frame; callers turn NULL into ZT_R_TRUNCATED (or ZT_R_FRAG_TINY for a first fragment).
 * Logical ends (IPv4 total length, IPv6 payload length) are checked by the caller on offsets. */
#ifndef ZT_PARSING_H
#define ZT_PARSING_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "consts.h"

#define ETH_P_IP_ 0x0800
#define ETH_P_ARP_ 0x0806
#define ETH_P_IPV6_ 0x86DD
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define ETH_P_QINQ_OLD_ 0x9100

#define IPPROTO_HOPOPTS_ 0
#define IPPROTO_ICMP_ 1
#define IPPROTO_IPIP_ 4
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_IPV6_ 41
#define IPPROTO_ROUTING_ 43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_GRE_ 47
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_DSTOPTS_ 60

static __always_inline void *zt_ptr(const struct xdp_md *ctx, __u32 off, __u32 n)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *p;

	if (off > ZT_MAX_OFF)
		return NULL;
	p = data + off;
	if (p + n > data_end)
		return NULL;
	return p;
}

static __always_inline __u16 zt_be16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

static __always_inline int zt_mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

static __always_inline __u32 zt_frame_len(const struct xdp_md *ctx)
{
	return ctx->data_end - ctx->data;
}

/* Is the IPv6 next header one the parser walks (or refuses) rather than a terminal protocol? */
static __always_inline int zt_is_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS_ || nh == IPPROTO_DSTOPTS_ || nh == IPPROTO_ROUTING_ ||
	       nh == IPPROTO_FRAGMENT_;
}

/* Bytes of L4 header the datapath must see: ports and flags of TCP/UDP, type/code of ICMP. */
static __always_inline __u32 zt_l4_need(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP_:
		return 20;
	case IPPROTO_UDP_:
	case IPPROTO_ICMP_:
	case IPPROTO_ICMPV6_:
		return 8;
	}
	return 0;
}

#endif
