package maps

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
)

// IP protocol numbers of the flow table's lifetimes.
const (
	protoTCP = 6
	protoUDP = 17
)

// FlowLifetimes are the idle lifetimes of flows by protocol: loader.Config's FlowTCP, FlowUDP
// and FlowOther (ICMP echo), as the datapath was loaded with.
type FlowLifetimes struct {
	TCP, UDP, Other time.Duration
}

// of is the lifetime of a flow of IP protocol proto, as zt_flow_timeout chooses it.
func (l FlowLifetimes) of(proto uint8) time.Duration {
	switch proto {
	case protoTCP:
		return l.TCP
	case protoUDP:
		return l.UDP
	}
	return l.Other
}

// Shortest is the shortest of the three lifetimes.
func (l FlowLifetimes) Shortest() time.Duration { return min(l.TCP, l.UDP, l.Other) }

func (l FlowLifetimes) validate() error {
	if l.TCP <= 0 || l.UDP <= 0 || l.Other <= 0 {
		return fmt.Errorf("flow lifetimes tcp %v, udp %v, other %v: each must be positive", l.TCP, l.UDP, l.Other)
	}
	return nil
}

// Now is the current time on the clock of the datapath's timestamps (flows, fragments, last
// seen): CLOCK_MONOTONIC in nanoseconds. The datapath's own clock, zt_now, is the coarse variant
// and trails it by a couple of timer ticks.
func Now() (uint64, error) { return monotonicNow() }

// elapsed is how long before now the datapath timestamp then was; a timestamp ahead of now
// (another CPU's clock, a caller's stale now) reads as 0, as zt_elapsed does.
func elapsed(now, then uint64) time.Duration {
	d := int64(now - then)
	if d < 0 {
		return 0
	}
	return time.Duration(d)
}

// SweepFlows deletes the flows of zt_flows idle for longer than their protocol's lifetime in
// lim plus sweepSlack, as of now (Now, or a later time to expire everything), then sets each
// device's count in zt_flow_count to the flows it holds. It returns how many flows it deleted.
//
// The datapath deletes an expired flow itself when a packet finds it; the sweeper removes the
// ones no packet comes back for. Userspace has no atomic add on a map value, so rather than
// decrement, the sweep recounts: a flow the datapath opens or deletes between the walk and the
// write of a count is miscounted until the next sweep (a device may hold a flow more than its
// quota, or be refused one, for that long), and no error outlives a sweep.
func (m *Maps) SweepFlows(now uint64, lim FlowLifetimes) (int, error) {
	if err := lim.validate(); err != nil {
		return 0, fmt.Errorf("sweep %s: %w", bpf.ZtgateMapZtFlows, err)
	}
	mp := m.objs.ZtFlows
	expired := func(k *bpf.FlowKey, v *bpf.FlowVal) bool {
		life := lim.of(k.Proto)
		if v.Replied == 0 {
			life = lim.Other // as zt_flow_timeout: a flow nobody answered lives as an echo's
		}
		return elapsed(now, v.Ts) > life+sweepSlack
	}
	var keys []bpf.FlowKey
	seen := make(map[bpf.FlowKey]bool)
	live := map[uint32]uint32{} // flows each device holds after the sweep, by zt_flow_count index
	err := m.walkFlows(func(k *bpf.FlowKey, v *bpf.FlowVal) {
		if seen[*k] {
			return
		}
		seen[*k] = true
		if expired(k, v) {
			keys = append(keys, *k)
		} else {
			live[m.countIndex(v.DevId, v.By)]++
		}
	})
	if err != nil {
		return 0, fmt.Errorf("sweep %s: %w", bpf.ZtgateMapZtFlows, err)
	}

	n := 0
	var v bpf.FlowVal
	for i := range keys {
		k := &keys[i]
		if err := mp.Lookup(k, &v); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue // the datapath deleted it and charged it back
			}
			return n, fmt.Errorf("sweep %s: %w", bpf.ZtgateMapZtFlows, err)
		}
		if !expired(k, &v) {
			live[m.countIndex(v.DevId, v.By)]++ // re-opened meanwhile
			continue
		}
		if err := mp.Delete(k); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return n, fmt.Errorf("sweep %s: %w", bpf.ZtgateMapZtFlows, err)
		}
		n++
	}
	if err := m.recountFlows(live); err != nil {
		return n, fmt.Errorf("sweep %s: %w", bpf.ZtgateMapZtFlows, err)
	}
	return n, nil
}

// recountFlows sets zt_flow_count to live (flows by zt_flow_count index; 0 for one not in it),
// writing only the counts that differ.
func (m *Maps) recountFlows(live map[uint32]uint32) error {
	counts := m.objs.ZtFlowCount
	var (
		id, c uint32
		ids   []uint32
		vals  []uint32
	)
	it := counts.Iterate()
	for it.Next(&id, &c) {
		if c != live[id] {
			ids, vals = append(ids, id), append(vals, live[id])
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s: %w", bpf.ZtgateMapZtFlowCount, err)
	}
	for i, id := range ids {
		if err := counts.Update(id, vals[i], ebpf.UpdateExist); err != nil {
			return fmt.Errorf("write %s[%d]: %w", bpf.ZtgateMapZtFlowCount, id, err)
		}
	}
	return nil
}

// flowChunk is how many flows one batch lookup reads.
const flowChunk = 4096

// walkFlows calls fn for each entry of zt_flows, in batches where the kernel has them. The
// datapath adds and deletes entries meanwhile: a walk sees each entry present throughout at
// least once, and at most the table's capacity of entries in all.
func (m *Maps) walkFlows(fn func(*bpf.FlowKey, *bpf.FlowVal)) error {
	mp := m.objs.ZtFlows
	capacity := int(mp.MaxEntries())
	keys := make([]bpf.FlowKey, min(flowChunk, capacity))
	vals := make([]bpf.FlowVal, len(keys))
	var cursor ebpf.MapBatchCursor
	seen := 0
	for seen < capacity {
		n, err := mp.BatchLookup(&cursor, keys, vals, nil)
		for i := range min(n, capacity-seen) {
			fn(&keys[i], &vals[i])
		}
		seen += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) && seen == 0 {
			return m.iterateFlows(fn)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// iterateFlows is walkFlows one entry at a time, for kernels without batch lookups of hash maps.
func (m *Maps) iterateFlows(fn func(*bpf.FlowKey, *bpf.FlowVal)) error {
	mp := m.objs.ZtFlows
	var (
		k bpf.FlowKey
		v bpf.FlowVal
	)
	n := 0
	it := mp.Iterate()
	for n < int(mp.MaxEntries()) && it.Next(&k, &v) {
		fn(&k, &v)
		n++
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return err
	}
	return nil
}

// DeviceFlows is how many flows of zt_flows are charged to one device.
type DeviceFlows struct {
	DevID uint32
	Flows int
}

// FlowStats is the fill level of the flow table.
type FlowStats struct {
	Entries  int           // flows in zt_flows
	Capacity int           // its capacity (loader.Config.FlowEntries)
	Devices  int           // devices charged at least one flow
	Top      []DeviceFlows // the devices with the most flows, most first (ties: lower id first)
}

// FlowStats counts the flows of zt_flows and reads the per-device counts of zt_flow_count,
// returning at most top devices (0: none) in Top.
func (m *Maps) FlowStats(top int) (FlowStats, error) {
	st := FlowStats{Capacity: int(m.objs.ZtFlows.MaxEntries())}
	if err := m.walkFlows(func(*bpf.FlowKey, *bpf.FlowVal) { st.Entries++ }); err != nil {
		return st, fmt.Errorf("count %s: %w", bpf.ZtgateMapZtFlows, err)
	}
	counts, err := m.FlowCounts()
	if err != nil {
		return st, err
	}
	st.Devices = len(counts)
	all := make([]DeviceFlows, 0, len(counts))
	for id, n := range counts {
		all = append(all, DeviceFlows{DevID: id, Flows: n})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Flows != all[j].Flows {
			return all[i].Flows > all[j].Flows
		}
		return all[i].DevID < all[j].DevID
	})
	if top > 0 {
		st.Top = all[:min(top, len(all))]
	}
	return st, nil
}

// countIndex is the zt_flow_count index of device devID's flows allowed by `by` (bpf.FlowOut or
// bpf.FlowIn), as zt_flow_count_of computes it: two rows of ids.
func (m *Maps) countIndex(devID uint32, by uint8) uint32 {
	if by == bpf.FlowIn {
		return devID + m.objs.ZtFlowCount.MaxEntries()/2
	}
	return devID
}

// FlowCounts returns the flows charged to each device that holds any (zt_flow_count, both of its
// rows), by dev_id.
func (m *Maps) FlowCounts() (map[uint32]int, error) {
	mp := m.objs.ZtFlowCount
	size := int(mp.MaxEntries())
	stride := uint32(size / 2)
	keys := make([]uint32, min(flowChunk, size))
	vals := make([]uint32, len(keys))
	out := map[uint32]int{}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := mp.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if id := keys[i] % stride; vals[i] != 0 && id != noDevID {
				out[id] += int(vals[i])
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", bpf.ZtgateMapZtFlowCount, err)
		}
	}
}

// Flow is one entry of the flow table, decoded and oriented from the endpoint that opened it.
type Flow struct {
	Opener    netip.AddrPort // the endpoint that sent the first packet (ICMP echo: its identifier as port)
	Responder netip.AddrPort // the other endpoint
	Proto     uint8          // IP protocol
	Inbound   bool           // allowed by the responder device's from: rules (else by the opener's rules)
	DevID     uint32         // the device charged for it
	Revision  uint64         // the policy revision that last allowed it
	Idle      time.Duration  // since its last packet, either way
	Key       bpf.FlowKey    // the raw key
}

// Flows lists the flows of zt_flows, at most max of them (0: all), with their idle time as of
// now (Now). The order is the table's.
func (m *Maps) Flows(now uint64, max int) ([]Flow, error) {
	var out []Flow
	err := m.walkFlows(func(k *bpf.FlowKey, v *bpf.FlowVal) {
		if max > 0 && len(out) >= max {
			return
		}
		out = append(out, decodeFlow(now, k, v))
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", bpf.ZtgateMapZtFlows, err)
	}
	return out, nil
}

// decodeFlow decodes one entry of zt_flows.
func decodeFlow(now uint64, k *bpf.FlowKey, v *bpf.FlowVal) Flow {
	a := netip.AddrPortFrom(netip.AddrFrom16(k.A.B).Unmap(), k.Aport)
	b := netip.AddrPortFrom(netip.AddrFrom16(k.B.B).Unmap(), k.Bport)
	f := Flow{Opener: a, Responder: b, Proto: k.Proto, Inbound: v.By == bpf.FlowIn, DevID: v.DevId,
		Revision: v.Revision, Idle: elapsed(now, v.Ts), Key: *k}
	if v.Opener == bpf.FlowBOpened {
		f.Opener, f.Responder = b, a
	}
	return f
}

// clearFlows deletes the flows charged to the device ids fresh (ids the revision in force does not
// give these devices: a deleted device's, or never used) and sets their quota count to 0, so that a
// new device inherits neither a deleted one's flows nor its quota. No frame charges a fresh id
// before the revision that gives it is in force. The table is walked only when a fresh id still
// holds flows.
func (m *Maps) clearFlows(fresh []uint32) error {
	counts := m.objs.ZtFlowCount
	held := map[uint32]bool{}
	for _, id := range fresh {
		if int64(id) >= int64(counts.MaxEntries()/2) {
			continue
		}
		for _, by := range []uint8{bpf.FlowOut, bpf.FlowIn} {
			var c uint32
			if err := counts.Lookup(m.countIndex(id, by), &c); err != nil {
				return fmt.Errorf("read %s[%d]: %w", bpf.ZtgateMapZtFlowCount, id, err)
			}
			if c != 0 {
				held[id] = true
			}
		}
	}
	if len(held) == 0 {
		return nil
	}
	var keys []bpf.FlowKey
	if err := m.walkFlows(func(k *bpf.FlowKey, v *bpf.FlowVal) {
		if held[v.DevId] {
			keys = append(keys, *k)
		}
	}); err != nil {
		return fmt.Errorf("clear flows of new device ids: %w", err)
	}
	for i := range keys {
		if err := m.objs.ZtFlows.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear flows of new device ids: %w", err)
		}
	}
	for id := range held {
		for _, by := range []uint8{bpf.FlowOut, bpf.FlowIn} {
			if err := counts.Update(m.countIndex(id, by), uint32(0), ebpf.UpdateExist); err != nil {
				return fmt.Errorf("write %s[%d]: %w", bpf.ZtgateMapZtFlowCount, id, err)
			}
		}
	}
	return nil
}
