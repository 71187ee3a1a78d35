package maps

import (
	"errors"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
)

func fragKey(id uint32) bpf.FragKey {
	return bpf.FragKey{Saddr: in6("10.0.0.2"), Daddr: in6("10.0.0.1"), Id: id, Proto: 17, Family: 4}
}

func TestSweepFrags(t *testing.T) {
	e := setup(t, nil)
	frags := e.dp.Objects().ZtFrags
	const timeout = 2 * time.Second
	now, err := monotonicNow()
	if err != nil {
		t.Fatal(err)
	}
	old := now - uint64(2*timeout)
	expired := []uint32{1, 3, 5}
	fresh := []uint32{2, 4}
	for _, id := range expired {
		if err := frags.Put(fragKey(id), bpf.FragVal{Ts: old, DevId: 1, Covered: 8}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range fresh {
		if err := frags.Put(fragKey(id), bpf.FragVal{Ts: now, DevId: 1, Covered: 8}); err != nil {
			t.Fatal(err)
		}
	}

	n, err := e.m.SweepFrags(timeout)
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if n != len(expired) {
		t.Errorf("swept %d, want %d", n, len(expired))
	}
	var v bpf.FragVal
	for _, id := range expired {
		if err := frags.Lookup(fragKey(id), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Errorf("expired fragment %d: lookup %v, want deleted", id, err)
		}
	}
	for _, id := range fresh {
		if err := frags.Lookup(fragKey(id), &v); err != nil || v.Ts != now {
			t.Errorf("fresh fragment %d: %+v, %v, want kept", id, v, err)
		}
	}

	// Nothing left to sweep.
	if n, err := e.m.SweepFrags(timeout); n != 0 || err != nil {
		t.Errorf("second sweep = %d, %v, want 0, nil", n, err)
	}
	if _, err := e.m.SweepFrags(0); err == nil {
		t.Error("sweep with timeout 0 succeeded")
	}
}

func TestSweepFragsFull(t *testing.T) {
	// A full table (capacity 128 in setup) of expired records is emptied in one sweep.
	e := setup(t, nil)
	frags := e.dp.Objects().ZtFrags
	now, err := monotonicNow()
	if err != nil {
		t.Fatal(err)
	}
	capacity := int(frags.MaxEntries())
	for i := range capacity {
		if err := frags.Put(fragKey(uint32(i)), bpf.FragVal{Ts: now - uint64(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := e.m.SweepFrags(time.Second)
	if err != nil || n != capacity {
		t.Fatalf("sweep = %d, %v, want %d, nil", n, err, capacity)
	}
	if left, err := countKeys(frags); left != 0 || err != nil {
		t.Errorf("%d records left (%v)", left, err)
	}
}
