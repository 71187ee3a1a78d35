/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* account.h: the counters by (verdict, reason) and the per-device statistics. */
#ifndef ZT_ACCOUNT_H
#define ZT_ACCOUNT_H

#include "clock.h"
#include "pkt.h"

/* zt_account charges a frame to its (verdict, reason) counter and, once identified, to its device. */
static __always_inline void zt_account(const struct zt_pkt *pkt, __u32 verdict, __u32 reason, __u32 len)
{
	__u32 idx = (pkt->dir * ZT_V_MAX + verdict) * ZT_R_MAX + reason;
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

		if (s && pkt->dir == ZT_DIR_TO_DEVICE) {
			s->in_packets[verdict]++;
			s->in_bytes[verdict] += len;
		} else if (s) {
			s->packets[verdict]++;
			s->bytes[verdict] += len;
			s->last_seen = zt_now();
		}
	}
}

#endif
