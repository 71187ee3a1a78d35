package maps

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/policy"
)

// batchChunk is the number of entries per BPF_MAP_UPDATE_BATCH call.
const batchChunk = 10000

// noDevID is ZT_NO_DEVICE: the dev_id of frames without an identified device.
const noDevID = 0

// Apply installs the snapshot s as the active policy, atomically for every frame.
//
// Why one frame sees exactly one revision. The policy lives in two slots: zt_cfg[slot] and
// outer[slot] of the four ARRAY_OF_MAPS zt_devices, zt_addrs, zt_prefixes and zt_rules, each
// entry an inner map holding one revision's entries. The XDP program reads zt_active once per
// frame and makes every policy lookup in that slot. XDP programs run inside an RCU read-side
// critical section, so once synchronize_rcu() has returned, no frame that could have read an
// older zt_active value is still running. The kernel calls synchronize_rcu() before returning
// from any update of a map-in-map (maybe_wait_bpf_programs() in kernel/bpf/syscall.c); writing
// zt_barrier[0], which the program never reads, is therefore a userspace RCU barrier.
//
// The protocol:
//  1. Check every capacity and the snapshot's consistency. A snapshot that does not fit is
//     rejected before any write (a *CapacityError names the map, the count and the capacity).
//  2. Read the active slot cur; the other slot is nxt = 1-cur. No frame reads nxt: after the
//     previous Apply flipped away from it, a barrier let every frame that had read it finish
//     (the first Apply of a process runs one barrier first, in case the previous process died
//     between its flip and its barrier).
//  3. Create fresh inner maps sized to the snapshot (max_entries = max(1, len)) from the inner
//     map templates, and fill them (batched). They are not reachable from the program yet.
//  4. Point outer[nxt] of all four maps at the fresh maps and write zt_cfg[nxt]. Still nothing
//     a frame can see: frames read slot cur.
//  5. Flip zt_active to nxt: a single 4-byte array write, the commit point. A frame reads
//     either the old value (and sees the old revision throughout) or the new one (and sees the
//     new revision throughout); a revision is never modified while it can be read.
//  6. Barrier: every frame that read cur has finished.
//  7. Park outer[cur] on empty placeholder maps and clear zt_cfg[cur]. The kernel drops the
//     outer map's reference to the old inner maps; this process closed its own descriptors in
//     step 4, so their memory is freed (after an RCU grace period).
//
// If anything fails before step 5 the running revision stays fully in force, the fresh maps are
// released, and the error is returned. An error after step 5 wraps ErrCommitted: the new
// revision is in force and only the release of the old slot failed (the next Apply retries it).
func (m *Maps) Apply(s *policy.Snapshot, lim Limits) error {
	if s == nil {
		return errors.New("apply: nil snapshot")
	}
	err := m.apply(s, lim)
	if err == nil || errors.Is(err, ErrCommitted) {
		s.Fresh = nil // in force: applying s again is no new step (see Snapshot.Fresh)
	}
	if err != nil {
		return fmt.Errorf("apply revision %d: %w", s.Revision, err)
	}
	return nil
}

// ApplyStats is where the time of the last successful Apply went.
type ApplyStats struct {
	Check   time.Duration // step 1: capacities and consistency
	Build   time.Duration // step 3: fresh inner maps created and filled
	Slot    time.Duration // step 4: outer[nxt] and zt_cfg[nxt] written
	Flip    time.Duration // step 5: zt_active written (the commit point)
	Barrier time.Duration // step 6: every frame that read the old slot has finished (plus step 2's barrier at a process's first Apply)
	Release time.Duration // step 7: old slot parked, its zt_cfg cleared
	Total   time.Duration
}

// LastApply returns the timings of the last successful Apply (zero before the first).
func (m *Maps) LastApply() ApplyStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

func (m *Maps) apply(s *policy.Snapshot, lim Limits) error {
	var st ApplyStats
	t0 := time.Now()
	lap := stopwatch(t0)
	// Step 1: everything that can reject the snapshot, before any write.
	if err := m.check(s, lim); err != nil {
		return err
	}
	cfg := s.Config
	cfg.Revision = s.Revision
	st.Check = lap()

	m.mu.Lock()
	defer m.mu.Unlock()
	// Step 2.
	cur, err := m.begin()
	if err != nil {
		return err
	}
	nxt := 1 - cur
	pre := lap() // the first Apply of a process runs a barrier first
	// No frame charges the ids the revision in force does not use: a new device starts at zero.
	// Before any write, so that a failure leaves the slots untouched.
	if err := m.prepareDevStats(s.Fresh, s.MaxDevID()); err != nil {
		return err
	}
	if m.incremental {
		return m.applyIncremental(s, &cfg, cur, &st, t0, pre, lap)
	}

	// Step 3. Our descriptors of the fresh maps are closed on return: once in outer[nxt], the
	// outer map holds them; on failure they are freed.
	fresh, err := m.build(s)
	defer closeAll(fresh[:])
	if err != nil {
		return err
	}
	st.Build = lap()

	// Step 4.
	if err := m.setSlot(nxt, fresh); err != nil {
		m.park(nxt) // release what was inserted; nxt is not read by any frame
		return err
	}
	if err := m.objs.ZtCfg.Update(nxt, &cfg, ebpf.UpdateAny); err != nil {
		m.park(nxt)
		return fmt.Errorf("write zt_cfg[%d]: %w", nxt, err)
	}
	st.Slot = lap()

	// Step 5: the commit point.
	if err := m.objs.ZtActive.Update(uint32(0), nxt, ebpf.UpdateAny); err != nil {
		m.park(nxt)
		return fmt.Errorf("flip zt_active to %d: %w", nxt, err)
	}
	st.Flip = lap()

	// Step 6.
	m.synced = false
	if err := m.barrier(); err != nil {
		return fmt.Errorf("%w; the old slot %d is kept until the next apply: %w", ErrCommitted, cur, err)
	}
	m.synced = true
	st.Barrier = lap() + pre

	// Step 7.
	if err := m.park(cur); err != nil {
		return fmt.Errorf("%w; releasing the old slot %d: %w", ErrCommitted, cur, err)
	}
	if err := m.objs.ZtCfg.Update(cur, &bpf.Config{}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("%w; clearing zt_cfg[%d]: %w", ErrCommitted, cur, err)
	}
	st.Release = lap()
	st.Total = time.Since(t0)
	m.stats = st
	return nil
}

// stopwatch returns a function that returns the time since its previous call (the first
// call: since t0).
func stopwatch(t0 time.Time) func() time.Duration {
	t := t0
	return func() time.Duration {
		now := time.Now()
		d := now.Sub(t)
		t = now
		return d
	}
}

// Check reports whether Apply would accept s under lim (a *CapacityError when it does not
// fit), without writing anything.
func (m *Maps) Check(s *policy.Snapshot, lim Limits) error {
	if s == nil {
		return errors.New("check: nil snapshot")
	}
	return m.check(s, lim)
}

// check validates s against lim and the datapath before any write.
func (m *Maps) check(s *policy.Snapshot, lim Limits) error {
	for _, c := range []struct {
		name     string
		n, limit int
	}{
		{bpf.ZtgateMapZtDevices, len(s.Devices), lim.Devices},
		{bpf.ZtgateMapZtAddrs, len(s.Addrs), lim.Addrs},
		{bpf.ZtgateMapZtPrefixes, len(s.Prefixes), lim.Prefixes},
		{bpf.ZtgateMapZtRules, len(s.Rules), lim.Rules},
	} {
		if c.n > c.limit {
			return &CapacityError{Map: c.name, Count: c.n, Capacity: c.limit}
		}
	}
	statsCap, err := m.devstatsCap()
	if err != nil {
		return err
	}
	if id := int(s.MaxDevID()); id > statsCap {
		return &CapacityError{Map: bpf.ZtgateMapZtDevstats, Count: id, Capacity: statsCap}
	}
	if s.Config.Revision != 0 && s.Config.Revision != s.Revision {
		return fmt.Errorf("config revision %d differs from the snapshot revision %d", s.Config.Revision, s.Revision)
	}
	for k, d := range s.Devices {
		if d.DevId == noDevID {
			return fmt.Errorf("device %x: dev_id 0 is reserved for frames without a device", k.Mac)
		}
		if k.Pad != 0 {
			return fmt.Errorf("device %x: key padding must be zero", k.Mac)
		}
	}
	for k := range s.Rules {
		if k.Pad != 0 {
			return fmt.Errorf("rule (ruleset %d, selector %d/%d, proto %d): key padding must be zero",
				k.Ruleset, k.SelKind, k.SelId, k.Proto)
		}
	}
	for k := range s.Prefixes {
		if k.Prefixlen < 32 || k.Prefixlen > 32+128 {
			return fmt.Errorf("prefix (ruleset %d): prefixlen %d outside 32..160", k.Ruleset, k.Prefixlen)
		}
	}
	return nil
}

// build creates and fills the inner maps of s. On error the maps created so far are returned
// too, for the caller to close.
func (m *Maps) build(s *policy.Snapshot) ([numKinds]*ebpf.Map, error) {
	var fresh [numKinds]*ebpf.Map
	sizes := [numKinds]int{len(s.Devices), len(s.Addrs), len(s.Prefixes), len(s.Rules)}
	for k := range numKinds {
		mp, err := m.newInner(k, sizes[k])
		if err != nil {
			return fresh, fmt.Errorf("create %s map of %d entries: %w", innerNames[k], sizes[k], err)
		}
		fresh[k] = mp
	}
	fills := [numKinds]func() error{
		kDevices:  func() error { return fill(m, kDevices, fresh[kDevices], s.Devices) },
		kAddrs:    func() error { return fill(m, kAddrs, fresh[kAddrs], s.Addrs) },
		kPrefixes: func() error { return fill(m, kPrefixes, fresh[kPrefixes], s.Prefixes) },
		kRules:    func() error { return fill(m, kRules, fresh[kRules], s.Rules) },
	}
	for k, f := range fills {
		if err := f(); err != nil {
			return fresh, fmt.Errorf("fill %s map: %w", innerNames[k], err)
		}
	}
	return fresh, nil
}

// fill writes src into the fresh map mp in batches, or one by one where the map type has no
// batch update (remembered per kind).
func fill[K comparable, V any](m *Maps, kind int, mp *ebpf.Map, src map[K]V) error {
	return fillExcept(m, kind, mp, src, nil)
}

// fillExcept is fill, leaving out the keys in skip.
func fillExcept[K comparable, V any](m *Maps, kind int, mp *ebpf.Map, src map[K]V, skip map[K]bool) error {
	keys := make([]K, 0, min(len(src), batchChunk))
	vals := make([]V, 0, cap(keys))
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		err := write(m, kind, mp, keys, vals)
		keys, vals = keys[:0], vals[:0]
		return err
	}
	for k, v := range src {
		if skip[k] {
			continue
		}
		keys = append(keys, k)
		vals = append(vals, v)
		if len(keys) == batchChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// update deletes del from mp one by one (deletes are few), then writes keys[i] = vals[i] in
// batches.
func update[K comparable, V any](m *Maps, kind int, mp *ebpf.Map, del, keys []K, vals []V) error {
	for i := range del {
		if err := mp.Delete(&del[i]); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
	}
	for i := 0; i < len(keys); i += batchChunk {
		j := min(len(keys), i+batchChunk)
		if err := write(m, kind, mp, keys[i:j], vals[i:j]); err != nil {
			return fmt.Errorf("update: %w", err)
		}
	}
	return nil
}

// write writes keys and vals into mp with one batch update, or one by one where the map type
// has no batch update (remembered per kind).
func write[K comparable, V any](m *Maps, kind int, mp *ebpf.Map, keys []K, vals []V) error {
	if !m.noBatch[kind] {
		_, err := mp.BatchUpdate(keys, vals, nil)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		m.noBatch[kind] = true
	}
	for i := range keys {
		if err := mp.Put(&keys[i], &vals[i]); err != nil {
			return err
		}
	}
	return nil
}

// park points outer[slot] of every policy map at the empty placeholders (dropping the kernel's
// references to whatever was there). Only for a slot no frame can read.
func (m *Maps) park(slot uint32) error {
	return m.setSlot(slot, m.empty)
}

// setSlot points outer[slot] of every policy map at inner. Every map-in-map update waits for
// an RCU grace period before returning; the four updates run concurrently so that they share
// one grace period instead of waiting for four in a row.
func (m *Maps) setSlot(slot uint32, inner [numKinds]*ebpf.Map) error {
	var wg sync.WaitGroup
	errs := make([]error, numKinds)
	for k := range numKinds {
		wg.Go(func() {
			if err := m.outer[k].Update(slot, inner[k], ebpf.UpdateAny); err != nil {
				errs[k] = fmt.Errorf("write %s[%d]: %w", kindNames[k], slot, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// barrier returns once every XDP run that started before it has finished (see Apply).
func (m *Maps) barrier() error {
	if err := m.objs.ZtBarrier.Update(uint32(0), m.barInr, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("rcu barrier (zt_barrier update): %w", err)
	}
	return nil
}

// begin is step 2 of Apply and ApplyDelta (m.mu held): it checks the maps are open, makes
// sure no frame is on the inactive slot (settle) and returns the active slot.
func (m *Maps) begin() (uint32, error) {
	if m.closed {
		return 0, errors.New("maps closed")
	}
	if err := m.settle(); err != nil {
		return 0, err
	}
	return m.activeSlot()
}

// activeSlot reads zt_active.
func (m *Maps) activeSlot() (uint32, error) {
	var slot uint32
	if err := m.objs.ZtActive.Lookup(uint32(0), &slot); err != nil {
		return 0, fmt.Errorf("read zt_active: %w", err)
	}
	return slot & 1, nil
}

func closeAll(ms []*ebpf.Map) {
	for _, mp := range ms {
		mp.Close()
	}
}
