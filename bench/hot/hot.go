// Package hot is the benchmark suite's hot section: the datapath's per-packet decision cost
// with hot caches (one frame replayed with BPF_PROG_TEST_RUN), against xdp-filter and the
// primitives the decision calls, the XDP_PASS floor as context.
package hot

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bench/fleet"
	"github.com/ztgate/ztgate/bench/xdpfilter"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
)

// Section is the hot section: the per-packet decision cost with hot caches.
var Section = core.Section{
	Name: "hot",
	Desc: "per-packet decision cost, cache-hot (BPF_PROG_TEST_RUN, one frame replayed) vs xdp-filter and the " +
		"primitives it calls, the XDP_PASS floor as context",
	Run: run,
}

// Targets of the hot section. They compare with what was measured in the same run on the same
// CPU, xdp-filter and the primitives, never with the empty program: the floor's share of a
// decision differs from host to host (its cost tripled between two hosts whose lookups did not),
// so a ratio to it moves with the host; it stays in the table as context.
const (
	firstVsFilterMax       = 1.0  // first packet of a flow (IPv4, IPv6), x xdp-filter
	establishedVsFilterMax = 0.7  // a packet of a live flow (IPv4, IPv6), x xdp-filter
	identityVsFilterMax    = 0.5  // identity drops (unknown device, spoofed IP), x xdp-filter
	replyVsFilterMax       = 1.0  // TC: a reply toward a device whose flow exists, x xdp-filter
	unsolicitedVsFilterMax = 0.5  // TC: a frame toward a device of no flow and no from: rule, x xdp-filter
	vsPrimitivesMax        = 1.5  // established path and identity drops, x (floor + the primitives they call)
	flatMax                = 0.10 // max/min-1 of the established path's ratio across fleet sizes from 1k
)

// calls are the helper calls of each frame class with events on, as (hash lookups with an
// 8-byte key, LPM lookups, clock reads, flow-table lookups), by bpf/ztgate.c and bpf/todevice.h
// as of this suite; array lookups are left out, and so are the first packet's flow insert and
// quota add (their primitives are reported, the insert only with its delete). With events off
// a drop reads the clock once less (the event limiter's timestamp).
var calls = map[string][4]int{
	"established-v4": {1, 0, 2, 1}, "established-v6": {1, 0, 2, 1},
	"first-packet-v4": {3, 1, 2, 1}, "first-packet-v6": {3, 1, 2, 1},
	"no-rule-drop":        {4, 1, 2, 1},
	"unknown-device-drop": {1, 0, 1, 0}, "spoofed-ip-drop": {1, 0, 1, 0},
	"inbound-reply-v4": {1, 0, 2, 1}, "inbound-reply-v6": {1, 0, 2, 1},
	"unsolicited-inbound-drop": {1, 0, 2, 1},
}

// xfHashes is the number of hash lookups xdp-filter makes on the measured frame (MAC and
// IPv4 address, each as source and destination); its two array lookups are left out.
const xfHashes = 4

// primitives are XDP programs that repeat one operation primOps times: the cost per operation
// on this machine, measured next to the floor, explains the datapath's figures.
type primitives struct {
	maps  []*ebpf.Map
	progs []*ebpf.Program
	names []string
}

// primOps is the number of times each primitive program repeats its operation.
const primOps = 10

// The flow table's primitives: the sizes of zt_flows (struct zt_flow_key, struct zt_flow_val,
// entries) and the flows its copies hold while measured.
const (
	flowKeySize = 40
	flowValSize = 24
	flowEntries = 65536
	flowFill    = 4096
	bpfNoExist  = 1 // BPF_NOEXIST
)

// Names of the primitives the figures refer to by name.
const (
	primHash     = "hash lookup (8-byte key, hit)"
	primLPM      = "LPM trie lookup (24-byte key, 124 prefixes)"
	primClock    = "clock read (bpf_jiffies64, inlined; zt_now adds a per-CPU array read)"
	primFlow48   = "hash lookup (48-byte flow key, hit)"
	primFlowHit  = "flow lookup (40-byte key, hit; 65,536-entry table)"
	primFlowMiss = "flow lookup (40-byte key, miss; 65,536-entry table)"
	primInsDel   = "flow insert (40-byte key, BPF_NOEXIST) + its delete"
	primArray    = "array lookup (inlined)"
	primAtomic   = "atomic add on an array element (quota counter)"
)

// lpmKeyV4 is a zt_prefix_key for ::ffff:a in rule set rs with prefix length plen (IPv4 part).
func lpmKeyV4(rs uint32, a netip.Addr, plen int) []byte {
	k := make([]byte, 24)
	binary.LittleEndian.PutUint32(k[0:], uint32(32+96+plen))
	binary.LittleEndian.PutUint32(k[4:], rs)
	b := netip.AddrFrom16(a.As16()).As16()
	if a.Is4() {
		b = netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff}).As16()
		copy(b[12:], a.AsSlice())
	}
	copy(k[8:], b[:])
	return k
}

// openPrimitives loads the primitive programs and the maps they look up.
func openPrimitives() (_ *primitives, err error) {
	pr := &primitives{}
	defer func() {
		if err != nil {
			pr.Close()
		}
	}()
	newMap := func(ms *ebpf.MapSpec) (*ebpf.Map, error) {
		m, err := ebpf.NewMap(ms)
		if err == nil {
			pr.maps = append(pr.maps, m)
		}
		return m, err
	}
	// A hash like zt_devices' (8-byte key, 104-byte value), looked up with its one key.
	hash, err := newMap(&ebpf.MapSpec{Name: "bench_hash", Type: ebpf.Hash, KeySize: 8, ValueSize: 104, MaxEntries: 1})
	if err != nil {
		return nil, err
	}
	if err := hash.Put(uint64(0), make([]byte, 104)); err != nil {
		return nil, err
	}
	// A hash keyed by a whole flow (ingress port, VLAN, MAC, both addresses, protocol, port:
	// 48 bytes), looked up with its one key: what a datapath that decided in one lookup (a
	// verdict cache) would pay at least.
	flow, err := newMap(&ebpf.MapSpec{Name: "bench_flow", Type: ebpf.Hash, KeySize: 48, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return nil, err
	}
	if err := flow.Put(make([]byte, 48), uint64(0)); err != nil {
		return nil, err
	}
	// A trie like zt_prefixes' (24-byte keys), 124 prefixes in 48 rule sets, a hit on a /24.
	lpm, err := newMap(&ebpf.MapSpec{Name: "bench_lpm", Type: ebpf.LPMTrie, KeySize: 24, ValueSize: 4, MaxEntries: 124,
		Flags: 1 /* BPF_F_NO_PREALLOC */})
	if err != nil {
		return nil, err
	}
	for i := range 124 {
		a := netip.AddrFrom4([4]byte{203, 0, byte(113 + i/48), 0})
		if err := lpm.Put(lpmKeyV4(uint32(i%48), a, 24), uint32(i)); err != nil {
			return nil, err
		}
	}
	// The trie of a one-device policy: its one rule set's 3 prefixes, the same /24 hit.
	lpm3, err := newMap(&ebpf.MapSpec{Name: "bench_lpm3", Type: ebpf.LPMTrie, KeySize: 24, ValueSize: 4, MaxEntries: 3,
		Flags: 1 /* BPF_F_NO_PREALLOC */})
	if err != nil {
		return nil, err
	}
	for i, plen := range []int{24, 16, 0} {
		if err := lpm3.Put(lpmKeyV4(0, netip.AddrFrom4([4]byte{203, 0, 113, 0}), plen), uint32(i)); err != nil {
			return nil, err
		}
	}
	// A table like zt_flows (preallocated hash, 65,536 entries, 40-byte keys, 24-byte values),
	// holding flowFill flows, none of them the measured key (all zero) but the hit table's.
	flowTab := func(name string, hit bool) (*ebpf.Map, error) {
		m, err := newMap(&ebpf.MapSpec{Name: name, Type: ebpf.Hash, KeySize: flowKeySize, ValueSize: flowValSize,
			MaxEntries: flowEntries})
		if err != nil {
			return nil, err
		}
		for i := range flowFill {
			k := make([]byte, flowKeySize)
			binary.LittleEndian.PutUint32(k[0:], uint32(i)+1)
			binary.LittleEndian.PutUint32(k[16:], 0xc0a80000+uint32(i))
			if err := m.Put(k, make([]byte, flowValSize)); err != nil {
				return nil, err
			}
		}
		if hit {
			return m, m.Put(make([]byte, flowKeySize), make([]byte, flowValSize))
		}
		return m, nil
	}
	flowHit, err := flowTab("bench_flow40", true)
	if err != nil {
		return nil, err
	}
	flowNew, err := flowTab("bench_flow40n", false)
	if err != nil {
		return nil, err
	}
	// An array like zt_flow_count (4-byte values), one element per device of a small fleet.
	count, err := newMap(&ebpf.MapSpec{Name: "bench_count", Type: ebpf.Array, KeySize: 4, ValueSize: 4,
		MaxEntries: 1024})
	if err != nil {
		return nil, err
	}
	zero := func(size int16) asm.Instructions {
		ins := asm.Instructions{asm.Mov.Imm(asm.R3, 0)}
		for off := -size; off < 0; off += 4 {
			ins = append(ins, asm.StoreMem(asm.RFP, off, asm.R3, asm.Word))
		}
		return ins
	}
	lookup := func(m *ebpf.Map, ks int16) asm.Instructions {
		return asm.Instructions{asm.LoadMapPtr(asm.R1, m.FD()), asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(-ks)), asm.FnMapLookupElem.Call()}
	}
	key := lpmKeyV4(0, fleet.Dst4, 32)
	lpmKey := asm.Instructions{}
	for off := 0; off < 24; off += 4 {
		lpmKey = append(lpmKey, asm.Mov.Imm32(asm.R3, int32(binary.LittleEndian.Uint32(key[off:]))),
			asm.StoreMem(asm.RFP, int16(off-24), asm.R3, asm.Word))
	}
	// The flow insert: the key at fp-40, the value at fp-64, both zero; BPF_NOEXIST, then the
	// delete of the same key. A failed insert or delete ends the program with XDP_DROP, which the
	// variant refuses: every operation measured is an insert of a new key and its delete.
	insDel := asm.Instructions{
		asm.LoadMapPtr(asm.R1, flowNew.FD()), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -flowKeySize),
		asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -flowKeySize-flowValSize), asm.Mov.Imm(asm.R4, bpfNoExist),
		asm.FnMapUpdateElem.Call(), asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.LoadMapPtr(asm.R1, flowNew.FD()), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -flowKeySize),
		asm.FnMapDeleteElem.Call(), asm.JNE.Imm(asm.R0, 0, "fail"),
	}
	// The quota counter: the element's address looked up once (R6), then the atomic add
	// (__sync_fetch_and_add with its result unused: BPF_ATOMIC BPF_ADD, a locked add on x86).
	countPre := append(zero(4), lookup(count, 4)...)
	countPre = append(countPre, asm.JEq.Imm(asm.R0, 0, "fail"), asm.Mov.Reg(asm.R6, asm.R0), asm.Mov.Imm(asm.R7, 1))
	ops := []struct {
		name  string
		pre   asm.Instructions
		op    asm.Instructions
		fails bool // op may jump to "fail"
	}{
		{name: primHash, pre: zero(8), op: lookup(hash, 8)},
		{name: primLPM, pre: lpmKey, op: lookup(lpm, 24)},
		{name: primClock, op: asm.Instructions{asm.FnJiffies64.Call()}},
		{name: primFlow48, pre: zero(48), op: lookup(flow, 48)},
		{name: "LPM trie lookup (24-byte key, 3 prefixes)", pre: lpmKey, op: lookup(lpm3, 24)},
		{name: primFlowHit, pre: zero(flowKeySize), op: lookup(flowHit, flowKeySize)},
		{name: primFlowMiss, pre: zero(flowKeySize), op: lookup(flowNew, flowKeySize)},
		{name: primInsDel, pre: zero(flowKeySize + flowValSize), op: insDel, fails: true},
		{name: primArray, pre: zero(4), op: lookup(count, 4)},
		{name: primAtomic, pre: countPre, op: asm.Instructions{asm.AddAtomic.Mem(asm.R6, asm.R7, asm.Word, 0)},
			fails: true},
	}
	for _, o := range ops {
		ins := slices.Clone(o.pre)
		for range primOps {
			ins = append(ins, o.op...)
		}
		ins = append(ins, asm.Mov.Imm(asm.R0, core.XDPPass), asm.Return())
		if o.fails {
			ins = append(ins, asm.Mov.Imm(asm.R0, core.XDPDrop).WithSymbol("fail"), asm.Return())
		}
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "bench_prim", Type: ebpf.XDP, License: "GPL", Instructions: ins})
		if err != nil {
			return nil, fmt.Errorf("primitive %s: %w", o.name, err)
		}
		pr.progs = append(pr.progs, p)
		pr.names = append(pr.names, o.name)
	}
	return pr, nil
}

// Close releases the primitive programs and their maps.
func (pr *primitives) Close() {
	for _, p := range pr.progs {
		p.Close()
	}
	for _, m := range pr.maps {
		m.Close()
	}
}

// ztgateDP is ztgate loaded by the loader as the agent loads it, once with events on and once
// with events off over the same (pinned) maps.
type ztgateDP struct {
	n       int
	pinDir  string
	on, off *loader.Datapath
	maps    *maps.Maps
}

// openZtgate loads the datapath sized for s and applies s.
func openZtgate(n int, s *policy.Snapshot) (_ *ztgateDP, err error) {
	lim := fleet.Limits(s)
	z := &ztgateDP{n: n, pinDir: core.PinDir("hot")}
	defer func() {
		if err != nil {
			z.Close()
		}
	}()
	// The quota leaves room for a first-packet call's flows (firstRuns) beside the established ones.
	cfg := loader.Config{PinDir: z.pinDir, MaxDevices: lim.Devices, MaxAddrs: lim.Addrs, MaxRules: lim.Rules,
		MaxPrefixes: lim.Prefixes, EventsEnabled: true, FlowQuota: 2 * firstRuns}
	if z.on, err = loader.Open(cfg); err != nil {
		return z, err
	}
	cfg.EventsEnabled = false
	if z.off, err = loader.Open(cfg); err != nil { // adopts the maps pinned by the first Open
		return z, err
	}
	if z.maps, err = maps.New(z.on.Objects(), z.on.MapSpecs()); err != nil {
		return z, err
	}
	if err = z.maps.Apply(s, lim); err != nil {
		return z, err
	}
	return z, nil
}

// Close releases both programs and the maps and removes the pins.
func (z *ztgateDP) Close() error {
	if z.maps != nil {
		z.maps.Close()
	}
	for _, d := range []*loader.Datapath{z.off, z.on} {
		if d != nil {
			d.Close()
		}
	}
	return loader.Uninstall(z.pinDir)
}

// variant is one ztgate variant of the hot section: a fleet size, a frame class, events on or
// off.
type variant struct {
	n      int // devices
	class  string
	events bool
	idx    int // in the Interleave slice
	pass   int // first packet: the rewriter-to-floor peer's index in the Interleave slice (0: none)
	tc     bool
}

// run runs the section: every variant and its references in interleaved rounds, then the report.
func run(ctx context.Context, cfg *core.Config, r *core.Report) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	sizes := cfg.Sizes([]int{1, 1000, 100000, 1000000}, []int{1, 1000})
	rounds := cfg.Pick(11, 3)
	repeat := cfg.Pick(1000000, 20000) // more would make the section too long to run

	floor, err := core.ReturnProgram("bench_floor", core.XDPPass)
	if err != nil {
		return err
	}
	defer floor.Close()
	xf, err := xdpfilter.Open(xdpfilter.FlagSrc|xdpfilter.FlagDst, netip.Addr{})
	if err != nil {
		return err
	}
	defer xf.Close()
	prims, err := openPrimitives()
	if err != nil {
		return err
	}
	defer prims.Close()
	dps, snaps, err := openFleets(ctx, cfg, sizes)
	defer func() {
		for n, z := range dps {
			if err := z.Close(); err != nil {
				cfg.Logf("hot: release the datapath of %s devices: %v", core.Count(n), err)
			}
		}
	}()
	if err != nil {
		return err
	}
	allowed4 := fleet.Classes[0].Frame(device(sizes[0]))
	if err := xf.Check(allowed4); err != nil {
		return err
	}
	vs := []core.Variant{
		core.ProgVariant("floor", floor, allowed4, repeat, core.XDPPass),
		core.ProgVariant("xdp-filter", xf.Prog, allowed4, repeat, core.XDPPass),
	}
	for i, p := range prims.progs {
		vs = append(vs, core.ProgVariant(prims.names[i], p, allowed4, repeat, core.XDPPass))
	}
	vs, hv, err := ztgateVariants(vs, sizes, dps, snaps, repeat)
	if err != nil {
		return err
	}
	fv := &flowVariants{}
	defer fv.Close()
	if err := fv.open(floor, sizes, dps, snaps, repeat, cfg.Pick(8, 1)); err != nil {
		return err
	}
	vs, hv = fv.add(vs, hv)
	res, err := measure(cfg, vs, rounds, repeat)
	if err != nil {
		return err
	}
	f := &figures{sizes: sizes, snaps: snaps, prims: prims.names, floorNs: res[0], xfNs: res[1],
		tcFloorNs: res[fv.tcFloorIdx], byKey: map[string]agg{}}
	if cfg.Quick {
		f.quick = "quick: N = 1 and 1k only, figures not meant to be read; "
	}
	f.addPeers(r, res[2:2+len(prims.names)], rounds, repeat)
	f.addFlowPeers(r, res, fv)
	f.addZtgate(r, res, hv)
	f.checkTargets(r)
	return nil
}

// device is the measured device of a fleet of n: one in the middle.
func device(n int) int { return n / 2 }

// openFleets loads a datapath for the fleet of each size and applies its snapshot. The caller
// closes the datapaths returned, also on error.
func openFleets(ctx context.Context, cfg *core.Config, sizes []int) (map[int]*ztgateDP, map[int]*policy.Snapshot,
	error) {
	dps := map[int]*ztgateDP{}
	snaps := map[int]*policy.Snapshot{}
	for _, n := range sizes {
		if err := ctx.Err(); err != nil {
			return dps, snaps, err
		}
		s, err := fleet.Snapshot(cfg, n)
		if err != nil {
			return dps, snaps, err
		}
		snaps[n] = s
		t0 := time.Now()
		z, err := openZtgate(n, s)
		if err != nil {
			return dps, snaps, fmt.Errorf("ztgate with %s devices: %w", core.Count(n), err)
		}
		dps[n] = z
		cfg.Logf("hot: ztgate with %s devices loaded and applied in %s", core.Count(n),
			time.Since(t0).Round(time.Millisecond))
	}
	return dps, snaps, nil
}

// ztgateVariants appends to vs a variant per fleet size, frame class and event setting, each
// checked to be decided as its class says, and returns them with where each is in vs.
func ztgateVariants(vs []core.Variant, sizes []int, dps map[int]*ztgateDP, snaps map[int]*policy.Snapshot,
	repeat int) ([]core.Variant, []variant, error) {
	var hv []variant
	for _, n := range sizes {
		z := dps[n]
		for _, c := range fleet.Classes {
			frame := c.Frame(device(n))
			flows0, err := z.flowCount(snaps[n], device(n))
			if err != nil {
				return nil, nil, err
			}
			for _, ev := range []bool{true, false} {
				p := z.off.Program()
				if ev {
					p = z.on.Program()
				}
				res, err := dptest.Decide(z.maps, p, frame)
				v, rs := res.Verdict, res.Reason
				if err != nil {
					return nil, nil, fmt.Errorf("%s with %s devices: %w", c.Name, core.Count(n), err)
				}
				if v != c.Verdict || rs != c.Reason {
					return nil, nil, fmt.Errorf("%s with %s devices: got %s/%s, want %s/%s", c.Name, core.Count(n), v,
						rs, c.Verdict, c.Reason)
				}
				want := uint32(core.XDPPass)
				if c.Verdict == bpf.VerdictDrop {
					want = core.XDPDrop
				}
				class := hotClass(c.Name)
				hv = append(hv, variant{n: n, class: class, events: ev, idx: len(vs)})
				vs = append(vs, core.ProgVariant(variantName(n, class, ev), p, frame, repeat, want))
			}
			// An allowed frame's first run opened its flow, the second found it: every measured run
			// of the replayed frame takes the established path.
			flows1, err := z.flowCount(snaps[n], device(n))
			if err != nil {
				return nil, nil, err
			}
			if want := flows0 + uint32(btoi(c.Verdict == bpf.VerdictPass)); flows1 != want {
				return nil, nil, fmt.Errorf("%s with %s devices: the device holds %d flows, want %d", c.Name,
					core.Count(n), flows1, want)
			}
		}
	}
	return vs, hv, nil
}

// hotClass is the hot section's name of a class of fleet.Classes: a replayed allowed frame
// takes the established path from its second run on.
func hotClass(name string) string {
	if rest, ok := strings.CutPrefix(name, "allowed-"); ok {
		return "established-" + rest
	}
	return name
}

// btoi is 1 for true.
func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// measure runs the variants in interleaved rounds on the pinned benchmark CPU, after a warm-up.
func measure(cfg *core.Config, vs []core.Variant, rounds, repeat int) ([][]float64, error) {
	unpin, err := core.PinThread(core.BenchCPU())
	if err != nil {
		return nil, err
	}
	defer unpin()
	if err := core.WarmUp(vs); err != nil {
		return nil, err
	}
	t0 := time.Now()
	res, err := core.Interleave(rounds, vs)
	if err != nil {
		return nil, err
	}
	cfg.Logf("hot: %d variants x %d rounds x %d repeats in %s", len(vs), rounds, repeat,
		time.Since(t0).Round(time.Millisecond))
	return res, nil
}

// aggKey is the key of a variant in figures.byKey.
func aggKey(class string, n int, events bool) string {
	return fmt.Sprintf("%s/%d/%v", class, n, events)
}

// variantName is the name of a variant in the report.
func variantName(n int, class string, events bool) string {
	ev := "on"
	if !events {
		ev = "off"
	}
	return fmt.Sprintf("ztgate %s dev %s ev-%s", core.Count(n), class, ev)
}

// variantNote is the note of a variant's result against the floor.
func variantNote(class string, events bool) string {
	switch {
	case class == "unsolicited-inbound-drop":
		return "TC: no flow, no from: rule" + map[bool]string{true: "; event limiter: suppressed (flood case)"}[events]
	case strings.HasSuffix(class, "-drop") && events:
		return "event limiter: over the burst, suppressed (flood case)"
	case strings.HasPrefix(class, "established"):
		return "device + flow lookups (the fast path)"
	case strings.HasPrefix(class, "first-packet"):
		return "dev+peer+prefix+rule lookups, flow lookup (miss) and insert"
	case strings.HasPrefix(class, "inbound-reply"):
		return "TC: destination device + flow lookups"
	}
	return ""
}
