package maps

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/policy"
)

// ApplyDelta installs the change d (a policy.Editor's Delta over base, the Editor's snapshot
// before the change, which the active slot must hold) as the next revision, with Apply's
// guarantees but writing in proportion to the change (docs/maps.md). It returns at the flip,
// leaving the barrier to the next write, and needs incremental mode (SetIncremental).
func (m *Maps) ApplyDelta(d *policy.Delta, base *policy.Snapshot, lim Limits) error {
	if d == nil || base == nil {
		return errors.New("apply delta: nil delta or base")
	}
	if err := m.applyDelta(d, base, lim); err != nil {
		return fmt.Errorf("apply revision %d (%s): %w", d.Revision, d.Summary, err)
	}
	return nil
}

// headroom is the spare capacity of an inner map ApplyDelta creates for n entries: devices
// can join without a fresh map each time.
func headroom(n int) int { return n/16 + 64 }

// deltaKind is one inner map's part of a change.
type deltaKind struct {
	empty bool
	apply func(mp *ebpf.Map) error // write the change into a map holding the content before it
	fill  func(mp *ebpf.Map) error // write base with the change applied into an empty map
	n     int                      // entries afterwards
}

func deltaOf[K comparable, V any](m *Maps, kind int, base map[K]V, ch *policy.Changes[K, V], n int) deltaKind {
	return deltaKind{
		empty: ch.Empty(),
		n:     n,
		apply: func(mp *ebpf.Map) error { return update(m, kind, mp, ch.Del, ch.Keys, ch.Vals) },
		fill: func(mp *ebpf.Map) error {
			changed := make(map[K]bool, len(ch.Del)+len(ch.Keys))
			for _, k := range ch.Del {
				changed[k] = true
			}
			for _, k := range ch.Keys {
				changed[k] = true
			}
			if err := fillExcept(m, kind, mp, base, changed); err != nil {
				return err
			}
			return update(m, kind, mp, nil, ch.Keys, ch.Vals)
		},
	}
}

func deltaKinds(m *Maps, d *policy.Delta, base *policy.Snapshot) [numKinds]deltaKind {
	return [numKinds]deltaKind{
		kDevices:  deltaOf(m, kDevices, base.Devices, &d.Devices, d.Counts[kDevices]),
		kAddrs:    deltaOf(m, kAddrs, base.Addrs, &d.Addrs, d.Counts[kAddrs]),
		kPrefixes: deltaOf(m, kPrefixes, base.Prefixes, &d.Prefixes, d.Counts[kPrefixes]),
		kRules:    deltaOf(m, kRules, base.Rules, &d.Rules, d.Counts[kRules]),
	}
}

// checkDelta is check for a change: the counts after it against lim, the ids against
// zt_devstats.
func (m *Maps) checkDelta(d *policy.Delta, lim Limits) error {
	caps := [numKinds]int{lim.Devices, lim.Addrs, lim.Prefixes, lim.Rules}
	for k := range numKinds {
		if d.Counts[k] > caps[k] {
			return &CapacityError{Map: kindNames[k], Count: d.Counts[k], Capacity: caps[k]}
		}
	}
	statsCap, err := m.devstatsCap()
	if err != nil {
		return err
	}
	if id := int(d.MaxDevID); id > statsCap {
		return &CapacityError{Map: bpf.ZtgateMapZtDevstats, Count: id, Capacity: statsCap}
	}
	if d.Config.Revision != d.Revision {
		return fmt.Errorf("config revision %d differs from the delta's revision %d", d.Config.Revision, d.Revision)
	}
	for _, k := range d.Devices.Keys {
		if k.Pad != 0 {
			return fmt.Errorf("device %x: key padding must be zero", k.Mac)
		}
	}
	for i, v := range d.Devices.Vals {
		if v.DevId == noDevID {
			return fmt.Errorf("device %x: dev_id 0 is reserved for frames without a device", d.Devices.Keys[i].Mac)
		}
	}
	return nil
}

// CheckDelta reports whether ApplyDelta would accept d under lim, without writing anything.
func (m *Maps) CheckDelta(d *policy.Delta, lim Limits) error { return m.checkDelta(d, lim) }

func (m *Maps) applyDelta(d *policy.Delta, base *policy.Snapshot, lim Limits) error {
	check := func() error { return m.checkDelta(d, lim) }
	ready := func() error {
		if !m.incremental {
			return errors.New("a change needs incremental mode (SetIncremental)")
		}
		return nil
	}
	return m.transact(check, ready, d.Fresh, d.MaxDevID, func(r *applyRun) error {
		return m.writeDelta(d, base, r)
	})
}

// writeDelta is steps 3 to 6 of ApplyDelta: the change written into slot r.nxt, the flip, and
// the barrier started in the background.
func (m *Maps) writeDelta(d *policy.Delta, base *policy.Snapshot, r *applyRun) error {
	c, x := &m.slots[r.cur], &m.slots[r.nxt]
	// The active slot holds base (the caller's promise) and this process knows its maps only
	// if it wrote them; the inactive slot's content is known relative to it (lag) or not at all.
	cKnown := c.dsync && c.lag == nil
	xKnown := cKnown && x.dsync
	now := deltaKinds(m, d, base)
	var lag [numKinds]deltaKind
	if xKnown && x.lag != nil {
		lag = deltaKinds(m, x.lag, base) // only apply is used: fill needs the lag's own base
	}

	var target, fresh [numKinds]*ebpf.Map
	var replace [numKinds]bool
	fail := func(err error) error {
		m.abandon(r.nxt, fresh)
		return err
	}
	for k := range numKinds {
		lagEmpty := x.lag == nil || lag[k].empty
		own := x.maps[k] != nil && x.maps[k] != c.maps[k]
		switch {
		case xKnown && x.maps[k] != nil && lagEmpty && now[k].empty:
			// The same content as the active slot's: nothing to write.
			target[k] = x.maps[k]
			continue
		case cKnown && !xKnown && c.maps[k] != nil && now[k].empty:
			// Unchanged by d: share the active slot's map (never written while shared).
			target[k], replace[k] = c.maps[k], x.maps[k] != c.maps[k]
			continue
		case xKnown && own && int(x.maps[k].MaxEntries()) >= max(x.count[k], c.count[k], now[k].n):
			if !lagEmpty {
				if err := lag[k].apply(x.maps[k]); err != nil {
					return fail(fmt.Errorf("catch %s map up: %w", innerNames[k], err))
				}
			}
			if err := now[k].apply(x.maps[k]); err != nil {
				return fail(fmt.Errorf("update %s map in place: %w", innerNames[k], err))
			}
			target[k] = x.maps[k]
			continue
		}
		n := now[k].n
		mp, err := m.newFilled(k, n+headroom(n), now[k].fill)
		if err != nil {
			return fail(err)
		}
		fresh[k], target[k], replace[k] = mp, mp, true
	}
	r.st.Build = r.lap()
	if err := m.install(r, target, replace, &d.Config); err != nil {
		return fail(err)
	}
	for k := range numKinds {
		x.count[k] = now[k].n
	}
	x.maps, x.src, x.known = target, [numKinds]any{}, false
	x.dsync, x.lag = true, nil
	// The old slot lacks d; its snapshot maps (src) change with the Editor's, so Apply must not
	// trust them.
	c.known, c.src = false, [numKinds]any{}
	c.dsync, c.lag = true, d
	// The barrier runs in the background: every frame that starts from now on sees the
	// change, so it is in force; the next Apply or ApplyDelta waits for the barrier before it
	// writes the old slot (settle).
	m.synced = false
	bg := &pendingBarrier{done: make(chan struct{})}
	go func() {
		bg.err = m.barrier()
		close(bg.done)
	}()
	m.bg = bg
	r.st.Barrier = r.pre
	return nil
}

// Barrier returns once every XDP run that started before it has finished: one RCU grace
// period (after any barrier ApplyDelta left running). Apply and ApplyDelta run it themselves;
// it is exported to measure what it costs.
func (m *Maps) Barrier() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.settle(); err != nil {
		return err
	}
	return m.barrier()
}

// pendingBarrier is a barrier ApplyDelta left running.
type pendingBarrier struct {
	done chan struct{}
	err  error // valid once done is closed
}

// settle makes sure no frame can still be on the inactive slot before it is written: it waits
// for a barrier ApplyDelta left running, and runs one when none ran since the last flip.
// m.mu is held.
func (m *Maps) settle() error {
	if m.bg != nil {
		<-m.bg.done
		m.synced = m.bg.err == nil
		m.bg = nil
	}
	if !m.synced {
		if err := m.barrier(); err != nil {
			return err
		}
		m.synced = true
	}
	return nil
}
