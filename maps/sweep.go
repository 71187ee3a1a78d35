package maps

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bpf"
)

// sweepSlack covers zt_now's lag behind CLOCK_MONOTONIC (a couple of timer ticks).
const sweepSlack = 50 * time.Millisecond

// SweepFrags deletes the fragment records (zt_frags) older than timeout plus sweepSlack on
// CLOCK_MONOTONIC, keeping any the program re-created meanwhile, and returns how many it deleted
// (docs/maps.md).
func (m *Maps) SweepFrags(timeout time.Duration) (int, error) {
	if timeout <= 0 {
		return 0, fmt.Errorf("sweep %s: timeout %v is not positive", bpf.ZtgateMapZtFrags, timeout)
	}
	mp := m.objs.ZtFrags
	now, err := monotonicNow()
	if err != nil {
		return 0, fmt.Errorf("sweep %s: %w", bpf.ZtgateMapZtFrags, err)
	}
	limit := uint64((timeout + sweepSlack).Nanoseconds())
	expired := func(v bpf.FragVal) bool { return now-v.Ts > limit }

	var (
		k    bpf.FragKey
		v    bpf.FragVal
		keys []bpf.FragKey
	)
	seen := make(map[bpf.FragKey]bool)
	it := mp.Iterate()
	for it.Next(&k, &v) && len(keys) < int(mp.MaxEntries()) {
		if expired(v) && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return 0, fmt.Errorf("sweep %s: %w", bpf.ZtgateMapZtFrags, err)
	}

	n := 0
	for _, k := range keys {
		if err := mp.Lookup(&k, &v); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return n, fmt.Errorf("sweep %s: %w", bpf.ZtgateMapZtFrags, err)
		}
		if !expired(v) {
			continue
		}
		if err := mp.Delete(&k); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return n, fmt.Errorf("sweep %s: %w", bpf.ZtgateMapZtFrags, err)
		}
		n++
	}
	return n, nil
}

// monotonicNow is CLOCK_MONOTONIC in ns: what bpf_ktime_get_ns returns.
func monotonicNow() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime(CLOCK_MONOTONIC): %w", err)
	}
	return uint64(ts.Nano()), nil
}
