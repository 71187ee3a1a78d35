package maps

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/policy"
)

// slotState is what a frame starting now would use: the active slot and its inner map ids.
type slotState struct {
	slot uint32
	ids  [numKinds]ebpf.MapID
}

// readSlot reads zt_active and the inner map ids of that slot. ErrNoPolicy if the slot holds no
// maps (nothing applied yet).
func (m *Maps) readSlot() (slotState, error) {
	var st slotState
	slot, err := m.activeSlot()
	if err != nil {
		return st, err
	}
	st.slot = slot
	for k := range numKinds {
		var id uint32
		err := m.outer[k].Lookup(slot, &id)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return st, ErrNoPolicy
		}
		if err != nil {
			return st, fmt.Errorf("read %s[%d]: %w", kindNames[k], slot, err)
		}
		st.ids[k] = ebpf.MapID(id)
	}
	return st, nil
}

// ActiveRevision returns the revision the datapath enforces, or ErrNoPolicy.
func (m *Maps) ActiveRevision() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.readSlot()
	if err != nil {
		return 0, fmt.Errorf("active revision: %w", err)
	}
	var cfg bpf.Config
	if err := m.objs.ZtCfg.Lookup(st.slot, &cfg); err != nil {
		return 0, fmt.Errorf("active revision: read zt_cfg[%d]: %w", st.slot, err)
	}
	return cfg.Revision, nil
}

// ReadActive reads the active policy back from the kernel: exactly what frames are decided by.
// Revision and Config come from zt_cfg; the report-only name maps are nil. It is how a restarted
// agent learns what is enforced, and how tests prove that Apply wrote exactly the snapshot.
// Returns ErrNoPolicy before the first Apply.
func (m *Maps) ReadActive() (*policy.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := readStable(m, m.readSlotContents)
	if err != nil {
		return nil, fmt.Errorf("read active policy: %w", err)
	}
	return s, nil
}

var errSlotChanged = errors.New("the active slot changed while reading it (concurrent apply)")

// readStable runs read on the active slot until the slot is the same before and after: another
// process may swap while we read. m.mu is held.
func readStable[T any](m *Maps, read func(slotState) (T, error)) (T, error) {
	var zero T
	var err error
	for range 5 {
		var st slotState
		if st, err = m.readSlot(); err != nil {
			return zero, err
		}
		var v T
		v, err = read(st)
		if errors.Is(err, ebpf.ErrKeyNotExist) || errors.Is(err, errSlotChanged) {
			continue // an inner map was released under us: a swap happened
		}
		if err != nil {
			return zero, err
		}
		after, err2 := m.readSlot()
		if err2 == nil && after == st {
			return v, nil
		}
		err = errSlotChanged
	}
	return zero, err
}

func (m *Maps) readSlotContents(st slotState) (*policy.Snapshot, error) {
	s := &policy.Snapshot{}
	if err := m.objs.ZtCfg.Lookup(st.slot, &s.Config); err != nil {
		return nil, fmt.Errorf("read zt_cfg[%d]: %w", st.slot, err)
	}
	s.Revision = s.Config.Revision
	var inner [numKinds]*ebpf.Map
	defer closeAll(inner[:])
	for k := range numKinds {
		mp, err := ebpf.NewMapFromID(st.ids[k])
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, errSlotChanged
			}
			return nil, fmt.Errorf("open %s[%d] (map id %d): %w", kindNames[k], st.slot, st.ids[k], err)
		}
		inner[k] = mp
	}
	var err error
	if s.Devices, err = readAll[bpf.DevKey, bpf.DevRec](inner[kDevices]); err != nil {
		return nil, fmt.Errorf("read %s: %w", innerNames[kDevices], err)
	}
	if s.Addrs, err = readAll[bpf.AddrKey, bpf.AddrVal](inner[kAddrs]); err != nil {
		return nil, fmt.Errorf("read %s: %w", innerNames[kAddrs], err)
	}
	if s.Prefixes, err = readAll[bpf.PrefixKey, bpf.PrefixVal](inner[kPrefixes]); err != nil {
		return nil, fmt.Errorf("read %s: %w", innerNames[kPrefixes], err)
	}
	if s.Rules, err = readAll[bpf.RuleKey, bpf.RuleVal](inner[kRules]); err != nil {
		return nil, fmt.Errorf("read %s: %w", innerNames[kRules], err)
	}
	return s, nil
}

func readAll[K comparable, V any](mp *ebpf.Map) (map[K]V, error) {
	out := make(map[K]V, mp.MaxEntries())
	var (
		k K
		v V
	)
	it := mp.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	return out, it.Err()
}

// Counters returns the frame and byte counters by verdict and reason, summed over CPUs and both
// directions.
func (m *Maps) Counters() ([bpf.NumVerdicts][bpf.NumReasons]bpf.Counter, error) {
	var out [bpf.NumVerdicts][bpf.NumReasons]bpf.Counter
	all, err := m.DirCounters()
	for _, dir := range all {
		for v := range dir {
			for r, c := range dir[v] {
				out[v][r].Packets += c.Packets
				out[v][r].Bytes += c.Bytes
			}
		}
	}
	return out, err
}

// DirCounters returns the frame and byte counters by direction, verdict and reason, summed over CPUs.
func (m *Maps) DirCounters() ([bpf.NumDirs][bpf.NumVerdicts][bpf.NumReasons]bpf.Counter, error) {
	var out [bpf.NumDirs][bpf.NumVerdicts][bpf.NumReasons]bpf.Counter
	var per []bpf.Counter
	for d := range bpf.NumDirs {
		for v := range bpf.NumVerdicts {
			for r := range bpf.NumReasons {
				idx := bpf.CounterIndex(bpf.Dir(d), bpf.Verdict(v), bpf.Reason(r))
				if err := m.objs.ZtCounters.Lookup(idx, &per); err != nil {
					return out, fmt.Errorf("read zt_counters[%d]: %w", idx, err)
				}
				for _, c := range per {
					out[d][v][r].Packets += c.Packets
					out[d][v][r].Bytes += c.Bytes
				}
			}
		}
	}
	return out, nil
}

// EventStats returns the event counters (emitted, lost, suppressed), summed over CPUs.
func (m *Maps) EventStats() (bpf.EventStats, error) {
	var per []bpf.EventStats
	if err := m.objs.ZtEvstats.Lookup(uint32(0), &per); err != nil {
		return bpf.EventStats{}, fmt.Errorf("read zt_evstats: %w", err)
	}
	var s bpf.EventStats
	for _, p := range per {
		s.Emitted += p.Emitted
		s.Lost += p.Lost
		s.Suppressed += p.Suppressed
	}
	return s, nil
}

// MapUsage is the fill level of one map.
type MapUsage struct {
	Map      string
	Entries  int
	Capacity int
}

// Usage returns the fill level of the maps that can fill up: the four policy maps of the active
// revision (against lim, as Apply checks them) and the fragment and flow tables.
func (m *Maps) Usage(lim Limits) ([]MapUsage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.readSlot()
	if err != nil && !errors.Is(err, ErrNoPolicy) {
		return nil, fmt.Errorf("usage: %w", err)
	}
	active := err == nil
	caps := [numKinds]int{lim.Devices, lim.Addrs, lim.Prefixes, lim.Rules}
	var out []MapUsage
	for k := range numKinds {
		n := 0
		if active {
			if n, err = innerEntries(st.ids[k]); err != nil {
				return nil, fmt.Errorf("usage: %s: %w", kindNames[k], err)
			}
		}
		out = append(out, MapUsage{Map: kindNames[k], Entries: n, Capacity: caps[k]})
	}
	tables, err := m.tableUsage()
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return append(out, tables...), nil
}

// TableUsage returns the fill level of the datapath's own tables (the fragment and flow tables),
// the part of Usage that does not depend on the policy. Unlike Usage it opens no map by id, so
// it needs no CAP_SYS_ADMIN.
func (m *Maps) TableUsage() ([]MapUsage, error) {
	out, err := m.tableUsage()
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return out, nil
}

func (m *Maps) tableUsage() ([]MapUsage, error) {
	// zt_event_limit is a fixed table of budget slots that never fills (keys share slots), so it
	// has no fill level to report.
	frags, err := countKeys(m.objs.ZtFrags)
	if err != nil {
		return nil, fmt.Errorf("count %s: %w", bpf.ZtgateMapZtFrags, err)
	}
	flows := 0
	if err := m.walkFlows(func(*bpf.FlowKey, *bpf.FlowVal) { flows++ }); err != nil {
		return nil, fmt.Errorf("count %s: %w", bpf.ZtgateMapZtFlows, err)
	}
	return []MapUsage{
		{Map: bpf.ZtgateMapZtFrags, Entries: frags, Capacity: int(m.objs.ZtFrags.MaxEntries())},
		{Map: bpf.ZtgateMapZtFlows, Entries: flows, Capacity: int(m.objs.ZtFlows.MaxEntries())},
	}, nil
}

// PolicyUsage is the fill level of the policy maps when they hold s (the active snapshot),
// against lim: what Usage reads from the kernel, computed without opening the inner maps.
func PolicyUsage(s *policy.Snapshot, lim Limits) []MapUsage {
	var n [numKinds]int
	if s != nil {
		n = [numKinds]int{len(s.Devices), len(s.Addrs), len(s.Prefixes), len(s.Rules)}
	}
	caps := [numKinds]int{lim.Devices, lim.Addrs, lim.Prefixes, lim.Rules}
	out := make([]MapUsage, 0, numKinds)
	for k := range numKinds {
		out = append(out, MapUsage{Map: kindNames[k], Entries: n[k], Capacity: caps[k]})
	}
	return out
}

// innerEntries counts the entries of an active inner map by walking its keys: ApplyDelta
// creates inner maps with room to grow, so max_entries is not the count. No one writes an
// active inner map, so the walk is exact.
func innerEntries(id ebpf.MapID) (int, error) {
	mp, err := ebpf.NewMapFromID(id)
	if err != nil {
		return 0, fmt.Errorf("open map id %d: %w", id, err)
	}
	defer mp.Close()
	return countKeys(mp)
}

// countKeys walks the keys of a hash map (bounded by its capacity: the program deletes entries
// concurrently, and a deleted cursor key restarts the walk).
func countKeys(mp *ebpf.Map) (int, error) {
	n := 0
	key, err := mp.NextKeyBytes(nil)
	for err == nil && key != nil && n < int(mp.MaxEntries()) {
		n++
		key, err = mp.NextKeyBytes(key)
	}
	return n, err
}
