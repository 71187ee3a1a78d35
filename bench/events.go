package bench

// Section "events": the drop-event path. The real agent reads and decodes the ring buffer while
// a second instance of the datapath program, loaded on the agent's pinned maps with an event
// budget no frame exhausts, emits one event per test run; the agent's counters (ztgate status)
// tell emitted, lost (ring buffer full, counted by the program), read and decoded. In-process,
// with BPF_PROG_TEST_RUN: the producer's cost per event (every frame emits vs events off) and
// the cost of a flood of drops with the default per-(device, reason) event budget vs events off.

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
	"github.com/cilium/ebpf/asm"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

func init() {
	register(Section{
		Name: "events",
		Desc: "drop events: events/s the real agent decodes without uncounted loss, producer cost per event, flood cost with the default event budget",
		Run:  runEvents,
	})
}

// Targets of the issue.
const (
	evTargetRate      = 1e6 // events/s decoded by the agent
	evTargetPerEvent  = 100 // ns per event in the program
	evTargetFloodCost = 1.2 // flood with the default budget vs events off
)

// evHuge is an event budget no benchmark exhausts: every dropped frame emits an event.
const evHuge = 1 << 62

// evAgentCoalesce is the agent's event reader coalescing (agent.eventCoalesce).
const evAgentCoalesce = 500 * time.Microsecond

// evPolicy is the section's policy: ctlWritePolicy's generator with 16 devices.
func evPolicy(dir string) (string, *policy.Snapshot, error) {
	path := filepath.Join(dir, "events.yaml")
	if _, err := ctlWritePolicy(path, 16, 1000); err != nil {
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

// evFrame is a UDP datagram from device d1 of evPolicy to a destination none of its rules
// allows: dropped as no_rule, after the full identity and rule lookups.
func evFrame() []byte {
	src := frames.Host{MAC: net.HardwareAddr{0x02, 0x20, 0, 0, 0, 1}, IP: netip.MustParseAddr(ctlV4(1))}
	dst := frames.Host{MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}, IP: netip.MustParseAddr("198.51.100.7")}
	return frames.UDP(src, dst, 40000, 9, make([]byte, 64))
}

// evDatapath is an in-process datapath (own pins) holding the section's policy.
type evDatapath struct {
	pin   string
	dp    *loader.Datapath
	m     *maps.Maps
	prog  *ebpf.Program
	drain *evDrain
}

func evOpen(s *policy.Snapshot, events bool, burst uint64, ring int) (*evDatapath, error) {
	d := &evDatapath{pin: ctlPinDir("events")}
	var err error
	d.dp, err = loader.Open(loader.Config{PinDir: d.pin, EventsEnabled: events, EventBurst: burst, RingBytes: ring})
	if err != nil {
		return nil, err
	}
	if d.m, err = maps.New(d.dp.Objects(), d.dp.MapSpecs()); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.m.Apply(s, d.dp.Config().Limits()); err != nil {
		d.Close()
		return nil, err
	}
	d.prog = d.dp.Program()
	return d, nil
}

func (d *evDatapath) Close() error {
	if d.m != nil {
		d.m.Close()
	}
	if d.dp != nil {
		d.dp.Close()
	}
	return loader.Uninstall(d.pin)
}

// evDrain reads an event ring buffer on its own thread (pinned to cpu) until closed.
type evDrain struct {
	rd   *maps.EventReader
	n    atomic.Uint64
	done chan struct{}
}

func evStartDrain(d *evDatapath, cpu int, coalesce time.Duration) (*evDrain, error) {
	rd, err := maps.OpenEvents(d.dp.Objects())
	if err != nil {
		return nil, err
	}
	rd.SetCoalesce(coalesce)
	dr := &evDrain{rd: rd, done: make(chan struct{})}
	go func() {
		defer close(dr.done)
		if unpin, err := PinThread(cpu); err == nil {
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
func (dr *evDrain) wait(m *maps.Maps) error {
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

func (dr *evDrain) close() {
	dr.rd.Close()
	<-dr.done
}

func runEvents(ctx context.Context, cfg *Config, r *Report) error {
	dir, err := os.MkdirTemp("", "ztgate-bench-events-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path, snap, err := evPolicy(dir)
	if err != nil {
		return err
	}
	if err := evAgentRate(ctx, cfg, r, dir, path); err != nil {
		return fmt.Errorf("agent read rate: %w", err)
	}
	return evProducerCost(ctx, cfg, r, snap)
}

// evAgentRate measures the events/s the real agent reads and decodes, and that every emitted
// event is read or counted as lost. Two ways: a burst (the agent stopped with SIGSTOP while the
// program fills a ring buffer large enough for the burst, then resumed: the time to drain it is
// the reader's alone), and a sustained flood (test runs on CPU 0 while the agent reads; the
// ring buffer overflows when the reader falls behind, and the program counts what it loses).
func evAgentRate(ctx context.Context, cfg *Config, r *Report, dir, policyPath string) error {
	bin, err := ctlBinary(cfg)
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
	for ring < burst*(evRecordBytes+8) {
		ring <<= 1
	}
	a, err := ctlStartAgent(ctx, bin, tp, filepath.Join(dir, "agent"), func(c *agent.Config) {
		c.Events = true
		c.EventRingBytes = ring
	})
	if err != nil {
		return err
	}
	defer func() {
		if a != nil {
			a.stop()
		}
	}()
	if _, err := a.apply(ctx, policyPath); err != nil {
		return err
	}
	st, err := a.status(ctx)
	if err != nil {
		return err
	}
	pid := st.PID
	// A second instance of the program on the agent's pinned maps (the ring buffer the agent
	// reads among them), whose event budget no frame exhausts. Its capacities must be the
	// agent's: the defaults, and the ring buffer's size.
	lc := loader.DefaultConfig()
	lc.PinDir, lc.EventBurst, lc.EventsEnabled, lc.RingBytes = a.pinDir, evHuge, true, ring
	dp, err := loader.Open(lc)
	if err != nil {
		return fmt.Errorf("open the agent's datapath: %w", err)
	}
	defer dp.Close()
	prog := dp.Program()
	frame := evFrame()
	if ret, _, err := prog.Test(frame); err != nil || ret != xdpDropAction {
		return fmt.Errorf("probe frame: action %d, %v; want XDP_DROP", ret, err)
	}
	// Burst.
	s0, err := a.status(ctx)
	if err != nil {
		return err
	}
	unpin, err := PinThread(0)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		unpin()
		return err
	}
	_, err = prog.Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(burst)})
	unpin()
	t0 := time.Now()
	if cerr := syscall.Kill(pid, syscall.SIGCONT); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	s1, drained, err := evDrained(ctx, a, s0, 20*time.Second)
	if err != nil {
		return err
	}
	emitted, lost, read := s1.Events.Emitted-s0.Events.Emitted, s1.Events.Lost-s0.Events.Lost, s1.Events.Read-s0.Events.Read
	rate := float64(read) / drained.Sub(t0).Seconds()
	uncounted := int64(emitted) - int64(read)
	note := fmt.Sprintf("real agent stopped while %d test runs filled a %d MiB ring buffer, then resumed: emitted %d, lost %d, read %d in %s",
		burst, ring>>20, emitted, lost, read, drained.Sub(t0).Round(time.Millisecond))
	r.Add(Result{Section: "events", Name: "events read and decoded by the agent (burst)", Value: rate, Unit: "events/s", Note: note})
	cfg.Logf("events: agent drained %.3g events/s; %s", rate, note)
	r.Check("events", "events decoded by the agent >= 1,000,000/s", rate, ">=", evTargetRate, "events/s", "burst drained by the real agent")

	// Sustained flood.
	produce := time.Duration(cfg.Pick(3000, 600)) * time.Millisecond
	var stop atomic.Bool
	var runs atomic.Uint64
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	s2, err := a.status(ctx)
	if err != nil {
		return err
	}
	wg.Go(func() {
		if unpin, err := PinThread(0); err == nil {
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
	// The read rate is the slope of the agent's read counter from 20% to 100% of the flood.
	time.Sleep(produce / 5)
	ta := time.Now()
	sa, erra := a.status(ctx)
	ta = ta.Add(time.Since(ta) / 2)
	time.Sleep(produce * 4 / 5)
	tb := time.Now()
	sb, errb := a.status(ctx)
	tb = tb.Add(time.Since(tb) / 2)
	stop.Store(true)
	wg.Wait()
	close(errc)
	if err := errors.Join(<-errc, erra, errb); err != nil {
		return err
	}
	s3, _, err := evDrained(ctx, a, s2, 20*time.Second)
	if err != nil {
		return err
	}
	emitted2, lost2, read2 := s3.Events.Emitted-s2.Events.Emitted, s3.Events.Lost-s2.Events.Lost, s3.Events.Read-s2.Events.Read
	rate2 := float64(sb.Events.Read-sa.Events.Read) / tb.Sub(ta).Seconds()
	offered := float64(runs.Load()) / produce.Seconds()
	note2 := fmt.Sprintf("real agent, %s of test runs on CPU 0 (%.3g frames/s offered): emitted %d, lost (ring full, counted) %d, read %d",
		produce, offered, emitted2, lost2, read2)
	r.Add(Result{Section: "events", Name: "events read and decoded by the agent (sustained flood)", Value: rate2, Unit: "events/s", Note: note2})
	cfg.Logf("events: agent read %.3g events/s during a flood; %s", rate2, note2)
	uncounted += int64(emitted2) - int64(read2)
	r.Add(Result{Section: "events", Name: "uncounted event loss", Value: float64(uncounted), Unit: "events",
		Note: "emitted - read once the ring buffer is drained, burst + flood; losses to a full ring buffer are counted (lost)"})
	r.Check("events", "zero uncounted event loss", float64(uncounted), "<=", 0, "events",
		fmt.Sprintf("%d emitted, %d read, %d lost (counted)", emitted+emitted2, read+read2, lost+lost2))
	err = a.stop()
	a = nil
	return err
}

// evRecordBytes is the size of struct zt_event (a ring buffer record adds an 8-byte header).
const evRecordBytes = 160

// evDrained polls the agent until it has read every event emitted since s0 (or timeout) and
// returns its status and when the last poll started.
func evDrained(ctx context.Context, a *ctlAgent, s0 api.Status, timeout time.Duration) (api.Status, time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		t := time.Now()
		s, err := a.status(ctx)
		if err != nil {
			return s, t, err
		}
		if s.Events.Read-s0.Events.Read >= s.Events.Emitted-s0.Events.Emitted || time.Now().After(deadline) {
			return s, t, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const xdpDropAction = 1

// evProducerCost measures, with BPF_PROG_TEST_RUN on one CPU and interleaved rounds, a dropped
// frame's cost in three datapaths: events off; events on with the default budget (a flood of
// one (device, reason): all but the first 10 events per second are suppressed); events on with
// a budget no frame exhausts (every frame emits; a reader on the other CPU drains the ring).
func evProducerCost(ctx context.Context, cfg *Config, r *Report, s *policy.Snapshot) error {
	off, err := evOpen(s, false, 0, 0)
	if err != nil {
		return err
	}
	defer off.Close()
	def, err := evOpen(s, true, 0, 0) // default budget
	if err != nil {
		return err
	}
	defer def.Close()
	repeat := cfg.Pick(200000, 50000)
	// Every frame emits: one ring buffer (room for a round's events) drained on CPU 1 by a
	// reader that coalesces wake-ups as the agent's does, one by a reader that waits at once.
	var all [2]*evDatapath
	for i, coalesce := range []time.Duration{evAgentCoalesce, 0} {
		d, err := evOpen(s, true, evHuge, 64<<20)
		if err != nil {
			return err
		}
		defer d.Close()
		drain, err := evStartDrain(d, 1, coalesce)
		if err != nil {
			return err
		}
		defer drain.close()
		all[i] = d
		d.drain = drain
	}
	floor, err := evFloor()
	if err != nil {
		return err
	}
	defer floor.Close()

	frame := evFrame()
	for _, d := range []*evDatapath{off, def, all[0], all[1]} {
		if ret, _, err := d.prog.Test(frame); err != nil || ret != xdpDropAction {
			return fmt.Errorf("probe frame: action %d, %v; want XDP_DROP", ret, err)
		}
	}
	unpin, err := PinThread(0)
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
	emits := func(d *evDatapath) func() (float64, error) {
		return func() (float64, error) {
			c, err := bench(d.prog)()
			if err == nil {
				err = d.drain.wait(d.m) // the next round starts with an empty ring buffer
			}
			return c, err
		}
	}
	rounds := cfg.Pick(11, 3)
	res, err := Interleave(rounds, []Variant{
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
	flood := Ratios(defC, offC)
	note := fmt.Sprintf("%d rounds x %d runs on CPU 0, median", rounds, repeat)
	r.Add(Result{Section: "events", Name: "dropped frame, events off", Value: Median(offC), Unit: "ns/pkt", Ratio: Median(Ratios(offC, fl)), Base: "floor",
		Spread: Spread(Ratios(offC, fl)), Note: note + fmt.Sprintf("; floor (XDP_PASS only) %.1f ns", Median(fl))})
	for i, v := range []struct {
		name string
		c    []float64
		per  []float64
		how  string
	}{
		{"", allC, perEvent, fmt.Sprintf("the reader on CPU 1 coalesces wake-ups as the agent's does (%s)", evAgentCoalesce)},
		{", eager reader", eagerC, perEventEager, "the reader on CPU 1 waits for a wake-up as soon as it has caught up"},
	} {
		counts := fmt.Sprintf("%d emitted, %d lost", es1[i].Emitted-es0[i].Emitted, es1[i].Lost-es0[i].Lost)
		r.Add(Result{Section: "events", Name: "dropped frame, every frame emits an event" + v.name, Value: Median(v.c), Unit: "ns/pkt",
			Ratio: Median(Ratios(v.c, offC)), Base: "events off", Spread: Spread(Ratios(v.c, offC)), Note: v.how + "; " + counts})
		r.Add(Result{Section: "events", Name: "producer cost per event" + v.name, Value: Median(v.per), Unit: "ns/event", Spread: Spread(v.per),
			Note: "every frame emits minus events off, per round"})
	}
	r.Add(Result{Section: "events", Name: "flood of drops, default event budget", Value: Median(defC), Unit: "ns/pkt", Ratio: Median(flood), Base: "events off",
		Spread: Spread(flood), Note: "one (device, reason): 10 events per second, the rest suppressed"})
	cfg.Logf("events: off %.1f ns, default budget %.1f ns (%.2fx), every frame emits %.1f ns (%.1f ns/event; eager reader %.1f ns/event)",
		Median(offC), Median(defC), Median(flood), Median(allC), Median(perEvent), Median(perEventEager))
	r.Check("events", "producer cost <= 100 ns per event", Median(perEvent), "<=", evTargetPerEvent, "ns/event", note)
	r.Check("events", "flood with the default event budget <= 1.2x events off", Median(flood), "<=", evTargetFloodCost, "x", note)
	return nil
}

// evFloor is an XDP program that returns XDP_PASS and nothing else.
func evFloor() (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "ev_floor", Type: ebpf.XDP, License: "GPL",
		Instructions: evFloorInsns(),
	})
}

func evFloorInsns() asm.Instructions {
	return asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()} // XDP_PASS
}
