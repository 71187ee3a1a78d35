/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* clock.h: zt_now, the datapath's coarse clock, and zt_elapsed. */
#ifndef ZT_CLOCK_H
#define ZT_CLOCK_H

#include "maps.h"

/* zt_now is CLOCK_MONOTONIC_COARSE, read at most once per jiffy on each CPU and cached in zt_clock
 * (bpf_jiffies64 is inlined, bpf_ktime_get_coarse_ns is a helper call): the clock of fragment
 * timeouts, event budgets and last seen. It lags bpf_ktime_get_ns by up to two ticks and may trail
 * another CPU's: compare two values through zt_elapsed. */
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

/* zt_elapsed is how long ago zt_now value then was, as of now: negative (another CPU's clock a tick
 * ahead) reads as 0. */
static __always_inline __u64 zt_elapsed(__u64 now, __u64 then)
{
	__s64 d = (__s64)(now - then);

	return d < 0 ? 0 : (__u64)d;
}

#endif
