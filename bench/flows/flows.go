// Package flows is the benchmark suite's flows section: the flow table's kernel memory per flow
// and how it behaves when a device reaches its quota and when the table is full, as facts with
// verdicts.
package flows

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bench/fleet"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
)

// Section is the flows section: memory per flow and exhaustion.
var Section = core.Section{
	Name: "flows",
	Desc: "flow table: kernel memory per flow at two capacities, a device at its quota, a full table",
	Run:  run,
}

// memSpreadMax is how much the memory per flow may differ between the two capacities (max/min-1):
// a preallocated table costs the same per entry whatever its size.
const memSpreadMax = 0.10

// The exhaustion datapath: a small table and quota, a fleet of exhDevices devices.
const (
	exhEntries = 256
	exhQuota   = 64
	exhDevices = 8
	exhExtra   = 16 // new flows tried past a limit
)

// run runs the section.
func run(ctx context.Context, cfg *core.Config, r *core.Report) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	if err := memory(cfg, r); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return exhaustion(cfg, r)
}

// memory reports zt_flows' kernel memory per entry (memlock in the map's fdinfo over max_entries)
// at two capacities.
func memory(cfg *core.Config, r *core.Report) error {
	spec, err := bpf.LoadZtgate()
	if err != nil {
		return err
	}
	ms := spec.Maps[bpf.ZtgateMapZtFlows]
	var per []float64
	for _, n := range cfg.Sizes([]int{1 << 16, 1 << 20}, []int{1 << 12, 1 << 16}) {
		s := ms.Copy()
		s.MaxEntries = uint32(n)
		s.Pinning = ebpf.PinNone
		m, err := ebpf.NewMap(s)
		if err != nil {
			return fmt.Errorf("zt_flows of %d entries: %w", n, err)
		}
		mem, err := memlock(m)
		m.Close()
		if err != nil {
			return fmt.Errorf("zt_flows of %d entries: %w", n, err)
		}
		b := float64(mem) / float64(n)
		per = append(per, b)
		r.Add(core.Result{Section: "flows", Name: fmt.Sprintf("zt_flows memory, %s entries", count(n)), Value: b,
			Unit: "B/flow", Note: fmt.Sprintf("memlock %.1f MiB (the map's fdinfo) / max_entries; key %d B + value "+
				"%d B; preallocated hash", float64(mem)/(1<<20), s.KeySize, s.ValueSize)})
	}
	spread := max(per[0], per[1])/min(per[0], per[1]) - 1
	r.Check("flows", "memory per flow the same at both capacities (max/min-1)", spread, "<=", memSpreadMax, "",
		cfg.QuickNote("quick: smaller capacities; ")+fmt.Sprintf("%.0f and %.0f B/flow: the default table (%d "+
			"entries) costs %.1f MiB", per[0], per[1], loader.DefaultConfig().FlowEntries,
			per[0]*float64(loader.DefaultConfig().FlowEntries)/(1<<20)))
	return nil
}

// count writes a power of two for a name: 4Ki, 64Ki, 1Mi.
func count(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMi", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKi", n>>10)
	}
	return strconv.Itoa(n)
}

// memlock reads the memlock line of m's fdinfo: the kernel's account of the map's memory.
func memlock(m *ebpf.Map) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", m.FD()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "memlock:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no memlock in %s", f.Name())
}

// exh is the exhaustion datapath: the real program and maps with a small table and quota.
type exh struct {
	dp   *loader.Datapath
	maps *maps.Maps
	pin  string
}

// frame is a TCP SYN from fleet device dev, source port sport, to the allowed destination.
func frame(dev int, sport uint16) []byte {
	return frames.TCP(frames.Host{MAC: fleet.MAC(dev), IP: fleet.V4(dev)},
		frames.Host{MAC: fleet.GatewayMAC, IP: fleet.Dst4}, sport, 443, true, nil)
}

// decide runs frame and returns its reason when it passed, or the drop reason; any other outcome
// (audit, another verdict) is an error.
func (e *exh) decide(f []byte) (bpf.Verdict, bpf.Reason, error) {
	res, err := dptest.Decide(e.maps, e.dp.Program(), f)
	return res.Verdict, res.Reason, err
}

// expect runs frame and fails unless it was decided v/r.
func (e *exh) expect(what string, f []byte, v bpf.Verdict, r bpf.Reason) error {
	gv, gr, err := e.decide(f)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if gv != v || gr != r {
		return fmt.Errorf("%s: %s/%s, want %s/%s", what, gv, gr, v, r)
	}
	return nil
}

// flows is the number of entries of zt_flows.
func (e *exh) flows() (int, error) {
	var (
		k  bpf.FlowKey
		v  bpf.FlowVal
		n  int
		it = e.dp.Objects().ZtFlows.Iterate()
	)
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}

// fullCounter is the flow_table_full drops counted from devices.
func (e *exh) fullCounter() (uint64, error) {
	c, err := e.maps.DirCounters()
	return c[bpf.DirFromDevice][bpf.VerdictDrop][bpf.ReasonFlowTableFull].Packets, err
}

// exhaustion loads the datapath with a table of exhEntries flows and a quota of exhQuota, and
// checks and reports: device 0 opening distinct flows up to its quota, then refused and counted;
// device 1's established flow still passing and device 1 still opening one; devices 2 on filling
// the table until it refuses a device under its quota; then established flows still passing.
func exhaustion(cfg *core.Config, r *core.Report) (err error) {
	s, err := fleet.Snapshot(cfg, exhDevices)
	if err != nil {
		return err
	}
	e := &exh{pin: core.PinDir("flows")}
	defer func() {
		if e.maps != nil {
			e.maps.Close()
		}
		if e.dp != nil {
			e.dp.Close()
		}
		if uerr := loader.Uninstall(e.pin); uerr != nil && err == nil {
			err = uerr
		}
	}()
	lim := fleet.Limits(s)
	if e.dp, err = loader.Open(loader.Config{PinDir: e.pin, MaxDevices: lim.Devices, MaxAddrs: lim.Addrs,
		MaxRules: lim.Rules, MaxPrefixes: lim.Prefixes, FlowEntries: exhEntries, FlowQuota: exhQuota}); err != nil {
		return err
	}
	if e.maps, err = maps.New(e.dp.Objects(), e.dp.MapSpecs()); err != nil {
		return err
	}
	if err := e.maps.Apply(s, lim); err != nil {
		return err
	}
	pass, drop := bpf.VerdictPass, bpf.VerdictDrop
	allow, full := bpf.ReasonAllow, bpf.ReasonFlowTableFull

	// Device 1's flow, open before device 0 runs out.
	est1 := frame(1, 40000)
	if err := e.expect("device 1's flow", est1, pass, allow); err != nil {
		return err
	}
	// Device 0 opens distinct flows until its quota, then is refused.
	opened := 0
	for p := range exhQuota + exhExtra {
		v, rs, err := e.decide(frame(0, uint16(1024+p)))
		if err != nil {
			return fmt.Errorf("device 0, flow %d: %w", p, err)
		}
		if v == pass && rs == allow {
			opened++
			continue
		}
		if v != drop || rs != full || p < exhQuota {
			return fmt.Errorf("device 0, flow %d: %s/%s, want pass/allow up to the quota (%d), then drop/%s", p, v, rs,
				exhQuota, full)
		}
	}
	counted, err := e.fullCounter()
	if err != nil {
		return err
	}
	quotaOK := opened == exhQuota && counted == exhExtra
	// Device 0's established flows and device 1 are unaffected.
	if err := e.expect("device 0's first flow, at its quota", frame(0, 1024), pass, allow); err != nil {
		return err
	}
	if err := e.expect("device 1's established flow", est1, pass, allow); err != nil {
		return err
	}
	if err := e.expect("device 1's new flow", frame(1, 40001), pass, allow); err != nil {
		return err
	}
	r.Add(core.Result{Section: "flows", Name: "flows one device opens before its quota refuses", Value: float64(opened),
		Unit: "flows", Note: fmt.Sprintf("quota %d (loader.Config.FlowQuota), table %d; the next %d new flows: "+
			"flow_table_full, %d counted", exhQuota, exhEntries, exhExtra, counted)})
	r.Check("flows", "exhaustion by one device: contained (its quota, counted; others open and pass)", b(quotaOK),
		">=", 1, "", fmt.Sprintf("device 0 opened %d of %d tried, refused %d (counted %d); its established flow and "+
			"device 1's passed, device 1 opened a new one", opened, exhQuota+exhExtra, exhQuota+exhExtra-opened,
			counted))

	// Devices 2 on fill the table, each under its quota, until the table refuses.
	var (
		held, refused int
		refusedDev    = -1
	)
	for d := 2; d < exhDevices && refusedDev < 0; d++ {
		for p := range exhQuota {
			v, rs, err := e.decide(frame(d, uint16(1024+p)))
			if err != nil {
				return fmt.Errorf("device %d, flow %d: %w", d, p, err)
			}
			if v == pass && rs == allow {
				continue
			}
			if v != drop || rs != full {
				return fmt.Errorf("device %d, flow %d: %s/%s, want pass/allow or drop/%s", d, p, v, rs, full)
			}
			refusedDev = d
			if held, err = e.flows(); err != nil {
				return err
			}
			break
		}
	}
	if refusedDev < 0 {
		return fmt.Errorf("a table of %d flows never refused: %d devices with a quota of %d", exhEntries,
			exhDevices, exhQuota)
	}
	before, err := e.fullCounter()
	if err != nil {
		return err
	}
	for p := range exhExtra {
		if err := e.expect(fmt.Sprintf("device %d's new flow, table full", exhDevices-1),
			frame(exhDevices-1, uint16(30000+p)), drop, full); err != nil {
			return err
		}
		refused++
	}
	after, err := e.fullCounter()
	if err != nil {
		return err
	}
	for _, c := range []struct {
		what string
		f    []byte
	}{{"device 0's established flow", frame(0, 1024)}, {"device 1's established flow", est1},
		{fmt.Sprintf("device %d's established flow", refusedDev), frame(refusedDev, 1024)}} {
		if err := e.expect(c.what+", table full", c.f, pass, allow); err != nil {
			return err
		}
	}
	fullOK := held == exhEntries && after-before == uint64(refused)
	r.Add(core.Result{Section: "flows", Name: "flows held when the full table refused", Value: float64(held),
		Unit: "flows", Note: fmt.Sprintf("table %d (loader.Config.FlowEntries), quota %d: device %d, under its "+
			"quota, refused first; then %d new flows of device %d under its quota: flow_table_full, %d counted",
			exhEntries, exhQuota, refusedDev, refused, exhDevices-1, after-before)})
	r.Check("flows", "full table: new flows refused (counted), established flows pass", b(fullOK), ">=", 1, "",
		fmt.Sprintf("%d flows held of %d; %d new flows refused, %d counted; established flows of devices 0, 1 and "+
			"%d passed", held, exhEntries, refused, after-before, refusedDev))
	return nil
}

// b is 1 for true, 0 for false: a fact's measure.
func b(ok bool) float64 {
	if ok {
		return 1
	}
	return 0
}
