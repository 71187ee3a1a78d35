/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* frag.h: fragment state: a first fragment's verdict, recorded for the later fragments. */
#ifndef ZT_FRAG_H
#define ZT_FRAG_H

#include "clock.h"
#include "pkt.h"

/* zt_frag_timeout_ns is the lifetime of a first-fragment record; the loader sets it before load. */
volatile const __u64 zt_frag_timeout_ns = 30ULL * 1000000000ULL;

/* zt_frag_key fills k with the datagram pkt is a fragment of. */
static __always_inline void zt_frag_key(const struct zt_pkt *pkt, struct zt_frag_key *k)
{
	k->saddr = pkt->saddr;
	k->daddr = pkt->daddr;
	k->id = pkt->frag_id;
	k->proto = pkt->family == 4 ? pkt->l4proto : 0;
	k->family = pkt->family;
	k->dir = pkt->dir;
	k->pad = 0;
}

/* zt_frag_later is step 9 for a later fragment: it follows the verdict recorded for the first fragment. */
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

/* zt_frag_record is step 9 for a first fragment that passed: it remembers the verdict; no room means
 * drop. */
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

#endif
