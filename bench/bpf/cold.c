//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cold.c: the cache-cold benchmark build of the datapath (never attached to an interface).
 *
 * BPF_PROG_TEST_RUN replays one frame, so every lookup stays cache-hot. Here a per-CPU counter
 * picks the device each run: idx = (ctr++ * 2654435761) % zt_bench_n, and the frame's source
 * MAC and IPv4 source are rewritten to device idx's (MAC 02:5a:<idx, 32 bits big-endian>,
 * IPv4 10.16.0.0 + idx: bench/hot.go's fleet) before the normal decision of bpf/ztgate.c.
 * Checksums stay stale: the datapath verifies none (IPv4 header or L4).
 *
 * zt_bench_control is the yardstick: the same counter, arithmetic and rewrite, then one hash
 * lookup keyed by the frame's source MAC in a table of the same size, and a counter increment.
 * Elimination steps between the control and the datapath: zt_bench_control_rec looks up a
 * table whose values are the fleet's device records (struct zt_dev_rec, as zt_devices) and reads
 * the fields the datapath reads; zt_bench_control_stats then charges the device as zt_account
 * does (zt_devstats' entry of this CPU and the record's dev_id: packets, bytes, last_seen). */
#ifndef ZT_BENCH_COLD
#error "build with -DZT_BENCH_COLD"
#endif

#include "../../bpf/parsing.h"
#include "../../bpf/maps.h"
#include "../../bpf/clock.h"
#include "../../bpf/addr.h"
#include "../../bpf/account.h"

#define ZT_BENCH_V4_BASE 0x0a100000 /* 10.16.0.0: the fleet's first IPv4 address */
#define ZT_BENCH_MAC0	 0x02	    /* 02:5a: the fleet's MAC prefix (locally administered) */
#define ZT_BENCH_MAC1	 0x5a
#define ZT_BENCH_SPREAD	 2654435761U /* Knuth's multiplicative hash: consecutive runs, scattered devices */

/* Devices to cycle over (the fleet size); set by the loader of the benchmark. */
volatile const __u32 zt_bench_n = 1;

/* [0]: frames rewritten so far (the sequence); [1]: control lookups that missed (must stay 0). */
struct {
	ZT_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, 2, __u32, __u64);
} zt_bench_ctr SEC(".maps");

/* The control's table: device MAC -> counter; max_entries set to the fleet size. */
struct {
	ZT_MAP(BPF_MAP_TYPE_HASH, 1, struct zt_dev_key, __u64);
} zt_bench_ctl SEC(".maps");

/* The same table with device records as values; max_entries set to the fleet size. */
struct {
	ZT_MAP(BPF_MAP_TYPE_HASH, 1, struct zt_dev_key, struct zt_dev_rec);
} zt_bench_rec SEC(".maps");

/* The control's per-device counters, laid out as zt_devstats: index cpu * zt_devstats_stride +
 * dev_id (dev_id = idx + 1); max_entries set as zt_devstats'. */
struct {
	ZT_MAP(BPF_MAP_TYPE_ARRAY, 1, __u32, struct zt_dev_stats);
} zt_bench_stats SEC(".maps");

/* zt_bench_rewrite rewrites the frame to come from the next device: idx, or -1 when it cannot. */
static __always_inline long zt_bench_rewrite(struct xdp_md *ctx)
{
	__u32 zero = 0, n = zt_bench_n, idx;
	__u64 *ctr = bpf_map_lookup_elem(&zt_bench_ctr, &zero);
	struct ethhdr *eth = zt_ptr(ctx, 0, sizeof(*eth) + sizeof(struct iphdr));
	struct iphdr *iph = (struct iphdr *)(eth + 1);
	__u8 *mac;

	if (!ctr || !eth || n == 0)
		return -1;
	idx = (__u32)(((*ctr)++ * (__u64)ZT_BENCH_SPREAD) % n);
	mac = eth->h_source;
	mac[0] = ZT_BENCH_MAC0;
	mac[1] = ZT_BENCH_MAC1;
	mac[2] = idx >> 24;
	mac[3] = idx >> 16;
	mac[4] = idx >> 8;
	mac[5] = idx;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		iph->saddr = bpf_htonl(ZT_BENCH_V4_BASE + idx);
	return idx;
}

#include "../../bpf/ztgate.c"

/* zt_bench_lookup is the control's lookup: 1 if the frame's source MAC is in the table. */
static __always_inline int zt_bench_lookup(struct xdp_md *ctx)
{
	struct zt_dev_key key = {};
	const struct ethhdr *eth = zt_parse(ethhdr, ctx, 0);
	__u32 one = 1;
	__u64 *v, *miss;

	if (!eth)
		return 0;
	__builtin_memcpy(key.mac, eth->h_source, ETH_ALEN);
	v = bpf_map_lookup_elem(&zt_bench_ctl, &key);
	if (v) {
		(*v)++;
		return 1;
	}
	miss = bpf_map_lookup_elem(&zt_bench_ctr, &one);
	if (miss)
		(*miss)++;
	return 0;
}

/* zt_bench_control is the yardstick: the rewrite, then one hash lookup by source MAC. */
SEC("xdp")
int zt_bench_control(struct xdp_md *ctx)
{
	if (zt_bench_rewrite(ctx) < 0)
		return XDP_ABORTED;
	return zt_bench_lookup(ctx) ? XDP_PASS : XDP_DROP;
}

/* zt_bench_record is the record lookup of zt_bench_control_rec: the device record of the frame's source, checked
 * as the allowed path checks it, or NULL. */
static __always_inline const struct zt_dev_rec *zt_bench_record(struct xdp_md *ctx)
{
	struct zt_dev_key key = {};
	const struct zt_dev_rec *rec;
	const struct ethhdr *eth = zt_ptr(ctx, 0, sizeof(*eth) + sizeof(struct iphdr));
	const struct iphdr *iph = (const struct iphdr *)(eth + 1);

	if (!eth)
		return NULL;
	__builtin_memcpy(key.mac, eth->h_source, ETH_ALEN);
	rec = bpf_map_lookup_elem(&zt_bench_rec, &key);
	if (!rec)
		return NULL;
	/* What the allowed path reads of the record: port, VLAN, addresses, rule set and flags. */
	if ((rec->ifindex && rec->ifindex != ctx->ingress_ifindex) || rec->vlan || !zt_bound_v4(rec, iph->saddr) ||
	    !rec->ruleset || (rec->flags & ZT_DEV_QUARANTINED))
		return NULL;
	return rec;
}

/* zt_bench_control_rec is the rewrite, then the device record lookup and checks (zt_bench_record). */
SEC("xdp")
int zt_bench_control_rec(struct xdp_md *ctx)
{
	if (zt_bench_rewrite(ctx) < 0)
		return XDP_ABORTED;
	return zt_bench_record(ctx) ? XDP_PASS : XDP_DROP;
}

/* zt_bench_control_stats is zt_bench_control_rec, then the device's counters as zt_account charges them: the index is
 * the record's dev_id, so the two accesses are dependent, as in the datapath. */
SEC("xdp")
int zt_bench_control_stats(struct xdp_md *ctx)
{
	const struct zt_dev_rec *rec;
	struct zt_dev_stats *s;
	__u32 id;

	if (zt_bench_rewrite(ctx) < 0)
		return XDP_ABORTED;
	rec = zt_bench_record(ctx);
	if (!rec)
		return XDP_DROP;
	if (rec->dev_id == 0 || rec->dev_id >= zt_devstats_stride)
		return XDP_DROP;
	id = bpf_get_smp_processor_id() * zt_devstats_stride + rec->dev_id;
	s = bpf_map_lookup_elem(&zt_bench_stats, &id);
	if (s) {
		s->packets[ZT_V_PASS]++;
		s->bytes[ZT_V_PASS] += zt_frame_len(ctx);
		s->last_seen = zt_now();
	}
	return XDP_PASS;
}
