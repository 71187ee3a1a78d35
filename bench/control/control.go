// Package control is the benchmark suite's control section: the control plane through the
// real agent and the real CLI (full applies, one-device changes, kernel memory and agent RSS
// per N devices), and the atomic swap (maps.Apply) in-process. docs/benchmarks.md describes
// the method.
package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/cilium/ebpf"
	"gopkg.in/yaml.v3"

	"github.com/ztgate/ztgate/bench/agentrun"
	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// Section is the control section.
var Section = core.Section{
	Name: "control",
	Desc: "control plane through the real agent and CLI: full apply, one-device change, atomic swap, " +
		"kernel memory and agent RSS per N",
	Run: run,
}

// Targets of the section.
const (
	targetFull1M         = 1500 * time.Millisecond // 1M devices enforced after the push
	targetFull100k       = 200 * time.Millisecond  // 100k devices
	targetChangeP99      = 20 * time.Millisecond   // one-device change, end to end
	targetBytesPerDevice = 200.0                   // kernel memory per configured device
	targetRSS100kMB      = 100.0                   // agent peak RSS at 100k devices
)

// kernelMem is the kernel memory (memlock) of a datapath's policy maps, read from its pins.
type kernelMem struct {
	kind     [4]uint64 // inner maps of the active slot, by kind (devices, addrs, prefixes, rules)
	entries  [4]int    // their max_entries
	inactive uint64    // inner maps of the other slot that the active slot does not share
	devstats uint64    // zt_devstats (a row of max_devices+1 entries per CPU)
}

// active is the memory of the active slot's inner maps.
func (km kernelMem) active() uint64 { return km.kind[0] + km.kind[1] + km.kind[2] + km.kind[3] }

// outerPins are the pins of the outer maps, by kind (the order of kernelMem.kind).
var outerPins = [4]string{bpf.ZtgateMapZtDevices, bpf.ZtgateMapZtAddrs, bpf.ZtgateMapZtPrefixes, bpf.ZtgateMapZtRules}

// readKernelMem reads the kernel memory of the policy maps of the datapath pinned in pinDir.
func readKernelMem(pinDir string) (kernelMem, error) {
	var km kernelMem
	dir := loader.LayoutDir(pinDir)
	info := func(m *ebpf.Map) (uint64, uint32, error) {
		mi, err := m.Info()
		if err != nil {
			return 0, 0, err
		}
		b, _ := mi.Memlock() // 0 for an empty LPM trie
		return b, mi.MaxEntries, nil
	}
	active, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.ZtgateMapZtActive), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return km, err
	}
	var slot uint32
	err = active.Lookup(uint32(0), &slot)
	active.Close()
	if err != nil {
		return km, err
	}
	slot &= 1
	var ids [2][4]uint32
	for k, name := range outerPins {
		outer, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return km, err
		}
		for s := range uint32(2) {
			_ = outer.Lookup(s, &ids[s][k]) // a slot never written has no entry
		}
		outer.Close()
	}
	seen := map[uint32]bool{}
	for _, s := range []uint32{slot, 1 - slot} {
		for k, id := range ids[s] {
			if id == 0 || seen[id] {
				continue
			}
			seen[id] = true
			inner, err := ebpf.NewMapFromID(ebpf.MapID(id))
			if err != nil {
				return km, fmt.Errorf("%s[%d]: %w", outerPins[k], s, err)
			}
			b, n, err := info(inner)
			inner.Close()
			if err != nil {
				return km, err
			}
			if s == slot {
				km.kind[k], km.entries[k] = b, int(n)
			} else {
				km.inactive += b
			}
		}
	}
	ds, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.ZtgateMapZtDevstats), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return km, err
	}
	defer ds.Close()
	km.devstats, _, err = info(ds)
	return km, err
}

// memFloor is the kernel memory (memlock) of bare maps that hold the least a datapath binding
// identities and serving device/segment rules must keep: a hash from MAC to a 4-byte id, a hash
// from each bound address to a 4-byte id, and 6 counters per device in a plain array.
type memFloor struct{ dev, addr, counters uint64 }

// total is the memory of the three maps.
func (f memFloor) total() uint64 { return f.dev + f.addr + f.counters }

// kernelMemFloor creates the floor's maps for devices devices and addrs addresses and reads their memory.
func kernelMemFloor(devices, addrs int) (memFloor, error) {
	var f memFloor
	for _, m := range []struct {
		spec *ebpf.MapSpec
		out  *uint64
	}{
		{&ebpf.MapSpec{Name: "bench_fl_dev", Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: uint32(devices)}, &f.dev},
		{&ebpf.MapSpec{Name: "bench_fl_addr", Type: ebpf.Hash, KeySize: 16, ValueSize: 4,
			MaxEntries: uint32(max(addrs, 1))}, &f.addr},
		{&ebpf.MapSpec{Name: "bench_fl_ctr", Type: ebpf.Array, KeySize: 4, ValueSize: 48,
			MaxEntries: uint32(devices)}, &f.counters},
	} {
		mp, err := ebpf.NewMap(m.spec)
		if err != nil {
			return f, err
		}
		info, err := mp.Info()
		mp.Close()
		if err != nil {
			return f, err
		}
		b, ok := info.Memlock()
		if !ok {
			return f, errors.New("kernel reports no memlock")
		}
		*m.out = b
	}
	return f, nil
}

// sizePlan is what is measured at n devices besides the full apply from no policy.
type sizePlan struct {
	replace bool          // a second full apply that changes every device's rules
	changes int           // one-device changes wanted
	min     int           // ... at least, whatever the budget
	budget  time.Duration // time for the changes
}

// planFor is the plan at n devices, in a quick or a full run.
func planFor(cfg *core.Config, n int) sizePlan {
	if cfg.Quick {
		if n == 10000 {
			return sizePlan{replace: true, changes: 50, min: 10, budget: 10 * time.Second}
		}
		return sizePlan{replace: true}
	}
	switch n {
	case 10000, 100000:
		return sizePlan{replace: true, changes: 200, min: 50, budget: 30 * time.Second}
	case 1000000:
		// One YAML full apply only (it takes most of a minute here): a.yaml replaces b.json.
		return sizePlan{changes: 200, min: 50, budget: 30 * time.Second}
	}
	return sizePlan{replace: true}
}

// run runs the section: an agent per fleet size (atSize), then the in-process swap (swap).
func run(ctx context.Context, cfg *core.Config, r *core.Report) error {
	bin, err := agentrun.Binary(cfg)
	if err != nil {
		return err
	}
	tp, err := testenv.Build(testenv.Config{Devices: []testenv.DeviceSpec{{Name: "ctl0"}, {Name: "ctl1"}}})
	if err != nil {
		return err
	}
	defer tp.Close()
	dir, err := os.MkdirTemp("", "ztgate-bench-control-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	sizes := cfg.Sizes([]int{1000, 10000, 100000, 1000000}, []int{1000, 10000})
	for _, n := range sizes {
		if err := ctx.Err(); err != nil {
			return err
		}
		ch, err := atSize(ctx, cfg, r, bin, tp, filepath.Join(dir, "n"+strconv.Itoa(n)), n)
		if err != nil {
			return fmt.Errorf("%s devices: %w", core.Count(n), err)
		}
		if ch.n > 0 {
			r.Check("control", fmt.Sprintf("one-device change p99 at %s devices <= 20 ms", core.Count(n)), ch.isoP99,
				"<=", core.Ms(targetChangeP99), "ms",
				fmt.Sprintf("%d changes %d ms apart, end to end through the CLI; back to back the p99 is %.1f ms: each "+
					"change then waits out the RCU grace period the previous one started",
					ch.n, changeGap/time.Millisecond, ch.b2bP99))
		}
	}
	return swap(ctx, cfg, r)
}

// changeGap separates the isolated one-device changes: longer than the grace periods
// measured here (see gracePeriods).
const changeGap = 50 * time.Millisecond

// changeStats is what the one-device changes at one size gave.
type changeStats struct {
	isoP99, b2bP99 float64 // ms, isolated and back to back
	n              int     // isolated changes
}

// yamlCost is what decoding a policy document into yaml.v3's node tree costs: the floor of any
// apply of a YAML document (the agent's parser decodes that tree, then validates it).
type yamlCost struct {
	took   time.Duration
	liveMB float64 // heap the tree holds, measured after a GC with the tree alive
}

// yamlFloor decodes the document at path into yaml.v3's node tree and measures what it costs.
func yamlFloor(path string) (yamlCost, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return yamlCost{}, err
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	root := new(yaml.Node)
	t0 := time.Now()
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(root); err != nil {
		return yamlCost{}, fmt.Errorf("yaml floor: %w", err)
	}
	took := time.Since(t0)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(root)
	root = nil
	debug.FreeOSMemory()
	return yamlCost{took: took, liveMB: (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / 1e6}, nil
}

// swap measures maps.Apply in-process: two revisions of N devices that differ in one device
// are applied alternately; Apply's duration and its flip and barrier steps (maps.LastApply).
func swap(ctx context.Context, cfg *core.Config, r *core.Report) error {
	n := cfg.Pick(100000, 10000)
	rounds := cfg.Pick(20, 6)
	dir, err := os.MkdirTemp("", "ztgate-bench-swap-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "p.yaml")
	if _, err := agentrun.WritePolicy(path, n, 1000); err != nil {
		return err
	}
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	p, err := policy.ParseLimit(path, doc, len(doc))
	if err != nil {
		return err
	}
	s1, err := policy.Compile(p, policy.CompileOptions{Revision: 1})
	if err != nil {
		return err
	}
	d := &p.Spec.Devices[n/2]
	d.Allow[0].Ports = []policy.PortRange{{Lo: 9000, Hi: 9000}}
	s2, err := policy.Compile(p, policy.CompileOptions{Revision: 2, Prev: s1})
	if err != nil {
		return err
	}
	pin := core.PinDir("swap")
	dp, err := loader.Open(loader.Config{PinDir: pin, MaxDevices: n, MaxAddrs: n + n/4 + 16, EventsEnabled: true})
	if err != nil {
		return err
	}
	defer func() {
		dp.Close()
		if err := loader.Uninstall(pin); err != nil {
			cfg.Logf("control: uninstall %s: %v", pin, err)
		}
	}()
	lim := core.Limits(dp)
	name := core.Count(n)
	rev := uint64(0)
	for _, incremental := range []bool{false, true} {
		m, err := maps.New(dp.Objects(), dp.MapSpecs())
		if err != nil {
			return err
		}
		m.SetIncremental(incremental)
		var total, build, slot, flip, barrier, release []float64
		for i := range rounds + 2 {
			if err := ctx.Err(); err != nil {
				m.Close()
				return err
			}
			s := s1
			if i%2 == 1 {
				s = s2
			}
			rev++
			s.Revision = rev
			s.Config.Revision = rev
			if err := m.Apply(s, lim); err != nil {
				m.Close()
				return err
			}
			if i < 2 {
				continue // a process's first Apply runs an extra barrier; the incremental mode's second fills the other slot
			}
			st := m.LastApply()
			total = append(total, core.Ms(st.Total))
			build = append(build, core.Ms(st.Build))
			slot = append(slot, core.Ms(st.Slot))
			flip = append(flip, float64(st.Flip)/1e3)
			barrier = append(barrier, core.Ms(st.Barrier))
			release = append(release, core.Ms(st.Release))
		}
		m.Close()
		mode, how := "full rebuild", "fresh inner maps for every kind, old slot released (maps.Apply's default)"
		if incremental {
			mode = "incremental"
			how = "the agent's mode: only the device record written in place, other maps shared with the active slot"
		}
		r.Add(core.Result{Section: "control",
			Name:  fmt.Sprintf("maps.Apply p50, %s devices, one device differs, %s", name, mode),
			Value: core.Median(total), Unit: "ms",
			Note: fmt.Sprintf("in-process, %d applies alternating two revisions; %s; p50 build %.1f ms, outer writes "+
				"%.1f ms, release %.1f ms", len(total), how, core.Median(build), core.Median(slot), core.Median(release))})
		r.Add(core.Result{Section: "control", Name: fmt.Sprintf("maps.Apply flip (zt_active write) p50, %s", mode),
			Value: core.Median(flip), Unit: "µs", Note: "the commit point"})
		r.Add(core.Result{Section: "control", Name: fmt.Sprintf("maps.Apply barrier (RCU grace period) p50, %s", mode),
			Value: core.Median(barrier), Unit: "ms", Spread: core.Spread(barrier),
			Note: "zt_barrier update: returns once every frame that read the old slot has finished"})
		cfg.Logf("control: maps.Apply at %s devices, %s: p50 %.1f ms (build %.1f, outer writes %.1f, flip %.1f µs, "+
			"barrier %.1f ms, release %.1f ms)", name, mode, core.Median(total), core.Median(build), core.Median(slot),
			core.Median(flip), core.Median(barrier), core.Median(release))
	}
	return gracePeriods(ctx, cfg, r, dp)
}

// gracePeriods measures the RCU grace period alone (maps.Barrier, back to back): what a
// change waits for when the previous change's barrier is still running.
func gracePeriods(ctx context.Context, cfg *core.Config, r *core.Report, dp *loader.Datapath) error {
	m, err := maps.New(dp.Objects(), dp.MapSpecs())
	if err != nil {
		return err
	}
	defer m.Close()
	var gp []float64
	for range cfg.Pick(300, 50) {
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := m.Barrier(); err != nil {
			return err
		}
		gp = append(gp, core.Ms(time.Since(t0)))
	}
	r.Add(core.Result{Section: "control", Name: "RCU grace period (zt_barrier update) p50", Value: core.Median(gp),
		Unit: "ms", Note: fmt.Sprintf("%d barriers back to back, no traffic; what separates two flips of the two-slot "+
			"swap (a flip may reuse the old slot only after it)", len(gp))})
	r.Add(core.Result{Section: "control", Name: "RCU grace period (zt_barrier update) p99",
		Value: core.Percentile(gp, 99), Unit: "ms", Note: fmt.Sprintf("max %.1f ms", slices.Max(gp))})
	cfg.Logf("control: RCU grace period p50 %.1f ms, p99 %.1f ms, max %.1f ms", core.Median(gp), core.Percentile(gp, 99),
		slices.Max(gp))
	return nil
}
