/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* events.h: drop and audit events into the ring buffer, under a per-(device, reason) budget. */
#ifndef ZT_EVENTS_H
#define ZT_EVENTS_H

#include "clock.h"
#include "pkt.h"

/* Event knobs, set by the loader before load (volatile const: the verifier sees the value). */
volatile const __u64 zt_event_window_ns = 1000000000ULL; /* event budget window */
volatile const __u64 zt_event_burst = 10;		 /* events per (device, reason, window) */
volatile const __u8 zt_events_enabled = 1;		 /* 0: count only, no events */
volatile const __u32 zt_event_limit_mask = 4095;	 /* zt_event_limit capacity - 1 */
volatile const __u32 zt_event_limit_seed = 0;		 /* random per load: slots cannot be aimed at */

/* Multipliers of zt_limit_index's hash: odd constants with well-mixed bits (the golden ratio's,
 * murmur3's and a finalizer's). */
#define ZT_LIMIT_MUL_DEV    0x9e3779b1U
#define ZT_LIMIT_MUL_REASON 0x85ebca77U
#define ZT_LIMIT_MUL_MIX    0x2c1b3c6dU

/* zt_limit_index is the first of the two budget slots (it and its neighbour, index ^ 1) that a
 * (device, reason) may use: a seeded hash, so that which keys share slots differs on every load
 * and cannot be chosen from outside. */
static __always_inline __u32 zt_limit_index(__u32 dev_id, __u32 reason)
{
	__u32 h = (dev_id * ZT_LIMIT_MUL_DEV) ^ (reason * ZT_LIMIT_MUL_REASON) ^ zt_event_limit_seed;

	h ^= h >> 15;
	h *= ZT_LIMIT_MUL_MIX;
	h ^= h >> 12;
	return h & zt_event_limit_mask;
}

/* zt_limit_owns reports whether slot s holds (device, reason)'s window (open or closed). */
static __always_inline int zt_limit_owns(const struct zt_limit_slot *s, __u32 dev_id, __u32 reason)
{
	return s->dev_id == dev_id && s->reason == reason;
}

/* zt_limit_open reports whether slot s's window is still open at now. A slot never used (window_start
 * 0) holds none, however short the time since boot. */
static __always_inline int zt_limit_open(const struct zt_limit_slot *s, __u64 now)
{
	return s->window_start && zt_elapsed(now, s->window_start) < zt_event_window_ns;
}

/* zt_event_cap is the frame bytes an event of a len-byte frame copies: 1 to ZT_EVENT_CAPTURE. It
 * computes ((cap - 1) & 127) + 1 with an AND the compiler cannot drop, so that the verifier sees
 * the bound on the very register the caller passes to the copying helper. */
static __always_inline __u32 zt_event_cap(__u32 len)
{
	__u32 cap = len < ZT_EVENT_CAPTURE ? len : ZT_EVENT_CAPTURE;

	cap -= 1;
	asm volatile("%0 &= %1" : "+r"(cap) : "i"(ZT_EVENT_CAPTURE - 1));
	return cap + 1;
}

/* zt_event_reserve reserves the ring buffer record of a dropped or audited frame, within its
 * budget, and fills all but its data; NULL when no event is due. The caller copies the frame's
 * first zt_event_cap(len) bytes (or sets cap_len 0) and submits the record. */
static __always_inline struct zt_event *zt_event_reserve(const struct zt_pkt *pkt, __u32 verdict, __u32 reason,
							 __u32 len)
{
	__u32 zero = 0, dev_id = pkt->dev ? pkt->dev->dev_id : ZT_NO_DEVICE, idx;
	struct zt_event_stats *st;
	struct zt_limit_slot *lim;
	struct zt_event *e;
	__u64 now;

	if (!zt_events_enabled)
		return NULL;
	idx = zt_limit_index(dev_id, reason);
	st = bpf_map_lookup_elem(&zt_evstats, &zero);
	lim = bpf_map_lookup_elem(&zt_event_limit, &idx);
	if (!st || !lim)
		return NULL;
	now = zt_now(); /* only when events are on */
	if (!zt_limit_owns(lim, dev_id, reason)) {
		/* The key's own slot, if either is; else the first slot unless it is another key's
		 * open window and the neighbour is not. When both hold open windows of other keys,
		 * the key shares the first one's budget (fewer events, never more). */
		__u32 alt = idx ^ 1;
		struct zt_limit_slot *l2 = bpf_map_lookup_elem(&zt_event_limit, &alt);

		if (l2 && (zt_limit_owns(l2, dev_id, reason) || (zt_limit_open(lim, now) && !zt_limit_open(l2, now))))
			lim = l2;
	}
	if (zt_limit_open(lim, now)) {
		if (lim->count >= zt_event_burst) {
			st->suppressed++;
			return NULL;
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
		return NULL;
	}
	e->ts = now;
	e->dev_id = dev_id;
	e->ifindex = pkt->ifindex;
	e->revision = pkt->cfg ? pkt->cfg->revision : 0;
	e->verdict = verdict;
	e->reason = reason;
	e->frame_len = len;
	e->dir = pkt->dir;
	e->pad = 0;
	e->cap_len = zt_event_cap(len);
	st->emitted++;
	return e;
}

#endif
