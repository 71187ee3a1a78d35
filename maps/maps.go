// Package maps gives typed access to the datapath's maps: the atomic policy swap (Apply), the
// read-back of the active policy, the counters and the event ring buffer.
//
// Nothing here resets a counter or reads-and-clears a map: counters only grow, and consumers
// compute rates from differences.
package maps

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
)

// Limits are the capacities a snapshot must fit in (loader.Config's MaxDevices, MaxAddrs,
// MaxRules, MaxPrefixes). The device ids are further bounded by the size of zt_devstats.
type Limits struct {
	Devices, Addrs, Rules, Prefixes int
}

// ErrNoPolicy is returned by readers of the active policy before any policy was applied.
var ErrNoPolicy = errors.New("no policy installed")

// ErrCommitted is wrapped by an Apply error that happened after the flip: the new revision is in
// force, only releasing the previous slot failed (it is retried by the next Apply).
var ErrCommitted = errors.New("new revision committed")

// CapacityError says that a snapshot does not fit a map; Apply returns it before any write.
type CapacityError struct {
	Map      string // map name, e.g. "zt_devices"
	Count    int    // entries (or, for zt_devstats, the largest dev_id) the snapshot needs
	Capacity int    // what fits
}

func (e *CapacityError) Error() string {
	if e.Map == bpf.ZtgateMapZtDevstats {
		return fmt.Sprintf("%s: device id %d exceeds the capacity (device ids 1..%d)", e.Map, e.Count, e.Capacity)
	}
	return fmt.Sprintf("%s: %d entries exceed the capacity of %d", e.Map, e.Count, e.Capacity)
}

// policy map kinds, in the order of Maps.outer.
const (
	kDevices = iota
	kAddrs
	kPrefixes
	kRules
	numKinds
)

var kindNames = [numKinds]string{
	kDevices:  bpf.ZtgateMapZtDevices,
	kAddrs:    bpf.ZtgateMapZtAddrs,
	kPrefixes: bpf.ZtgateMapZtPrefixes,
	kRules:    bpf.ZtgateMapZtRules,
}

// innerNames name the inner maps in the kernel (15 characters at most).
var innerNames = [numKinds]string{"zt_devices_in", "zt_addrs_in", "zt_prefixes_in", "zt_rules_in"}

// Maps is typed access to the loaded datapath maps. Its methods are safe for concurrent use;
// Apply calls are serialised. There must be one writer per datapath (the agent): two processes
// applying at the same time could each write the slot the other just made active.
type Maps struct {
	objs *bpf.ZtgateObjects

	outer  [numKinds]*ebpf.Map     // zt_devices, zt_addrs, zt_prefixes, zt_rules (ARRAY_OF_MAPS[2])
	inner  [numKinds]*ebpf.MapSpec // templates of the inner maps
	empty  [numKinds]*ebpf.Map     // max_entries 1, never written: parks the inactive slot
	barInr *ebpf.Map               // the value written into zt_barrier[0]

	mu      sync.Mutex // serialises Apply (and the readers of the active slot against it)
	synced  bool       // a barrier ran since New: no frame can still be on the inactive slot
	noBatch [numKinds]bool
	closed  bool
	stats   ApplyStats // of the last successful Apply

	incremental bool            // see SetIncremental
	bg          *pendingBarrier // a barrier ApplyDelta left running (see settle)
	slots       [2]held         // what each slot holds, in incremental mode
}

// New builds typed access from the loaded objects and the map specs they were created from
// (loader.Datapath's Objects and MapSpecs; nil specs: the embedded object's). The objects stay
// owned by the caller; Close releases only what New created.
func New(objs *bpf.ZtgateObjects, specs *bpf.ZtgateMapSpecs) (*Maps, error) {
	m, err := newMaps(objs, specs)
	if err != nil {
		return nil, fmt.Errorf("maps: %w", err)
	}
	return m, nil
}

func newMaps(objs *bpf.ZtgateObjects, specs *bpf.ZtgateMapSpecs) (*Maps, error) {
	if objs == nil || objs.ZtActive == nil {
		return nil, errors.New("datapath objects not loaded")
	}
	if specs == nil {
		cs, err := bpf.LoadZtgate()
		if err != nil {
			return nil, err
		}
		specs = new(bpf.ZtgateMapSpecs)
		if err := cs.Assign(specs); err != nil {
			return nil, err
		}
	}
	m := &Maps{objs: objs}
	m.outer = [numKinds]*ebpf.Map{objs.ZtDevices, objs.ZtAddrs, objs.ZtPrefixes, objs.ZtRules}
	outerSpecs := [numKinds]*ebpf.MapSpec{specs.ZtDevices, specs.ZtAddrs, specs.ZtPrefixes, specs.ZtRules}
	for k, ospec := range outerSpecs {
		if ospec == nil || ospec.InnerMap == nil {
			return nil, fmt.Errorf("%s: no inner map template in the spec", kindNames[k])
		}
		m.inner[k] = ospec.InnerMap.Copy()
	}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	for k := range numKinds {
		e, err := m.newInner(k, 0)
		if err != nil {
			return nil, fmt.Errorf("create empty %s map: %w", kindNames[k], err)
		}
		m.empty[k] = e
	}
	if specs.ZtBarrier == nil || specs.ZtBarrier.InnerMap == nil {
		return nil, errors.New("zt_barrier: no inner map template in the spec")
	}
	bs := specs.ZtBarrier.InnerMap.Copy()
	bs.Name, bs.Pinning, bs.Contents = "zt_barrier_in", ebpf.PinNone, nil
	b, err := ebpf.NewMap(bs)
	if err != nil {
		return nil, fmt.Errorf("create barrier map: %w", err)
	}
	m.barInr = b
	ok = true
	return m, nil
}

// newInner creates an inner map of kind k sized for n entries (at least 1), from the template.
func (m *Maps) newInner(k, n int) (*ebpf.Map, error) {
	spec := m.inner[k].Copy()
	spec.Name = innerNames[k]
	spec.MaxEntries = uint32(max(1, n))
	spec.Pinning = ebpf.PinNone
	spec.Contents = nil
	return ebpf.NewMap(spec)
}

// Close releases the maps New created (placeholders, barrier map). It does not close objs.
func (m *Maps) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.bg != nil {
		<-m.bg.done // it writes zt_barrier with barInr
		m.bg = nil
	}
	for _, e := range m.empty {
		e.Close()
	}
	m.barInr.Close()
	m.forget(0)
	m.forget(1)
	return nil
}
