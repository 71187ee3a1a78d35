/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* pkt.h: struct zt_pkt, the per-frame state the decision steps share, and the destination MAC
 * classes. */
#ifndef ZT_PKT_H
#define ZT_PKT_H

#include "parsing.h"
#include "structs.h"

/* Destination MAC classes (struct zt_pkt.l2). */
#define ZT_L2_DENY  0 /* the destination MAC does not fit the frame: drop as l2_dst_denied */
#define ZT_L2_GW    1 /* one of the gateway's MACs (zt_gwmacs or the policy's) */
#define ZT_L2_DEV   2 /* a known device's MAC, and the IP destination is bound to it */
#define ZT_L2_BCAST 3 /* ff:ff:ff:ff:ff:ff */
#define ZT_L2_MCAST 4 /* the group MAC of the IP destination */

/* zt_pkt is the per-frame state shared by the decision steps; its offsets are the parser's cursor. */
struct zt_pkt {
	const struct zt_config *cfg;
	const struct zt_dev_rec *dev;
	struct zt_in6 saddr;
	struct zt_in6 daddr;
	__u32 slot;
	__u32 l3off;	/* start of the IP/ARP header */
	__u32 end;	/* end of the IP datagram (from its length field) */
	__u32 lim;	/* end of what headers are read from: end, for the TC program at most ZT_TC_PULL */
	__u32 l4off;	/* start of the upper-layer header */
	__u32 fp_start; /* start of the fragmentable part (fragment offsets count from here) */
	__u32 foff;	/* fragment offset in bytes */
	__u32 frag_id;
	__u16 vid;
	__u16 sport;
	__u16 dport;
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
	__u8 l2;       /* zt_l2 of the frame */
	__u8 hoplimit; /* IPv6 hop limit */
	__u8 family;   /* 4 or 6 */
	__u8 l4proto;
	__u8 mf;	 /* more-fragments flag */
	__u8 first_frag; /* offset 0 with more fragments to come */
	__u8 unspec;	 /* source is 0.0.0.0 or :: */
	__u8 counted;	 /* passed identity and source checks: charge the device */
	__u8 icmp_type;
	__u8 dir;      /* enum zt_dir */
	__u16 icmp_id; /* an ICMP echo's identifier */
	__u32 ifindex; /* the port the frame arrived on (from a device) or leaves by (toward one) */
};

/* zt_vlan reads the ethertype after the Ethernet header eth of the packet [data, data_end) into
 * *proto, over one 802.1Q tag at most (its VID into pkt->vid; VID 0 is a priority tag), and the
 * offset of what follows into pkt->l3off. ZT_CONTINUE, or ZT_R_VLAN_DENIED (QinQ, 802.1ad, stacked
 * tags) or ZT_R_TRUNCATED. */
static __always_inline int zt_vlan(void *data, void *data_end, const struct ethhdr *eth, struct zt_pkt *pkt,
				   __u16 *proto)
{
	__u16 p = bpf_ntohs(eth->h_proto);

	pkt->l3off = sizeof(*eth);
	if (p == ETH_P_8021AD || p == ETH_P_QINQ1)
		return ZT_R_VLAN_DENIED;
	if (p == ETH_P_8021Q) {
		const struct vlan_hdr *vlan = zt_parse_vlan_hdr_in(data, data_end, pkt->l3off);

		if (!vlan)
			return ZT_R_TRUNCATED;
		pkt->vid = bpf_ntohs(vlan->h_vlan_TCI) & VLAN_VID_MASK;
		p = bpf_ntohs(vlan->h_vlan_encapsulated_proto);
		pkt->l3off += sizeof(*vlan);
		if (p == ETH_P_8021Q || p == ETH_P_8021AD || p == ETH_P_QINQ1)
			return ZT_R_VLAN_DENIED;
	}
	*proto = p;
	return ZT_CONTINUE;
}

#endif
