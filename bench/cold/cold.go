// Package cold is the benchmark suite's cold section: the datapath's per-packet decision cost
// at scale with cold caches (frames cycle over every device), against a bare hash lookup.
package cold

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	benchbpf "github.com/ztgate/ztgate/bench/bpf"
	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bench/fleet"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
)

// Section is the cold section: the per-packet decision cost with cold caches.
var Section = core.Section{
	Name: "cold",
	Desc: "per-packet decision cost at scale, cache-cold (frames cycle over every device) vs a bare hash lookup",
	Run:  run,
}

// maxVsControl is the target of the cold section: the datapath's cache-cold cost per packet, at
// most this many times the control's (one bare hash lookup of the device MAC + a counter).
const maxVsControl = 1.5

// flowEntries is the flow table's capacity for a fleet of n devices: the default, or room for
// every device's flow (a rewritten frame opens, then finds, the flow of its device) and some.
func flowEntries(n int) int {
	return max(loader.DefaultConfig().FlowEntries, n+n/8)
}

// objects is the benchmark build (bench/bpf/cold.c) loaded: the datapath's objects, under
// the same names as the regular build's, so that maps.New and maps.Apply work unchanged, plus
// the control program and the benchmark's own maps.
type objects struct {
	bpf.ZtgateObjects
	Control      *ebpf.Program `ebpf:"zt_bench_control"`
	ControlRec   *ebpf.Program `ebpf:"zt_bench_control_rec"`
	ControlStats *ebpf.Program `ebpf:"zt_bench_control_stats"`
	Ctl          *ebpf.Map     `ebpf:"zt_bench_ctl"`
	Rec          *ebpf.Map     `ebpf:"zt_bench_rec"`
	Ctr          *ebpf.Map     `ebpf:"zt_bench_ctr"`
	Stats        *ebpf.Map     `ebpf:"zt_bench_stats"`
}

// Close closes every program and map of the build.
func (o *objects) Close() {
	// Close is nil-safe on every field: a partly assigned struct closes what it holds.
	_ = o.ZtgateObjects.Close()
	_ = o.Control.Close()
	_ = o.ControlRec.Close()
	_ = o.ControlStats.Close()
	_ = o.Ctl.Close()
	_ = o.Rec.Close()
	_ = o.Ctr.Close()
	_ = o.Stats.Close()
}

// sizeSpec sizes and parameterises a datapath spec as loader.Open does for the default
// configuration with maxDevices devices and a flow table of flows entries, without pinning.
func sizeSpec(spec *ebpf.CollectionSpec, maxDevices, flows int) error {
	c := loader.DefaultConfig()
	c.MaxDevices = maxDevices
	c.FlowEntries = flows
	return loader.SizeSpec(spec, c)
}

// datapath is one fleet size loaded in the benchmark build, with the regular program (hot) over
// the same maps.
type datapath struct {
	n    int
	objs objects
	hot  *ebpf.Program
	maps *maps.Maps
}

// Close releases the maps package, the regular program and the build's objects.
func (c *datapath) Close() {
	if c.maps != nil {
		c.maps.Close()
	}
	if c.hot != nil {
		c.hot.Close()
	}
	c.objs.Close()
}

// open loads the benchmark build for the fleet snapshot s of n devices, applies s with
// maps.Apply, fills the control's table with the same n device MACs and checks that every
// rewritten frame is allowed and every control lookup hits.
func open(n int, s *policy.Snapshot) (_ *datapath, err error) {
	lim := fleet.Limits(s)
	spec, err := benchbpf.LoadZtgateCold()
	if err != nil {
		return nil, err
	}
	if err := sizeSpec(spec, lim.Devices, flowEntries(n)); err != nil {
		return nil, fmt.Errorf("benchmark build: %w", err)
	}
	if err := spec.Variables["zt_bench_n"].Set(uint32(n)); err != nil {
		return nil, fmt.Errorf("benchmark build: zt_bench_n: %w", err)
	}
	spec.Maps["zt_bench_ctl"].MaxEntries = uint32(n)
	spec.Maps["zt_bench_rec"].MaxEntries = uint32(n)
	spec.Maps["zt_bench_stats"].MaxEntries = spec.Maps[bpf.ZtgateMapZtDevstats].MaxEntries // as zt_devstats
	var specs bpf.ZtgateMapSpecs
	if err := spec.Copy().Assign(&specs); err != nil {
		return nil, fmt.Errorf("benchmark build: %w", err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("benchmark build: %w\n%+v", err, ve)
		}
		return nil, fmt.Errorf("benchmark build: %w", err)
	}
	defer coll.Close()
	c := &datapath{n: n}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()

	// The regular program over the same maps: the hot cost at this size.
	hotSpec, err := bpf.LoadZtgate()
	if err != nil {
		return nil, err
	}
	if err := sizeSpec(hotSpec, lim.Devices, flowEntries(n)); err != nil {
		return nil, err
	}
	repl := map[string]*ebpf.Map{}
	for name := range hotSpec.Maps {
		if !strings.HasPrefix(name, ".") {
			repl[name] = coll.Maps[name]
		}
	}
	var hot struct {
		Prog *ebpf.Program `ebpf:"zt_xdp"`
	}
	if err := hotSpec.LoadAndAssign(&hot, &ebpf.CollectionOptions{MapReplacements: repl}); err != nil {
		return nil, fmt.Errorf("regular build over the benchmark maps: %w", err)
	}
	c.hot = hot.Prog

	if err := coll.Assign(&c.objs); err != nil {
		return nil, fmt.Errorf("benchmark build: %w", err)
	}
	if c.maps, err = maps.New(&c.objs.ZtgateObjects, &specs); err != nil {
		return nil, err
	}
	if err := c.maps.Apply(s, lim); err != nil {
		return nil, err
	}
	const chunk = 1 << 16
	keys := make([]bpf.DevKey, 0, chunk)
	vals := make([]uint64, chunk)
	recs := make([]bpf.DevRec, 0, chunk)
	for i := 0; i < n; i += chunk {
		keys, recs = keys[:0], recs[:0]
		for j := i; j < min(n, i+chunk); j++ {
			k := policy.DevKey(fleet.MAC(j))
			keys = append(keys, k)
			recs = append(recs, s.Devices[k])
		}
		if _, err := c.objs.Ctl.BatchUpdate(keys, vals[:len(keys)], nil); err != nil {
			return nil, fmt.Errorf("fill the control's table: %w", err)
		}
		if _, err := c.objs.Rec.BatchUpdate(keys, recs, nil); err != nil {
			return nil, fmt.Errorf("fill the control's record table: %w", err)
		}
	}
	return c, c.check()
}

// check proves what the measurement relies on: the regular program allows the replayed frame;
// the benchmark build allows every rewritten frame (each run moves the pass/allow counter and
// nothing else), so the rewrite lands on devices the policy binds; a first pass over every device
// opens each device's flow (the sequence visits every device once in N runs: the multiplier is
// prime to N), so that every measured run finds its device's flow and opens none (the flow count
// stays N); the control never misses.
func (c *datapath) check() error {
	frame := fleet.Classes[0].Frame(c.n / 2)
	if res, err := dptest.Decide(c.maps, c.hot, frame); err != nil || res.Verdict != bpf.VerdictPass ||
		res.Reason != bpf.ReasonAllow {
		return fmt.Errorf("regular build at %s devices: %s/%s (%v), want pass/allow", core.Count(c.n), res.Verdict,
			res.Reason, err)
	}
	if err := c.allowed(frame, c.n); err != nil {
		return err
	}
	if flows, err := c.flows(); err != nil || flows != uint64(c.n) {
		return fmt.Errorf("benchmark build at %s devices: %d flows after a pass over every device (%v), want %d",
			core.Count(c.n), flows, err, c.n)
	}
	runs := min(c.n, 1<<16)
	if err := c.allowed(frame, runs); err != nil {
		return err
	}
	if flows, err := c.flows(); err != nil || flows != uint64(c.n) {
		return fmt.Errorf("benchmark build at %s devices: %d flows after %d more runs (%v), want %d: a run opened one",
			core.Count(c.n), flows, runs, err, c.n)
	}
	for _, p := range []*ebpf.Program{c.objs.Control, c.objs.ControlRec, c.objs.ControlStats} {
		ret, err := p.Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(runs)})
		if err != nil {
			return err
		}
		if ret != core.XDPPass {
			return fmt.Errorf("control at %s devices: action %d, want XDP_PASS", core.Count(c.n), ret)
		}
	}
	var miss []uint64
	if err := c.objs.Ctr.Lookup(uint32(1), &miss); err != nil {
		return err
	}
	for _, m := range miss {
		if m != 0 {
			return fmt.Errorf("control at %s devices: %d lookups missed", core.Count(c.n), m)
		}
	}
	return nil
}

// allowed runs the benchmark build runs times on frame and checks that every run moved the
// pass/allow counter and nothing else.
func (c *datapath) allowed(frame []byte, runs int) error {
	before, err := c.maps.Counters()
	if err != nil {
		return err
	}
	if _, err := c.objs.ZtXdp.Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(runs)}); err != nil {
		return err
	}
	after, err := c.maps.Counters()
	if err != nil {
		return err
	}
	for v := range bpf.NumVerdicts {
		for r := range bpf.NumReasons {
			d := after[v][r].Packets - before[v][r].Packets
			want := uint64(0)
			if bpf.Verdict(v) == bpf.VerdictPass && bpf.Reason(r) == bpf.ReasonAllow {
				want = uint64(runs)
			}
			if d != want {
				return fmt.Errorf("benchmark build at %s devices: %d runs moved %s/%s by %d, want %d",
					core.Count(c.n), runs, bpf.Verdict(v), bpf.Reason(r), d, want)
			}
		}
	}
	return nil
}

// flows is the number of flows charged to the devices: zt_flow_count summed.
func (c *datapath) flows() (uint64, error) {
	const chunk = 1 << 14
	keys := make([]uint32, chunk)
	vals := make([]uint32, chunk)
	var (
		cursor ebpf.MapBatchCursor
		sum    uint64
	)
	for {
		n, err := c.objs.ZtFlowCount.BatchLookup(&cursor, keys, vals, nil)
		for _, v := range vals[:n] {
			sum += uint64(v)
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return sum, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read zt_flow_count: %w", err)
		}
	}
}

// run runs the section: at each fleet size, the cold and hot costs against the control's.
func run(ctx context.Context, cfg *core.Config, r *core.Report) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	sizes := cfg.Sizes([]int{1000, 10000, 100000, 1000000}, []int{1000, 10000})
	rounds := cfg.Pick(11, 3)
	repeat := cfg.Pick(1<<20, 20000)
	quick := ""
	if cfg.Quick {
		quick = "quick: figures not meant to be read; "
	}
	unpin, err := core.PinThread(core.BenchCPU())
	if err != nil {
		return err
	}
	defer unpin()
	for _, n := range sizes {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := fleet.Snapshot(cfg, n)
		if err != nil {
			return err
		}
		t0 := time.Now()
		c, err := open(n, s)
		if err != nil {
			return fmt.Errorf("%s devices: %w", core.Count(n), err)
		}
		cfg.Logf("cold: %s devices loaded, applied and checked in %s", core.Count(n), time.Since(t0).Round(time.Millisecond))
		frame := fleet.Classes[0].Frame(n / 2)
		vs := []core.Variant{
			core.ProgVariant("control", c.objs.Control, frame, repeat, core.XDPPass),
			core.ProgVariant("control, record values", c.objs.ControlRec, frame, repeat, core.XDPPass),
			core.ProgVariant("control, record values + device stats", c.objs.ControlStats, frame, repeat, core.XDPPass),
			core.ProgVariant("ztgate cold", c.objs.ZtXdp, frame, repeat, core.XDPPass),
			core.ProgVariant("ztgate hot", c.hot, frame, repeat, core.XDPPass),
		}
		if err := core.WarmUp(vs); err != nil {
			c.Close()
			return fmt.Errorf("%s devices: %w", core.Count(n), err)
		}
		t0 = time.Now()
		res, err := core.Interleave(rounds, vs)
		c.Close()
		if err != nil {
			return fmt.Errorf("%s devices: %w", core.Count(n), err)
		}
		cfg.Logf("cold: %s devices: %d rounds x %d repeats in %s", core.Count(n), rounds, repeat,
			time.Since(t0).Round(time.Millisecond))
		addResults(r, n, res, fmt.Sprintf("%d rounds x %d runs", rounds, repeat), quick)
	}
	return nil
}

// addResults reports the costs res of the variants at n devices (control, control with record
// values, with device stats, ztgate cold, ztgate hot) and checks the target; how says how they
// were measured, quick prefixes the target's note in a quick run.
func addResults(r *core.Report, n int, res [][]float64, how, quick string) {
	ctl, rec, stats, cold, hot := res[0], res[1], res[2], res[3], res[4]
	ctlNs, recNs, statsNs, coldNs, hotNs := core.Median(ctl), core.Median(rec), core.Median(stats), core.Median(cold),
		core.Median(hot)
	r.Add(core.Result{Section: "cold", Name: fmt.Sprintf("control %s dev (hash lookup + counter)", core.Count(n)),
		Value: ctlNs, Unit: "ns/pkt", Note: fmt.Sprintf("%s; hash of %d entries, max_entries %d", how, n, n)})
	// add reports ns against the control.
	add := func(name string, ns []float64, note string) core.Result {
		rs := core.Ratios(ns, ctl)
		res := core.Result{Section: "cold", Name: fmt.Sprintf(name, core.Count(n)), Value: core.Median(ns),
			Unit: "ns/pkt", Ratio: core.Median(rs), Base: "control", Spread: core.Spread(rs), Note: note}
		r.Add(res)
		return res
	}
	add("control %s dev, record values", rec,
		"elimination: values are the device records (zt_dev_rec), fields read as the datapath does")
	add("control %s dev, record values + device stats", stats,
		"elimination: + zt_account's per-device part (zt_dev_stats[cpu*stride + record's dev_id], zt_now)")
	coldRes := add("ztgate %s dev allowed-v4 cold", cold, "frames cycle over every device (idx = ctr*2654435761 % N), "+
		"each device's flow open: the established path, pass/allow")
	add("ztgate %s dev allowed-v4 hot", hot, "one frame replayed, its flow open (context)")
	r.Check("cold", fmt.Sprintf("cold allowed path at %s devices <= %.2gx the control", core.Count(n), maxVsControl),
		coldRes.Ratio,
		"<=", maxVsControl, "x",
		quick+fmt.Sprintf("ztgate cold %s ns: control %s, + device record values %s, + device stats %s, "+
			"+ the rest of the decision %s (its hot cost: ztgate hot %s ns); %.2gx leaves %s ns beyond the control's "+
			"one lookup for the device's counters and the whole decision",
			core.Num(coldNs), core.Num(ctlNs), core.Num(recNs-ctlNs), core.Num(statsNs-recNs), core.Num(coldNs-statsNs),
			core.Num(hotNs), maxVsControl, core.Num((maxVsControl-1)*ctlNs)))
}
