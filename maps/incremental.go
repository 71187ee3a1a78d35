package maps

import (
	"errors"
	"fmt"
	stdmaps "maps"
	"reflect"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/policy"
)

// SetIncremental selects how Apply fills the inactive slot: off (the default), with fresh inner
// maps for the whole snapshot; on, sharing, patching or building each inner map so that only
// what differs is written (docs/maps.md). Call it before the first Apply.
func (m *Maps) SetIncremental(on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.incremental = on
}

// held is what this process knows a slot's inner maps hold (incremental mode).
type held struct {
	known bool
	maps  [numKinds]*ebpf.Map // this process's descriptors of the slot's inner maps
	src   [numKinds]any       // the snapshot maps (map[K]V) they hold exactly (when known)

	// For ApplyDelta: dsync says this process knows what the slot holds relative to the other
	// slot: the inactive slot lacks the change lag (nil: holds the same), the active slot holds
	// the caller's base (its lag is always nil). count is each map's entries.
	dsync bool
	lag   *policy.Delta
	count [numKinds]int
}

// forget closes this process's descriptors of slot's inner maps (those the other slot does not
// share) and marks its content unknown. The kernel keeps whatever outer[slot] references.
func (m *Maps) forget(slot uint32) {
	x, o := &m.slots[slot], &m.slots[1-slot]
	for k, mp := range x.maps {
		if mp != nil && mp != o.maps[k] {
			mp.Close()
		}
	}
	*x = held{}
}

// abandon releases the fresh maps of a failed Apply or ApplyDelta into slot (which no frame
// reads): what the slot holds is unknown now (maps written in place, outer entries replaced),
// so it is parked to hold nothing of ours.
func (m *Maps) abandon(slot uint32, fresh [numKinds]*ebpf.Map) {
	closeAll(fresh[:])
	m.forget(slot)
	_ = m.park(slot)
}

// kindOps are the typed operations on one kind of inner map.
type kindOps struct {
	size  func(src any) int
	equal func(a, b any) bool
	fill  func(m *Maps, kind int, mp *ebpf.Map, src any) error
	patch func(m *Maps, kind int, mp *ebpf.Map, old, new any) error
}

func opsFor[K, V comparable]() kindOps {
	return kindOps{
		size: func(src any) int { return len(src.(map[K]V)) },
		equal: func(a, b any) bool {
			am, bm := a.(map[K]V), b.(map[K]V)
			if reflect.ValueOf(am).UnsafePointer() == reflect.ValueOf(bm).UnsafePointer() {
				return true
			}
			return stdmaps.Equal(am, bm)
		},
		fill: func(m *Maps, kind int, mp *ebpf.Map, src any) error { return fill(m, kind, mp, src.(map[K]V)) },
		patch: func(m *Maps, kind int, mp *ebpf.Map, old, new any) error {
			return patch(m, kind, mp, old.(map[K]V), new.(map[K]V))
		},
	}
}

var kinds = [numKinds]kindOps{
	kDevices:  opsFor[bpf.DevKey, bpf.DevRec](),
	kAddrs:    opsFor[bpf.AddrKey, bpf.AddrVal](),
	kPrefixes: opsFor[bpf.PrefixKey, bpf.PrefixVal](),
	kRules:    opsFor[bpf.RuleKey, bpf.RuleVal](),
}

// errLargeDiff: patching would write more than building a fresh map.
var errLargeDiff = errors.New("the revisions differ too much to patch")

// patchable reports whether a diff of del deletes and upd updates over n entries is worth
// patching (deletes go one by one) rather than building a fresh map.
func patchable(del, upd, n int) bool {
	return del <= 4096 && del+upd <= n/2+1024
}

// patch brings mp from holding old to holding new: deletes first (the map is at capacity),
// then updates of the entries that are new or differ. It returns errLargeDiff, having written
// nothing, when a fresh map would be cheaper.
func patch[K, V comparable](m *Maps, kind int, mp *ebpf.Map, old, new map[K]V) error {
	var del []K
	for k := range old {
		if _, ok := new[k]; !ok {
			del = append(del, k)
		}
	}
	var keys []K
	var vals []V
	for k, v := range new {
		if ov, ok := old[k]; !ok || ov != v {
			keys = append(keys, k)
			vals = append(vals, v)
		}
	}
	if !patchable(len(del), len(keys), len(new)) {
		return errLargeDiff
	}
	return update(m, kind, mp, del, keys, vals)
}

// applyIncremental is steps 3 to 7 of Apply in incremental mode (docs/maps.md); no frame
// reads slot r.nxt.
func (m *Maps) applyIncremental(s *policy.Snapshot, cfg *bpf.Config, r *applyRun) error {
	c, x := &m.slots[r.cur], &m.slots[r.nxt]
	want := [numKinds]any{s.Devices, s.Addrs, s.Prefixes, s.Rules}
	var target, fresh [numKinds]*ebpf.Map
	var replace [numKinds]bool
	fail := func(err error) error {
		m.abandon(r.nxt, fresh)
		return err
	}
	// Step 3.
	for k := range numKinds {
		ops := kinds[k]
		n := ops.size(want[k])
		if c.known && ops.equal(c.src[k], want[k]) {
			// Unchanged from the active revision: share its map.
			target[k] = c.maps[k]
			replace[k] = !x.known || x.maps[k] != c.maps[k]
			continue
		}
		if x.known && x.maps[k] != c.maps[k] && int(x.maps[k].MaxEntries()) == max(1, n) {
			err := ops.patch(m, k, x.maps[k], x.src[k], want[k])
			if err == nil {
				target[k] = x.maps[k]
				continue
			}
			if !errors.Is(err, errLargeDiff) {
				return fail(fmt.Errorf("update %s map in place: %w", innerNames[k], err))
			}
		}
		// A fresh map, as in the default mode.
		mp, err := m.newFilled(k, n, func(mp *ebpf.Map) error { return ops.fill(m, k, mp, want[k]) })
		if err != nil {
			return fail(err)
		}
		fresh[k], target[k], replace[k] = mp, mp, true
	}
	r.st.Build = r.lap()

	// Steps 4 (only the outer entries that change) and 5.
	if err := m.install(r, target, replace, cfg); err != nil {
		return fail(err)
	}
	x.maps, x.src, x.known = target, want, true
	x.dsync, x.lag, c.dsync, c.lag = true, nil, false, nil
	for k := range numKinds {
		x.count[k] = kinds[k].size(want[k])
	}

	// Step 6; step 7 releases nothing: slot cur is the base of the next Apply.
	return m.flipBarrier(r, "the barrier after the flip failed (retried before the next apply)")
}

// install is steps 4 and 5 in incremental mode (commit), then this process closes its
// descriptors of the maps target replaced in slot r.nxt (the kernel frees them). On error
// nothing was flipped.
func (m *Maps) install(r *applyRun, target [numKinds]*ebpf.Map, replace [numKinds]bool, cfg *bpf.Config) error {
	if err := m.commit(r, target, replace, cfg); err != nil {
		return err
	}
	x, c := &m.slots[r.nxt], &m.slots[r.cur]
	for k, mp := range x.maps {
		if mp != nil && mp != target[k] && mp != c.maps[k] {
			mp.Close() // replaced in outer[nxt]: the kernel frees it
		}
	}
	return nil
}
