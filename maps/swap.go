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

// Apply installs the snapshot s as the active policy, atomically for every frame (docs/maps.md).
// It rejects a snapshot that does not fit with a *CapacityError before any write; an error after
// the flip wraps ErrCommitted (s is in force, releasing the old slot failed).
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

// ApplyStats is where the time of the last successful Apply went (the steps of docs/maps.md).
type ApplyStats struct {
	Check time.Duration // step 1: capacities and consistency
	Build time.Duration // step 3: fresh inner maps created and filled
	Slot  time.Duration // step 4: outer[nxt] and zt_cfg[nxt] written
	Flip  time.Duration // step 5: zt_active written (the commit point)
	// Barrier is step 6: every frame that read the old slot has finished (plus step 2's
	// barrier at a process's first Apply).
	Barrier time.Duration
	Release time.Duration // step 7: old slot parked, its zt_cfg cleared
	Total   time.Duration
}

// LastApply returns the timings of the last successful Apply (zero before the first).
func (m *Maps) LastApply() ApplyStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// applyRun is one Apply or ApplyDelta under way (m.mu held): the active slot cur, the inactive
// slot nxt it writes, and where its time goes.
type applyRun struct {
	cur, nxt uint32
	st       ApplyStats
	t0       time.Time
	lap      func() time.Duration // the time since its previous call
	pre      time.Duration        // the barrier begin ran, if any
}

// transact runs what Apply and ApplyDelta share around their writes (steps 3 to 7, in write):
// check, which writes nothing; then, holding m.mu, ready (if not nil), step 2 (begin) and the
// counters of the fresh device ids. It keeps the stats of a run that succeeds.
func (m *Maps) transact(check, ready func() error, fresh []uint32, maxID uint32,
	write func(r *applyRun) error) error {
	r := applyRun{t0: time.Now()}
	r.lap = stopwatch(r.t0)
	if err := check(); err != nil {
		return err
	}
	r.st.Check = r.lap()

	m.mu.Lock()
	defer m.mu.Unlock()
	if ready != nil {
		if err := ready(); err != nil {
			return err
		}
	}
	cur, err := m.begin()
	if err != nil {
		return err
	}
	r.cur, r.nxt = cur, 1-cur
	r.pre = r.lap() // the first Apply of a process runs a barrier first
	// No frame charges the ids the revision in force does not use: a new device starts at zero,
	// with no flow and its whole quota.
	// Before any write, so that a failure leaves the slots untouched.
	if err := m.prepareDevStats(fresh, maxID); err != nil {
		return err
	}
	if err := m.clearFlows(fresh); err != nil {
		return err
	}
	if err := write(&r); err != nil {
		return err
	}
	r.st.Total = time.Since(r.t0)
	m.stats = r.st
	return nil
}

func (m *Maps) apply(s *policy.Snapshot, lim Limits) error {
	check := func() error { return m.check(s, lim) }
	return m.transact(check, nil, s.Fresh, s.MaxDevID(), func(r *applyRun) error {
		cfg := s.Config
		cfg.Revision = s.Revision
		if m.incremental {
			return m.applyIncremental(s, &cfg, r)
		}
		return m.applyFull(s, &cfg, r)
	})
}

// applyFull is steps 3 to 7 of Apply in the default mode: fresh inner maps for the whole
// snapshot, the old slot released.
func (m *Maps) applyFull(s *policy.Snapshot, cfg *bpf.Config, r *applyRun) error {
	// Step 3. Our descriptors of the fresh maps are closed on return: once in outer[nxt], the
	// outer map holds them; on failure they are freed.
	fresh, err := m.build(s)
	defer closeAll(fresh[:])
	if err != nil {
		return err
	}
	r.st.Build = r.lap()

	// Steps 4 and 5.
	if err := m.commit(r, fresh, allKinds, cfg); err != nil {
		m.park(r.nxt) // release what was inserted; nxt is not read by any frame
		return err
	}

	// Step 6.
	if err := m.flipBarrier(r, fmt.Sprintf("the old slot %d is kept until the next apply", r.cur)); err != nil {
		return err
	}

	// Step 7.
	if err := m.park(r.cur); err != nil {
		return fmt.Errorf("%w; releasing the old slot %d: %w", ErrCommitted, r.cur, err)
	}
	if err := m.objs.ZtCfg.Update(r.cur, &bpf.Config{}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("%w; clearing zt_cfg[%d]: %w", ErrCommitted, r.cur, err)
	}
	r.st.Release = r.lap()
	return nil
}

// commit is steps 4 and 5: outer[nxt] of the kinds marked in replace points at target,
// zt_cfg[nxt] is cfg, and the flip of zt_active to nxt commits them. On error nothing was
// flipped.
func (m *Maps) commit(r *applyRun, target [numKinds]*ebpf.Map, replace [numKinds]bool, cfg *bpf.Config) error {
	if err := m.setKinds(r.nxt, target, replace); err != nil {
		return err
	}
	if err := m.objs.ZtCfg.Update(r.nxt, cfg, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write zt_cfg[%d]: %w", r.nxt, err)
	}
	r.st.Slot = r.lap()
	// The commit point.
	if err := m.objs.ZtActive.Update(uint32(0), r.nxt, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("flip zt_active to %d: %w", r.nxt, err)
	}
	r.st.Flip = r.lap()
	return nil
}

// flipBarrier is step 6: the barrier after the flip. Should it fail, the error wraps
// ErrCommitted and says what is left (undone).
func (m *Maps) flipBarrier(r *applyRun, undone string) error {
	m.synced = false
	if err := m.barrier(); err != nil {
		return fmt.Errorf("%w; %s: %w", ErrCommitted, undone, err)
	}
	m.synced = true
	r.st.Barrier = r.lap() + r.pre
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
		{name: bpf.ZtgateMapZtDevices, n: len(s.Devices), limit: lim.Devices},
		{name: bpf.ZtgateMapZtAddrs, n: len(s.Addrs), limit: lim.Addrs},
		{name: bpf.ZtgateMapZtPrefixes, n: len(s.Prefixes), limit: lim.Prefixes},
		{name: bpf.ZtgateMapZtRules, n: len(s.Rules), limit: lim.Rules},
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
	fills := [numKinds]func(*ebpf.Map) error{
		kDevices:  func(mp *ebpf.Map) error { return fill(m, kDevices, mp, s.Devices) },
		kAddrs:    func(mp *ebpf.Map) error { return fill(m, kAddrs, mp, s.Addrs) },
		kPrefixes: func(mp *ebpf.Map) error { return fill(m, kPrefixes, mp, s.Prefixes) },
		kRules:    func(mp *ebpf.Map) error { return fill(m, kRules, mp, s.Rules) },
	}
	sizes := [numKinds]int{len(s.Devices), len(s.Addrs), len(s.Prefixes), len(s.Rules)}
	for k := range numKinds {
		mp, err := m.newFilled(k, sizes[k], fills[k])
		if err != nil {
			return fresh, err
		}
		fresh[k] = mp
	}
	return fresh, nil
}

// newFilled creates an inner map of kind k with room for n entries and fills it with fill.
func (m *Maps) newFilled(k, n int, fill func(mp *ebpf.Map) error) (*ebpf.Map, error) {
	mp, err := m.newInner(k, n)
	if err != nil {
		return nil, fmt.Errorf("create %s map of %d entries: %w", innerNames[k], n, err)
	}
	if err := fill(mp); err != nil {
		mp.Close()
		return nil, fmt.Errorf("fill %s map: %w", innerNames[k], err)
	}
	return mp, nil
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
	return m.setKinds(slot, m.empty, allKinds)
}

// allKinds marks every kind of policy map (for setKinds).
var allKinds = [numKinds]bool{true, true, true, true}

// setKinds points outer[slot] of the kinds marked in which at inner. Every map-in-map update
// waits for an RCU grace period before returning; the updates run concurrently so that they
// share one grace period instead of waiting for one each in a row.
func (m *Maps) setKinds(slot uint32, inner [numKinds]*ebpf.Map, which [numKinds]bool) error {
	var wg sync.WaitGroup
	errs := make([]error, numKinds)
	for k := range numKinds {
		if !which[k] {
			continue
		}
		wg.Go(func() {
			if err := m.outer[k].Update(slot, inner[k], ebpf.UpdateAny); err != nil {
				errs[k] = fmt.Errorf("write %s[%d]: %w", kindNames[k], slot, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// barrier returns once every XDP run that started before it has finished (docs/maps.md).
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
