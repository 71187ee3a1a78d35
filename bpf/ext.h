/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ext.h: the IPv6 extension-header walk, shared by frames from devices and frames toward them. */
#ifndef ZT_EXT_H
#define ZT_EXT_H

#include "parsing.h"
#include "pkt.h"

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
