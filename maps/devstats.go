package maps

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/policy"
)

// zt_devstats (bpf/maps.h) is an array of rows, one per possible CPU, of stride entries each:
// entry cpu*stride + dev_id holds what that CPU charged the device. dev_id 0 is never charged
// (no device has it), so entry 0, row 0's dev_id 0, is the agent's: its Packets[0] is the
// watermark, at least the largest dev_id ever given a device record in these maps (an apply
// raises it before writing, and a failed one leaves it raised). The entries of the ids above it
// are still zero.

// watermarkKey is the entry of zt_devstats that holds the watermark.
const watermarkKey = uint32(0)

// devstatsRows is zt_devstats' shape: rows (one per possible CPU) of stride entries.
func (m *Maps) devstatsRows() (rows, stride int, err error) {
	rows, err = ebpf.PossibleCPU()
	if err != nil {
		return 0, 0, fmt.Errorf("zt_devstats: %w", err)
	}
	n := int(m.objs.ZtDevstats.MaxEntries())
	if n%rows != 0 || n/rows < 1 {
		return 0, 0, fmt.Errorf("zt_devstats: %d entries are not a row per CPU (%d CPUs)", n, rows)
	}
	return rows, n / rows, nil
}

// devstatsCap is the largest dev_id zt_devstats counts.
func (m *Maps) devstatsCap() (int, error) {
	_, stride, err := m.devstatsRows()
	return stride - 1, err
}

// addDevStats folds one CPU's entry p into s: packets and bytes of both directions add up,
// last_seen is the latest.
func addDevStats(s *bpf.DevStats, p *bpf.DevStats) {
	for v := range p.Packets {
		s.Packets[v] += p.Packets[v]
		s.Bytes[v] += p.Bytes[v]
		s.InPackets[v] += p.InPackets[v]
		s.InBytes[v] += p.InBytes[v]
	}
	s.LastSeen = max(s.LastSeen, p.LastSeen)
}

// DeviceStats returns the counters of one device (dev_id), summed over CPUs. LastSeen is in
// CLOCK_MONOTONIC nanoseconds (the datapath's coarse zt_now, a couple of ticks behind).
func (m *Maps) DeviceStats(devID uint32) (bpf.DevStats, error) {
	var s bpf.DevStats
	rows, stride, err := m.devstatsRows()
	if err != nil {
		return s, err
	}
	if devID == noDevID || int(devID) >= stride {
		return s, fmt.Errorf("read zt_devstats[%d]: %w", devID, ebpf.ErrKeyNotExist)
	}
	for cpu := range rows {
		var p bpf.DevStats
		if err := m.objs.ZtDevstats.Lookup(uint32(cpu*stride)+devID, &p); err != nil {
			return bpf.DevStats{}, fmt.Errorf("read zt_devstats[%d] of CPU %d: %w", devID, cpu, err)
		}
		addDevStats(&s, &p)
	}
	return s, nil
}

// AllDeviceStats returns the counters of every device that has any, by dev_id, summed over CPUs.
func (m *Maps) AllDeviceStats() (map[uint32]bpf.DevStats, error) {
	_, stride, err := m.devstatsRows()
	if err != nil {
		return nil, err
	}
	const chunk = 4096
	keys := make([]uint32, chunk)
	vals := make([]bpf.DevStats, chunk)
	out := map[uint32]bpf.DevStats{}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.objs.ZtDevstats.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			id := keys[i] % uint32(stride)
			if id == noDevID || vals[i] == (bpf.DevStats{}) {
				continue // dev_id 0: the watermark (row 0) or nothing
			}
			s := out[id]
			addDevStats(&s, &vals[i])
			out[id] = s
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read zt_devstats: %w", err)
		}
	}
}

// prepareDevStats readies zt_devstats for a revision whose largest dev_id is maxID and which
// gives the ids fresh to devices the revision in force does not have: their entries are
// zeroed on every CPU, so that a new device does not inherit a deleted one's counters, and the
// watermark is raised to maxID. Ids above the watermark were never charged: nothing to clear.
// Called between settle and the flip, before any write: with a Fresh from Compile or the
// Editor over the snapshot in force, no frame charges a fresh id meanwhile.
func (m *Maps) prepareDevStats(fresh []uint32, maxID uint32) error {
	var wm bpf.DevStats
	if err := m.objs.ZtDevstats.Lookup(watermarkKey, &wm); err != nil {
		return fmt.Errorf("read the zt_devstats watermark: %w", err)
	}
	mark := wm.Packets[0]
	if len(fresh) > 0 && uint64(slices.Min(fresh)) <= mark {
		rows, stride, err := m.devstatsRows()
		if err != nil {
			return err
		}
		zeros := make([]bpf.DevStats, min(batchChunk, len(fresh)*rows))
		keys := make([]uint32, 0, len(zeros))
		flush := func() error {
			if len(keys) == 0 {
				return nil
			}
			if _, err := m.objs.ZtDevstats.BatchUpdate(keys, zeros[:len(keys)], nil); err != nil {
				return fmt.Errorf("clear zt_devstats of new device ids: %w", err)
			}
			keys = keys[:0]
			return nil
		}
		for _, id := range fresh {
			if id == noDevID || int(id) >= stride {
				return fmt.Errorf("clear zt_devstats[%d]: not a device id below %d", id, stride)
			}
			if uint64(id) > mark {
				continue
			}
			if len(keys)+rows > cap(keys) {
				if err := flush(); err != nil {
					return err
				}
			}
			for cpu := range rows {
				keys = append(keys, uint32(cpu*stride)+id)
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}
	if uint64(maxID) > mark {
		wm.Packets[0] = uint64(maxID)
		if err := m.objs.ZtDevstats.Update(watermarkKey, &wm, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("write the zt_devstats watermark: %w", err)
		}
	}
	return nil
}

// FreshOverActive returns the dev_ids s gives devices that the policy the datapath enforces
// does not give them (all of them when none is enforced): s's Fresh when s was compiled over a
// snapshot that may not be what the maps hold (an agent restarting after a crash between
// persisting a change and writing it). Such an id may still be another device's in the active
// slot: what that device sends between the clearing and the flip is charged to the new one.
func (m *Maps) FreshOverActive(s *policy.Snapshot) ([]uint32, error) {
	devs, err := m.activeDevices()
	if errors.Is(err, ErrNoPolicy) {
		return s.FreshOver(nil), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the active devices: %w", err)
	}
	return s.FreshOver(&policy.Snapshot{Devices: devs}), nil
}

// activeDevices reads the device records of the active slot (only them, unlike ReadActive).
func (m *Maps) activeDevices() (map[bpf.DevKey]bpf.DevRec, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return readStable(m, func(st slotState) (map[bpf.DevKey]bpf.DevRec, error) {
		mp, err := ebpf.NewMapFromID(st.ids[kDevices])
		if errors.Is(err, os.ErrNotExist) {
			return nil, errSlotChanged
		}
		if err != nil {
			return nil, err
		}
		defer mp.Close()
		return readAll[bpf.DevKey, bpf.DevRec](mp)
	})
}
