// Package control is the benchmark suite's control section: the control plane through the
// real agent and the real CLI (full applies, one-device changes, kernel memory and agent RSS
// per N devices), and the atomic swap (maps.Apply) in-process. docs/benchmarks.md describes
// the method.
package control

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"gopkg.in/yaml.v3"

	"github.com/ztgate/ztgate/agent"
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

func (km kernelMem) active() uint64 { return km.kind[0] + km.kind[1] + km.kind[2] + km.kind[3] }

var outerPins = [4]string{bpf.ZtgateMapZtDevices, bpf.ZtgateMapZtAddrs, bpf.ZtgateMapZtPrefixes, bpf.ZtgateMapZtRules}

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

func (f memFloor) total() uint64 { return f.dev + f.addr + f.counters }

func kernelMemFloor(devices, addrs int) (memFloor, error) {
	var f memFloor
	for _, m := range []struct {
		spec *ebpf.MapSpec
		out  *uint64
	}{
		{&ebpf.MapSpec{Name: "bench_fl_dev", Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: uint32(devices)}, &f.dev},
		{&ebpf.MapSpec{Name: "bench_fl_addr", Type: ebpf.Hash, KeySize: 16, ValueSize: 4, MaxEntries: uint32(max(addrs, 1))}, &f.addr},
		{&ebpf.MapSpec{Name: "bench_fl_ctr", Type: ebpf.Array, KeySize: 4, ValueSize: 48, MaxEntries: uint32(devices)}, &f.counters},
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
			r.Check("control", fmt.Sprintf("one-device change p99 at %s devices <= 20 ms", core.Count(n)), ch.isoP99, "<=",
				core.Ms(targetChangeP99), "ms", fmt.Sprintf("%d changes %d ms apart, end to end through the CLI; back to back the p99 is %.1f ms: each change then waits out the RCU grace period the previous one started",
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

// atSize runs an agent sized for n devices and measures the full applies, kernel memory,
// RSS and the one-device changes (planFor says how many); it returns what the changes gave.
func atSize(ctx context.Context, cfg *core.Config, r *core.Report, bin string, tp *testenv.Topology, dir string, n int) (changeStats, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return changeStats{}, err
	}
	defer os.RemoveAll(dir)
	plan := planFor(cfg, n)
	t0 := time.Now()
	// The full applies, in this order: a.json (from no policy), b.json (every device's rule
	// changes), then a.yaml (every rule changes back) and b.yaml. a and b differ in every
	// device's own rule (base port 1000 or 2000).
	docs := map[string]int{"a.json": 1000, "b.json": 2000, "a.yaml": 1000}
	fullDocs := []string{"a.json", "b.json", "a.yaml"}
	base := "a.yaml"
	if plan.replace {
		docs["b.yaml"] = 2000
		fullDocs = append(fullDocs, "b.yaml")
		base = "b.yaml"
	}
	var docBytes int64
	docSize := map[string]int64{}
	for name, v := range docs {
		write := agentrun.WritePolicy
		if filepath.Ext(name) == ".json" {
			write = agentrun.WritePolicyJSON
		}
		sz, err := write(filepath.Join(dir, name), n, v)
		if err != nil {
			return changeStats{}, err
		}
		docBytes, docSize[filepath.Ext(name)] = max(docBytes, sz), sz
	}
	perDevice := float64(docSize[".yaml"]) / float64(n)
	cfg.Logf("control: %s devices: documents of %.1f MB YAML (%.0f B/device), %.1f MB JSON written in %s", core.Count(n),
		float64(docSize[".yaml"])/1e6, perDevice, float64(docSize[".json"])/1e6, time.Since(t0).Round(time.Millisecond))
	yf, err := yamlFloor(filepath.Join(dir, "a.yaml"))
	if err != nil {
		return changeStats{}, err
	}
	r.Add(core.Result{Section: "control", Name: fmt.Sprintf("YAML decoding alone, %s devices", core.Count(n)), Value: core.Ms(yf.took), Unit: "ms",
		Note: fmt.Sprintf("in the bench process: yaml.v3 decoding the %.1f MB document into its node tree, the first step of any YAML apply (no validation, no compile); the tree holds %.0f MB of live heap",
			float64(docSize[".yaml"])/1e6, yf.liveMB)})
	cfg.Logf("control: %s devices: yaml.v3 node tree in %s, %.0f MB live", core.Count(n), yf.took.Round(time.Millisecond), yf.liveMB)
	limit := policy.MaxDocumentSize
	raised := int64(limit) < docBytes
	if raised {
		limit = int(docBytes+docBytes/4+(1<<20)-1) &^ (1<<20 - 1)
	}
	a, err := agentrun.Start(ctx, bin, tp, filepath.Join(dir, "agent"), func(c *agent.Config) {
		c.MaxDevices = n
		c.MaxAddrs = n + n/4 + 16
		c.MaxPolicyBytes = limit
	})
	if err != nil {
		return changeStats{}, err
	}
	defer func() {
		if a != nil {
			a.Stop()
		}
	}()
	name := core.Count(n)
	limitNote := ""
	if raised {
		limitNote = fmt.Sprintf("; documents up to %.0f MB: max_policy_bytes raised to %d MiB (the 16 MiB default holds about %s devices of this generator's YAML)",
			float64(docBytes)/1e6, limit>>20, core.Count(int(float64(policy.MaxDocumentSize)/perDevice)/1000*1000))
	}

	// Full applies: the JSON documents (from no policy, then every device's rule changes), the
	// agent's peak RSS after them, then the YAML documents (every rule changes each time).
	var fulls, yamls []agentrun.Applied
	var hwmJSON float64
	for i, doc := range fullDocs {
		ap, err := a.Apply(ctx, filepath.Join(dir, doc))
		if err != nil {
			return changeStats{}, err
		}
		format := strings.ToUpper(filepath.Ext(doc)[1:])
		what := "replacing every device's rules"
		if i == 0 {
			what = "from no policy"
		}
		if format == "JSON" {
			fulls = append(fulls, ap)
		} else {
			yamls = append(yamls, ap)
		}
		cfg.Logf("control: %s devices: full apply of the %s document %s: %s (agent %s)", name, format, what, ap.Wall.Round(time.Millisecond),
			time.Duration(ap.Result.Duration).Round(time.Millisecond))
		ph := ap.Phases
		r.Add(core.Result{Section: "control", Name: fmt.Sprintf("full apply, %s, %s, %s devices", format, what, name), Value: core.Ms(ap.Wall), Unit: "ms",
			Note: fmt.Sprintf("push to CLI return (%.1f MB document); agent %.0f ms = parse %.0f + compile %.0f + persist %.0f + maps %.0f (build %.0f, slot %.0f, flip %.2f, barrier %.1f, release %.1f) + waiting for the change listing %.0f (%.0f on another CPU) + hash %.0f%s",
				float64(docSize[filepath.Ext(doc)])/1e6, core.Ms(ap.Result.Duration), core.NsMs(ph.Phases.Parse), core.NsMs(ph.Phases.Compile), core.NsMs(ph.Phases.Persist), core.NsMs(ph.Phases.Maps),
				core.NsMs(ph.Maps.Build), core.NsMs(ph.Maps.Slot), core.NsMs(ph.Maps.Flip), core.NsMs(ph.Maps.Barrier), core.NsMs(ph.Maps.Release),
				core.NsMs(ph.Phases.CompareWait), core.NsMs(ph.Phases.Compare), core.NsMs(ph.Phases.Hash), limitNote)})
		if i == 1 {
			st, err := a.Status(ctx)
			if err != nil {
				return changeStats{}, err
			}
			if hwmJSON, err = agentrun.PeakRSS(st.PID); err != nil {
				return changeStats{}, fmt.Errorf("agent RSS: %w", err)
			}
		}
	}
	// The target: the slower of the JSON full applies (the YAML ones are listed above).
	worst := slices.MaxFunc(fulls, func(a, b agentrun.Applied) int { return cmp.Compare(a.Wall, b.Wall) })
	worstYAML := slices.MaxFunc(yamls, func(a, b agentrun.Applied) int { return cmp.Compare(a.Wall, b.Wall) })
	if limit, ok := map[int]time.Duration{100000: targetFull100k, 1000000: targetFull1M}[n]; ok {
		r.Check("control", fmt.Sprintf("full apply of %s devices enforced <= %s after the push", name, limit), core.Ms(worst.Wall), "<=", core.Ms(limit), "ms",
			fmt.Sprintf("slowest of %d full applies of the JSON document; agent-side %.0f ms, of which parse %.0f ms (decode and validation). The same policy in YAML: %.0f ms (parse %.0f ms; yaml.v3's node tree alone takes %.0f ms)",
				len(fulls), core.Ms(worst.Result.Duration), core.NsMs(worst.Phases.Phases.Parse), core.Ms(worstYAML.Wall), core.NsMs(worstYAML.Phases.Phases.Parse), core.Ms(yf.took)))
	}

	// Kernel memory and RSS.
	st, err := a.Status(ctx)
	if err != nil {
		return changeStats{}, err
	}
	if st.Policy.Devices != n {
		return changeStats{}, fmt.Errorf("the agent enforces %d devices, want %d", st.Policy.Devices, n)
	}
	km, err := readKernelMem(a.PinDir)
	if err != nil {
		return changeStats{}, fmt.Errorf("kernel memory: %w", err)
	}
	perDev := float64(km.active()+km.devstats) / float64(n)
	fn := float64(n)
	r.Add(core.Result{Section: "control", Name: fmt.Sprintf("kernel memory per device, %s devices", name), Value: perDev, Unit: "B/device",
		Note: fmt.Sprintf("memlock of the active slot's inner maps + zt_devstats over %d devices: devices %.0f B (%d entries), addresses %.0f B (%d entries), prefixes+rules %.1f B, zt_devstats %.0f B (a row per CPU, %d CPUs)",
			n, float64(km.kind[0])/fn, km.entries[0], float64(km.kind[1])/fn, km.entries[1], float64(km.kind[2]+km.kind[3])/fn,
			float64(km.devstats)/fn, core.NumCPU())})
	r.Add(core.Result{Section: "control", Name: fmt.Sprintf("kernel memory per device incl. the inactive slot, %s devices", name),
		Value: float64(km.active()+km.inactive+km.devstats) / fn, Unit: "B/device",
		Note: fmt.Sprintf("the agent's incremental applies keep the inactive slot populated: %.1f MB of inner maps it does not share with the active slot", float64(km.inactive)/1e6)})
	if n == 100000 || n == 1000000 || (cfg.Quick && n == 10000) {
		fl, err := kernelMemFloor(n, km.entries[1])
		if err != nil {
			return changeStats{}, fmt.Errorf("kernel memory floor: %w", err)
		}
		r.Add(core.Result{Section: "control", Name: fmt.Sprintf("kernel memory floor per device, %s devices", name), Value: float64(fl.total()) / fn, Unit: "B/device",
			Note: fmt.Sprintf("bare maps of the same capacities holding the least this map design keeps: MAC -> 4-byte id %.0f B, %d addresses -> 4-byte id %.0f B, 6 counters in a plain array %.0f B",
				float64(fl.dev)/fn, km.entries[1], float64(fl.addr)/fn, float64(fl.counters)/fn)})
		r.Check("control", fmt.Sprintf("kernel memory <= 200 B per configured device (%s)", name), perDev, "<=", targetBytesPerDevice, "B/device",
			fmt.Sprintf("active policy maps + zt_devstats; the inactive slot adds its own (see results); the floor of an identity hash, an address index and 6 counters per device is %.0f B here", float64(fl.total())/fn))
	}
	hwm, err := agentrun.PeakRSS(st.PID)
	if err != nil {
		return changeStats{}, fmt.Errorf("agent RSS: %w", err)
	}
	r.Add(core.Result{Section: "control", Name: fmt.Sprintf("agent peak RSS, JSON documents, %s devices", name), Value: hwmJSON / 1e6, Unit: "MB",
		Note: fmt.Sprintf("VmHWM of the agent (pid %d) after the %d full applies of JSON documents", st.PID, len(fulls))})
	r.Add(core.Result{Section: "control", Name: fmt.Sprintf("agent peak RSS, YAML documents, %s devices", name), Value: hwm / 1e6, Unit: "MB",
		Note: fmt.Sprintf("VmHWM of the agent after %d more full applies of YAML documents; yaml.v3's node tree of one document alone holds %.0f MB live", len(yamls), yf.liveMB)})
	if n == 100000 {
		r.Check("control", "agent peak RSS at 100k devices <= 100 MB", hwmJSON/1e6, "<=", targetRSS100kMB, "MB",
			fmt.Sprintf("VmHWM after the applies of JSON documents; with YAML documents %.0f MB (the node tree alone holds %.0f MB live)", hwm/1e6, yf.liveMB))
	}
	// One-device changes through `ztgate policy set-device`: device n/2's own rule alternates
	// between two ports (after the full applies, the kernel memory and RSS above). First back
	// to back, as fast as the CLI returns: each change waits for the grace period the previous
	// one started (see maps.ApplyDelta). Then isolated, changeGap apart: one change's
	// latency.
	var ch changeStats
	if plan.changes > 0 {
		i := n / 2
		var devDocs [2]string
		for j, port := range []int{9000, docs[base] + i%4} {
			devDocs[j] = filepath.Join(dir, fmt.Sprintf("device-%d.yaml", j))
			if err := os.WriteFile(devDocs[j], agentrun.DeviceDoc(i, port), 0o644); err != nil {
				return ch, err
			}
		}
		k := 0
		run := func(gap time.Duration) (walls, agentSide, prep, jour, mapsW, barr []float64, err error) {
			start := time.Now()
			for c := 0; c < plan.changes && (c < plan.min || time.Since(start) < plan.budget); c++ {
				time.Sleep(gap)
				ap, err := a.SetDevice(ctx, devDocs[k%2])
				k++
				if err != nil {
					return nil, nil, nil, nil, nil, nil, err
				}
				if len(ap.Result.Changes.Devices) != 1 {
					return nil, nil, nil, nil, nil, nil, fmt.Errorf("one-device change reported %d changed devices", len(ap.Result.Changes.Devices))
				}
				walls = append(walls, core.Ms(ap.Wall))
				agentSide = append(agentSide, core.Ms(ap.Result.Duration))
				ph := ap.Phases
				prep, jour = append(prep, core.NsMs(ph.Phases.Prepare)), append(jour, core.NsMs(ph.Phases.Journal))
				mapsW, barr = append(mapsW, core.NsMs(ph.Phases.Maps)), append(barr, core.NsMs(ph.Maps.Barrier))
			}
			return
		}
		for _, gap := range []time.Duration{0, changeGap} {
			walls, agentSide, prep, jour, mapsW, barr, err := run(gap)
			if err != nil {
				return ch, err
			}
			how, what := "back to back", fmt.Sprintf("each right after the previous one returned; the first change after a full apply builds the changed kinds' inner maps afresh (%.0f ms here), the rest write in place", walls[0])
			if gap > 0 {
				how, what = fmt.Sprintf("isolated, %d ms apart", gap/time.Millisecond), "the previous change's grace period is over when the next starts"
			}
			p99 := core.Percentile(walls, 99)
			r.Add(core.Result{Section: "control", Name: fmt.Sprintf("one-device change p50, %s devices, %s", name, how), Value: core.Median(walls), Unit: "ms",
				Note: fmt.Sprintf("%d changes of device d%d's rule with `ztgate policy set-device` (exec of the CLI to its exit; the agent answers once the change is enforced); agent-side p50 %.2f ms = prepare %.2f + journal (fsync) %.2f + maps.ApplyDelta %.2f (of which waiting for the previous change's RCU barrier %.2f)",
					len(walls), i, core.Median(agentSide), core.Median(prep), core.Median(jour), core.Median(mapsW), core.Median(barr))})
			r.Add(core.Result{Section: "control", Name: fmt.Sprintf("one-device change p99, %s devices, %s", name, how), Value: p99, Unit: "ms",
				Note: fmt.Sprintf("agent-side p99 %.2f ms, waiting for the previous barrier p99 %.2f ms; %s", core.Percentile(agentSide, 99), core.Percentile(barr, 99), what)})
			cfg.Logf("control: %s devices: %d one-device changes, %s: p50 %.1f ms, p99 %.1f ms (agent p99 %.1f ms)", name, len(walls), how, core.Median(walls), p99, core.Percentile(agentSide, 99))
			if gap > 0 {
				ch.isoP99, ch.n = p99, len(walls)
			} else {
				ch.b2bP99 = p99
			}
		}
		st, err := a.Status(ctx)
		if err != nil {
			return ch, err
		}
		if st.Policy.Devices != n {
			return ch, fmt.Errorf("after the changes the agent enforces %d devices, want %d", st.Policy.Devices, n)
		}
	}

	err = a.Stop()
	a = nil
	return ch, err
}

// yamlCost is what decoding a policy document into yaml.v3's node tree costs: the floor of any
// apply of a YAML document (the agent's parser decodes that tree, then validates it).
type yamlCost struct {
	took   time.Duration
	liveMB float64 // heap the tree holds, measured after a GC with the tree alive
}

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
	lim := dp.Config().Limits()
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
			mode, how = "incremental", "the agent's mode: only the device record written in place, other maps shared with the active slot"
		}
		r.Add(core.Result{Section: "control", Name: fmt.Sprintf("maps.Apply p50, %s devices, one device differs, %s", name, mode), Value: core.Median(total), Unit: "ms",
			Note: fmt.Sprintf("in-process, %d applies alternating two revisions; %s; p50 build %.1f ms, outer writes %.1f ms, release %.1f ms",
				len(total), how, core.Median(build), core.Median(slot), core.Median(release))})
		r.Add(core.Result{Section: "control", Name: fmt.Sprintf("maps.Apply flip (zt_active write) p50, %s", mode), Value: core.Median(flip), Unit: "µs", Note: "the commit point"})
		r.Add(core.Result{Section: "control", Name: fmt.Sprintf("maps.Apply barrier (RCU grace period) p50, %s", mode), Value: core.Median(barrier), Unit: "ms",
			Spread: core.Spread(barrier), Note: "zt_barrier update: returns once every frame that read the old slot has finished"})
		cfg.Logf("control: maps.Apply at %s devices, %s: p50 %.1f ms (build %.1f, outer writes %.1f, flip %.1f µs, barrier %.1f ms, release %.1f ms)",
			name, mode, core.Median(total), core.Median(build), core.Median(slot), core.Median(flip), core.Median(barrier), core.Median(release))
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
	r.Add(core.Result{Section: "control", Name: "RCU grace period (zt_barrier update) p50", Value: core.Median(gp), Unit: "ms",
		Note: fmt.Sprintf("%d barriers back to back, no traffic; what separates two flips of the two-slot swap (a flip may reuse the old slot only after it)", len(gp))})
	r.Add(core.Result{Section: "control", Name: "RCU grace period (zt_barrier update) p99", Value: core.Percentile(gp, 99), Unit: "ms",
		Note: fmt.Sprintf("max %.1f ms", slices.Max(gp))})
	cfg.Logf("control: RCU grace period p50 %.1f ms, p99 %.1f ms, max %.1f ms", core.Median(gp), core.Percentile(gp, 99), slices.Max(gp))
	return nil
}
