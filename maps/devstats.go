package maps

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
)

// zt_devstats (bpf/maps.h) is a memory-mappable array of rows, one per possible CPU, of stride
// entries each: entry cpu*stride + dev_id holds what that CPU charged the device. The agent
// reads and clears it through the mapping, without a system call per entry.

// devStatsSize is the size of one entry: struct zt_dev_stats, 7 u64.
const devStatsSize = 8 * (2*bpf.NumVerdicts + 1)

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

// devstatsMem is zt_devstats mapped into memory, with its shape.
func (m *Maps) devstatsMem() (mem *ebpf.Memory, rows, stride int, err error) {
	if rows, stride, err = m.devstatsRows(); err != nil {
		return nil, 0, 0, err
	}
	if mem, err = m.objs.ZtDevstats.Memory(); err != nil {
		return nil, 0, 0, fmt.Errorf("map zt_devstats: %w", err)
	}
	if int(mem.Size()) < rows*stride*devStatsSize {
		return nil, 0, 0, fmt.Errorf("zt_devstats: mapping of %d bytes, want %d", mem.Size(), rows*stride*devStatsSize)
	}
	return mem, rows, stride, nil
}

// addDevStats folds one entry (devStatsSize bytes) into s: packets and bytes add up,
// last_seen is the latest.
func addDevStats(s *bpf.DevStats, b []byte) {
	for v := range s.Packets {
		s.Packets[v] += binary.NativeEndian.Uint64(b[8*v:])
		s.Bytes[v] += binary.NativeEndian.Uint64(b[8*(bpf.NumVerdicts+v):])
	}
	s.LastSeen = max(s.LastSeen, binary.NativeEndian.Uint64(b[8*2*bpf.NumVerdicts:]))
}

// DeviceStats returns the counters of one device (dev_id), summed over CPUs. LastSeen is in
// CLOCK_MONOTONIC nanoseconds (the datapath's coarse zt_now, a couple of ticks behind).
func (m *Maps) DeviceStats(devID uint32) (bpf.DevStats, error) {
	var s bpf.DevStats
	mem, rows, stride, err := m.devstatsMem()
	if err != nil {
		return s, err
	}
	if int(devID) >= stride {
		return s, fmt.Errorf("read zt_devstats[%d]: %w", devID, ebpf.ErrKeyNotExist)
	}
	var b [devStatsSize]byte
	for cpu := range rows {
		if _, err := mem.ReadAt(b[:], int64((cpu*stride+int(devID))*devStatsSize)); err != nil {
			return bpf.DevStats{}, fmt.Errorf("read zt_devstats[%d] of CPU %d: %w", devID, cpu, err)
		}
		addDevStats(&s, b[:])
	}
	return s, nil
}

// AllDeviceStats returns the counters of every device that has any, by dev_id, summed over CPUs.
func (m *Maps) AllDeviceStats() (map[uint32]bpf.DevStats, error) {
	mem, rows, stride, err := m.devstatsMem()
	if err != nil {
		return nil, err
	}
	const chunk = 4096 // entries read at a time
	buf := make([]byte, chunk*devStatsSize)
	var zero [devStatsSize]byte
	out := map[uint32]bpf.DevStats{}
	for cpu := range rows {
		for lo := 0; lo < stride; lo += chunk {
			n := min(chunk, stride-lo)
			b := buf[:n*devStatsSize]
			if _, err := mem.ReadAt(b, int64((cpu*stride+lo)*devStatsSize)); err != nil {
				return nil, fmt.Errorf("read zt_devstats: %w", err)
			}
			for i := range n {
				e := b[i*devStatsSize : (i+1)*devStatsSize]
				if string(e) == string(zero[:]) {
					continue
				}
				id := uint32(lo + i)
				s := out[id]
				addDevStats(&s, e)
				out[id] = s
			}
		}
	}
	return out, nil
}

// clearDevStats zeroes the counters of ids on every CPU. No frame may charge them meanwhile:
// Apply and ApplyDelta call it for ids the revision in force does not use, once the slot it
// replaced is settled.
func (m *Maps) clearDevStats(ids []uint32) error {
	if len(ids) == 0 {
		return nil
	}
	mem, rows, stride, err := m.devstatsMem()
	if err != nil {
		return err
	}
	if !slices.IsSorted(ids) { // Compile gives them in order
		ids = slices.Sorted(slices.Values(ids))
	}
	zero := make([]byte, 4096*devStatsSize)
	for cpu := range rows {
		// Runs of consecutive ids are cleared with one copy each.
		for i := 0; i < len(ids); {
			j := i + 1
			for j < len(ids) && ids[j] == ids[j-1]+1 && j-i < 4096 {
				j++
			}
			if int(ids[j-1]) >= stride {
				return fmt.Errorf("clear zt_devstats[%d]: beyond its %d devices", ids[j-1], stride-1)
			}
			off := int64((cpu*stride + int(ids[i])) * devStatsSize)
			if _, err := mem.WriteAt(zero[:(j-i)*devStatsSize], off); err != nil {
				return fmt.Errorf("clear zt_devstats: %w", err)
			}
			i = j
		}
	}
	return nil
}
