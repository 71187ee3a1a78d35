package hot

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/policy"
)

// figures are the hot section's per-round costs, turned into results and target verdicts.
type figures struct {
	sizes   []int
	snaps   map[int]*policy.Snapshot
	prims   []string  // the primitives' names, in openPrimitives' order
	floorNs []float64 // per round
	xfNs    []float64 // per round
	quick   string    // the targets' note prefix in a quick run

	primRounds map[string][]float64 // cost per operation, per round
	prim       map[string]float64   // median cost per operation
	xfPrim     []float64            // xdp-filter / (floor + its primitives), per round
	byKey      map[string]agg       // by aggKey
}

// agg is one ztgate variant's median ratios.
type agg struct {
	ratio, vsXF, vsPrim float64
	name                string
}

// The frame classes the targets are about.
var (
	allowedClasses  = []string{"allowed-v4", "allowed-v6"}
	identityClasses = []string{"unknown-device-drop", "spoofed-ip-drop"}
)

// addPeers reports the floor, xdp-filter and the primitives (primNs: their programs' costs).
func (f *figures) addPeers(r *core.Report, primNs [][]float64, rounds, repeat int) {
	xfRatio := core.Ratios(f.xfNs, f.floorNs)
	r.Add(core.Result{Section: "hot", Name: "floor (XDP_PASS only)", Value: core.Median(f.floorNs), Unit: "ns/pkt",
		Note: fmt.Sprintf("%d rounds x %d runs, CPU %d", rounds, repeat, core.BenchCPU())})
	r.Add(core.Result{Section: "hot", Name: "xdp-filter 10k MAC + 10k IPv4", Value: core.Median(f.xfNs), Unit: "ns/pkt",
		Ratio: core.Median(xfRatio), Base: "floor", Spread: core.Spread(xfRatio),
		Note: "xdpfilt_alw_all.o, maps full; frame unlisted: 4 hash + 2 array lookups, pass"})
	// Per-operation costs: (primitive program - floor) / primOps, per round.
	f.prim, f.primRounds = map[string]float64{}, map[string][]float64{}
	for i, name := range f.prims {
		ns := primNs[i]
		per := make([]float64, len(ns))
		for j := range ns {
			per[j] = (ns[j] - f.floorNs[j]) / primOps
		}
		f.prim[name], f.primRounds[name] = core.Median(per), per
		r.Add(core.Result{Section: "hot", Name: "primitive: " + name, Value: core.Median(per), Unit: "ns/op",
			Note: fmt.Sprintf("(%d in a row - floor) / %d", primOps, primOps)})
	}
	f.xfPrim = core.Ratios(f.xfNs, f.need([3]int{xfHashes, 0, 0}))
	r.Add(core.Result{Section: "hot", Name: "xdp-filter 10k MAC + 10k IPv4", Value: core.Median(f.xfNs), Unit: "ns/pkt",
		Ratio: core.Median(f.xfPrim), Base: "floor + primitives", Spread: core.Spread(f.xfPrim),
		Note: fmt.Sprintf("its %d hash lookups (8-byte key primitive; the 2 array lookups left out)", xfHashes)})
}

// addZtgate reports every ztgate variant of hv (res: every variant's costs) against the floor,
// xdp-filter and its primitives.
func (f *figures) addZtgate(r *core.Report, res [][]float64, hv []variant) {
	for _, h := range hv {
		ns := res[h.idx]
		rf := core.Ratios(ns, f.floorNs)
		rx := core.Ratios(ns, f.xfNs)
		name := variantName(h.n, h.class, h.events)
		r.Add(core.Result{Section: "hot", Name: name, Value: core.Median(ns), Unit: "ns/pkt", Ratio: core.Median(rf),
			Base: "floor", Spread: core.Spread(rf), Note: variantNote(h.class, h.events)})
		r.Add(core.Result{Section: "hot", Name: name, Value: core.Median(ns), Unit: "ns/pkt", Ratio: core.Median(rx),
			Base: "xdp-filter", Spread: core.Spread(rx)})
		k := callsOf(h.class, h.events)
		rp := core.Ratios(ns, f.need(k))
		r.Add(core.Result{Section: "hot", Name: name, Value: core.Median(ns), Unit: "ns/pkt", Ratio: core.Median(rp),
			Base: "floor + primitives", Spread: core.Spread(rp),
			Note: fmt.Sprintf("%d hash + %d LPM lookups + %d clock reads", k[0], k[1], k[2])})
		f.byKey[aggKey(h.class, h.n, h.events)] = agg{ratio: core.Median(rf), vsXF: core.Median(rx),
			vsPrim: core.Median(rp), name: name}
	}
}

// need is, per round, the floor plus the primitives a path of k calls makes (clock reads that
// came out below zero in the noise count as free).
func (f *figures) need(k [3]int) []float64 {
	hash, lpm, clock := f.primRounds[f.prims[0]], f.primRounds[f.prims[1]], f.primRounds[f.prims[2]]
	out := make([]float64, len(f.floorNs))
	for j := range out {
		out[j] = f.floorNs[j] + float64(k[0])*hash[j] + float64(k[1])*lpm[j] + float64(k[2])*max(0, clock[j])
	}
	return out
}

// primCost is the median cost of the primitives a path of k calls makes.
func (f *figures) primCost(k [3]int) float64 {
	return float64(k[0])*f.prim[f.prims[0]] + float64(k[1])*f.prim[f.prims[1]] + float64(k[2])*max(0, f.prim[f.prims[2]])
}

// callsOf is the helper calls of class with events on or off.
func callsOf(class string, events bool) [3]int {
	k := calls[class]
	if !events && strings.HasSuffix(class, "-drop") {
		k[2] = max(0, k[2]-1)
	}
	return k
}

// worst returns the largest ratio (of the variant to what of picks) over the classes, every
// size and both event settings, and the variant it came from.
func (f *figures) worst(of func(agg) float64, classes ...string) (float64, string) {
	w, at := 0.0, ""
	for _, class := range classes {
		for _, n := range f.sizes {
			for _, ev := range []bool{true, false} {
				a := f.byKey[aggKey(class, n, ev)]
				if v := of(a); v > w {
					w, at = v, a.name
				}
			}
		}
	}
	return w, at
}

// floorContext is the targets' note on the classes' ratio to the floor, for context.
func (f *figures) floorContext(classes ...string) string {
	w, _ := f.worst(func(a agg) float64 { return a.ratio }, classes...)
	return fmt.Sprintf("; context: %.1fx the floor (%.0f ns here), xdp-filter %.1fx the floor", w,
		core.Median(f.floorNs), core.Median(core.Ratios(f.xfNs, f.floorNs)))
}

// checkTargets records the section's targets.
func (f *figures) checkTargets(r *core.Report) {
	vsXF := func(a agg) float64 { return a.vsXF }
	vsPrim := func(a agg) float64 { return a.vsPrim }
	hashNs, floorNs, xfNs := f.prim[f.prims[0]], core.Median(f.floorNs), core.Median(f.xfNs)
	allowed := calls["allowed-v4"]
	w, at := f.worst(vsXF, allowedClasses...)
	r.Check("hot", fmt.Sprintf("allowed path (IPv4, IPv6) <= %.1fx xdp-filter", allowedVsFilterMax), w, "<=",
		allowedVsFilterMax, "x", f.quick+fmt.Sprintf("worst of every N and event setting: %s; xdp-filter %.0f ns in "+
			"the same rounds; the path's %d hash + %d LPM lookups alone are ~%.0f ns by the primitives, xdp-filter's %d "+
			"hash lookups ~%.0f ns", at, xfNs, allowed[0], allowed[1], f.primCost(allowed), xfHashes,
			xfHashes*hashNs)+f.floorContext(allowedClasses...))
	w, at = f.worst(vsXF, identityClasses...)
	r.Check("hot", fmt.Sprintf("identity drops (unknown device, spoofed IP) <= %.1fx xdp-filter", identityVsFilterMax),
		w, "<=", identityVsFilterMax, "x", f.quick+fmt.Sprintf("worst of every N and event setting: %s; one MAC "+
			"lookup against xdp-filter's %d: the floor plus one hash lookup is %.2fx xdp-filter by itself", at, xfHashes,
			(floorNs+hashNs)/xfNs)+f.floorContext(identityClasses...))
	w, at = f.worst(vsPrim, allowedClasses...)
	r.Check("hot", fmt.Sprintf("allowed path <= %.1fx the floor plus its primitives", vsPrimitivesMax), w, "<=",
		vsPrimitivesMax, "x", f.quick+fmt.Sprintf("worst: %s; the floor plus %d hash + %d LPM lookups + %d clock "+
			"reads = ~%.0f ns; xdp-filter is %.2fx its own (the floor plus %d hash lookups)", at,
			allowed[0], allowed[1], allowed[2], floorNs+f.primCost(allowed), core.Median(f.xfPrim), xfHashes))
	w, at = f.worst(vsPrim, identityClasses...)
	r.Check("hot", fmt.Sprintf("identity drops <= %.1fx the floor plus their primitives", vsPrimitivesMax), w, "<=",
		vsPrimitivesMax, "x", f.quick+fmt.Sprintf("worst: %s; the floor plus 1 hash lookup + 1 clock read (events "+
			"on; events off, no clock) = ~%.0f ns; with events on a drop also takes the event limiter's budget slot "+
			"(an array lookup, not counted)", at, floorNs+f.primCost(calls["unknown-device-drop"])))
	f.checkFlat(r)
}

// checkFlat records the target on how flat the allowed path's cost is across fleet sizes.
func (f *figures) checkFlat(r *core.Report) {
	lo, hi := 0.0, 0.0
	for i, n := range f.sizes {
		v := f.byKey[aggKey("allowed-v4", n, true)].ratio
		if i == 0 || v < lo {
			lo = v
		}
		if i == 0 || v > hi {
			hi = v
		}
	}
	// The policy is complete from 1k devices on (docs/benchmarks.md): say how flat the cost is
	// from there, to tell the rule content from N.
	note := "allowed-v4 ratio to the floor, events on, across N"
	var big []float64
	for _, n := range f.sizes {
		if n >= 1000 {
			big = append(big, f.byKey[aggKey("allowed-v4", n, true)].ratio)
		}
	}
	first, last := f.sizes[0], f.sizes[len(f.sizes)-1]
	if len(big) > 1 {
		note += fmt.Sprintf("; N=1's policy has 1 rule set (%d trie prefixes), N>=1k all 48 (%d): from 1k to %s "+
			"max/min-1 = %.2f; an LPM lookup costs %.0f ns with 124 prefixes and %.0f ns with 3 (primitives): the "+
			"rule content, not N, makes the difference", len(f.snaps[first].Prefixes), len(f.snaps[last].Prefixes),
			core.Count(last), slices.Max(big)/slices.Min(big)-1, f.prim[f.prims[1]], f.prim[f.prims[4]])
	}
	r.Check("hot", fmt.Sprintf("hot cost flat from %s to %s devices (max/min-1)", core.Count(first), core.Count(last)),
		hi/lo-1, "<=", flatMax, "", f.quick+note)
}
