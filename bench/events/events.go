// Package events is the benchmark suite's events section: the drop-event path, through the
// real agent (events decoded per second, losses) and in-process (the producer's cost per event
// and the cost of a flood of drops with the default event budget). docs/benchmarks.md
// describes the method.
package events

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/bench/agentrun"
	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// Section is the events section.
var Section = core.Section{
	Name: "events",
	Desc: "drop events: events/s the real agent decodes without uncounted loss, producer cost per event, " +
		"flood cost with the default event budget",
	Run: run,
}

// Targets of the section.
const (
	targetRate      = 1e6 // events/s decoded by the agent
	targetPerEvent  = 100 // ns per event in the program
	targetFloodCost = 1.2 // flood with the default budget vs events off
)

// hugeBudget is an event budget no benchmark exhausts: every dropped frame emits an event.
const hugeBudget = 1 << 62

// agentCoalesce is the agent's event reader coalescing (agent.eventCoalesce).
const agentCoalesce = 500 * time.Microsecond

// sectionPolicy is the section's policy: agentrun.WritePolicy's generator with 16 devices.
func sectionPolicy(dir string) (string, *policy.Snapshot, error) {
	path := filepath.Join(dir, "events.yaml")
	if _, err := agentrun.WritePolicy(path, 16, 1000); err != nil {
		return "", nil, err
	}
	doc, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	p, err := policy.Parse(path, doc)
	if err != nil {
		return "", nil, err
	}
	s, err := policy.Compile(p, policy.CompileOptions{Revision: 1})
	return path, s, err
}

// dropFrame is a UDP datagram from device d1 of sectionPolicy to a destination none of its rules
// allows: dropped as no_rule, after the full identity and rule lookups.
func dropFrame() []byte {
	src := frames.Host{MAC: net.HardwareAddr{0x02, 0x20, 0, 0, 0, 1}, IP: netip.MustParseAddr(agentrun.V4(1))}
	dst := frames.Host{MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}, IP: netip.MustParseAddr("198.51.100.7")}
	return frames.UDP(src, dst, 40000, 9, make([]byte, 64))
}

// datapath is an in-process datapath (own pins) holding the section's policy.
type datapath struct {
	pin   string
	dp    *loader.Datapath
	m     *maps.Maps
	prog  *ebpf.Program
	drain *ringDrain
}

// openDatapath loads a datapath with its own pins, events on or off with the given budget and ring
// buffer size (0: the defaults), and applies s.
func openDatapath(s *policy.Snapshot, events bool, burst uint64, ring int) (*datapath, error) {
	d := &datapath{pin: core.PinDir("events")}
	var err error
	d.dp, err = loader.Open(loader.Config{PinDir: d.pin, EventsEnabled: events, EventBurst: burst, RingBytes: ring})
	if err != nil {
		return nil, err
	}
	if d.m, err = maps.New(d.dp.Objects(), d.dp.MapSpecs()); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.m.Apply(s, core.Limits(d.dp)); err != nil {
		d.Close()
		return nil, err
	}
	d.prog = d.dp.Program()
	return d, nil
}

// Close releases the datapath and removes its pins.
func (d *datapath) Close() error {
	if d.m != nil {
		d.m.Close()
	}
	if d.dp != nil {
		d.dp.Close()
	}
	return loader.Uninstall(d.pin)
}

// ringDrain reads an event ring buffer on its own thread (pinned to cpu) until closed.
type ringDrain struct {
	rd   *maps.EventReader
	n    atomic.Uint64
	done chan struct{}
}

// startDrain starts reading d's ring buffer on a thread pinned to cpu, waking up at most every
// coalesce.
func startDrain(d *datapath, cpu int, coalesce time.Duration) (*ringDrain, error) {
	rd, err := maps.OpenEvents(d.dp.Objects())
	if err != nil {
		return nil, err
	}
	rd.SetCoalesce(coalesce)
	dr := &ringDrain{rd: rd, done: make(chan struct{})}
	go func() {
		defer close(dr.done)
		if unpin, err := core.PinThread(cpu); err == nil {
			defer unpin()
		}
		for {
			if _, err := rd.Read(); err != nil {
				if errors.Is(err, os.ErrClosed) {
					return
				}
				continue
			}
			dr.n.Add(1)
		}
	}()
	return dr, nil
}

// wait returns once the reader has read every event the program emitted (or after 5s).
func (dr *ringDrain) wait(m *maps.Maps) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		es, err := m.EventStats()
		if err != nil {
			return err
		}
		if dr.n.Load() >= es.Emitted {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("event reader behind: read %d of %d emitted", dr.n.Load(), es.Emitted)
		}
		time.Sleep(time.Millisecond)
	}
}

// close stops the reader.
func (dr *ringDrain) close() {
	dr.rd.Close()
	<-dr.done
}

// run runs the section: the event rate through the real agent, then the producer's cost.
func run(ctx context.Context, cfg *core.Config, r *core.Report) error {
	dir, err := os.MkdirTemp("", "ztgate-bench-events-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path, snap, err := sectionPolicy(dir)
	if err != nil {
		return err
	}
	if err := agentRate(ctx, cfg, r, dir, path); err != nil {
		return fmt.Errorf("agent read rate: %w", err)
	}
	return producerCost(ctx, cfg, r, snap)
}

// agentRate measures the events/s the real agent reads and decodes, in a burst and in a
// sustained flood, and that every emitted event is read or counted as lost.
func agentRate(ctx context.Context, cfg *core.Config, r *core.Report, dir, policyPath string) error {
	bin, err := agentrun.Binary(cfg)
	if err != nil {
		return err
	}
	tp, err := testenv.Build(testenv.Config{Devices: []testenv.DeviceSpec{{Name: "ev0"}}})
	if err != nil {
		return err
	}
	defer tp.Close()
	burst := cfg.Pick(1000000, 200000)
	ring := 1 << 20
	for ring < burst*(recordBytes+8) {
		ring <<= 1
	}
	a, err := agentrun.Start(ctx, bin, tp, filepath.Join(dir, "agent"), func(c *agent.Config) {
		c.Events = true
		c.EventRingBytes = ring
	})
	if err != nil {
		return err
	}
	defer func() {
		if a != nil {
			a.Stop()
		}
	}()
	if _, err := a.Apply(ctx, policyPath); err != nil {
		return err
	}
	// A second instance of the program on the agent's pinned maps (the ring buffer the agent
	// reads among them), whose event budget no frame exhausts. Its capacities must be the
	// agent's: the defaults, and the ring buffer's size.
	lc := loader.DefaultConfig()
	lc.PinDir, lc.EventBurst, lc.EventsEnabled, lc.RingBytes = a.PinDir, hugeBudget, true, ring
	dp, err := loader.Open(lc)
	if err != nil {
		return fmt.Errorf("open the agent's datapath: %w", err)
	}
	defer dp.Close()
	prog := dp.Program()
	frame := dropFrame()
	if ret, _, err := prog.Test(frame); err != nil || ret != core.XDPDrop {
		return fmt.Errorf("probe frame: action %d, %v; want XDP_DROP", ret, err)
	}
	burstN, err := burstRate(ctx, cfg, r, a, prog, frame, burst, ring)
	if err != nil {
		return err
	}
	floodN, err := floodRate(ctx, cfg, r, a, prog, frame)
	if err != nil {
		return err
	}
	uncounted := int64(burstN.emitted) - int64(burstN.read) + int64(floodN.emitted) - int64(floodN.read)
	r.Add(core.Result{Section: "events", Name: "uncounted event loss", Value: float64(uncounted), Unit: "events",
		Note: "emitted - read once the ring buffer is drained, burst + flood; losses to a full ring buffer are counted " +
			"(lost)"})
	r.Check("events", "zero uncounted event loss", float64(uncounted), "<=", 0, "events",
		fmt.Sprintf("%d emitted, %d read, %d lost (counted)", burstN.emitted+floodN.emitted, burstN.read+floodN.read,
			burstN.lost+floodN.lost))
	err = a.Stop()
	a = nil
	return err
}

// recordBytes is the size of struct zt_event (a ring buffer record adds an 8-byte header).
const recordBytes = 160

// eventCounts are the agent's event counters over a measurement.
type eventCounts struct{ emitted, lost, read uint64 }

// countsSince are the event counters of s1 since s0.
func countsSince(s0, s1 api.Status) eventCounts {
	return eventCounts{emitted: s1.Events.Emitted - s0.Events.Emitted, lost: s1.Events.Lost - s0.Events.Lost,
		read: s1.Events.Read - s0.Events.Read}
}

// burstRate stops the agent with SIGSTOP while prog fills the ring buffer with burst events,
// resumes it and reports the rate at which it drains them: the reader's alone.
func burstRate(ctx context.Context, cfg *core.Config, r *core.Report, a *agentrun.Agent, prog *ebpf.Program,
	frame []byte, burst, ring int) (eventCounts, error) {
	s0, err := a.Status(ctx)
	if err != nil {
		return eventCounts{}, err
	}
	unpin, err := core.PinThread(0)
	if err != nil {
		return eventCounts{}, err
	}
	if err := syscall.Kill(s0.PID, syscall.SIGSTOP); err != nil {
		unpin()
		return eventCounts{}, err
	}
	_, err = prog.Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(burst)})
	unpin()
	t0 := time.Now()
	if cerr := syscall.Kill(s0.PID, syscall.SIGCONT); err == nil {
		err = cerr
	}
	if err != nil {
		return eventCounts{}, err
	}
	s1, drained, err := waitDrained(ctx, a, s0, 20*time.Second)
	if err != nil {
		return eventCounts{}, err
	}
	c := countsSince(s0, s1)
	rate := float64(c.read) / drained.Sub(t0).Seconds()
	note := fmt.Sprintf("real agent stopped while %d test runs filled a %d MiB ring buffer, then resumed: emitted %d, "+
		"lost %d, read %d in %s", burst, ring>>20, c.emitted, c.lost, c.read, drained.Sub(t0).Round(time.Millisecond))
	r.Add(core.Result{Section: "events", Name: "events read and decoded by the agent (burst)", Value: rate,
		Unit: "events/s", Note: note})
	cfg.Logf("events: agent drained %.3g events/s; %s", rate, note)
	r.Check("events", "events decoded by the agent >= 1,000,000/s", rate, ">=", targetRate, "events/s",
		"burst drained by the real agent")
	return c, nil
}

// floodRate runs prog on CPU 0 while the agent reads, and reports the agent's read rate: the
// slope of its read counter from 20% to 100% of the flood.
func floodRate(ctx context.Context, cfg *core.Config, r *core.Report, a *agentrun.Agent, prog *ebpf.Program,
	frame []byte) (eventCounts, error) {
	produce := time.Duration(cfg.Pick(3000, 600)) * time.Millisecond
	var stop atomic.Bool
	var runs atomic.Uint64
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	s2, err := a.Status(ctx)
	if err != nil {
		return eventCounts{}, err
	}
	wg.Go(func() {
		if unpin, err := core.PinThread(0); err == nil {
			defer unpin()
		}
		for !stop.Load() {
			if _, err := prog.Run(&ebpf.RunOptions{Data: frame, Repeat: 1 << 14}); err != nil {
				errc <- err
				return
			}
			runs.Add(1 << 14)
		}
	})
	time.Sleep(produce / 5)
	ta := time.Now()
	sa, erra := a.Status(ctx)
	ta = ta.Add(time.Since(ta) / 2)
	time.Sleep(produce * 4 / 5)
	tb := time.Now()
	sb, errb := a.Status(ctx)
	tb = tb.Add(time.Since(tb) / 2)
	stop.Store(true)
	wg.Wait()
	close(errc)
	if err := errors.Join(<-errc, erra, errb); err != nil {
		return eventCounts{}, err
	}
	s3, _, err := waitDrained(ctx, a, s2, 20*time.Second)
	if err != nil {
		return eventCounts{}, err
	}
	c := countsSince(s2, s3)
	rate := float64(sb.Events.Read-sa.Events.Read) / tb.Sub(ta).Seconds()
	offered := float64(runs.Load()) / produce.Seconds()
	note := fmt.Sprintf("real agent, %s of test runs on CPU 0 (%.3g frames/s offered): emitted %d, lost (ring full, "+
		"counted) %d, read %d", produce, offered, c.emitted, c.lost, c.read)
	r.Add(core.Result{Section: "events", Name: "events read and decoded by the agent (sustained flood)", Value: rate,
		Unit: "events/s", Note: note})
	cfg.Logf("events: agent read %.3g events/s during a flood; %s", rate, note)
	return c, nil
}

// waitDrained polls the agent until it has read every event emitted since s0 (or timeout) and
// returns its status and when the last poll started.
func waitDrained(ctx context.Context, a *agentrun.Agent, s0 api.Status, timeout time.Duration) (api.Status, time.Time,
	error) {
	deadline := time.Now().Add(timeout)
	for {
		t := time.Now()
		s, err := a.Status(ctx)
		if err != nil {
			return s, t, err
		}
		if s.Events.Read-s0.Events.Read >= s.Events.Emitted-s0.Events.Emitted || time.Now().After(deadline) {
			return s, t, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// producerCost measures a dropped frame's cost with BPF_PROG_TEST_RUN in three datapaths:
// events off, events on with the default budget, and events on with a budget no frame exhausts.
func producerCost(ctx context.Context, cfg *core.Config, r *core.Report, s *policy.Snapshot) error {
	off, err := openDatapath(s, false, 0, 0)
	if err != nil {
		return err
	}
	defer off.Close()
	def, err := openDatapath(s, true, 0, 0) // default budget
	if err != nil {
		return err
	}
	defer def.Close()
	repeat := cfg.Pick(200000, 50000)
	// Every frame emits: one ring buffer (room for a round's events) drained on CPU 1 by a
	// reader that coalesces wake-ups as the agent's does, one by a reader that waits at once.
	var all [2]*datapath
	for i, coalesce := range []time.Duration{agentCoalesce, 0} {
		d, err := openDatapath(s, true, hugeBudget, 64<<20)
		if err != nil {
			return err
		}
		defer d.Close()
		drain, err := startDrain(d, 1, coalesce)
		if err != nil {
			return err
		}
		defer drain.close()
		all[i] = d
		d.drain = drain
	}
	floor, err := core.ReturnProgram("ev_floor", core.XDPPass)
	if err != nil {
		return err
	}
	defer floor.Close()

	frame := dropFrame()
	for _, d := range []*datapath{off, def, all[0], all[1]} {
		if ret, _, err := d.prog.Test(frame); err != nil || ret != core.XDPDrop {
			return fmt.Errorf("probe frame: action %d, %v; want XDP_DROP", ret, err)
		}
	}
	unpin, err := core.PinThread(0)
	if err != nil {
		return err
	}
	defer unpin()
	bench := func(p *ebpf.Program) func() (float64, error) {
		return func() (float64, error) {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			_, d, err := p.Benchmark(frame, repeat, nil)
			return float64(d.Nanoseconds()), err
		}
	}
	var es0, es1 [2]bpf.EventStats
	for i, d := range all {
		if es0[i], err = d.m.EventStats(); err != nil {
			return err
		}
	}
	emits := func(d *datapath) func() (float64, error) {
		return func() (float64, error) {
			c, err := bench(d.prog)()
			if err == nil {
				err = d.drain.wait(d.m) // the next round starts with an empty ring buffer
			}
			return c, err
		}
	}
	rounds := cfg.Pick(11, 3)
	res, err := core.Interleave(rounds, []core.Variant{
		{Name: "floor", Run: bench(floor)},
		{Name: "events off", Run: bench(off.prog)},
		{Name: "default budget", Run: bench(def.prog)},
		{Name: "every frame emits, coalescing reader", Run: emits(all[0])},
		{Name: "every frame emits, eager reader", Run: emits(all[1])},
	})
	if err != nil {
		return err
	}
	for i, d := range all {
		if es1[i], err = d.m.EventStats(); err != nil {
			return err
		}
	}
	fl, offC, defC, allC, eagerC := res[0], res[1], res[2], res[3], res[4]
	perEvent := make([]float64, len(allC))
	perEventEager := make([]float64, len(allC))
	for i := range allC {
		perEvent[i] = allC[i] - offC[i]
		perEventEager[i] = eagerC[i] - offC[i]
	}
	flood := core.Ratios(defC, offC)
	note := fmt.Sprintf("%d rounds x %d runs on CPU 0, median", rounds, repeat)
	offFloor := core.Ratios(offC, fl)
	r.Add(core.Result{Section: "events", Name: "dropped frame, events off", Value: core.Median(offC), Unit: "ns/pkt",
		Ratio: core.Median(offFloor), Base: "floor", Spread: core.Spread(offFloor),
		Note: note + fmt.Sprintf("; floor (XDP_PASS only) %.1f ns", core.Median(fl))})
	for i, v := range []struct {
		name string
		c    []float64
		per  []float64
		how  string
	}{
		{c: allC, per: perEvent,
			how: fmt.Sprintf("the reader on CPU 1 coalesces wake-ups as the agent's does (%s)", agentCoalesce)},
		{name: ", eager reader", c: eagerC, per: perEventEager,
			how: "the reader on CPU 1 waits for a wake-up as soon as it has caught up"},
	} {
		counts := fmt.Sprintf("%d emitted, %d lost", es1[i].Emitted-es0[i].Emitted, es1[i].Lost-es0[i].Lost)
		vsOff := core.Ratios(v.c, offC)
		r.Add(core.Result{Section: "events", Name: "dropped frame, every frame emits an event" + v.name,
			Value: core.Median(v.c), Unit: "ns/pkt", Ratio: core.Median(vsOff), Base: "events off",
			Spread: core.Spread(vsOff), Note: v.how + "; " + counts})
		r.Add(core.Result{Section: "events", Name: "producer cost per event" + v.name, Value: core.Median(v.per),
			Unit: "ns/event", Spread: core.Spread(v.per),
			Note: "every frame emits minus events off, per round"})
	}
	r.Add(core.Result{Section: "events", Name: "flood of drops, default event budget", Value: core.Median(defC),
		Unit: "ns/pkt", Ratio: core.Median(flood), Base: "events off",
		Spread: core.Spread(flood), Note: "one (device, reason): 10 events per second, the rest suppressed"})
	cfg.Logf("events: off %.1f ns, default budget %.1f ns (%.2fx), every frame emits %.1f ns (%.1f ns/event; eager "+
		"reader %.1f ns/event)", core.Median(offC), core.Median(defC), core.Median(flood), core.Median(allC),
		core.Median(perEvent), core.Median(perEventEager))
	r.Check("events", "producer cost <= 100 ns per event", core.Median(perEvent), "<=", targetPerEvent, "ns/event", note)
	r.Check("events", "flood with the default event budget <= 1.2x events off", core.Median(flood), "<=",
		targetFloodCost, "x", note)
	return nil
}
