/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* structs.h: map keys/values and the event record. Go gets these through bpf2go -type;
 * never copy them by hand. Addresses are 16 bytes, IPv4 as ::ffff:a.b.c.d, network order. */
#ifndef ZT_STRUCTS_H
#define ZT_STRUCTS_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include "consts.h"

struct zt_in6 {
	__u8 b[16];
};

/* devices[slot]: source MAC -> everything a frame of that device needs (one cold lookup). */
struct zt_dev_key {
	__u8 mac[ETH_ALEN];
	__u16 pad;
};

struct zt_dev_rec {
	__u32 dev_id;	  /* stable across revisions: index of dev_stats, events */
	__u32 ruleset;	  /* rule set id (device rules + segment rules), shared by identical lists */
	__u32 in_ruleset; /* rule set id of the from: rules (toward the device), matched on the source */
	__u32 ifindex;	  /* gateway port the device must arrive on; 0 = any */
	__u16 segment;	  /* segment id; 0 = none */
	__u16 vlan;	  /* VID the device's frames carry; 0 = untagged (or priority-tagged) */
	__u16 flags;	  /* enum zt_dev_flags */
	__u8 n_v4;	  /* used entries of v4 */
	__u8 n_v6;	  /* used entries of v6 */
	__be32 v4[ZT_MAX_V4];
	struct zt_in6 v6[ZT_MAX_V6];
};

/* addrs[slot]: destination address bound to a device -> its identity, for device/segment rules. */
struct zt_addr_key {
	struct zt_in6 addr;
};

struct zt_addr_val {
	__u32 dev_id;
	__u16 segment;
	__u8 kind; /* enum zt_addr_kind */
	__u8 pad;
	__u32 ruleset;	  /* the device's zt_dev_rec.ruleset, to re-decide a flow it opened */
	__u32 in_ruleset; /* the device's zt_dev_rec.in_ruleset, to re-decide a flow opened toward it */
	__u16 flags;	  /* the device's zt_dev_rec.flags */
	__u16 pad2;
};

/* prefixes[slot]: LPM trie (rule set, destination prefix) -> prefix group. The compiler closes
 * each group over every enclosing prefix, so the longest match carries all rules that apply. */
struct zt_prefix_key {
	__u32 prefixlen; /* 32 (rule set) + 96 + v4 length, or 32 + v6 length */
	__u32 ruleset;	 /* always matched on all 32 bits */
	struct zt_in6 addr;
};

struct zt_prefix_val {
	__u32 group;
};

/* rules[slot]: (rule set, selector, protocol) -> allowed destination port ranges. */
struct zt_rule_key {
	__u32 ruleset;
	__u32 sel_id;
	__u8 sel_kind; /* enum zt_sel_kind */
	__u8 proto;    /* IP protocol number or ZT_PROTO_ANY */
	__u16 pad;
};

struct zt_port_range {
	__u16 lo;
	__u16 hi;
};

struct zt_rule_val {
	__u16 flags; /* enum zt_rule_flags */
	__u16 n;     /* used entries of ranges, sorted, merged */
	struct zt_port_range ranges[ZT_MAX_PORT_RANGES];
};

struct zt_mac {
	__u8 b[ETH_ALEN];
};

/* config[slot]: policy-wide settings of one revision. */
struct zt_config {
	__u64 revision;
	__u32 quarantine_ruleset; /* rule set of quarantined devices */
	__u16 flags;		  /* enum zt_config_flags */
	__u8 n_gw4;
	__u8 n_gw6;
	__be32 gw4[ZT_MAX_GW];
	struct zt_in6 gw6[ZT_MAX_GW];
	struct zt_mac gwmac[ZT_MAX_GW]; /* MACs frames to the gateway may carry beyond zt_gwmacs (routers) */
	__u8 n_gwmac;
	__u8 pad[7];
};

/* frags: first-fragment verdicts, keyed by datagram. */
struct zt_frag_key {
	struct zt_in6 saddr;
	struct zt_in6 daddr;
	__u32 id;    /* IPv4 ID (16 bits) or IPv6 fragment identification */
	__u8 proto;  /* IPv4 protocol; 0 for IPv6 */
	__u8 family; /* 4 or 6 */
	__u8 dir;    /* enum zt_dir: a datagram from a device and one toward a device are apart */
	__u8 pad;
};

struct zt_frag_val {
	__u64 ts; /* when the first fragment passed (zt_now) */
	__u32 dev_id;
	__u32 covered; /* payload bytes (after the IP headers) the first fragment carried */
};

/* flows: connections the policy allowed, keyed by their two endpoints in a fixed order (the
 * lower (address, port) first: zt_flow_key_of), so that both directions and an ICMP error quoting
 * either find one entry. Ports are TCP/UDP ports; both of an ICMP echo's are its identifier, and
 * echo says which endpoint asks, so that a request is never taken for a reply. */
struct zt_flow_key {
	struct zt_in6 a;
	struct zt_in6 b;
	__u16 aport;
	__u16 bport;
	__u8 proto;
	__u8 echo; /* ICMP echo: ZT_ECHO_A_ASKS or ZT_ECHO_B_ASKS; 0 for TCP and UDP */
	__u8 pad[2];
};

struct zt_flow_val {
	__u64 ts;	/* zt_now of the last packet either way */
	__u64 revision; /* policy revision that last allowed the flow */
	__u32 dev_id;	/* device charged for the flow (zt_flow_count) */
	__u8 opener;	/* ZT_FLOW_A_OPENED or ZT_FLOW_B_OPENED: which endpoint sent the first packet */
	__u8 by;	/* ZT_FLOW_OUT: the opener's rules allowed it; ZT_FLOW_IN: the responder's from: rules */
	__u8 replied;	/* the responder sent on it: it lives its protocol's lifetime, else zt_flow_other_ns */
	__u8 pad;
};

/* counters: per-CPU, index (dir * ZT_V_MAX + verdict) * ZT_R_MAX + reason. */
struct zt_counter {
	__u64 packets;
	__u64 bytes;
};

/* zt_devstats entry: one CPU's counters of one device (bpf/maps.h). Counted only after identity
 * and source checks passed. */
struct zt_dev_stats {
	__u64 packets[ZT_V_MAX]; /* frames from the device, by verdict */
	__u64 bytes[ZT_V_MAX];
	__u64 in_packets[ZT_V_MAX]; /* frames toward the device, by verdict */
	__u64 in_bytes[ZT_V_MAX];
	__u64 last_seen; /* zt_now of the last counted frame */
};

/* event_stats: per-CPU, single entry. */
struct zt_event_stats {
	__u64 emitted;	  /* events written into the ring buffer */
	__u64 lost;	  /* ring buffer full: reservation failed */
	__u64 suppressed; /* over the per-(device, reason) event budget */
};

/* event_limit: one budget window per slot. A (device, reason) uses slot zt_limit_index(dev_id,
 * reason) or its neighbour, whichever is its own or free; when both hold other keys' open
 * windows it shares the first one's budget (fewer events, never more). */
struct zt_limit_slot {
	__u32 dev_id; /* the key that owns the slot (zt_limit_owns) */
	__u32 reason;
	__u64 window_start; /* zt_now when the window opened */
	__u64 count;	    /* events granted in the window */
};

/* zt_clock: per CPU, the coarse time read in the current jiffy (see zt_now). */
struct zt_clock {
	__u64 jiffies; /* bpf_jiffies64 when ns was read */
	__u64 ns;      /* bpf_ktime_get_coarse_ns then */
};

/* events: one record per sampled drop or audit. */
struct zt_event {
	__u64 ts;	 /* zt_now (CLOCK_MONOTONIC_COARSE) when the frame was decided */
	__u32 dev_id;	 /* ZT_NO_DEVICE when the source is not identified */
	__u32 ifindex;	 /* the port the frame came in on (from a device) or was leaving by (toward one) */
	__u64 revision;	 /* policy revision that decided */
	__u8 verdict;	 /* enum zt_verdict */
	__u8 reason;	 /* enum zt_reason */
	__u16 frame_len; /* bytes of the frame */
	__u16 cap_len;	 /* bytes copied into data */
	__u8 dir;	 /* enum zt_dir */
	__u8 pad;
	__u8 data[ZT_EVENT_CAPTURE];
};

#endif
