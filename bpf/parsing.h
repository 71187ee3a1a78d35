/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* parsing.h: the bounded cursor over the frame and one parse function per header, as xdp-tools'
 * parsing_helpers.h, with the protocol constants the kernel's uapi headers leave out.
 *
 * Contract: every read goes through zt_ptr(), which returns a pointer to n readable bytes at byte
 * offset off from the start of the frame, or NULL when the frame is shorter. Each zt_parse_*
 * returns the whole header at off, or NULL; the caller turns NULL into ZT_R_TRUNCATED (or
 * ZT_R_FRAG_TINY for a first fragment). The offsets held in struct zt_pkt are the cursor: logical
 * ends (IPv4 total length, IPv6 payload length) are checked by the caller on offsets. Offsets
 * rather than xdp-tools' packet pointers: bounded by ZT_MAX_OFF they stay plain scalars for the
 * verifier, and later steps (fragments, guards) reuse them. */
#ifndef ZT_PARSING_H
#define ZT_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "consts.h"

/* ZT_CONTINUE is what a decision step returns to go on to the next step; a reason is >= 0. */
#define ZT_CONTINUE -1

/* zt_decided reports whether a step's result r is a reason rather than ZT_CONTINUE. It tests the
 * sign, so that the verifier knows a returned reason is not negative (fewer states to walk). */
#define zt_decided(r) ((r) >= 0)

/* The uapi headers lack these; the names are the kernel's own (include/net/ip.h, ipv6.h,
 * ndisc.h, include/linux/if_vlan.h). */
#define IP_MF	      0x2000 /* IPv4 frag_off: more fragments follow */
#define IP_OFFSET     0x1fff /* IPv4 frag_off: fragment offset in 8-byte units */
#define IP6_OFFSET    0xfff8 /* IPv6 frag_off: fragment offset, already in bytes */
#define IP6_MF	      0x0001 /* IPv6 frag_off: more fragments follow */
#define VLAN_VID_MASK 0x0fff /* 802.1Q TCI: VLAN identifier */

#define NDISC_ROUTER_SOLICITATION     133 /* ICMPv6 router solicitation */
#define NDISC_ROUTER_ADVERTISEMENT    134 /* ICMPv6 router advertisement */
#define NDISC_NEIGHBOUR_SOLICITATION  135 /* ICMPv6 neighbour solicitation */
#define NDISC_NEIGHBOUR_ADVERTISEMENT 136 /* ICMPv6 neighbour advertisement */
#define NDISC_REDIRECT		      137 /* ICMPv6 redirect */
#define ND_OPT_SOURCE_LL_ADDR	      1	  /* ND option: source link-layer address */
#define ND_OPT_TARGET_LL_ADDR	      2	  /* ND option: target link-layer address */
#define ND_OPT_UNIT		      8	  /* nd_opt_len counts units of 8 bytes */

/* linux/icmp.h is uapi but includes libc's sys/socket.h (through linux/if.h), which a BPF build
 * cannot: the ICMP types the guards need are defined here with the kernel's (and glibc's) names. */
#define ICMP_REDIRECT	  5 /* redirect (change route) */
#define ICMP_ROUTERADVERT 9 /* router advertisement (RFC 1256; glibc's netinet/ip_icmp.h name) */

#define ZT_IPV4_VERSION	   4	/* iphdr.version */
#define ZT_IPV6_VERSION	   6	/* ipv6hdr.version */
#define ZT_IPV4_MIN_IHL	   5	/* iphdr.ihl of a header without options (20 bytes) */
#define ZT_IHL_UNIT	   4	/* iphdr.ihl and tcphdr.doff count units of 4 bytes */
#define ZT_FRAG_UNIT	   8	/* IPv4 fragment offsets count units of 8 bytes */
#define ZT_EXT_UNIT	   8	/* ipv6_opt_hdr.hdrlen counts units of 8 bytes beyond the first 8 */
#define ZT_TCP_MIN_DOFF	   5	/* tcphdr.doff of a header without options (20 bytes) */
#define ZT_IPOPT_MIN_LEN   2	/* an IPv4 option with a length byte covers at least type and length */
#define ZT_MAC_GROUP	   0x01 /* first byte of a MAC: the group (multicast/broadcast) bit */
#define ZT_ND_HOPLIMIT	   255	/* hop limit of a neighbour discovery message that stayed on the link */
#define ZT_BOOTREQUEST	   1	/* BOOTP op of a client message (RFC 951); 2 is a server's reply */
#define ZT_DHCP_CHADDR_OFF 28	/* offset of chaddr in the BOOTP header */
#define ZT_DHCP_MIN_LEN	   34	/* BOOTP bytes needed up to the end of a 6-byte chaddr */

/* vlan_hdr is the 802.1Q tag after the Ethernet header; include/linux/if_vlan.h defines it outside
 * uapi, so it is defined here as xdp-tools does. */
struct vlan_hdr {
	__be16 h_vlan_TCI;		  /* priority, drop eligible, VLAN ID */
	__be16 h_vlan_encapsulated_proto; /* ethertype of what follows */
};

/* linux/if_arp.h is uapi but includes libc's sys/socket.h (through linux/netdevice.h), which a BPF
 * build cannot: its ARP names are defined here as the kernel defines them. */
#define ARPHRD_ETHER  1 /* Ethernet hardware address */
#define ARPOP_REQUEST 1 /* ARP request */
#define ARPOP_REPLY   2 /* ARP reply */

/* arphdr is the fixed part of an ARP message (linux/if_arp.h). */
struct arphdr {
	__be16 ar_hrd;	      /* format of hardware address */
	__be16 ar_pro;	      /* format of protocol address */
	unsigned char ar_hln; /* length of hardware address */
	unsigned char ar_pln; /* length of protocol address */
	__be16 ar_op;	      /* ARP opcode */
};

/* arp_ipv4 is an ARP message for IPv4 over Ethernet: struct arphdr and the body its uapi comment
 * describes but leaves out (the sizes depend on the hardware). */
struct arp_ipv4 {
	struct arphdr hdr;
	unsigned char ar_sha[ETH_ALEN]; /* sender hardware address */
	unsigned char ar_sip[4];	/* sender IP address */
	unsigned char ar_tha[ETH_ALEN]; /* target hardware address */
	unsigned char ar_tip[4];	/* target IP address */
};

/* frag_hdr is the IPv6 fragment header (include/net/ipv6.h; not uapi). */
struct frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* IP6_OFFSET | IP6_MF */
	__be32 identification;
};

/* nd_msg is a neighbour solicitation or advertisement up to its options (include/net/ndisc.h). */
struct nd_msg {
	struct icmp6hdr icmph;
	struct in6_addr target;
};

/* nd_opt_hdr starts each neighbour discovery option (include/net/ndisc.h). */
struct nd_opt_hdr {
	__u8 nd_opt_type;
	__u8 nd_opt_len; /* in ND_OPT_UNIT bytes, the header included */
};

/* zt_nd_lladdr is a source or target link-layer address option for Ethernet. */
struct zt_nd_lladdr {
	struct nd_opt_hdr hdr;
	unsigned char addr[ETH_ALEN];
};

/* zt_l4hdr is the first 8 bytes of an upper-layer header: the type of ICMPv6 and ICMP, the ports
 * of UDP and of TCP (whose ports sit where UDP's do). */
union zt_l4hdr {
	struct icmp6hdr icmp6; /* ICMP's type and code sit where ICMPv6's do */
	struct udphdr udp;
};

/* zt_ptr_in returns a pointer to n readable bytes at offset off of the packet [data, data_end), or NULL. */
static __always_inline void *zt_ptr_in(void *data, void *data_end, __u32 off, __u32 n)
{
	void *p;

	if (off > ZT_MAX_OFF)
		return NULL;
	/* The bound again, on the register the addition uses: the compiler may test a copy. */
	asm volatile("%0 &= %1" : "+r"(off) : "i"(ZT_MAX_OFF));
	p = data + off;
	if (p + n > data_end)
		return NULL;
	return p;
}

/* zt_ptr returns a pointer to n readable bytes at offset off of the frame, or NULL. ctx is the XDP
 * program's struct xdp_md or the TC program's struct __sk_buff: both have data and data_end. */
#define zt_ptr(ctx, off, n) zt_ptr_in((void *)(long)(ctx)->data, (void *)(long)(ctx)->data_end, (off), (n))

/* ZT_PARSER defines zt_parse_NAME(ctx, off): the struct TYPE at off, or NULL when the frame ends
 * inside it. */
#define ZT_PARSER(name, type)                                                                                          \
	static __always_inline type *zt_parse_##name##_in(void *data, void *data_end, __u32 off)                       \
	{                                                                                                              \
		return zt_ptr_in(data, data_end, off, sizeof(type));                                                   \
	}

/* zt_parse(name, ctx, off) is zt_parse_NAME for either program's context. */
#define zt_parse(name, ctx, off) zt_parse_##name##_in((void *)(long)(ctx)->data, (void *)(long)(ctx)->data_end, (off))

ZT_PARSER(ethhdr, struct ethhdr)
ZT_PARSER(vlan_hdr, struct vlan_hdr)
ZT_PARSER(arp_ipv4, struct arp_ipv4)
ZT_PARSER(iphdr, struct iphdr)
ZT_PARSER(ipv6hdr, struct ipv6hdr)
ZT_PARSER(frag_hdr, struct frag_hdr)
ZT_PARSER(tcphdr, struct tcphdr)
ZT_PARSER(l4hdr, union zt_l4hdr)
ZT_PARSER(nd_lladdr, struct zt_nd_lladdr)

/* zt_mac_eq reports whether MAC addresses a and b are equal. */
static __always_inline int zt_mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

/* zt_frame_len is the frame's length in bytes (of either program's context). */
#define zt_frame_len(ctx) ((__u32)((ctx)->data_end - (ctx)->data))

/* zt_is_ext reports whether an IPv6 next header is one the parser walks (or refuses) rather than
 * a terminal protocol. */
static __always_inline int zt_is_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_DSTOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_FRAGMENT;
}

/* zt_l4_need is the bytes of L4 header the datapath must see: ports and flags of TCP/UDP,
 * type/code of ICMP. */
static __always_inline __u32 zt_l4_need(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return sizeof(struct tcphdr);
	case IPPROTO_UDP:
		return sizeof(struct udphdr);
	case IPPROTO_ICMP: /* type, code, checksum and 4 bytes, as ICMPv6 */
	case IPPROTO_ICMPV6:
		return sizeof(struct icmp6hdr);
	}
	return 0;
}

#endif
