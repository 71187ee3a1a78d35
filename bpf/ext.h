/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ext.h: the IP header steps shared by frames from devices and frames toward them: what an IPv4
 * header says of its datagram, the IPv6 header, the IPv6 extension-header walk. */
#ifndef ZT_EXT_H
#define ZT_EXT_H

#include "parsing.h"
#include "pkt.h"

/* ZT_NO_CAP is the cap of zt_ipv4_datagram and zt_ipv6_hdr for frames from devices: headers are
 * read up to the datagram's end. */
#define ZT_NO_CAP 0xffffffff

/* zt_ipv4_datagram fills pkt from the IPv4 header iph at pkt->l3off, hl bytes long, of a datagram of
 * tot bytes (both checked by the caller): its end, where headers are read up to (at most cap), the
 * upper layer's offset and protocol, and the fragment fields. */
static __always_inline void zt_ipv4_datagram(const struct iphdr *iph, __u32 hl, __u32 tot, __u32 cap,
					     struct zt_pkt *pkt)
{
	__u32 frag = bpf_ntohs(iph->frag_off);

	pkt->end = pkt->l3off + tot;
	pkt->lim = pkt->end < cap ? pkt->end : cap;
	pkt->l4off = pkt->l3off + hl;
	pkt->fp_start = pkt->l4off;
	pkt->l4proto = iph->protocol;
	pkt->frag_id = bpf_ntohs(iph->id);
	pkt->mf = (frag & IP_MF) != 0;
	pkt->foff = (frag & IP_OFFSET) * ZT_FRAG_UNIT;
	pkt->first_frag = pkt->mf && pkt->foff == 0;
}

/* zt_ipv6_hdr reads the IPv6 header at pkt->l3off of a len-byte packet whose first bytes are
 * [data, data_end) into pkt (its end, where headers are read up to (at most cap), its addresses
 * and hop limit), and the offset and type of the header after it into *off and *nh. ZT_CONTINUE,
 * or ZT_R_TRUNCATED or ZT_R_MALFORMED. */
static __always_inline int zt_ipv6_hdr(void *data, void *data_end, __u32 len, __u32 cap, struct zt_pkt *pkt, __u32 *off,
				       __u8 *nh)
{
	const struct ipv6hdr *ip6 = zt_parse_ipv6hdr_in(data, data_end, pkt->l3off);

	if (!ip6)
		return ZT_R_TRUNCATED;
	if (ip6->version != ZT_IPV6_VERSION)
		return ZT_R_MALFORMED;
	*off = pkt->l3off + sizeof(*ip6);
	if (*off + bpf_ntohs(ip6->payload_len) > len)
		return ZT_R_MALFORMED;
	pkt->end = *off + bpf_ntohs(ip6->payload_len);
	pkt->lim = pkt->end < cap ? pkt->end : cap;
	__builtin_memcpy(pkt->saddr.b, &ip6->saddr, sizeof(pkt->saddr));
	__builtin_memcpy(pkt->daddr.b, &ip6->daddr, sizeof(pkt->daddr));
	pkt->hoplimit = ip6->hop_limit;
	*nh = ip6->nexthdr;
	return ZT_CONTINUE;
}

/* zt_ipv6_ext is step 8: the walk of the extension headers from off, where next header nh starts.
 * It leaves the upper-layer protocol and offset, and the fragment fields, in pkt. ZT_CONTINUE or a
 * reason. Either program's packet [data, data_end). */
static __always_inline int zt_ipv6_ext(void *data, void *data_end, struct zt_pkt *pkt, __u32 off, __u8 nh)
{
	__u32 i, seen_frag = 0;

	pkt->fp_start = off;
	for (i = 0; i < ZT_MAX_EXT_HDRS; i++) {
		const struct ipv6_opt_hdr *h;

		if (!zt_is_ext(nh))
			break;
		if (nh == IPPROTO_ROUTING || (nh == IPPROTO_HOPOPTS && i != 0))
			return ZT_R_EXT_DENIED;
		if (off + ZT_EXT_UNIT > pkt->lim)
			return ZT_R_TRUNCATED;
		if (nh == IPPROTO_FRAGMENT) {
			const struct frag_hdr *fh = zt_parse_frag_hdr_in(data, data_end, off);
			__u16 fo;

			if (!fh)
				return ZT_R_TRUNCATED;
			if (seen_frag)
				return ZT_R_EXT_DENIED;
			seen_frag = 1;
			fo = bpf_ntohs(fh->frag_off);
			nh = fh->nexthdr;
			off += sizeof(*fh);
			pkt->fp_start = off;
			pkt->foff = fo & IP6_OFFSET;
			pkt->mf = fo & IP6_MF;
			pkt->frag_id = bpf_ntohl(fh->identification);
			pkt->first_frag = pkt->mf && pkt->foff == 0;
			if (pkt->foff)
				break; /* a later fragment: the rest is payload */
			continue;
		}
		/* the header's whole first unit, as its length counts from it */
		h = zt_ptr_in(data, data_end, off, ZT_EXT_UNIT);
		if (!h)
			return ZT_R_TRUNCATED;
		nh = h->nexthdr;
		off += (h->hdrlen + 1) * ZT_EXT_UNIT;
		if (off > pkt->lim)
			return ZT_R_TRUNCATED;
	}
	if (!pkt->foff && zt_is_ext(nh))
		return ZT_R_EXT_DENIED; /* chain longer than the parser limit */
	pkt->l4proto = nh;
	pkt->l4off = off;
	return ZT_CONTINUE;
}

#endif
