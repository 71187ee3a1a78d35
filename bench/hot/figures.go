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
	sizes     []int
	snaps     map[int]*policy.Snapshot
	prims     []string  // the primitives' names, in openPrimitives' order
	floorNs   []float64 // per round
	xfNs      []float64 // per round
	tcFloorNs []float64 // per round
	quick     string    // the targets' note prefix in a quick run

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
	firstClasses       = []string{"first-packet-v4", "first-packet-v6"}
	establishedClasses = []string{"established-v4", "established-v6"}
	identityClasses    = []string{"unknown-device-drop", "spoofed-ip-drop"}
	replyClasses       = []string{"inbound-reply-v4", "inbound-reply-v6"}
	unsolicitedClasses = []string{"unsolicited-inbound-drop"}
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
	f.xfPrim = core.Ratios(f.xfNs, f.need(f.floorNs, [4]int{xfHashes, 0, 0, 0}))
	r.Add(core.Result{Section: "hot", Name: "xdp-filter 10k MAC + 10k IPv4", Value: core.Median(f.xfNs), Unit: "ns/pkt",
		Ratio: core.Median(f.xfPrim), Base: "floor + primitives", Spread: core.Spread(f.xfPrim),
		Note: fmt.Sprintf("its %d hash lookups (8-byte key primitive; the 2 array lookups left out)", xfHashes)})
}

// addFlowPeers reports the peers of the flow variants: the TC floor and the first-packet method's
// rewriter tail-calling the floor.
func (f *figures) addFlowPeers(r *core.Report, res [][]float64, fv *flowVariants) {
	rf := core.Ratios(f.tcFloorNs, f.floorNs)
	r.Add(core.Result{Section: "hot", Name: "TC floor (TC_ACT_UNSPEC only)", Value: core.Median(f.tcFloorNs),
		Unit: "ns/pkt", Ratio: core.Median(rf), Base: "floor", Spread: core.Spread(rf),
		Note: "SchedCLS test run (an skb): the floor of the TC variants"})
	for i, idx := range fv.passIdx {
		ns := res[idx]
		rf := core.Ratios(ns, f.floorNs)
		r.Add(core.Result{Section: "hot", Name: fmt.Sprintf("rewriter + floor (IPv%d)", 4+2*i), Value: core.Median(ns),
			Unit: "ns/pkt", Ratio: core.Median(rf), Base: "floor", Spread: core.Spread(rf),
			Note: fmt.Sprintf("first-packet method: source port rewrite + tail call, calls of %d runs; taken out "+
				"of the first-packet figures", firstRuns)})
	}
}

// addZtgate reports every ztgate variant of hv (res: every variant's costs) against the floor,
// xdp-filter and its primitives. A first-packet variant's cost is the rewriter's less the
// rewriter-to-floor peer's plus the floor, round by round.
func (f *figures) addZtgate(r *core.Report, res [][]float64, hv []variant) {
	for _, h := range hv {
		ns, floor, base := res[h.idx], f.floorNs, "floor"
		if h.pass > 0 {
			ns = make([]float64, len(res[h.idx]))
			for j := range ns {
				ns[j] = res[h.idx][j] - res[h.pass][j] + f.floorNs[j]
			}
		}
		if h.tc {
			floor, base = f.tcFloorNs, "TC floor"
		}
		rf := core.Ratios(ns, floor)
		rx := core.Ratios(ns, f.xfNs)
		name := variantName(h.n, h.class, h.events)
		r.Add(core.Result{Section: "hot", Name: name, Value: core.Median(ns), Unit: "ns/pkt", Ratio: core.Median(rf),
			Base: base, Spread: core.Spread(rf), Note: variantNote(h.class, h.events)})
		r.Add(core.Result{Section: "hot", Name: name, Value: core.Median(ns), Unit: "ns/pkt", Ratio: core.Median(rx),
			Base: "xdp-filter", Spread: core.Spread(rx)})
		k := callsOf(h.class, h.events)
		rp := core.Ratios(ns, f.need(floor, k))
		note := fmt.Sprintf("%d hash + %d LPM + %d flow-key lookups + %d clock reads", k[0], k[1], k[3], k[2])
		if h.pass > 0 {
			note += " (the flow insert and the quota's atomic add not counted)"
		}
		r.Add(core.Result{Section: "hot", Name: name, Value: core.Median(ns), Unit: "ns/pkt", Ratio: core.Median(rp),
			Base: "floor + primitives", Spread: core.Spread(rp), Note: note})
		f.byKey[aggKey(h.class, h.n, h.events)] = agg{ratio: core.Median(rf), vsXF: core.Median(rx),
			vsPrim: core.Median(rp), name: name}
	}
}

// need is, per round, the floor (the XDP or the TC one) plus the primitives a path of k calls
// makes (clock reads that came out below zero in the noise count as free).
func (f *figures) need(floor []float64, k [4]int) []float64 {
	hash, lpm, clock, flow := f.primRounds[primHash], f.primRounds[primLPM], f.primRounds[primClock],
		f.primRounds[primFlowHit]
	out := make([]float64, len(f.floorNs))
	for j := range out {
		out[j] = floor[j] + float64(k[0])*hash[j] + float64(k[1])*lpm[j] + float64(k[2])*max(0, clock[j]) +
			float64(k[3])*flow[j]
	}
	return out
}

// primCost is the median cost of the primitives a path of k calls makes.
func (f *figures) primCost(k [4]int) float64 {
	return float64(k[0])*f.prim[primHash] + float64(k[1])*f.prim[primLPM] +
		float64(k[2])*max(0, f.prim[primClock]) + float64(k[3])*f.prim[primFlowHit]
}

// callsOf is the helper calls of class with events on or off.
func callsOf(class string, events bool) [4]int {
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
	hashNs, flowNs := f.prim[primHash], f.prim[primFlowHit]
	floorNs, xfNs := core.Median(f.floorNs), core.Median(f.xfNs)
	first, est := calls["first-packet-v4"], calls["established-v4"]
	w, at := f.worst(vsXF, firstClasses...)
	r.Check("hot", fmt.Sprintf("first packet of a flow (IPv4, IPv6) <= %.1fx xdp-filter", firstVsFilterMax), w, "<=",
		firstVsFilterMax, "x", f.quick+fmt.Sprintf("worst of every N: %s (a new flow every run: rewritten source "+
			"port, the rewriter's cost taken out); xdp-filter %.0f ns in the same rounds; the path's %d hash + %d LPM "+
			"+ %d flow-key lookups alone are ~%.0f ns by the primitives, plus the flow insert and the quota's atomic "+
			"add: %.0f ns by the insert + delete primitive (an upper bound), %.0f ns", at, xfNs, first[0], first[1],
			first[3], f.primCost(first), f.prim[primInsDel], f.prim[primAtomic])+f.floorContext(firstClasses...))
	w, at = f.worst(vsXF, establishedClasses...)
	r.Check("hot", fmt.Sprintf("established flow (IPv4, IPv6) <= %.1fx xdp-filter", establishedVsFilterMax), w, "<=",
		establishedVsFilterMax, "x", f.quick+fmt.Sprintf("worst of every N and event setting: %s; the device "+
			"lookup and one flow lookup: the floor plus an 8-byte and a flow-key hash lookup is %.2fx xdp-filter "+
			"by itself", at, (floorNs+hashNs+flowNs)/xfNs)+f.floorContext(establishedClasses...))
	w, at = f.worst(vsXF, identityClasses...)
	r.Check("hot", fmt.Sprintf("identity drops (unknown device, spoofed IP) <= %.1fx xdp-filter", identityVsFilterMax),
		w, "<=", identityVsFilterMax, "x", f.quick+fmt.Sprintf("worst of every N and event setting: %s; one MAC "+
			"lookup against xdp-filter's %d: the floor plus one hash lookup is %.2fx xdp-filter by itself", at, xfHashes,
			(floorNs+hashNs)/xfNs)+f.floorContext(identityClasses...))
	w, at = f.worst(vsXF, replyClasses...)
	r.Check("hot", fmt.Sprintf("inbound reply of a flow (TC; IPv4, IPv6) <= %.1fx xdp-filter", replyVsFilterMax), w,
		"<=", replyVsFilterMax, "x", f.quick+fmt.Sprintf("worst of every N and event setting: %s; the TC program "+
			"(SchedCLS test run) against XDP xdp-filter; the TC floor is %.2fx the XDP floor here", at,
			core.Median(core.Ratios(f.tcFloorNs, f.floorNs))))
	w, at = f.worst(vsXF, unsolicitedClasses...)
	r.Check("hot", fmt.Sprintf("unsolicited inbound drop (TC) <= %.1fx xdp-filter", unsolicitedVsFilterMax), w, "<=",
		unsolicitedVsFilterMax, "x", f.quick+fmt.Sprintf("worst of every N and event setting: %s; no flow, no "+
			"from: rule: inbound_denied", at))
	w, at = f.worst(vsPrim, establishedClasses...)
	r.Check("hot", fmt.Sprintf("established path <= %.1fx the floor plus its primitives", vsPrimitivesMax), w, "<=",
		vsPrimitivesMax, "x", f.quick+fmt.Sprintf("worst: %s; the floor plus %d hash + %d flow-key lookups + %d "+
			"clock reads = ~%.0f ns; xdp-filter is %.2fx its own (the floor plus %d hash lookups)", at, est[0], est[3],
			est[2], floorNs+f.primCost(est), core.Median(f.xfPrim), xfHashes))
	w, at = f.worst(vsPrim, identityClasses...)
	r.Check("hot", fmt.Sprintf("identity drops <= %.1fx the floor plus their primitives", vsPrimitivesMax), w, "<=",
		vsPrimitivesMax, "x", f.quick+fmt.Sprintf("worst: %s; the floor plus 1 hash lookup + 1 clock read (events "+
			"on; events off, no clock) = ~%.0f ns; with events on a drop also takes the event limiter's budget slot "+
			"(an array lookup, not counted)", at, floorNs+f.primCost(calls["unknown-device-drop"])))
	f.checkFlat(r)
}

// checkFlat records the target on how flat the established path's cost is across the fleet sizes
// from 1k devices on (below, the policy is not complete: docs/benchmarks.md).
func (f *figures) checkFlat(r *core.Report) {
	var ratios []float64
	var from, to int
	for _, n := range f.sizes {
		if n < 1000 {
			continue
		}
		if from == 0 {
			from = n
		}
		to = n
		ratios = append(ratios, f.byKey[aggKey("established-v4", n, true)].ratio)
	}
	flat, note := 0.0, "established-v4 ratio to the floor, events on, across N"
	if len(ratios) > 1 {
		flat = slices.Max(ratios)/slices.Min(ratios) - 1
	} else {
		note += "; one size only"
	}
	first := f.sizes[0]
	if a, b := f.byKey[aggKey("established-v4", first, true)], f.byKey[aggKey("established-v4", to, true)]; first < from {
		note += fmt.Sprintf("; context: N=%s (1 rule set, %d trie prefixes) %.2fx the floor, N=%s %.2fx",
			core.Count(first), len(f.snaps[first].Prefixes), a.ratio, core.Count(to), b.ratio)
	}
	r.Check("hot", fmt.Sprintf("established path flat from %s to %s devices (max/min-1)", core.Count(from),
		core.Count(to)), flat, "<=", flatMax, "", f.quick+note)
}
