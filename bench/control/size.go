package control

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/bench/agentrun"
	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// sizeRun is the measurement at one fleet size: an agent sized for n devices, fed generated
// documents.
type sizeRun struct {
	cfg  *core.Config
	r    *core.Report
	n    int
	name string // n for a name
	dir  string
	plan sizePlan
	a    *agentrun.Agent

	docs      map[string]int // document name -> base port of every device's own rule
	fullDocs  []string       // the documents of the full applies, in order
	base      string         // the last of fullDocs: the policy the changes start from
	docBytes  int64          // the largest document
	docSize   map[string]int64
	perDevice float64 // YAML bytes per device
	yf        yamlCost
	limitNote string // on a raised document size limit
	fulls     []agentrun.Applied
	yamls     []agentrun.Applied
	hwmJSON   float64 // the agent's peak RSS after the JSON documents
}

// atSize runs an agent sized for n devices and measures the full applies, kernel memory,
// RSS and the one-device changes (planFor says how many); it returns what the changes gave.
func atSize(ctx context.Context, cfg *core.Config, r *core.Report, bin string, tp *testenv.Topology, dir string,
	n int) (changeStats, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return changeStats{}, err
	}
	defer os.RemoveAll(dir)
	sr := &sizeRun{cfg: cfg, r: r, n: n, name: core.Count(n), dir: dir, plan: planFor(cfg, n)}
	if err := sr.writeDocs(); err != nil {
		return changeStats{}, err
	}
	if err := sr.startAgent(ctx, bin, tp); err != nil {
		return changeStats{}, err
	}
	defer func() {
		if sr.a != nil {
			sr.a.Stop()
		}
	}()
	if err := sr.fullApplies(ctx); err != nil {
		return changeStats{}, err
	}
	if err := sr.memory(ctx); err != nil {
		return changeStats{}, err
	}
	ch, err := sr.changes(ctx)
	if err != nil {
		return ch, err
	}
	err = sr.a.Stop()
	sr.a = nil
	return ch, err
}

// writeDocs writes the documents of the full applies, in this order: a.json (from no policy),
// b.json (every device's rule changes), then a.yaml (every rule changes back) and b.yaml. a and
// b differ in every device's own rule (base port 1000 or 2000). It also measures decoding the
// YAML document alone.
func (sr *sizeRun) writeDocs() error {
	t0 := time.Now()
	sr.docs = map[string]int{"a.json": 1000, "b.json": 2000, "a.yaml": 1000}
	sr.fullDocs = []string{"a.json", "b.json", "a.yaml"}
	sr.base = "a.yaml"
	if sr.plan.replace {
		sr.docs["b.yaml"] = 2000
		sr.fullDocs = append(sr.fullDocs, "b.yaml")
		sr.base = "b.yaml"
	}
	sr.docSize = map[string]int64{}
	for name, v := range sr.docs {
		write := agentrun.WritePolicy
		if filepath.Ext(name) == ".json" {
			write = agentrun.WritePolicyJSON
		}
		sz, err := write(filepath.Join(sr.dir, name), sr.n, v)
		if err != nil {
			return err
		}
		sr.docBytes, sr.docSize[filepath.Ext(name)] = max(sr.docBytes, sz), sz
	}
	yamlMB := float64(sr.docSize[".yaml"]) / 1e6
	sr.perDevice = float64(sr.docSize[".yaml"]) / float64(sr.n)
	sr.cfg.Logf("control: %s devices: documents of %.1f MB YAML (%.0f B/device), %.1f MB JSON written in %s", sr.name,
		yamlMB, sr.perDevice, float64(sr.docSize[".json"])/1e6, time.Since(t0).Round(time.Millisecond))
	var err error
	if sr.yf, err = yamlFloor(filepath.Join(sr.dir, "a.yaml")); err != nil {
		return err
	}
	sr.r.Add(core.Result{Section: "control", Name: fmt.Sprintf("YAML decoding alone, %s devices", sr.name),
		Value: core.Ms(sr.yf.took), Unit: "ms",
		Note: fmt.Sprintf("in the bench process: yaml.v3 decoding the %.1f MB document into its node tree, the first "+
			"step of any YAML apply (no validation, no compile); the tree holds %.0f MB of live heap", yamlMB, sr.yf.liveMB)})
	sr.cfg.Logf("control: %s devices: yaml.v3 node tree in %s, %.0f MB live", sr.name, sr.yf.took.Round(time.Millisecond),
		sr.yf.liveMB)
	return nil
}

// startAgent starts the agent sized for the documents, its document size limit raised when
// they do not fit the default.
func (sr *sizeRun) startAgent(ctx context.Context, bin string, tp *testenv.Topology) error {
	n := sr.n
	limit := policy.MaxDocumentSize
	if int64(limit) < sr.docBytes {
		limit = int(sr.docBytes+sr.docBytes/4+(1<<20)-1) &^ (1<<20 - 1)
		sr.limitNote = fmt.Sprintf("; documents up to %.0f MB: max_policy_bytes raised to %d MiB (the 16 MiB default "+
			"holds about %s devices of this generator's YAML)", float64(sr.docBytes)/1e6, limit>>20,
			core.Count(int(float64(policy.MaxDocumentSize)/sr.perDevice)/1000*1000))
	}
	var err error
	sr.a, err = agentrun.Start(ctx, bin, tp, filepath.Join(sr.dir, "agent"), func(c *agent.Config) {
		c.MaxDevices = n
		c.MaxAddrs = n + n/4 + 16
		c.MaxPolicyBytes = limit
	})
	return err
}

// fullApplies pushes the JSON documents (from no policy, then every device's rule changes),
// reads the agent's peak RSS after them, then pushes the YAML documents (every rule changes each
// time), and checks the full-apply target on the slower JSON apply.
func (sr *sizeRun) fullApplies(ctx context.Context) error {
	for i, doc := range sr.fullDocs {
		ap, err := sr.a.Apply(ctx, filepath.Join(sr.dir, doc))
		if err != nil {
			return err
		}
		format := strings.ToUpper(filepath.Ext(doc)[1:])
		what := "replacing every device's rules"
		if i == 0 {
			what = "from no policy"
		}
		if format == "JSON" {
			sr.fulls = append(sr.fulls, ap)
		} else {
			sr.yamls = append(sr.yamls, ap)
		}
		sr.cfg.Logf("control: %s devices: full apply of the %s document %s: %s (agent %s)", sr.name, format, what,
			ap.Wall.Round(time.Millisecond), time.Duration(ap.Result.Duration).Round(time.Millisecond))
		sr.r.Add(core.Result{Section: "control", Name: fmt.Sprintf("full apply, %s, %s, %s devices", format, what, sr.name),
			Value: core.Ms(ap.Wall), Unit: "ms", Note: sr.applyNote(ap, float64(sr.docSize[filepath.Ext(doc)])/1e6)})
		if i == 1 {
			st, err := sr.a.Status(ctx)
			if err != nil {
				return err
			}
			if sr.hwmJSON, err = agentrun.PeakRSS(st.PID); err != nil {
				return fmt.Errorf("agent RSS: %w", err)
			}
		}
	}
	// The target: the slower of the JSON full applies (the YAML ones are listed above).
	byWall := func(a, b agentrun.Applied) int { return cmp.Compare(a.Wall, b.Wall) }
	worst, worstYAML := slices.MaxFunc(sr.fulls, byWall), slices.MaxFunc(sr.yamls, byWall)
	if limit, ok := map[int]time.Duration{100000: targetFull100k, 1000000: targetFull1M}[sr.n]; ok {
		sr.r.Check("control", fmt.Sprintf("full apply of %s devices enforced <= %s after the push", sr.name, limit),
			core.Ms(worst.Wall), "<=", core.Ms(limit), "ms",
			fmt.Sprintf("slowest of %d full applies of the JSON document; agent-side %.0f ms, of which parse %.0f ms "+
				"(decode and validation). The same policy in YAML: %.0f ms (parse %.0f ms; yaml.v3's node tree alone "+
				"takes %.0f ms)", len(sr.fulls), core.Ms(worst.Result.Duration), core.NsMs(worst.Phases.Phases.Parse),
				core.Ms(worstYAML.Wall), core.NsMs(worstYAML.Phases.Phases.Parse), core.Ms(sr.yf.took)))
	}
	return nil
}

// applyNote is the note of a full apply's result: the agent's breakdown of ap.
func (sr *sizeRun) applyNote(ap agentrun.Applied, docMB float64) string {
	ph := ap.Phases
	return fmt.Sprintf("push to CLI return (%.1f MB document); agent %.0f ms = parse %.0f + compile %.0f + persist %.0f "+
		"+ maps %.0f (build %.0f, slot %.0f, flip %.2f, barrier %.1f, release %.1f) + waiting for the change listing "+
		"%.0f (%.0f on another CPU) + hash %.0f%s",
		docMB, core.Ms(ap.Result.Duration), core.NsMs(ph.Phases.Parse), core.NsMs(ph.Phases.Compile),
		core.NsMs(ph.Phases.Persist), core.NsMs(ph.Phases.Maps),
		core.NsMs(ph.Maps.Build), core.NsMs(ph.Maps.Slot), core.NsMs(ph.Maps.Flip), core.NsMs(ph.Maps.Barrier),
		core.NsMs(ph.Maps.Release), core.NsMs(ph.Phases.CompareWait), core.NsMs(ph.Phases.Compare),
		core.NsMs(ph.Phases.Hash), sr.limitNote)
}

// memory reports the kernel memory of the agent's policy maps per device (and its floor, at the
// sizes of the target) and the agent's peak RSS, and checks their targets.
func (sr *sizeRun) memory(ctx context.Context) error {
	n, name, r := sr.n, sr.name, sr.r
	st, err := sr.a.Status(ctx)
	if err != nil {
		return err
	}
	if st.Policy.Devices != n {
		return fmt.Errorf("the agent enforces %d devices, want %d", st.Policy.Devices, n)
	}
	km, err := readKernelMem(sr.a.PinDir)
	if err != nil {
		return fmt.Errorf("kernel memory: %w", err)
	}
	fn := float64(n)
	perDev := float64(km.active()+km.devstats) / fn
	r.Add(core.Result{Section: "control", Name: fmt.Sprintf("kernel memory per device, %s devices", name), Value: perDev,
		Unit: "B/device",
		Note: fmt.Sprintf("memlock of the active slot's inner maps + zt_devstats over %d devices: devices %.0f B (%d "+
			"entries), addresses %.0f B (%d entries), prefixes+rules %.1f B, zt_devstats %.0f B (a row per CPU, %d CPUs)",
			n, float64(km.kind[0])/fn, km.entries[0], float64(km.kind[1])/fn, km.entries[1],
			float64(km.kind[2]+km.kind[3])/fn, float64(km.devstats)/fn, core.NumCPU())})
	r.Add(core.Result{Section: "control",
		Name:  fmt.Sprintf("kernel memory per device incl. the inactive slot, %s devices", name),
		Value: float64(km.active()+km.inactive+km.devstats) / fn, Unit: "B/device",
		Note: fmt.Sprintf("the agent's incremental applies keep the inactive slot populated: %.1f MB of inner maps it "+
			"does not share with the active slot", float64(km.inactive)/1e6)})
	if n == 100000 || n == 1000000 || (sr.cfg.Quick && n == 10000) {
		fl, err := kernelMemFloor(n, km.entries[1])
		if err != nil {
			return fmt.Errorf("kernel memory floor: %w", err)
		}
		r.Add(core.Result{Section: "control", Name: fmt.Sprintf("kernel memory floor per device, %s devices", name),
			Value: float64(fl.total()) / fn, Unit: "B/device",
			Note: fmt.Sprintf("bare maps of the same capacities holding the least this map design keeps: MAC -> 4-byte "+
				"id %.0f B, %d addresses -> 4-byte id %.0f B, 6 counters in a plain array %.0f B",
				float64(fl.dev)/fn, km.entries[1], float64(fl.addr)/fn, float64(fl.counters)/fn)})
		r.Check("control", fmt.Sprintf("kernel memory <= 200 B per configured device (%s)", name), perDev, "<=",
			targetBytesPerDevice, "B/device",
			fmt.Sprintf("active policy maps + zt_devstats; the inactive slot adds its own (see results); the floor of "+
				"an identity hash, an address index and 6 counters per device is %.0f B here", float64(fl.total())/fn))
	}
	hwm, err := agentrun.PeakRSS(st.PID)
	if err != nil {
		return fmt.Errorf("agent RSS: %w", err)
	}
	r.Add(core.Result{Section: "control", Name: fmt.Sprintf("agent peak RSS, JSON documents, %s devices", name),
		Value: sr.hwmJSON / 1e6, Unit: "MB",
		Note: fmt.Sprintf("VmHWM of the agent (pid %d) after the %d full applies of JSON documents", st.PID,
			len(sr.fulls))})
	r.Add(core.Result{Section: "control", Name: fmt.Sprintf("agent peak RSS, YAML documents, %s devices", name),
		Value: hwm / 1e6, Unit: "MB",
		Note: fmt.Sprintf("VmHWM of the agent after %d more full applies of YAML documents; yaml.v3's node tree of one "+
			"document alone holds %.0f MB live", len(sr.yamls), sr.yf.liveMB)})
	if n == 100000 {
		r.Check("control", "agent peak RSS at 100k devices <= 100 MB", sr.hwmJSON/1e6, "<=", targetRSS100kMB, "MB",
			fmt.Sprintf("VmHWM after the applies of JSON documents; with YAML documents %.0f MB (the node tree alone "+
				"holds %.0f MB live)", hwm/1e6, sr.yf.liveMB))
	}
	return nil
}

// changeTimes are the timings of a series of one-device changes, in ms, one per change.
type changeTimes struct {
	walls, agentSide, prep, journal, maps, barrier []float64
}

// changes runs the one-device changes through `ztgate policy set-device`: device n/2's own rule
// alternates between two ports (after the full applies, the kernel memory and RSS above). First
// back to back, as fast as the CLI returns: each change waits for the grace period the previous
// one started (see maps.ApplyDelta). Then isolated, changeGap apart: one change's latency.
func (sr *sizeRun) changes(ctx context.Context) (changeStats, error) {
	var ch changeStats
	if sr.plan.changes == 0 {
		return ch, nil
	}
	i := sr.n / 2
	var devDocs [2]string
	for j, port := range []int{9000, sr.docs[sr.base] + i%4} {
		devDocs[j] = filepath.Join(sr.dir, fmt.Sprintf("device-%d.yaml", j))
		if err := os.WriteFile(devDocs[j], agentrun.DeviceDoc(i, port), 0o644); err != nil {
			return ch, err
		}
	}
	k := 0
	for _, gap := range []time.Duration{0, changeGap} {
		t, err := sr.changeSeries(ctx, devDocs, &k, gap)
		if err != nil {
			return ch, err
		}
		p99 := sr.addChanges(t, i, gap)
		if gap > 0 {
			ch.isoP99, ch.n = p99, len(t.walls)
		} else {
			ch.b2bP99 = p99
		}
	}
	st, err := sr.a.Status(ctx)
	if err != nil {
		return ch, err
	}
	if st.Policy.Devices != sr.n {
		return ch, fmt.Errorf("after the changes the agent enforces %d devices, want %d", st.Policy.Devices, sr.n)
	}
	return ch, nil
}

// changeSeries runs the plan's one-device changes gap apart, alternating between the two
// device documents (*k counts the changes made so far).
func (sr *sizeRun) changeSeries(ctx context.Context, devDocs [2]string, k *int, gap time.Duration) (changeTimes,
	error) {
	var t changeTimes
	plan := sr.plan
	start := time.Now()
	for c := 0; c < plan.changes && (c < plan.min || time.Since(start) < plan.budget); c++ {
		time.Sleep(gap)
		ap, err := sr.a.SetDevice(ctx, devDocs[*k%2])
		*k++
		if err != nil {
			return t, err
		}
		if len(ap.Result.Changes.Devices) != 1 {
			return t, fmt.Errorf("one-device change reported %d changed devices", len(ap.Result.Changes.Devices))
		}
		ph := ap.Phases
		t.walls = append(t.walls, core.Ms(ap.Wall))
		t.agentSide = append(t.agentSide, core.Ms(ap.Result.Duration))
		t.prep, t.journal = append(t.prep, core.NsMs(ph.Phases.Prepare)), append(t.journal, core.NsMs(ph.Phases.Journal))
		t.maps, t.barrier = append(t.maps, core.NsMs(ph.Phases.Maps)), append(t.barrier, core.NsMs(ph.Maps.Barrier))
	}
	return t, nil
}

// addChanges reports a series of changes of device i made gap apart and returns their p99.
func (sr *sizeRun) addChanges(t changeTimes, i int, gap time.Duration) float64 {
	how := "back to back"
	what := fmt.Sprintf("each right after the previous one returned; the first change after a full apply builds the "+
		"changed kinds' inner maps afresh (%.0f ms here), the rest write in place", t.walls[0])
	if gap > 0 {
		how = fmt.Sprintf("isolated, %d ms apart", gap/time.Millisecond)
		what = "the previous change's grace period is over when the next starts"
	}
	p99 := core.Percentile(t.walls, 99)
	sr.r.Add(core.Result{Section: "control", Name: fmt.Sprintf("one-device change p50, %s devices, %s", sr.name, how),
		Value: core.Median(t.walls), Unit: "ms",
		Note: fmt.Sprintf("%d changes of device d%d's rule with `ztgate policy set-device` (exec of the CLI to its exit; "+
			"the agent answers once the change is enforced); agent-side p50 %.2f ms = prepare %.2f + journal (fsync) "+
			"%.2f + maps.ApplyDelta %.2f (of which waiting for the previous change's RCU barrier %.2f)",
			len(t.walls), i, core.Median(t.agentSide), core.Median(t.prep), core.Median(t.journal), core.Median(t.maps),
			core.Median(t.barrier))})
	sr.r.Add(core.Result{Section: "control", Name: fmt.Sprintf("one-device change p99, %s devices, %s", sr.name, how),
		Value: p99, Unit: "ms",
		Note: fmt.Sprintf("agent-side p99 %.2f ms, waiting for the previous barrier p99 %.2f ms; %s",
			core.Percentile(t.agentSide, 99), core.Percentile(t.barrier, 99), what)})
	sr.cfg.Logf("control: %s devices: %d one-device changes, %s: p50 %.1f ms, p99 %.1f ms (agent p99 %.1f ms)", sr.name,
		len(t.walls), how, core.Median(t.walls), p99, core.Percentile(t.agentSide, 99))
	return p99
}
