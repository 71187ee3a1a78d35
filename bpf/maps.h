/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* maps.h: every map of the datapath. Capacities written here are placeholders: the loader sets
 * max_entries from the configuration before load. Policy maps come in ZT_SLOTS slots; a frame
 * reads the active slot number once and uses that slot for every policy lookup. */
#ifndef ZT_MAPS_H
#define ZT_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "structs.h"

/* ZT_MAP declares a map's type, capacity, key and value inside its struct { } definition. */
#define ZT_MAP(map_type, capacity, key_type, value_type)                                                               \
	__uint(type, map_type);                                                                                        \
	__uint(max_entries, capacity);                                                                                 \
	__type(key, key_type);                                                                                         \
	__type(value, value_type)

/* ZT_SLOT_MAPS declares an array of ZT_SLOTS inner maps of type inner_type, one per policy slot. */
#define ZT_SLOT_MAPS(inner_type)                                                                                       \
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);                                                                      \
	__uint(max_entries, ZT_SLOTS);                                                                                 \
	__type(key, __u32);                                                                                            \
	__array(values, inner_type)

/* Active slot (0 or 1). Userspace fills the other slot, flips this, then waits an RCU grace period. */
struct {
	ZT_MAP(BPF_MAP_TYPE_ARRAY, 1, __u32, __u32);
} zt_active SEC(".maps");

/* Per-slot policy-wide configuration. */
struct {
	ZT_MAP(BPF_MAP_TYPE_ARRAY, ZT_SLOTS, __u32, struct zt_config);
} zt_cfg SEC(".maps");

struct zt_devices_inner {
	ZT_MAP(BPF_MAP_TYPE_HASH, 1, struct zt_dev_key, struct zt_dev_rec);
};

struct zt_addrs_inner {
	ZT_MAP(BPF_MAP_TYPE_HASH, 1, struct zt_addr_key, struct zt_addr_val);
};

struct zt_prefixes_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct zt_prefix_key);
	__type(value, struct zt_prefix_val);
};

struct zt_rules_inner {
	ZT_MAP(BPF_MAP_TYPE_HASH, 1, struct zt_rule_key, struct zt_rule_val);
};

struct {
	ZT_SLOT_MAPS(struct zt_devices_inner);
} zt_devices SEC(".maps");

struct {
	ZT_SLOT_MAPS(struct zt_addrs_inner);
} zt_addrs SEC(".maps");

struct {
	ZT_SLOT_MAPS(struct zt_prefixes_inner);
} zt_prefixes SEC(".maps");

struct {
	ZT_SLOT_MAPS(struct zt_rules_inner);
} zt_rules SEC(".maps");

/* Userspace-only: a map-in-map update makes the kernel wait for an RCU grace period
 * (every XDP run in flight has finished) before the syscall returns. */
struct zt_barrier_inner {
	ZT_MAP(BPF_MAP_TYPE_ARRAY, 1, __u32, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct zt_barrier_inner);
} zt_barrier SEC(".maps");

/* MACs of the gateway itself (the protected interfaces and their bridge masters) -> ifindex that
 * owns it. Filled by the loader before it attaches; frames to these MACs are to the gateway. */
struct {
	ZT_MAP(BPF_MAP_TYPE_HASH, ZT_MAX_GWMACS, struct zt_dev_key, __u32);
} zt_gwmacs SEC(".maps");

/* First-fragment verdicts; full table = fail closed. */
struct {
	ZT_MAP(BPF_MAP_TYPE_HASH, 4096, struct zt_frag_key, struct zt_frag_val);
} zt_frags SEC(".maps");

/* Flows the policy allowed (struct zt_flow_key). Not LRU: a full table fails closed for new flows
 * (flow_table_full) and never evicts a device's established flows; the agent deletes expired ones. */
struct {
	ZT_MAP(BPF_MAP_TYPE_HASH, 65536, struct zt_flow_key, struct zt_flow_val);
} zt_flows SEC(".maps");

/* zt_devstats_stride is the zt_devstats entries per CPU (max devices + 1), and the length of each
 * row of zt_flow_count; the loader sets it. */
volatile const __u32 zt_devstats_stride = 0;

/* Flows each device holds in zt_flows, in two rows of zt_devstats_stride entries by dev_id: the
 * flows its own rules opened, then those its from: rules did (zt_flow_count_of). A device at its
 * quota (zt_flow_quota) of either opens no new flow of that kind, so that no device takes the
 * whole table, and no flood toward a device stops it from opening its own. */
struct {
	ZT_MAP(BPF_MAP_TYPE_ARRAY, 1, __u32, __u32);
} zt_flow_count SEC(".maps");

/* Frames and bytes by (direction, verdict, reason). */
struct {
	/* The product in parentheses: clang-format reads it as a pointer declaration otherwise. */
	ZT_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, (ZT_DIR_MAX * ZT_V_MAX * ZT_R_MAX), __u32, struct zt_counter);
} zt_counters SEC(".maps");

/* Per-device counters: one row of zt_devstats_stride entries per possible CPU, index
 * cpu * zt_devstats_stride + dev_id (dev_id 0 unused). A plain array laid out CPU-major rather
 * than a per-CPU array: the verifier inlines the lookup into an address computed from the index,
 * so charging a device costs one memory access where a per-CPU array needs two dependent ones
 * (its table of per-entry pointers, then the value); with a million devices both miss the cache.
 * CPU-major keeps each CPU's entries apart (two CPUs share a cache line at most where one row
 * ends and the next begins). The loader sets max_entries to possible CPUs * zt_devstats_stride.
 * No device has dev_id 0: row 0's entry 0 is the agent's (maps/devstats.go). */
struct {
	ZT_MAP(BPF_MAP_TYPE_ARRAY, 1, __u32, struct zt_dev_stats);
} zt_devstats SEC(".maps");

struct {
	ZT_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, 1, __u32, struct zt_event_stats);
} zt_evstats SEC(".maps");

/* Event budgets, a direct-mapped table indexed by a hash of (device, reason): an array lookup
 * (inlined by the verifier, no hash walk) on every frame that could emit an event; a flood of
 * keys cannot exhaust it. Capacity: a power of two (the loader sets it and zt_event_limit_mask). */
struct {
	ZT_MAP(BPF_MAP_TYPE_ARRAY, 4096, __u32, struct zt_limit_slot);
} zt_event_limit SEC(".maps");

/* The clock cache of zt_now, per CPU. */
struct {
	ZT_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, 1, __u32, struct zt_clock);
} zt_clock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} zt_events SEC(".maps");

/* Inner map key/value types are reached only through pointers in the map definitions above, so
 * clang would emit them as forward declarations. These unused pointers (the bpf2go idiom) make it
 * emit the full types, which both the loader and bpf2go -type need. */
const struct zt_dev_key *zt_btf_dev_key __attribute__((unused));
const struct zt_dev_rec *zt_btf_dev_rec __attribute__((unused));
const struct zt_addr_key *zt_btf_addr_key __attribute__((unused));
const struct zt_addr_val *zt_btf_addr_val __attribute__((unused));
const struct zt_prefix_key *zt_btf_prefix_key __attribute__((unused));
const struct zt_prefix_val *zt_btf_prefix_val __attribute__((unused));
const struct zt_rule_key *zt_btf_rule_key __attribute__((unused));
const struct zt_rule_val *zt_btf_rule_val __attribute__((unused));
const struct zt_event *zt_btf_event __attribute__((unused));
const struct zt_flow_key *zt_btf_flow_key __attribute__((unused));
const struct zt_flow_val *zt_btf_flow_val __attribute__((unused));
const enum zt_flow_flags *zt_btf_flow_flags __attribute__((unused));
const enum zt_dir *zt_btf_dir __attribute__((unused));
const enum zt_flow_kind *zt_btf_flow_kind __attribute__((unused));
const enum zt_verdict *zt_btf_verdict __attribute__((unused));
const enum zt_reason *zt_btf_reason __attribute__((unused));
const enum zt_dev_flags *zt_btf_dev_flags __attribute__((unused));
const enum zt_config_flags *zt_btf_config_flags __attribute__((unused));
const enum zt_sel_kind *zt_btf_sel_kind __attribute__((unused));
const enum zt_rule_flags *zt_btf_rule_flags __attribute__((unused));
const enum zt_addr_kind *zt_btf_addr_kind __attribute__((unused));

#endif
