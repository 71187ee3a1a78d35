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
	allowedVsFilterMax  = 1.0  // allowed path (IPv4, IPv6), x xdp-filter
	identityVsFilterMax = 0.5  // identity drops (unknown device, spoofed IP), x xdp-filter
	vsPrimitivesMax     = 1.5  // allowed path and identity drops, x (floor + the primitives they call)
	flatMax             = 0.10 // max/min-1 of the allowed-path ratio across fleet sizes
)

// calls are the helper calls of each frame class with events on, as (hash lookups, LPM
// lookups, clock reads), by bpf/ztgate.c as of this suite; with events off a drop reads the
// clock once less (the event limiter's timestamp).
var calls = map[string][3]int{"allowed-v4": {3, 1, 1}, "allowed-v6": {3, 1, 1}, "no-rule-drop": {4, 1, 2},
	"unknown-device-drop": {1, 0, 1}, "spoofed-ip-drop": {1, 0, 1}}

// xfHashes is the number of hash lookups xdp-filter makes on the measured frame (MAC and
// IPv4 address, each as source and destination); its two array lookups are left out.
const xfHashes = 4

// ---------------------------------------------------------------------------------------------
// Programs.

// primitives are XDP programs that repeat one operation primOps times: the cost per operation
// on this machine, measured next to the floor, explains the datapath's figures.
type primitives struct {
	maps  []*ebpf.Map
	progs []*ebpf.Program
	names []string
}

// primOps is the number of times each primitive program repeats its operation.
const primOps = 10

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
	ops := []struct {
		name string
		pre  asm.Instructions
		op   asm.Instructions
	}{
		{"hash lookup (8-byte key, hit)", zero(8), lookup(hash, 8)},
		{"LPM trie lookup (24-byte key, 124 prefixes)", lpmKey, lookup(lpm, 24)},
		{"clock read (bpf_jiffies64, inlined; zt_now adds a per-CPU array read)", nil, asm.Instructions{asm.FnJiffies64.Call()}},
		{"hash lookup (48-byte flow key, hit)", zero(48), lookup(flow, 48)},
		{"LPM trie lookup (24-byte key, 3 prefixes)", lpmKey, lookup(lpm3, 24)},
	}
	for _, o := range ops {
		ins := slices.Clone(o.pre)
		for range primOps {
			ins = append(ins, o.op...)
		}
		ins = append(ins, asm.Mov.Imm(asm.R0, core.XDPPass), asm.Return())
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "bench_prim", Type: ebpf.XDP, License: "GPL", Instructions: ins})
		if err != nil {
			return nil, fmt.Errorf("primitive %s: %w", o.name, err)
		}
		pr.progs = append(pr.progs, p)
		pr.names = append(pr.names, o.name)
	}
	return pr, nil
}

func (pr *primitives) Close() {
	for _, p := range pr.progs {
		p.Close()
	}
	for _, m := range pr.maps {
		m.Close()
	}
}

// ---------------------------------------------------------------------------------------------
// ztgate, loaded by the loader as the agent does, once with events on and once with events off
// over the same (pinned) maps.

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
	cfg := loader.Config{PinDir: z.pinDir, MaxDevices: lim.Devices, MaxAddrs: lim.Addrs, MaxRules: lim.Rules,
		MaxPrefixes: lim.Prefixes, EventsEnabled: true}
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

// ---------------------------------------------------------------------------------------------
// The hot section.

type variant struct {
	n      int // devices
	class  string
	events bool
	idx    int // in the Interleave slice
}

func run(ctx context.Context, cfg *core.Config, r *core.Report) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	sizes := cfg.Sizes([]int{1, 1000, 100000, 1000000}, []int{1, 1000})
	rounds := cfg.Pick(11, 3)
	repeat := cfg.Pick(1000000, 20000) // 2M would take the section past 3 minutes

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

	dps := map[int]*ztgateDP{}
	snaps := map[int]*policy.Snapshot{}
	defer func() {
		for n, z := range dps {
			if err := z.Close(); err != nil {
				cfg.Logf("hot: release the datapath of %s devices: %v", core.Count(n), err)
			}
		}
	}()
	for _, n := range sizes {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := fleet.Snapshot(cfg, n)
		if err != nil {
			return err
		}
		snaps[n] = s
		t0 := time.Now()
		z, err := openZtgate(n, s)
		if err != nil {
			return fmt.Errorf("ztgate with %s devices: %w", core.Count(n), err)
		}
		dps[n] = z
		cfg.Logf("hot: ztgate with %s devices loaded and applied in %s", core.Count(n), time.Since(t0).Round(time.Millisecond))
	}

	// The measured device: one in the middle of the fleet.
	dev := func(n int) int { return n / 2 }
	allowed4 := fleet.Classes[0].Frame(dev(sizes[0]))
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
	var hv []variant
	for _, n := range sizes {
		z := dps[n]
		for _, c := range fleet.Classes {
			frame := c.Frame(dev(n))
			for _, ev := range []bool{true, false} {
				p := z.off.Program()
				if ev {
					p = z.on.Program()
				}
				v, rs, err := core.Decide(z.maps, p, frame)
				if err != nil {
					return fmt.Errorf("%s with %s devices: %w", c.Name, core.Count(n), err)
				}
				if v != c.Verdict || rs != c.Reason {
					return fmt.Errorf("%s with %s devices: got %s/%s, want %s/%s", c.Name, core.Count(n), v, rs, c.Verdict, c.Reason)
				}
				want := uint32(core.XDPPass)
				if c.Verdict == bpf.VerdictDrop {
					want = core.XDPDrop
				}
				hv = append(hv, variant{n: n, class: c.Name, events: ev, idx: len(vs)})
				vs = append(vs, core.ProgVariant(variantName(n, c.Name, ev), p, frame, repeat, want))
			}
		}
	}

	unpin, err := core.PinThread(core.BenchCPU())
	if err != nil {
		return err
	}
	defer unpin()
	if err := core.WarmUp(vs); err != nil {
		return err
	}
	t0 := time.Now()
	res, err := core.Interleave(rounds, vs)
	if err != nil {
		return err
	}
	cfg.Logf("hot: %d variants x %d rounds x %d repeats in %s", len(vs), rounds, repeat, time.Since(t0).Round(time.Millisecond))

	floorNs, xfNs := res[0], res[1]
	xfRatio := core.Ratios(xfNs, floorNs)
	r.Add(core.Result{Section: "hot", Name: "floor (XDP_PASS only)", Value: core.Median(floorNs), Unit: "ns/pkt",
		Note: fmt.Sprintf("%d rounds x %d runs, CPU %d", rounds, repeat, core.BenchCPU())})
	r.Add(core.Result{Section: "hot", Name: "xdp-filter 10k MAC + 10k IPv4", Value: core.Median(xfNs), Unit: "ns/pkt",
		Ratio: core.Median(xfRatio), Base: "floor", Spread: core.Spread(xfRatio),
		Note: "xdpfilt_alw_all.o, maps full; frame unlisted: 4 hash + 2 array lookups, pass"})
	// Per-operation costs: (primitive program - floor) / primOps, per round.
	prim := map[string]float64{}
	primRounds := map[string][]float64{}
	for i, name := range prims.names {
		ns := res[2+i]
		per := make([]float64, len(ns))
		for j := range ns {
			per[j] = (ns[j] - floorNs[j]) / primOps
		}
		prim[name], primRounds[name] = core.Median(per), per
		r.Add(core.Result{Section: "hot", Name: "primitive: " + name, Value: core.Median(per), Unit: "ns/op",
			Note: fmt.Sprintf("(%d in a row - floor) / %d", primOps, primOps)})
	}
	hashNs, lpmNs, ktimeNs := prim[prims.names[0]], prim[prims.names[1]], prim[prims.names[2]]
	lpm3Ns := prim[prims.names[4]]
	// need is, per round, the floor plus the primitives a path of k calls makes (clock reads
	// that came out below zero in the noise core.Count as free).
	need := func(k [3]int) []float64 {
		out := make([]float64, len(floorNs))
		for j := range out {
			out[j] = floorNs[j] + float64(k[0])*primRounds[prims.names[0]][j] + float64(k[1])*primRounds[prims.names[1]][j] +
				float64(k[2])*max(0, primRounds[prims.names[2]][j])
		}
		return out
	}
	callsOf := func(class string, events bool) [3]int {
		k := calls[class]
		if !events && strings.HasSuffix(class, "-drop") {
			k[2] = max(0, k[2]-1)
		}
		return k
	}
	xfPrim := core.Ratios(xfNs, need([3]int{xfHashes, 0, 0}))
	r.Add(core.Result{Section: "hot", Name: "xdp-filter 10k MAC + 10k IPv4", Value: core.Median(xfNs), Unit: "ns/pkt",
		Ratio: core.Median(xfPrim), Base: "floor + primitives", Spread: core.Spread(xfPrim),
		Note: fmt.Sprintf("its %d hash lookups (8-byte key primitive; the 2 array lookups left out)", xfHashes)})

	type agg struct {
		ratio, vsXF, vsPrim float64
		name                string
	}
	byKey := map[string]agg{} // class/n/events
	for _, h := range hv {
		ns := res[h.idx]
		rf := core.Ratios(ns, floorNs)
		rx := core.Ratios(ns, xfNs)
		name := variantName(h.n, h.class, h.events)
		note := variantNote(h.class, h.events)
		r.Add(core.Result{Section: "hot", Name: name, Value: core.Median(ns), Unit: "ns/pkt", Ratio: core.Median(rf), Base: "floor",
			Spread: core.Spread(rf), Note: note})
		r.Add(core.Result{Section: "hot", Name: name, Value: core.Median(ns), Unit: "ns/pkt", Ratio: core.Median(rx), Base: "xdp-filter",
			Spread: core.Spread(rx)})
		k := callsOf(h.class, h.events)
		rp := core.Ratios(ns, need(k))
		r.Add(core.Result{Section: "hot", Name: name, Value: core.Median(ns), Unit: "ns/pkt", Ratio: core.Median(rp),
			Base: "floor + primitives", Spread: core.Spread(rp), Note: fmt.Sprintf("%d hash + %d LPM lookups + %d clock reads", k[0], k[1], k[2])})
		byKey[aggKey(h.class, h.n, h.events)] = agg{ratio: core.Median(rf), vsXF: core.Median(rx), vsPrim: core.Median(rp), name: name}
	}

	quick := ""
	if cfg.Quick {
		quick = "quick: N = 1 and 1k only, figures not meant to be read; "
	}
	// worst returns the largest ratio (of the variant to what of picks) over the classes, every
	// size and both event settings, and the variant it came from.
	worst := func(of func(agg) float64, classes ...string) (float64, string) {
		w, at := 0.0, ""
		for _, class := range classes {
			for _, n := range sizes {
				for _, ev := range []bool{true, false} {
					a := byKey[aggKey(class, n, ev)]
					if v := of(a); v > w {
						w, at = v, a.name
					}
				}
			}
		}
		return w, at
	}
	vsXF := func(a agg) float64 { return a.vsXF }
	vsPrim := func(a agg) float64 { return a.vsPrim }
	floorCtx := func(classes ...string) string {
		w, _ := worst(func(a agg) float64 { return a.ratio }, classes...)
		return fmt.Sprintf("; context: %.1fx the floor (%.0f ns here), xdp-filter %.1fx the floor", w, core.Median(floorNs),
			core.Median(xfRatio))
	}
	primCost := func(k [3]int) float64 {
		return float64(k[0])*hashNs + float64(k[1])*lpmNs + float64(k[2])*max(0, ktimeNs)
	}
	allowed := []string{"allowed-v4", "allowed-v6"}
	identity := []string{"unknown-device-drop", "spoofed-ip-drop"}
	w, at := worst(vsXF, allowed...)
	r.Check("hot", fmt.Sprintf("allowed path (IPv4, IPv6) <= %.1fx xdp-filter", allowedVsFilterMax), w, "<=",
		allowedVsFilterMax, "x", quick+fmt.Sprintf("worst of every N and event setting: %s; xdp-filter %.0f ns in "+
			"the same rounds; the path's %d hash + %d LPM lookups alone are ~%.0f ns by the primitives, xdp-filter's %d "+
			"hash lookups ~%.0f ns", at, core.Median(xfNs), calls["allowed-v4"][0], calls["allowed-v4"][1],
			primCost(calls["allowed-v4"]), xfHashes, xfHashes*hashNs)+floorCtx(allowed...))
	w, at = worst(vsXF, identity...)
	r.Check("hot", fmt.Sprintf("identity drops (unknown device, spoofed IP) <= %.1fx xdp-filter", identityVsFilterMax),
		w, "<=", identityVsFilterMax, "x", quick+fmt.Sprintf("worst of every N and event setting: %s; one MAC "+
			"lookup against xdp-filter's %d: the floor plus one hash lookup is %.2fx xdp-filter by itself", at, xfHashes,
			(core.Median(floorNs)+hashNs)/core.Median(xfNs))+floorCtx(identity...))
	w, at = worst(vsPrim, allowed...)
	r.Check("hot", fmt.Sprintf("allowed path <= %.1fx the floor plus its primitives", vsPrimitivesMax), w, "<=",
		vsPrimitivesMax, "x", quick+fmt.Sprintf("worst: %s; the floor plus %d hash + %d LPM lookups + %d clock "+
			"reads = ~%.0f ns; xdp-filter is %.2fx its own (the floor plus %d hash lookups)", at,
			calls["allowed-v4"][0], calls["allowed-v4"][1], calls["allowed-v4"][2],
			core.Median(floorNs)+primCost(calls["allowed-v4"]), core.Median(xfPrim), xfHashes))
	w, at = worst(vsPrim, identity...)
	r.Check("hot", fmt.Sprintf("identity drops <= %.1fx the floor plus their primitives", vsPrimitivesMax), w, "<=",
		vsPrimitivesMax, "x", quick+fmt.Sprintf("worst: %s; the floor plus 1 hash lookup + 1 clock read (events "+
			"on; events off, no clock) = ~%.0f ns; with events on a drop also takes the event limiter's budget slot "+
			"(an array lookup, not counted)", at, core.Median(floorNs)+primCost(calls["unknown-device-drop"])))
	lo, hi := 0.0, 0.0
	for i, n := range sizes {
		v := byKey[aggKey("allowed-v4", n, true)].ratio
		if i == 0 || v < lo {
			lo = v
		}
		if i == 0 || v > hi {
			hi = v
		}
	}
	flat := hi/lo - 1
	// The policy grows with the fleet up to its 48 rule sets: one device has one rule set (3
	// prefixes in the trie), 1k devices and more have them all (124). Say how flat the cost is
	// once the policy is complete, to tell the two apart.
	note := "allowed-v4 ratio to the floor, events on, across N"
	var big []float64
	for _, n := range sizes {
		if n >= 1000 {
			big = append(big, byKey[aggKey("allowed-v4", n, true)].ratio)
		}
	}
	if len(big) > 1 {
		note += fmt.Sprintf("; N=1's policy has 1 rule set (%d trie prefixes), N>=1k all 48 (%d): from 1k to %s max/min-1 = %.2f; "+
			"an LPM lookup costs %.0f ns with 124 prefixes and %.0f ns with 3 (primitives): the rule content, not N, makes the difference",
			len(snaps[sizes[0]].Prefixes), len(snaps[sizes[len(sizes)-1]].Prefixes), core.Count(sizes[len(sizes)-1]),
			slices.Max(big)/slices.Min(big)-1, lpmNs, lpm3Ns)
	}
	r.Check("hot", fmt.Sprintf("hot cost flat from %s to %s devices (max/min-1)", core.Count(sizes[0]), core.Count(sizes[len(sizes)-1])),
		flat, "<=", flatMax, "", quick+note)
	return nil
}

func aggKey(class string, n int, events bool) string {
	return fmt.Sprintf("%s/%d/%v", class, n, events)
}

func variantName(n int, class string, events bool) string {
	ev := "on"
	if !events {
		ev = "off"
	}
	return fmt.Sprintf("ztgate %s dev %s ev-%s", core.Count(n), class, ev)
}

func variantNote(class string, events bool) string {
	switch {
	case strings.HasSuffix(class, "-drop") && events:
		return "event limiter: over the burst, suppressed (flood case)"
	case strings.HasPrefix(class, "allowed"):
		return "dev+peer+prefix+rule lookups"
	}
	return ""
}
