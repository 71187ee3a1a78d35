package maps

import (
	"bytes"
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
)

func mustApply(t *testing.T, e *env, s *policy.Snapshot) {
	t.Helper()
	if err := e.m.Apply(s, e.lim); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

func checkActive(t *testing.T, e *env, want *policy.Snapshot) {
	t.Helper()
	got, err := e.m.ReadActive()
	if err != nil {
		t.Fatalf("read active: %v", err)
	}
	w := *want
	w.DeviceNames, w.SegmentNames, w.Fresh = nil, nil, nil
	if !reflect.DeepEqual(got, &w) {
		t.Fatalf("active policy differs from the applied snapshot:\n got %+v\nwant %+v", got, &w)
	}
	rev, err := e.m.ActiveRevision()
	if err != nil || rev != want.Revision {
		t.Fatalf("ActiveRevision() = %d, %v, want %d", rev, err, want.Revision)
	}
}

// TestDeviceStatsPerCPU: frames decided on each CPU are charged to that CPU's row of
// zt_devstats, and DeviceStats and AllDeviceStats add the rows up.
func TestDeviceStatsPerCPU(t *testing.T) {
	e := setup(t, nil)
	mustApply(t, e, smallSnapshot(1))
	var online unix.CPUSet
	if err := unix.SchedGetaffinity(0, &online); err != nil {
		t.Fatal(err)
	}
	frame := ipv4Frame(devMAC, "10.0.0.2", "10.0.0.1", 17, 40000, 53)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer func() { _ = unix.SchedSetaffinity(0, &online) }()
	want := map[int]uint64{} // frames per CPU
	var total uint64
	for cpu := range 1024 {
		if !online.IsSet(cpu) {
			continue
		}
		var one unix.CPUSet
		one.Set(cpu)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			t.Fatalf("pin to CPU %d: %v", cpu, err)
		}
		n := uint64(len(want) + 2) // a different count on every CPU
		if _, err := e.dp.Program().Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(n)}); err != nil {
			t.Fatal(err)
		}
		want[cpu] = n
		total += n
	}
	rows, stride, err := e.m.devstatsRows()
	if err != nil {
		t.Fatal(err)
	}
	for cpu := range rows {
		var p bpf.DevStats
		if err := e.dp.Objects().ZtDevstats.Lookup(uint32(cpu*stride+1), &p); err != nil {
			t.Fatal(err)
		}
		if p.Packets[bpf.VerdictPass] != want[cpu] {
			t.Errorf("CPU %d's entry of device 1: %d frames passed, want %d", cpu, p.Packets[bpf.VerdictPass], want[cpu])
		}
	}
	ds, err := e.m.DeviceStats(1)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Packets[bpf.VerdictPass] != total || ds.Bytes[bpf.VerdictPass] != total*uint64(len(frame)) || ds.LastSeen == 0 {
		t.Errorf("DeviceStats(1) = %+v, want %d frames of %d bytes on %d CPUs", ds, total, len(frame), len(want))
	}
	all, err := e.m.AllDeviceStats()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[1] != ds {
		t.Errorf("AllDeviceStats() = %+v, want only device 1 = %+v", all, ds)
	}
	if _, err := e.m.DeviceStats(uint32(stride)); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("DeviceStats beyond the capacity: %v, want ErrKeyNotExist", err)
	}
}

func TestNoPolicyFailsClosed(t *testing.T) {
	e := setup(t, nil)
	if _, err := e.m.ActiveRevision(); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("ActiveRevision before apply: %v, want ErrNoPolicy", err)
	}
	if _, err := e.m.ReadActive(); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("ReadActive before apply: %v, want ErrNoPolicy", err)
	}
	if ret := run(t, e, ipv4Frame(devMAC, "10.0.0.2", "10.0.0.1", 17, 40000, 53)); ret != xdpDrop {
		t.Errorf("frame without policy: action %d, want XDP_DROP", ret)
	}
	if n := counterOf(t, e, bpf.VerdictDrop, bpf.ReasonNoPolicy); n != 1 {
		t.Errorf("drop/no_policy = %d, want 1", n)
	}
}

func TestApplyAndDecide(t *testing.T) {
	e := setup(t, nil)
	s := smallSnapshot(1)
	mustApply(t, e, s)
	checkActive(t, e, s)

	// UDP from the device to the gateway: allowed by (rule set 1, gateway, udp, all ports).
	frame := ipv4Frame(devMAC, "10.0.0.2", "10.0.0.1", 17, 40000, 53)
	if ret := run(t, e, frame); ret != xdpPass {
		t.Errorf("udp to gateway: action %d, want XDP_PASS", ret)
	}
	if n := counterOf(t, e, bpf.VerdictPass, bpf.ReasonAllow); n != 1 {
		t.Errorf("pass/allow = %d, want 1", n)
	}
	ds, err := e.m.DeviceStats(1)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Packets[bpf.VerdictPass] != 1 || ds.Bytes[bpf.VerdictPass] != uint64(len(frame)) || ds.LastSeen == 0 {
		t.Errorf("device 1 stats: %+v", ds)
	}
	all, err := e.m.AllDeviceStats()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[1] != ds {
		t.Errorf("AllDeviceStats() = %+v, want only device 1 = %+v", all, ds)
	}

	// The prefix trie was written: TCP 80 to 10.1.2.3 passes, port 81 has no rule.
	if ret := run(t, e, ipv4Frame(devMAC, "10.0.0.2", "10.1.2.3", 6, 40000, 80)); ret != xdpPass {
		t.Errorf("tcp 80 to the prefix group: action %d, want XDP_PASS", ret)
	}
	if ret := run(t, e, ipv4Frame(devMAC, "10.0.0.2", "10.1.2.3", 6, 40000, 81)); ret != xdpDrop {
		t.Errorf("tcp 81 to the prefix group: action %d, want XDP_DROP", ret)
	}
	if n := counterOf(t, e, bpf.VerdictDrop, bpf.ReasonNoRule); n != 1 {
		t.Errorf("drop/no_rule = %d, want 1", n)
	}

	// Unknown source MAC: dropped, reason unknown_device, with an event.
	ev, err := OpenEvents(e.dp.Objects())
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	unknown := ipv4Frame(unknownMAC, "10.0.0.9", "10.0.0.1", 17, 40000, 53)
	if ret := run(t, e, unknown); ret != xdpDrop {
		t.Errorf("unknown device: action %d, want XDP_DROP", ret)
	}
	if n := counterOf(t, e, bpf.VerdictDrop, bpf.ReasonUnknownDevice); n != 1 {
		t.Errorf("drop/unknown_device = %d, want 1", n)
	}
	// Events: the no_rule drop above, then the unknown device.
	ev.SetDeadline(time.Now().Add(2 * time.Second))
	var got []bpf.Event
	for range 2 {
		x, err := ev.Read()
		if err != nil {
			t.Fatalf("read event: %v", err)
		}
		got = append(got, x)
	}
	u := got[1]
	if bpf.Reason(u.Reason) != bpf.ReasonUnknownDevice || bpf.Verdict(u.Verdict) != bpf.VerdictDrop ||
		u.DevId != 0 || u.Revision != 1 || int(u.FrameLen) != len(unknown) || int(u.CapLen) != len(unknown) ||
		!bytes.Equal(u.Data[:u.CapLen], unknown) {
		t.Errorf("unknown-device event: %+v", u)
	}
	if r := got[0]; bpf.Reason(r.Reason) != bpf.ReasonNoRule || r.DevId != 1 {
		t.Errorf("no-rule event: %+v", r)
	}
	es, err := e.m.EventStats()
	if err != nil || es.Emitted != 2 || es.Lost != 0 {
		t.Errorf("EventStats() = %+v, %v, want 2 emitted", es, err)
	}
	ev.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := ev.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read with nothing pending: %v, want deadline exceeded", err)
	}
	ev.Close()
	if _, err := ev.Read(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("read after close: %v, want ErrClosed", err)
	}

	use, err := e.m.Usage(e.lim)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]int{"zt_devices": {1, 64}, "zt_addrs": {1, 256}, "zt_prefixes": {1, 64},
		"zt_rules": {2, 256}, "zt_frags": {0, 128}, "zt_flows": {2, 65536}} // the two frames that passed
	for _, u := range use {
		if w, ok := want[u.Map]; !ok || u.Entries != w[0] || u.Capacity != w[1] {
			t.Errorf("usage %+v, want %v", u, w)
		}
	}
	if len(use) != len(want) {
		t.Errorf("usage: %d maps, want %d", len(use), len(want))
	}
	// Computed from the snapshot and the tables: the same figures without opening maps by id.
	tables, err := e.m.TableUsage()
	if err != nil {
		t.Fatal(err)
	}
	if got := append(PolicyUsage(s, e.lim), tables...); !reflect.DeepEqual(got, use) {
		t.Errorf("PolicyUsage+TableUsage = %+v, Usage = %+v", got, use)
	}
}

func TestApplyRejectsOverCapacity(t *testing.T) {
	e := setup(t, nil)
	s1 := smallSnapshot(1)
	mustApply(t, e, s1)
	before := outerIDs(t, e)

	big := bigSnapshot(2, e.lim.Devices+1)
	err := e.m.Apply(big, e.lim)
	var ce *CapacityError
	if !errors.As(err, &ce) || ce.Map != "zt_devices" || ce.Count != 65 || ce.Capacity != 64 {
		t.Fatalf("over-capacity apply: %v, want a zt_devices capacity error 65 > 64", err)
	}
	t.Logf("rejected: %v", err)

	// Device id beyond zt_devstats.
	s := smallSnapshot(3)
	for k, d := range s.Devices {
		d.DevId = 65
		s.Devices[k] = d
	}
	err = e.m.Apply(s, e.lim)
	if !errors.As(err, &ce) || ce.Map != "zt_devstats" || ce.Count != 65 || ce.Capacity != 64 {
		t.Fatalf("dev_id beyond zt_devstats: %v", err)
	}
	t.Logf("rejected: %v", err)

	for _, lim := range []Limits{
		{Devices: 1, Addrs: 0, Rules: 10, Prefixes: 10},
		{Devices: 1, Addrs: 1, Rules: 1, Prefixes: 10},
		{Devices: 1, Addrs: 1, Rules: 2, Prefixes: 0},
	} {
		if err := e.m.Apply(smallSnapshot(4), lim); !errors.As(err, &ce) {
			t.Errorf("apply with %+v: %v, want a capacity error", lim, err)
		}
	}

	// Nothing was written: same maps in both slots, revision 1 still decides.
	if after := outerIDs(t, e); after != before {
		t.Errorf("rejected apply wrote the outer maps: %v -> %v", before, after)
	}
	checkActive(t, e, s1)
	if ret := run(t, e, ipv4Frame(devMAC, "10.0.0.2", "10.0.0.1", 17, 40000, 53)); ret != xdpPass {
		t.Errorf("after rejected apply: action %d, want XDP_PASS", ret)
	}
}

func TestApplyValidates(t *testing.T) {
	e := setup(t, nil)
	for name, mod := range map[string]func(*policy.Snapshot){
		"dev id 0": func(s *policy.Snapshot) {
			for k, d := range s.Devices {
				d.DevId = 0
				s.Devices[k] = d
			}
		},
		"revision mismatch": func(s *policy.Snapshot) { s.Config.Revision = 99 },
		"prefixlen":         func(s *policy.Snapshot) { s.Prefixes[bpf.PrefixKey{Prefixlen: 200}] = bpf.PrefixVal{} },
	} {
		s := smallSnapshot(1)
		mod(s)
		if err := e.m.Apply(s, e.lim); err == nil {
			t.Errorf("%s: apply succeeded", name)
		}
	}
	if _, err := e.m.ActiveRevision(); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("after rejected applies: %v, want ErrNoPolicy", err)
	}
	// Config.Revision 0 takes the snapshot's revision.
	s := smallSnapshot(5)
	s.Config.Revision = 0
	mustApply(t, e, s)
	s.Config.Revision = 5
	checkActive(t, e, s)
}

// TestApplyFlipsAndReleases: each Apply writes the inactive slot, flips, and parks the old slot
// on the placeholders; the old inner maps are freed by the kernel.
func TestApplyFlipsAndReleases(t *testing.T) {
	e := setup(t, nil)
	var empty [numKinds]ebpf.MapID
	for k, mp := range e.m.empty {
		info, err := mp.Info()
		if err != nil {
			t.Fatal(err)
		}
		empty[k], _ = info.ID()
	}
	s1 := smallSnapshot(1)
	mustApply(t, e, s1)
	ids1 := outerIDs(t, e)
	slot1, err := e.m.activeSlot()
	if err != nil || slot1 != 1 {
		t.Fatalf("active slot after the first apply: %d, %v, want 1", slot1, err)
	}
	for k := range numKinds {
		if ids1[k][0] != empty[k] || ids1[k][1] == 0 || ids1[k][1] == empty[k] {
			t.Fatalf("%s after apply 1: slots %v, placeholder %d", kindNames[k], ids1[k], empty[k])
		}
	}

	// Apply 2 with other contents: slot 0 becomes active, slot 1 is parked.
	s2 := smallSnapshot(2)
	s2.Config.Revision = 2
	for k, d := range s2.Devices {
		d.Ruleset = 9
		s2.Devices[k] = d
	}
	s2.Rules = map[bpf.RuleKey]bpf.RuleVal{{Ruleset: 9, SelKind: bpf.SelGateway, Proto: 6}: {Flags: bpf.RuleAllPorts}}
	start := time.Now()
	mustApply(t, e, s2)
	t.Logf("apply (1 device, warm): %v", time.Since(start))
	checkActive(t, e, s2)
	t.Logf("batch update unsupported (Put fallback) for: devices %v, addrs %v, prefixes %v, rules %v",
		e.m.noBatch[kDevices], e.m.noBatch[kAddrs], e.m.noBatch[kPrefixes], e.m.noBatch[kRules])
	ids2 := outerIDs(t, e)
	if slot, _ := e.m.activeSlot(); slot != 0 {
		t.Fatalf("active slot after the second apply: %d, want 0", slot)
	}
	for k := range numKinds {
		if ids2[k][1] != empty[k] {
			t.Errorf("%s: old slot holds map %d, want the placeholder %d", kindNames[k], ids2[k][1], empty[k])
		}
		if ids2[k][0] == ids1[k][1] || ids2[k][0] == empty[k] {
			t.Errorf("%s: new slot holds map %d (old %d, placeholder %d)", kindNames[k], ids2[k][0], ids1[k][1], empty[k])
		}
	}
	var cfg bpf.Config
	if err := e.dp.Objects().ZtCfg.Lookup(uint32(1), &cfg); err != nil || cfg != (bpf.Config{}) {
		t.Errorf("old zt_cfg slot not cleared: %+v, %v", cfg, err)
	}
	// Revision 2 decides: UDP to the gateway has no rule any more, TCP has.
	if ret := run(t, e, ipv4Frame(devMAC, "10.0.0.2", "10.0.0.1", 17, 40000, 53)); ret != xdpDrop {
		t.Errorf("udp under revision 2: action %d, want XDP_DROP", ret)
	}
	if ret := run(t, e, ipv4Frame(devMAC, "10.0.0.2", "10.0.0.1", 6, 40000, 22)); ret != xdpPass {
		t.Errorf("tcp under revision 2: action %d, want XDP_PASS", ret)
	}
	// The inner maps of revision 1 are gone (the kernel frees them after a grace period).
	for k := range numKinds {
		old := ids1[k][1]
		deadline := time.Now().Add(5 * time.Second)
		for {
			mp, err := ebpf.NewMapFromID(old)
			if err != nil {
				break
			}
			mp.Close()
			if time.Now().After(deadline) {
				t.Errorf("%s: old inner map %d still exists", kindNames[k], old)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// A third apply flips back to slot 1.
	mustApply(t, e, smallSnapshot(3))
	if slot, _ := e.m.activeSlot(); slot != 1 {
		t.Errorf("active slot after the third apply: %d, want 1", slot)
	}
}

// TestAdoptAfterRestart: a second process (Open + New on the same pins) reads back the policy the
// first one applied, and its next Apply flips the slot.
func TestAdoptAfterRestart(t *testing.T) {
	e := setup(t, nil)
	s1 := smallSnapshot(7)
	mustApply(t, e, s1)
	cfg := e.dp.Config()
	e.m.Close()
	e.dp.Close()

	dp, err := loader.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	m, err := New(dp.Objects(), nil) // nil specs: the embedded object's
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	e2 := &env{dp: dp, m: m, lim: e.lim}
	checkActive(t, e2, s1)
	s2 := bigSnapshot(8, 10)
	mustApply(t, e2, s2)
	checkActive(t, e2, s2)
}

// TestApplyTiming measures one Apply for 1 and 10,000 devices (and checks the read-back).
func TestApplyTiming(t *testing.T) {
	e := setup(t, func(c *loader.Config) { c.MaxDevices, c.MaxAddrs = 16384, 16384 })
	for _, n := range []int{1, 10000, 1, 10000} {
		s := bigSnapshot(uint64(n), n)
		start := time.Now()
		mustApply(t, e, s)
		d := time.Since(start)
		t.Logf("apply of %5d devices (%d devices + %d addrs + %d rules + %d prefixes): %v",
			n, len(s.Devices), len(s.Addrs), len(s.Rules), len(s.Prefixes), d)
		checkActive(t, e, s)
	}
	start := time.Now()
	for range 10 {
		if err := e.m.barrier(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("one rcu barrier (zt_barrier update): %v", time.Since(start)/10)
}

// TestSwapNeverMixesRevisions runs frames continuously while two revisions alternate. In revision
// A the device uses rule set 1 and only rule set 1 has rules; in B, rule set 2. A frame that mixed
// the device record of one revision with the rules (or placeholders) of the other would be
// dropped (no_rule, unknown_device, no_policy): every frame must pass.
func TestSwapNeverMixesRevisions(t *testing.T) {
	t.Run("full", func(t *testing.T) { swapNeverMixes(t, false) })
	t.Run("incremental", func(t *testing.T) { swapNeverMixes(t, true) })
}

func swapNeverMixes(t *testing.T, incremental bool) {
	e := setup(t, nil)
	e.m.SetIncremental(incremental)
	mk := func(rev uint64, rs uint32) *policy.Snapshot {
		s := smallSnapshot(rev)
		for k, d := range s.Devices {
			d.Ruleset, d.Flags = rs, 0
			s.Devices[k] = d
		}
		s.Prefixes = nil
		s.Rules = map[bpf.RuleKey]bpf.RuleVal{{Ruleset: rs, SelKind: bpf.SelGateway, Proto: 17}: {Flags: bpf.RuleAllPorts}}
		return s
	}
	mustApply(t, e, mk(1, 1))
	neverMixes(t, e, func(rev uint64) error { return e.m.Apply(mk(rev, uint32(rev%2+1)), e.lim) })
}

// neverMixes runs a frame from devMAC (10.0.0.2) to the gateway (10.0.0.1) udp 53 on two
// CPUs while change makes revision after revision for 2 s; every frame must pass.
func neverMixes(t *testing.T, e *env, change func(rev uint64) error) {
	frame := ipv4Frame(devMAC, "10.0.0.2", "10.0.0.1", 17, 40000, 53)

	var stop atomic.Bool
	var wg sync.WaitGroup
	var runs atomic.Uint64
	errc := make(chan error, 4)
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				if _, err := e.dp.Program().Run(&ebpf.RunOptions{Data: frame, Repeat: 200}); err != nil {
					errc <- err
					return
				}
				runs.Add(200)
			}
		})
	}
	applies := 0
	deadline := time.Now().Add(2 * time.Second)
	for rev := uint64(2); time.Now().Before(deadline); rev++ {
		if err := change(rev); err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatal(err)
		}
		applies++
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	c, err := e.m.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for v := range bpf.NumVerdicts {
		for r := range bpf.NumReasons {
			if n := c[v][r].Packets; n != 0 && (v != int(bpf.VerdictPass) || r != int(bpf.ReasonAllow)) {
				t.Errorf("%d frames %v/%v during swaps", n, bpf.Verdict(v), bpf.Reason(r))
			}
		}
	}
	// The program counts at least runs frames: a test run interrupted by a signal is retried.
	t.Logf("%d applies during %d+ frames, all of them pass/allow (%d counted)", applies, runs.Load(),
		c[bpf.VerdictPass][bpf.ReasonAllow].Packets)
	if applies < 2 || c[bpf.VerdictPass][bpf.ReasonAllow].Packets == 0 {
		t.Errorf("too little happened: %d applies", applies)
	}
}

// TestFillWithoutBatch: the one-by-one fallback (kernels or map types without batch update)
// writes the same policy.
func TestFillWithoutBatch(t *testing.T) {
	e := setup(t, nil)
	for k := range numKinds {
		e.m.noBatch[k] = true
	}
	s := bigSnapshot(1, 50)
	mustApply(t, e, s)
	checkActive(t, e, s)
}

// TestApplyFailureKeepsRunningPolicy: a failure after some outer maps of the inactive slot were
// written (here: the kernel refuses a rules map whose flags differ from the template) leaves the
// running revision in force and the inactive slot parked again.
func TestApplyFailureKeepsRunningPolicy(t *testing.T) {
	e := setup(t, nil)
	s1 := smallSnapshot(1)
	mustApply(t, e, s1)
	before := outerIDs(t, e)

	good := e.m.inner[kRules]
	bad := good.Copy()
	bad.Flags |= 1 // BPF_F_NO_PREALLOC: not the flags of zt_rules' inner map template
	e.m.inner[kRules] = bad
	err := e.m.Apply(smallSnapshot(2), e.lim)
	e.m.inner[kRules] = good
	if err == nil || errors.Is(err, ErrCommitted) {
		t.Fatalf("apply with an incompatible rules map: %v, want an error before the commit", err)
	}
	t.Logf("failed as expected: %v", err)
	if after := outerIDs(t, e); after != before {
		t.Errorf("outer maps after the failed apply: %v, want %v (inactive slot parked again)", after, before)
	}
	checkActive(t, e, s1)
	if ret := run(t, e, ipv4Frame(devMAC, "10.0.0.2", "10.0.0.1", 17, 40000, 53)); ret != xdpPass {
		t.Errorf("after failed apply: action %d, want XDP_PASS", ret)
	}
	s3 := smallSnapshot(3)
	mustApply(t, e, s3)
	checkActive(t, e, s3)
}

// checkUsage: Usage, read from the kernel, equals the content of the active snapshot s.
func checkUsage(t *testing.T, e *env, s *policy.Snapshot) {
	t.Helper()
	use, err := e.m.Usage(e.lim)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := e.m.TableUsage()
	if err != nil {
		t.Fatal(err)
	}
	if want := append(PolicyUsage(s, e.lim), tables...); !reflect.DeepEqual(use, want) {
		t.Fatalf("revision %d: usage %+v, content %+v", s.Revision, use, want)
	}
}

// TestIncrementalApply: in incremental mode (shared, patched and fresh inner maps), after every
// Apply of a sequence of changes big and small, the active slot holds exactly the snapshot, and
// usage still equals the content.
func TestIncrementalApply(t *testing.T) {
	e := setup(t, nil)
	e.m.SetIncremental(true)
	rnd := rand.New(rand.NewPCG(1, 2))
	base := bigSnapshot(1, 40)
	mustApply(t, e, base)
	checkActive(t, e, base)
	prev := base
	for rev := uint64(2); rev <= 40; rev++ {
		s := bigSnapshot(rev, 40)
		// Start from the previous content and change a little (or a lot, or nothing).
		s.Devices, s.Addrs = maps.Clone(prev.Devices), maps.Clone(prev.Addrs)
		s.Rules, s.Prefixes = maps.Clone(prev.Rules), maps.Clone(prev.Prefixes)
		switch rnd.IntN(5) {
		case 0: // one device's rule set changes
			for k, d := range s.Devices {
				d.Ruleset = 1 + uint32(rnd.IntN(2))
				s.Devices[k] = d
				break
			}
		case 1: // a device goes, with its address
			for k, d := range s.Devices {
				delete(s.Devices, k)
				for a, v := range s.Addrs {
					if v.DevId == d.DevId {
						delete(s.Addrs, a)
					}
				}
				break
			}
		case 2: // a rule is added or changed
			key := bpf.RuleKey{Ruleset: 1, SelKind: bpf.SelGateway, Proto: uint8(1 + rnd.IntN(20))}
			s.Rules[key] = bpf.RuleVal{Flags: bpf.RuleAllPorts}
		case 3: // everything is new
			s = bigSnapshot(rev, 10+rnd.IntN(50))
		case 4: // only the revision changes
		}
		mustApply(t, e, s)
		checkActive(t, e, s)
		checkUsage(t, e, s)
		prev = s
	}
}

// TestEventBudget: each (device, reason) gets EventBurst events per window, the rest are
// suppressed and counted; event timestamps are the datapath's coarse monotonic clock.
func TestEventBudget(t *testing.T) {
	// A fixed seed: with it the three keys below hold slots of their own (keys that collide
	// share a budget, which would change the counts).
	e := setup(t, func(c *loader.Config) { c.EventBurst, c.EventWindow, c.EventLimitSeed = 3, time.Hour, 1 })
	mustApply(t, e, smallSnapshot(1))
	ev, err := OpenEvents(e.dp.Objects())
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		t.Fatal(err)
	}
	// The datapath's clock is CLOCK_MONOTONIC_COARSE read once per jiffy: up to two ticks
	// behind (two ticks at HZ=100 is the margin below).
	before := uint64(ts.Nano()) - uint64(20*time.Millisecond)
	for _, c := range []struct {
		frame []byte
		n     int
	}{
		{frame: ipv4Frame(unknownMAC, "10.0.0.9", "10.0.0.1", 17, 40000, 53), n: 10}, // (no device, unknown_device)
		{frame: ipv4Frame(devMAC, "10.0.0.2", "10.1.2.3", 6, 40000, 81), n: 5},       // (device 1, no_rule)
		{frame: ipv4Frame(devMAC, "10.0.0.66", "10.1.2.3", 6, 40000, 81), n: 1},      // (device 1, spoof_ip)
		{frame: ipv4Frame(unknownMAC, "10.0.0.10", "10.0.0.1", 17, 40000, 53), n: 2}, // the first key again
	} {
		for range c.n {
			if ret := run(t, e, c.frame); ret != xdpDrop {
				t.Fatalf("action %d, want XDP_DROP", ret)
			}
		}
	}
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	after := uint64(ts.Nano())
	es, err := e.m.EventStats()
	if err != nil || es.Emitted != 3+3+1 || es.Suppressed != 7+2+2 || es.Lost != 0 {
		t.Errorf("EventStats() = %+v, %v; want 7 emitted, 11 suppressed", es, err)
	}
	ev.SetDeadline(time.Now().Add(2 * time.Second))
	for i := range 7 {
		x, err := ev.Read()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if x.Ts < before || x.Ts > after {
			t.Errorf("event %d: ts %d outside [%d, %d]", i, x.Ts, before, after)
		}
	}
}

// TestEventBudgetSharing: with one pair of budget slots, two keys get a slot each and a third
// shares a budget: fewer events, never more (burst 1: 2 events for 3 keys over 5 frames).
func TestEventBudgetSharing(t *testing.T) {
	e := setup(t, func(c *loader.Config) { c.EventBurst, c.EventWindow, c.EventLimitEntries = 1, time.Hour, 2 })
	mustApply(t, e, smallSnapshot(1))
	a := ipv4Frame(unknownMAC, "10.0.0.9", "10.0.0.1", 17, 40000, 53) // (no device, unknown_device)
	b := ipv4Frame(devMAC, "10.0.0.2", "10.1.2.3", 6, 40000, 81)      // (device 1, no_rule)
	c := ipv4Frame(devMAC, "10.0.0.66", "10.1.2.3", 6, 40000, 81)     // (device 1, spoof_ip)
	for _, f := range [][]byte{a, b, c, a, b} {
		if ret := run(t, e, f); ret != xdpDrop {
			t.Fatalf("action %d, want XDP_DROP", ret)
		}
	}
	es, err := e.m.EventStats()
	if err != nil || es.Emitted != 2 || es.Suppressed != 3 {
		t.Errorf("EventStats() = %+v, %v; want 2 emitted, 3 suppressed", es, err)
	}
}

// TestDevIDZeroNotCharged: a device record with dev_id 0 (which Apply refuses, written here
// straight into the active slot) is not charged: row 0's entry 0 is the agent's watermark.
func TestDevIDZeroNotCharged(t *testing.T) {
	e := setup(t, nil)
	mustApply(t, e, smallSnapshot(1))
	var before bpf.DevStats
	if err := e.dp.Objects().ZtDevstats.Lookup(watermarkKey, &before); err != nil {
		t.Fatal(err)
	}
	if before.Packets[0] != 1 {
		t.Fatalf("watermark %d after applying dev_id 1, want 1", before.Packets[0])
	}
	st, err := e.m.readSlot()
	if err != nil {
		t.Fatal(err)
	}
	devs, err := ebpf.NewMapFromID(st.ids[kDevices])
	if err != nil {
		t.Fatal(err)
	}
	defer devs.Close()
	rec := smallSnapshot(1).Devices[bpf.DevKey{Mac: devMAC}]
	rec.DevId = 0
	if err := devs.Update(bpf.DevKey{Mac: devMAC}, rec, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	// On CPU 0, whose row starts with the watermark.
	var old, cpu0 unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer func() { _ = unix.SchedSetaffinity(0, &old) }()
	cpu0.Set(0)
	if err := unix.SchedSetaffinity(0, &cpu0); err != nil {
		t.Fatal(err)
	}
	// Allowed by its rules, the frame opens no flow: dev_id 0 has no flow quota either.
	if ret := run(t, e, ipv4Frame(devMAC, "10.0.0.2", "10.0.0.1", 17, 40000, 53)); ret != xdpDrop {
		t.Fatalf("frame: action %d, want XDP_DROP (flow_table_full)", ret)
	}
	var after bpf.DevStats
	if err := e.dp.Objects().ZtDevstats.Lookup(watermarkKey, &after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("dev_id 0's frame changed the watermark entry: %+v, was %+v", after, before)
	}
}
