package live

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bench/xdpfilter"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/testenv"
)

// env is what the section sets up once for all its variants.
type env struct {
	cfg      *core.Config
	cleanups []func() error // run in reverse order
	fleets   map[int]*policyFleet
	devHost  frames.Host // the device whose frames ztgate identifies
	pairs    []frames.Host
	tp       *testenv.Topology
	sender   string
	sinkIdx  int // the AF_PACKET sender alone's sink
	dropProg *ebpf.Program
	zts      map[int]*ztgateDP // by fleet size
	t0       time.Time
}

// cleanUp runs the cleanups in reverse order.
func (e *env) cleanUp() error {
	t0 := time.Now()
	defer func() { e.cfg.Logf("live: cleaned up in %s", time.Since(t0).Round(time.Millisecond)) }()
	var errs []error
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		if err := e.cleanups[i](); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cleanup: %w", errors.Join(errs...))
	}
	return nil
}

// setUp compiles the policies, builds the topology (the sender is the gateway namespace, every
// receiver a device namespace), picks the sender and loads the XDP_DROP program.
func (e *env) setUp(specs []variantSpec) error {
	t0 := time.Now()
	e.fleets = map[int]*policyFleet{}
	var err error
	if e.fleets[1000], err = newPolicyFleet(1000); err != nil {
		return err
	}
	for _, s := range specs {
		if s.zt != 0 && e.fleets[s.zt] == nil {
			if e.fleets[s.zt], err = newPolicyFleet(s.zt); err != nil {
				return err
			}
		}
	}
	if e.devHost, err = e.fleets[1000].pickDevice(); err != nil {
		return err
	}
	e.cfg.Logf("live: policies compiled in %s; the device sends from %s %s", time.Since(t0).Round(time.Millisecond),
		e.devHost.MAC, e.devHost.IP)
	e.pairs = allowPairs(e.fleets[1000], 1000)

	e.t0 = time.Now()
	var devs []testenv.DeviceSpec
	for _, s := range specs {
		devs = append(devs, testenv.DeviceSpec{Name: s.key, IPv6: []netip.Addr{}})
	}
	if e.tp, err = testenv.Build(testenv.Config{Devices: devs}); err != nil {
		return err
	}
	e.cleanups = append(e.cleanups, e.tp.Close)
	nsNames := []string{e.tp.Gateway.Name()}
	for _, d := range e.tp.Devices {
		nsNames = append(nsNames, d.NS.Name())
	}
	traceCreated(nsNames, nil)
	if err := e.chooseSender(); err != nil {
		return err
	}
	if e.dropProg, err = core.ReturnProgram("live_drop", core.XDPDrop); err != nil {
		return err
	}
	e.cleanups = append(e.cleanups, e.dropProg.Close)
	return nil
}

// chooseSender picks the sender: the kernel's live frames if it allows them (or as forced),
// else AF_PACKET, which sends the generator alone's frames to a sink.
func (e *env) chooseSender() error {
	tp := e.tp
	var err error
	e.sender, err = chooseSender(e.cfg, e.cfg.LiveSender, func() error {
		gen, err := newKernelSender(tp.Devices[0].Port.Index, buildFrame(unknownHost(), tp.Devices[0].MAC, closedPort))
		if err != nil {
			return err
		}
		defer gen.Close()
		return tp.Gateway.Do(func() error { return probeFrames(gen) })
	})
	if err != nil {
		return err
	}
	e.cfg.Logf("live: sender %s", senderDesc(e.sender))
	if e.sender == core.LiveSenderAFPacket {
		if e.sinkIdx, err = addSink(tp.Gateway); err != nil {
			return err
		}
	}
	return nil
}

// variants sets up every variant's sender and receiver.
func (e *env) variants(ctx context.Context, specs []variantSpec) ([]*variant, error) {
	var vs []*variant
	for _, s := range specs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		v, err := e.variant(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		vs = append(vs, v)
	}
	e.cfg.Logf("live: %d receivers set up in %s", len(vs), time.Since(e.t0).Round(time.Millisecond))
	return vs, nil
}

// variant sets up the variant of s: its frame, its sender, and its receiver's address, filter
// and veth settings.
func (e *env) variant(s variantSpec) (*variant, error) {
	v := &variant{variantSpec: s, dev: e.tp.Device(s.key)}
	if s.inbound {
		return v, e.inboundVariant(v)
	}
	src := unknownHost()
	switch s.src {
	case srcSpoofed:
		src.MAC = e.devHost.MAC
	case srcDevice:
		src = e.devHost
	}
	v.frame = buildFrame(src, v.dev.MAC, s.dport)
	if err := v.openSender(e.sender, e.tp.Gateway, e.sinkIdx); err != nil {
		return nil, err
	}
	e.cleanups = append(e.cleanups, v.tx.Close)
	ns, ifname := v.dev.NS, v.dev.Ifname
	// The destination, 10.0.0.1, is the receiver's: what passes is delivered locally.
	l, err := ns.Netlink().LinkByName(ifname)
	if err == nil {
		err = ns.Netlink().AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: gatewayIP.AsSlice(), Mask: net.CIDRMask(32, 32)}})
	}
	if err != nil {
		return nil, fmt.Errorf("add %s: %w", gatewayIP, err)
	}
	if err := e.filter(v); err != nil {
		return nil, err
	}
	// GRO on gives the veth a NAPI context without an XDP program (and GRO for what XDP
	// passes); the generator alone's veth keeps GRO off, so without NAPI it refuses frames.
	if err := setGRO(ns, ifname, s.kind != kindBaseline); err != nil {
		return nil, err
	}
	if s.kind != kindBaseline {
		if _, err := noThreads(ns, ifname); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// filter sets up the variant's filter on its receiving veth: ztgate, XDP_DROP, xdp-filter,
// nftables or iptables.
func (e *env) filter(v *variant) error {
	ns, ifname := v.dev.NS, v.dev.Ifname
	switch {
	case v.variantSpec.zt != 0:
		z, err := e.ztgate(v.variantSpec.zt)
		if err != nil {
			return err
		}
		v.zt = z
		z.fleet.model.AddGatewayMAC([6]byte(v.dev.MAC)) // as the attach below registers it
		want := z.fleet.model.Decide(v.frame, uint32(v.dev.Ifindex), 0)
		if want.Verdict != v.verdict || want.Reason != v.reason {
			return fmt.Errorf("the model decides %s/%s, want %s/%s", want.Verdict, want.Reason, v.verdict, v.reason)
		}
		return z.attach(ns, ifname)
	case v.key == "xdpdrop":
		return ns.Do(func() error {
			l, err := link.AttachXDP(link.XDPOptions{Program: e.dropProg, Interface: v.dev.Ifindex,
				Flags: link.XDPDriverMode})
			if err == nil {
				e.cleanups = append(e.cleanups, l.Close)
			}
			return err
		})
	case v.key == "xdpfilter":
		x, err := xdpfilter.Open(xdpfilter.FlagSrc, unknownIP)
		if err != nil {
			return err
		}
		e.cleanups = append(e.cleanups, func() error { x.Close(); return nil })
		return x.Attach(ns, v.dev.Ifindex)
	case v.key == "nftset":
		return runNsenter(ns, nftSetRules(ifname, e.pairs), "nft", "-f", "-")
	case v.key == "nftlinear":
		return runNsenter(ns, nftLinearRules(ifname, e.pairs), "nft", "-f", "-")
	case v.key == "iptlegacy":
		return runNsenter(ns, iptablesRules(e.pairs), "iptables-legacy-restore")
	case v.key == "iptnft":
		return runNsenter(ns, iptablesRules(e.pairs), "iptables-nft-restore")
	}
	return nil
}

// ztgate returns the datapath of the fleet of n devices, loading it on first use.
func (e *env) ztgate(n int) (*ztgateDP, error) {
	if z := e.zts[n]; z != nil {
		return z, nil
	}
	t0 := time.Now()
	pin := core.PinDir("live-" + core.Count(n))
	traceCreated(nil, []string{pin})
	z, err := openZtgate(e.fleets[n], pin)
	e.cleanups = append(e.cleanups, z.Close)
	if err != nil {
		return nil, fmt.Errorf("ztgate with %s devices: %w", core.Count(n), err)
	}
	e.zts[n] = z
	e.cfg.Logf("live: ztgate with %s devices loaded and applied in %s", core.Count(n),
		time.Since(t0).Round(time.Millisecond))
	return z, nil
}

// measurement is the section's measurement: the variants' CPU time per frame, per round.
type measurement struct {
	rounds int
	dur    time.Duration // CPU time per measurement
	cpu    int           // the generator's CPU
	total  [][]float64   // per variant, per round
	genEnd float64       // the generator alone after the last round
	hot    map[string]float64
}

// run probes and calibrates every variant, then measures them in interleaved rounds, the
// generator alone at the start of every round and once more at the end, and the programs' cost
// with hot caches. It runs on the calling thread, which must be in the sender namespace.
func (m *measurement) run(ctx context.Context, cfg *core.Config, vs []*variant, dropProg *ebpf.Program) error {
	chunk := time.Duration(cfg.Pick(250, 125)) * time.Millisecond // CPU time per generator call
	maxRepeat := uint32(cfg.Pick(1<<22, 1<<20))
	unpin, err := core.PinThread(m.cpu)
	if err != nil {
		return err
	}
	defer unpin()
	clk := newCPUClock(m.cpu)
	if clk.ksoftirqd == "" {
		cfg.Logf("live: ksoftirqd/%d not found: softirq work deferred to it goes uncounted", m.cpu)
	}
	for _, v := range vs {
		if err := v.probe(); err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		if err := v.calibrate(clk, chunk, maxRepeat); err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
	}
	var iv []core.Variant
	for _, v := range vs {
		iv = append(iv, core.Variant{Name: v.name, Run: func() (float64, error) {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			return v.measure(clk, m.dur)
		}})
	}
	t1 := time.Now()
	if m.total, err = core.Interleave(m.rounds, iv); err != nil {
		return err
	}
	if m.genEnd, err = vs[0].measure(clk, m.dur); err != nil { // every round is bracketed
		return err
	}
	cfg.Logf("live: %d variants x %d rounds x %s in %s", len(vs), m.rounds, m.dur, time.Since(t1).Round(time.Millisecond))
	return m.runHot(cfg, vs, dropProg)
}

// runHot runs the same programs on the same frames with hot caches (BPF_PROG_TEST_RUN), to show
// what live traffic adds to ztgate's decision.
func (m *measurement) runHot(cfg *core.Config, vs []*variant, dropProg *ebpf.Program) error {
	hotRuns := cfg.Pick(1<<20, 1<<16)
	m.hot = map[string]float64{}
	for _, v := range vs {
		var p *ebpf.Program
		switch {
		case v.inbound:
			if p = v.hotProg; p == nil {
				continue
			}
		case v.key == "xdpdrop":
			p = dropProg
		case v.zt != nil:
			p = v.zt.dp.Program()
		default:
			continue
		}
		var xs []float64
		for range 3 {
			_, d, err := p.Benchmark(v.frame, hotRuns, nil)
			if err != nil {
				return fmt.Errorf("%s: test run: %w", v.name, err)
			}
			xs = append(xs, float64(d.Nanoseconds()))
		}
		m.hot[v.key] = core.Median(xs)
	}
	return nil
}
