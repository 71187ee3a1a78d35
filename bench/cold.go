package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	benchbpf "github.com/ztgate/ztgate/bench/bpf"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
)

// coldMax is the target of the cold section: the datapath's cache-cold cost per packet, at
// most this many times the control's (one bare hash lookup of the device MAC + a counter).
const coldMax = 1.25

// coldObjects is the benchmark build (bench/bpf/cold.c) loaded: the datapath's objects, under
// the same names as the regular build's, so that maps.New and maps.Apply work unchanged, plus
// the control program and the benchmark's own maps.
type coldObjects struct {
	bpf.ZtgateObjects
	Control      *ebpf.Program `ebpf:"zt_bench_control"`
	ControlRec   *ebpf.Program `ebpf:"zt_bench_control_rec"`
	ControlStats *ebpf.Program `ebpf:"zt_bench_control_stats"`
	Ctl          *ebpf.Map     `ebpf:"zt_bench_ctl"`
	Rec          *ebpf.Map     `ebpf:"zt_bench_rec"`
	Ctr          *ebpf.Map     `ebpf:"zt_bench_ctr"`
	Stats        *ebpf.Map     `ebpf:"zt_bench_stats"`
}

func (o *coldObjects) Close() {
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
// configuration with maxDevices devices, without pinning.
func sizeSpec(spec *ebpf.CollectionSpec, maxDevices int) error {
	c := loader.DefaultConfig()
	c.MaxDevices = maxDevices
	return loader.SizeSpec(spec, c)
}

// coldDP is one fleet size loaded in the benchmark build, with the regular program (hot) over
// the same maps.
type coldDP struct {
	n    int
	objs coldObjects
	hot  *ebpf.Program
	maps *maps.Maps
}

func (c *coldDP) Close() {
	if c.maps != nil {
		c.maps.Close()
	}
	if c.hot != nil {
		c.hot.Close()
	}
	c.objs.Close()
}

// openCold loads the benchmark build for the fleet snapshot s of n devices, applies s with
// maps.Apply, fills the control's table with the same n device MACs and checks that every
// rewritten frame is allowed and every control lookup hits.
func openCold(n int, s *policy.Snapshot) (_ *coldDP, err error) {
	lim := fleetLimits(s)
	spec, err := benchbpf.LoadZtgateCold()
	if err != nil {
		return nil, err
	}
	if err := sizeSpec(spec, lim.Devices); err != nil {
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
	c := &coldDP{n: n}
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
	if err := sizeSpec(hotSpec, lim.Devices); err != nil {
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
			k := policy.DevKey(fleetMAC(j))
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
// nothing else), so the rewrite lands on devices the policy binds; the control never misses.
func (c *coldDP) check() error {
	frame := hotClasses[0].frame(c.n / 2)
	if v, r, err := decide(c.maps, c.hot, frame); err != nil || v != bpf.VerdictPass || r != bpf.ReasonAllow {
		return fmt.Errorf("regular build at %s devices: %s/%s (%v), want pass/allow", count(c.n), v, r, err)
	}
	runs := min(c.n, 1<<16)
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
					count(c.n), runs, bpf.Verdict(v), bpf.Reason(r), d, want)
			}
		}
	}
	for _, p := range []*ebpf.Program{c.objs.Control, c.objs.ControlRec, c.objs.ControlStats} {
		ret, err := p.Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(runs)})
		if err != nil {
			return err
		}
		if ret != xdpPass {
			return fmt.Errorf("control at %s devices: action %d, want XDP_PASS", count(c.n), ret)
		}
	}
	var miss []uint64
	if err := c.objs.Ctr.Lookup(uint32(1), &miss); err != nil {
		return err
	}
	for _, m := range miss {
		if m != 0 {
			return fmt.Errorf("control at %s devices: %d lookups missed", count(c.n), m)
		}
	}
	return nil
}

func runCold(ctx context.Context, cfg *Config, r *Report) error {
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
	unpin, err := PinThread(benchCPU())
	if err != nil {
		return err
	}
	defer unpin()
	for _, n := range sizes {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := fleetSnapshot(cfg, n)
		if err != nil {
			return err
		}
		t0 := time.Now()
		c, err := openCold(n, s)
		if err != nil {
			return fmt.Errorf("%s devices: %w", count(n), err)
		}
		cfg.Logf("cold: %s devices loaded, applied and checked in %s", count(n), time.Since(t0).Round(time.Millisecond))
		frame := hotClasses[0].frame(n / 2)
		vs := []Variant{
			progVariant("control", c.objs.Control, frame, repeat, xdpPass),
			progVariant("control, record values", c.objs.ControlRec, frame, repeat, xdpPass),
			progVariant("control, record values + device stats", c.objs.ControlStats, frame, repeat, xdpPass),
			progVariant("ztgate cold", c.objs.ZtXdp, frame, repeat, xdpPass),
			progVariant("ztgate hot", c.hot, frame, repeat, xdpPass),
		}
		if err := warmUp(vs); err != nil {
			c.Close()
			return fmt.Errorf("%s devices: %w", count(n), err)
		}
		t0 = time.Now()
		res, err := Interleave(rounds, vs)
		c.Close()
		if err != nil {
			return fmt.Errorf("%s devices: %w", count(n), err)
		}
		cfg.Logf("cold: %s devices: %d rounds x %d repeats in %s", count(n), rounds, repeat, time.Since(t0).Round(time.Millisecond))
		ctl, rec, stats, cold, hot := res[0], res[1], res[2], res[3], res[4]
		rr, rs, rc, rh := Ratios(rec, ctl), Ratios(stats, ctl), Ratios(cold, ctl), Ratios(hot, ctl)
		r.Add(Result{Section: "cold", Name: fmt.Sprintf("control %s dev (hash lookup + counter)", count(n)), Value: Median(ctl),
			Unit: "ns/pkt", Note: fmt.Sprintf("%d rounds x %d runs; hash of %d entries, max_entries %d", rounds, repeat, n, n)})
		r.Add(Result{Section: "cold", Name: fmt.Sprintf("control %s dev, record values", count(n)), Value: Median(rec),
			Unit: "ns/pkt", Ratio: Median(rr), Base: "control", Spread: Spread(rr),
			Note: "elimination: values are the device records (zt_dev_rec), fields read as the datapath does"})
		r.Add(Result{Section: "cold", Name: fmt.Sprintf("control %s dev, record values + device stats", count(n)), Value: Median(stats),
			Unit: "ns/pkt", Ratio: Median(rs), Base: "control", Spread: Spread(rs),
			Note: "elimination: + zt_account's per-device part (zt_dev_stats[cpu*stride + record's dev_id], zt_now)"})
		r.Add(Result{Section: "cold", Name: fmt.Sprintf("ztgate %s dev allowed-v4 cold", count(n)), Value: Median(cold),
			Unit: "ns/pkt", Ratio: Median(rc), Base: "control", Spread: Spread(rc),
			Note: "frames cycle over every device (idx = ctr*2654435761 % N)"})
		r.Add(Result{Section: "cold", Name: fmt.Sprintf("ztgate %s dev allowed-v4 hot", count(n)), Value: Median(hot),
			Unit: "ns/pkt", Ratio: Median(rh), Base: "control", Spread: Spread(rh), Note: "one frame replayed (context)"})
		r.Check("cold", fmt.Sprintf("cold allowed path at %s devices <= 1.25x the control", count(n)), Median(rc), "<=", coldMax, "x",
			quick+fmt.Sprintf("ztgate cold %s ns: control %s, + device record values %s, + device stats %s, "+
				"+ the rest of the decision %s (its hot cost: ztgate hot %s ns); 1.25x leaves %s ns beyond the control's one lookup "+
				"for the device's counters and the whole decision",
				num(Median(cold)), num(Median(ctl)), num(Median(rec)-Median(ctl)), num(Median(stats)-Median(rec)),
				num(Median(cold)-Median(stats)), num(Median(hot)), num((coldMax-1)*Median(ctl))))
	}
	return nil
}
