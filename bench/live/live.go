// Package live is the benchmark suite's live section: what a receiver costs per packet of live
// traffic over a veth, for ztgate and its peers (XDP_DROP, xdp-filter, nftables, iptables, the
// stack), with the serial method that docs/benchmarks.md describes.
package live

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bench/xdpfilter"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/testenv"
)

// Section is the live section.
var Section = core.Section{
	Name: "live",
	Desc: "receiver cost of live traffic over veth (in-kernel generator or AF_PACKET sender, serial method): " +
		"ztgate vs XDP_DROP, xdp-filter, nftables, iptables, the stack",
	Run: run,
}

// Targets of the section (receiver cost).
const (
	vsDropMax     = 1.3 // ztgate drop path <= 1.3x XDP_DROP
	vsNftSetMin   = 4   // >= 4x cheaper than the nftables set
	vsIptablesMin = 25  // >= 25x cheaper than iptables with 1,000 rules
)

// receiverKind says what receives the frames.
type receiverKind int

const (
	kindBaseline receiverKind = iota // nothing: the veth refuses the frames (generator alone)
	kindXDP                          // an XDP program (native), GRO on for what it passes
	kindNoXDP                        // no XDP program, GRO on (NAPI): netfilter, then the stack
)

// srcKind is the source of a variant's frames.
type srcKind int

const (
	srcUnknown srcKind = iota // a MAC and an IPv4 address in no policy, set or rule
	srcSpoofed                // the policy's device's MAC with the unknown IPv4 address
	srcDevice                 // the policy's device
)

// variantSpec is one variant.
type variantSpec struct {
	key     string // the topology's device name
	name    string // in the report
	kind    receiverKind
	zt      int     // ztgate fleet size; 0: not ztgate
	src     srcKind // where the frame comes from
	dport   uint16
	verdict bpf.Verdict // ztgate's expected verdict and reason
	reason  bpf.Reason
	stack   bool // frames reach the stack's UDP layer (closed port)
	drop    bool // ztgate's drop path for a source it must not accept (the targets' subject)
	tools   []string
	note    string
}

var allSpecs = []variantSpec{
	{key: "gen", name: "generator alone", kind: kindBaseline, dport: closedPort,
		note: "rx veth without NAPI refuses the frames: the sender's own cost"},
	{key: "xdpdrop", name: "XDP_DROP", kind: kindXDP, dport: closedPort},
	{key: "zt1k-unk", name: "ztgate 1k drop, unknown source", kind: kindXDP, zt: 1000, dport: closedPort,
		verdict: bpf.VerdictDrop, reason: bpf.ReasonUnknownDevice, drop: true, note: "source MAC in no device record"},
	{key: "zt1k-spoof", name: "ztgate 1k drop, spoofed source", kind: kindXDP, zt: 1000, src: srcSpoofed,
		dport: closedPort, verdict: bpf.VerdictDrop, reason: bpf.ReasonSpoofIP, drop: true,
		note: "a device's MAC with an IPv4 source not bound to it"},
	{key: "zt1m-unk", name: "ztgate 1M drop, unknown source", kind: kindXDP, zt: 1000000, dport: closedPort,
		verdict: bpf.VerdictDrop, reason: bpf.ReasonUnknownDevice, drop: true},
	{key: "zt1m-spoof", name: "ztgate 1M drop, spoofed source", kind: kindXDP, zt: 1000000, src: srcSpoofed,
		dport: closedPort, verdict: bpf.VerdictDrop, reason: bpf.ReasonSpoofIP, drop: true},
	{key: "zt1m-norule", name: "ztgate 1M drop, no rule", kind: kindXDP, zt: 1000000, src: srcDevice,
		dport: closedPort, verdict: bpf.VerdictDrop, reason: bpf.ReasonNoRule,
		note: "the device itself, to a port no rule allows: the whole decision (rule, peer and prefix lookups)"},
	{key: "zt1k-allow", name: "ztgate 1k allowed, then the stack", kind: kindXDP, zt: 1000, src: srcDevice,
		dport: dnsPort, verdict: bpf.VerdictPass, reason: bpf.ReasonAllow, stack: true,
		note: "DNS to the gateway (a service), port closed on the receiver"},
	{key: "xdpfilter", name: "xdp-filter 10k drop", kind: kindXDP, dport: closedPort,
		note: "xdpfilt_alw_all.o, 10k MAC + 10k IPv4 (maps full); source IPv4 listed: 4th lookup hits"},
	{key: "nftset", name: "nftables set 1k drop", kind: kindNoXDP, dport: closedPort, tools: []string{"nft", "nsenter"},
		note: "netdev ingress, ether saddr . ip saddr != @set (1,000 elements) drop"},
	{key: "nftlinear", name: "nftables 1,000 rules drop", kind: kindNoXDP, dport: closedPort, tools: []string{"nft", "nsenter"},
		note: "netdev ingress, 1,000 ether saddr + ip saddr accept rules, then drop"},
	{key: "iptlegacy", name: "iptables-legacy 1,000 rules drop", kind: kindNoXDP, dport: closedPort,
		tools: []string{"iptables-legacy-restore", "nsenter"}, note: "raw PREROUTING, 1,000 -s + -m mac ACCEPT rules, then DROP"},
	{key: "iptnft", name: "iptables-nft 1,000 rules drop", kind: kindNoXDP, dport: closedPort,
		tools: []string{"iptables-nft-restore", "nsenter"}, note: "raw PREROUTING, 1,000 -s + -m mac ACCEPT rules, then DROP"},
	{key: "stack", name: "no filter (stack, closed UDP port)", kind: kindNoXDP, dport: closedPort, stack: true},
}

// quickKeys are the variants of a quick run.
var quickKeys = []string{"gen", "xdpdrop", "zt1k-spoof", "nftset"}

// variant is a variant set up in the topology.
type variant struct {
	variantSpec
	dev    *testenv.Device
	frame  []byte
	tx     frameSender
	sink   *testenv.Namespace // the AF_PACKET sender alone's sink (sinkName) is in it; nil otherwise
	repeat uint32
	zt     *ztgateDP
	lost   float64 // largest fraction of frames lost in transit (ring full) in a measurement
}

// trace records what the last run of the section created (for its test: all gone after).
var trace struct {
	sync.Mutex
	namespaces, pinDirs []string
}

func traceCreated(ns []string, pins []string) {
	trace.Lock()
	defer trace.Unlock()
	trace.namespaces = append(trace.namespaces, ns...)
	trace.pinDirs = append(trace.pinDirs, pins...)
}

const (
	batchFrames     = 64 // frames per generator batch (NAPI_POLL_WEIGHT)
	probeFrameCount = 512
)

func run(ctx context.Context, cfg *core.Config, r *core.Report) (err error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	rounds := cfg.Pick(5, 1)
	dur := time.Duration(cfg.Pick(800, 250)) * time.Millisecond   // CPU time per measurement
	chunk := time.Duration(cfg.Pick(250, 125)) * time.Millisecond // CPU time per generator call
	maxRepeat := uint32(cfg.Pick(1<<22, 1<<20))
	cpu := pickCPU()

	for _, t := range []string{"ip", "sh"} { // NAPI threading is set through `ip netns exec ... sh`
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s not installed", t)
		}
	}
	var specs []variantSpec
	skipped := map[string]string{}
	for _, s := range allSpecs {
		if cfg.Quick && !slices.Contains(quickKeys, s.key) {
			continue
		}
		for _, t := range s.tools {
			if _, err := exec.LookPath(t); err != nil {
				skipped[s.key] = t + " not installed"
			}
		}
		if why, ok := skipped[s.key]; ok {
			cfg.Logf("live: %s skipped: %s", s.name, why)
			continue
		}
		specs = append(specs, s)
	}

	// Cleanups run in reverse order, also when the section fails half-way.
	var cleanups []func() error
	defer func() {
		t0 := time.Now()
		defer func() { cfg.Logf("live: cleaned up in %s", time.Since(t0).Round(time.Millisecond)) }()
		var errs []error
		for i := len(cleanups) - 1; i >= 0; i-- {
			if e := cleanups[i](); e != nil {
				errs = append(errs, e)
			}
		}
		if len(errs) > 0 {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", errors.Join(errs...)))
		}
	}()

	// The policies, and the device whose frames ztgate identifies.
	t0 := time.Now()
	fleets := map[int]*policyFleet{}
	if fleets[1000], err = newPolicyFleet(1000); err != nil {
		return err
	}
	for _, s := range specs {
		if s.zt != 0 && fleets[s.zt] == nil {
			if fleets[s.zt], err = newPolicyFleet(s.zt); err != nil {
				return err
			}
		}
	}
	devHost, err := fleets[1000].pickDevice()
	if err != nil {
		return err
	}
	cfg.Logf("live: policies compiled in %s; the device sends from %s %s", time.Since(t0).Round(time.Millisecond),
		devHost.MAC, devHost.IP)
	pairs := allowPairs(fleets[1000], 1000)

	// The topology: the sender is the gateway namespace, every receiver a device namespace.
	t0 = time.Now()
	var devs []testenv.DeviceSpec
	for _, s := range specs {
		devs = append(devs, testenv.DeviceSpec{Name: s.key, IPv6: []netip.Addr{}})
	}
	tp, err := testenv.Build(testenv.Config{Devices: devs})
	if err != nil {
		return err
	}
	cleanups = append(cleanups, tp.Close)
	nsNames := []string{tp.Gateway.Name()}
	for _, d := range tp.Devices {
		nsNames = append(nsNames, d.NS.Name())
	}
	traceCreated(nsNames, nil)

	// The sender: the kernel's live frames if it allows them (or as forced), else AF_PACKET.
	sender, err := chooseSender(cfg, cfg.LiveSender, func() error {
		gen, err := newKernelSender(tp.Devices[0].Port.Index, buildFrame(unknownHost(), tp.Devices[0].MAC,
			closedPort))
		if err != nil {
			return err
		}
		defer gen.Close()
		return tp.Gateway.Do(func() error { return probeFrames(gen) })
	})
	if err != nil {
		return err
	}
	cfg.Logf("live: sender %s", senderDesc(sender))
	sinkIdx := 0
	if sender == core.LiveSenderAFPacket {
		if sinkIdx, err = addSink(tp.Gateway); err != nil {
			return err
		}
	}

	dropProg, err := core.ReturnProgram("live_drop", core.XDPDrop)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, dropProg.Close)

	zts := map[int]*ztgateDP{}
	var vs []*variant
	for _, s := range specs {
		if err := ctx.Err(); err != nil {
			return err
		}
		v := &variant{variantSpec: s, dev: tp.Device(s.key)}
		src := unknownHost()
		switch s.src {
		case srcSpoofed:
			src.MAC = devHost.MAC
		case srcDevice:
			src = devHost
		}
		v.frame = buildFrame(src, v.dev.MAC, s.dport)
		if err := v.openSender(sender, tp.Gateway, sinkIdx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		cleanups = append(cleanups, v.tx.Close)
		ns, ifname := v.dev.NS, v.dev.Ifname
		// The destination, 10.0.0.1, is the receiver's: what passes is delivered locally.
		l, err := ns.Netlink().LinkByName(ifname)
		if err == nil {
			err = ns.Netlink().AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: gatewayIP.AsSlice(), Mask: net.CIDRMask(32, 32)}})
		}
		if err != nil {
			return fmt.Errorf("%s: add %s: %w", s.name, gatewayIP, err)
		}
		switch {
		case s.zt != 0:
			z := zts[s.zt]
			if z == nil {
				t1 := time.Now()
				pin := core.PinDir("live-" + core.Count(s.zt))
				traceCreated(nil, []string{pin})
				z, err = openZtgate(fleets[s.zt], pin)
				cleanups = append(cleanups, z.Close)
				if err != nil {
					return fmt.Errorf("ztgate with %s devices: %w", core.Count(s.zt), err)
				}
				zts[s.zt] = z
				cfg.Logf("live: ztgate with %s devices loaded and applied in %s", core.Count(s.zt), time.Since(t1).Round(time.Millisecond))
			}
			v.zt = z
			z.fleet.model.AddGatewayMAC([6]byte(v.dev.MAC)) // as the attach below registers it
			if want := z.fleet.model.Decide(v.frame, uint32(v.dev.Ifindex), 0); want.Verdict != s.verdict || want.Reason != s.reason {
				return fmt.Errorf("%s: the model decides %s/%s, want %s/%s", s.name, want.Verdict, want.Reason, s.verdict, s.reason)
			}
			err = z.attach(ns, ifname)
		case s.key == "xdpdrop":
			err = ns.Do(func() error {
				l, err := link.AttachXDP(link.XDPOptions{Program: dropProg, Interface: v.dev.Ifindex, Flags: link.XDPDriverMode})
				if err == nil {
					cleanups = append(cleanups, l.Close)
				}
				return err
			})
		case s.key == "xdpfilter":
			var x *xdpfilter.Filter
			if x, err = xdpfilter.Open(xdpfilter.FlagSrc, unknownIP); err == nil {
				cleanups = append(cleanups, func() error { x.Close(); return nil })
				err = x.Attach(ns, v.dev.Ifindex)
			}
		case s.key == "nftset":
			err = runNsenter(ns, nftSetRules(ifname, pairs), "nft", "-f", "-")
		case s.key == "nftlinear":
			err = runNsenter(ns, nftLinearRules(ifname, pairs), "nft", "-f", "-")
		case s.key == "iptlegacy":
			err = runNsenter(ns, iptablesRules(pairs), "iptables-legacy-restore")
		case s.key == "iptnft":
			err = runNsenter(ns, iptablesRules(pairs), "iptables-nft-restore")
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		// GRO on gives the veth a NAPI context without an XDP program (and GRO for what XDP
		// passes); the generator alone's veth keeps GRO off, so without NAPI it refuses frames.
		if err := setGRO(ns, ifname, s.kind != kindBaseline); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if s.kind != kindBaseline {
			if _, err := noThreads(ns, ifname); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
		}
		vs = append(vs, v)
	}
	cfg.Logf("live: %d receivers set up in %s", len(vs), time.Since(t0).Round(time.Millisecond))

	// Measure: the generator's thread sits in the sender namespace, pinned.
	var total [][]float64
	var genEnd float64
	var hot map[string]float64
	err = tp.Gateway.Do(func() error {
		unpin, err := core.PinThread(cpu)
		if err != nil {
			return err
		}
		defer unpin()
		clk := newCPUClock(cpu)
		if clk.ksoftirqd == "" {
			cfg.Logf("live: ksoftirqd/%d not found: softirq work deferred to it goes uncounted", cpu)
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
				return v.measure(clk, dur)
			}})
		}
		t1 := time.Now()
		if total, err = core.Interleave(rounds, iv); err != nil {
			return err
		}
		if genEnd, err = vs[0].measure(clk, dur); err != nil { // every round is bracketed
			return err
		}
		cfg.Logf("live: %d variants x %d rounds x %s in %s", len(vs), rounds, dur, time.Since(t1).Round(time.Millisecond))
		// The same programs on the same frames with hot caches (BPF_PROG_TEST_RUN), to show
		// what live traffic adds to ztgate's decision.
		hotRuns := cfg.Pick(1<<20, 1<<16)
		hot = map[string]float64{}
		for _, v := range vs {
			var p *ebpf.Program
			switch {
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
			hot[v.key] = core.Median(xs)
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeReport(cfg, r, vs, total, genEnd, hot, rounds, dur, cpu, skipped, sender)
	return nil
}

// openSender opens the variant's sender in gw, the sender namespace. With AF_PACKET, the sender
// alone sends to the sink (sinkIdx), every other variant from its port, TSO off.
func (v *variant) openSender(sender string, gw *testenv.Namespace, sinkIdx int) error {
	if sender == core.LiveSenderKernel {
		tx, err := newKernelSender(v.dev.Port.Index, v.frame)
		if err != nil {
			return err
		}
		v.tx = tx
		return nil
	}
	idx := v.dev.Port.Index
	if v.kind == kindBaseline {
		idx, v.sink = sinkIdx, gw
	} else if err := setTSO(gw, v.dev.Port.Name, false); err != nil {
		return err
	}
	return gw.Do(func() error {
		tx, err := newAFPacketSender(idx, v.frame)
		if err == nil {
			v.tx = tx
		}
		return err
	})
}

// probe sends a few frames and checks that the receiver does what the variant says: nothing
// received for the generator alone; otherwise every frame received, ztgate's counter for the
// expected verdict and reason moved by as many, and the stack's UDP layer reached by every
// frame or by none.
func (v *variant) probe() error {
	stats := linkStats(v.dev.NS)
	rx0, dr0, err := stats(v.dev.Ifname)
	if err != nil {
		return err
	}
	np0, err := udpNoPorts(v.dev.NS)
	if err != nil {
		return err
	}
	var zc0 uint64
	if v.zt != nil {
		if zc0, err = v.zt.counter(v.verdict, v.reason); err != nil {
			return err
		}
	}
	var sink0 uint64
	if v.sink != nil {
		if _, sink0, err = linkStats(v.sink)(sinkName); err != nil {
			return err
		}
	}
	if _, err := v.tx.send(probeFrameCount); err != nil {
		return err
	}
	var want uint64 = probeFrameCount
	if v.kind == kindBaseline {
		want = 0
	}
	// Wait for the counters to settle, in case softirq work went to ksoftirqd.
	var rx1, dr1 uint64
	for deadline := time.Now().Add(2 * time.Second); ; {
		time.Sleep(10 * time.Millisecond)
		if rx1, dr1, err = stats(v.dev.Ifname); err != nil {
			return err
		}
		if v.kind == kindBaseline || rx1-rx0+dr1-dr0 >= probeFrameCount || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(10 * time.Millisecond)
	np1, err := udpNoPorts(v.dev.NS)
	if err != nil {
		return err
	}
	rx, dr, np := rx1-rx0, dr1-dr0, np1-np0
	// The receiver also gets the odd frame of its own traffic (an ARP reply when it sends an
	// ICMP error): a few more than sent are fine.
	const slack = 16
	if rx < want || rx > want+slack || dr != 0 {
		return fmt.Errorf("probe: %d frames sent, %d received and %d dropped by the veth, want %d received", probeFrameCount, rx, dr, want)
	}
	wantNP := uint64(0)
	if v.stack {
		wantNP = probeFrameCount
	}
	if np != wantNP {
		return fmt.Errorf("probe: %d frames sent, %d reached a closed UDP port, want %d", probeFrameCount, np, wantNP)
	}
	if v.sink != nil {
		_, sink1, err := linkStats(v.sink)(sinkName)
		if err != nil {
			return err
		}
		if sink1-sink0 != probeFrameCount {
			return fmt.Errorf("probe: %d frames sent, %d dropped by the sink %s, want all", probeFrameCount, sink1-sink0,
				sinkName)
		}
	}
	if v.zt != nil {
		zc1, err := v.zt.counter(v.verdict, v.reason)
		if err != nil {
			return err
		}
		if zc1-zc0 != probeFrameCount {
			return fmt.Errorf("probe: ztgate counted %d frames as %s/%s, want %d", zc1-zc0, v.verdict, v.reason, probeFrameCount)
		}
	}
	return nil
}

// calibrate warms the variant up and picks the repeat of one BPF_PROG_TEST_RUN call: about
// target of CPU time (a power of two between 1,024 and maxRepeat), so that the call's own
// set-up (a page pool for the batch) stays a small share of it.
func (v *variant) calibrate(clk *cpuClock, target time.Duration, maxRepeat uint32) error {
	v.repeat = 1024
	if _, err := v.measure(clk, 20*time.Millisecond); err != nil {
		return err
	}
	c0 := clk.now()
	if _, err := v.run(); err != nil {
		return err
	}
	per := max(1, (clk.now()-c0)/time.Duration(v.repeat))
	for v.repeat < maxRepeat && time.Duration(v.repeat)*2*per <= target {
		v.repeat *= 2
	}
	return nil
}

func (v *variant) run() (uint32, error) { return v.tx.send(v.repeat) }

// measure sends until d of CPU time was spent on the generator's CPU and returns that CPU
// time per frame in ns. The frames counted are those sent, or those the receiver's veth saw if
// more (a run interrupted by a signal is restarted in full); frames the veth could not queue
// (ring full) are recorded in v.lost: they would make the receiver look cheaper than it is.
func (v *variant) measure(clk *cpuClock, d time.Duration) (float64, error) {
	stats := linkStats(v.dev.NS)
	rx0, dr0, err := stats(v.dev.Ifname)
	if err != nil {
		return 0, err
	}
	var sent uint64
	c0 := clk.now()
	for clk.now()-c0 < d {
		n, err := v.run()
		if err != nil {
			return 0, err
		}
		sent += uint64(n)
	}
	spent := clk.now() - c0
	rx1, dr1, err := stats(v.dev.Ifname)
	if err != nil {
		return 0, err
	}
	frames := sent
	if v.kind != kindBaseline {
		seen := (rx1 - rx0) + (dr1 - dr0)
		frames = max(frames, seen)
		v.lost = max(v.lost, float64(dr1-dr0)/float64(frames))
	}
	return float64(spent.Nanoseconds()) / float64(frames), nil
}

// cpuClock is the CPU time spent on the generator's CPU for the traffic: the generator's
// thread (which the receiver's inline softirq is charged to) plus ksoftirqd of that CPU, not
// the wall clock (see docs/benchmarks.md). The thread must be the calling, locked one.
type cpuClock struct {
	ksoftirqd string // /proc/<pid>/schedstat of ksoftirqd/<cpu>, "" if not found
}

func newCPUClock(cpu int) *cpuClock {
	c := &cpuClock{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err == nil && strings.TrimSpace(string(b)) == "ksoftirqd/"+strconv.Itoa(cpu) {
			c.ksoftirqd = "/proc/" + e.Name() + "/schedstat"
			break
		}
	}
	return c
}

func (c *cpuClock) now() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	t := time.Duration(ts.Nano())
	if c.ksoftirqd != "" {
		if b, err := os.ReadFile(c.ksoftirqd); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					t += time.Duration(ns)
				}
			}
		}
	}
	return t
}

// writeReport turns the per-round times into rates, receiver costs, ratios and target verdicts.
func writeReport(cfg *core.Config, r *core.Report, vs []*variant, total [][]float64, genEnd float64, hot map[string]float64,
	rounds int, dur time.Duration, cpu int, skipped map[string]string, sender string) {
	const sec = "live"
	defer r.TagSender(sec, sender)
	quick := ""
	if cfg.Quick {
		quick = "quick (1 round, 4 variants): figures not meant to be read; "
	}
	// The generator's CPU time per frame before and after each round, and each round's
	// receiver costs against their mean.
	gen := append(slices.Clone(total[0]), genEnd)
	cost := make([][]float64, len(vs))
	idx := map[string]int{}
	for i, v := range vs {
		idx[v.key] = i
		if i == 0 {
			continue
		}
		for k := range rounds {
			cost[i] = append(cost[i], total[i][k]-(gen[k]+gen[k+1])/2)
		}
	}
	get := func(key string) []float64 {
		if i, ok := idx[key]; ok {
			return cost[i]
		}
		return nil
	}
	name := func(key string) string { return vs[idx[key]].name }
	drop := get("xdpdrop")
	dropNs := core.Median(drop)

	for i, v := range vs {
		ns := total[i]
		if i == 0 {
			ns = gen
		}
		rate := make([]float64, len(ns))
		for k, x := range ns {
			rate[k] = 1e3 / x // Mpps on one CPU
		}
		note := v.note
		if v.lost > 0.001 {
			note = strings.TrimPrefix(note+fmt.Sprintf("; %.1f%% lost in transit (ring full): cost understated", 100*v.lost), "; ")
		}
		if i == 0 {
			if sender == core.LiveSenderAFPacket {
				note = "AF_PACKET to an ifb sink that frees the frames at once: the sender's own cost"
			}
			note = fmt.Sprintf("%s; CPU %d, %d rounds x %s of CPU time; sender %s", note, cpu, rounds, dur,
				senderDesc(sender))
		}
		r.Add(core.Result{Section: sec, Name: v.name + ": rate", Value: core.Median(rate), Unit: "Mpps/CPU", Spread: core.Spread(rate), Note: note})
		if i == 0 {
			continue
		}
		res := core.Result{Section: sec, Name: v.name + ": receiver cost", Value: core.Median(cost[i]), Unit: "ns/pkt"}
		if v.key == "xdpdrop" {
			res.Spread = core.Spread(cost[i])
			res.Note = "CPU ns/frame minus the generator's alone: the veth's receive, the program, the frame's free"
		} else if drop != nil {
			rs := core.Ratios(cost[i], drop)
			res.Ratio, res.Base, res.Spread = core.Median(rs), "XDP_DROP", core.Spread(rs)
		}
		r.Add(res)
	}
	// ztgate's decision (what it adds to XDP_DROP), live and with hot caches.
	for _, v := range vs {
		h, ok := hot[v.key]
		if v.zt == nil || v.stack || drop == nil || !ok {
			continue
		}
		live := core.Median(cost[idx[v.key]]) - dropNs
		hd := h - hot["xdpdrop"]
		res := core.Result{Section: sec, Name: v.name + ": decision over XDP_DROP", Value: live, Unit: "ns/pkt",
			Note: fmt.Sprintf("hot caches (BPF_PROG_TEST_RUN, same frame, minus XDP_DROP's): %.0f ns", hd)}
		if hd > 0 {
			res.Ratio, res.Base = live/hd, "hot caches"
		}
		r.Add(res)
	}

	// The subject of the targets: ztgate's most expensive drop of a source it must not accept
	// (unknown, or spoofed: the frames the netfilter allow-lists drop too).
	subj := ""
	for _, v := range vs {
		if v.drop && drop != nil && (subj == "" || core.Median(core.Ratios(cost[idx[v.key]], drop)) > core.Median(core.Ratios(get(subj), drop))) {
			subj = v.key
		}
	}
	peers := []string{"xdpfilter", "nftset", "nftlinear", "iptlegacy", "iptnft"}
	for _, zk := range []string{subj, "zt1m-norule"} {
		zt := get(zk)
		if zk == "" || zt == nil {
			continue
		}
		for _, pk := range peers {
			if c := get(pk); c != nil {
				rs := core.Ratios(c, zt)
				r.Add(core.Result{Section: sec, Name: name(pk) + " / " + name(zk), Value: core.Median(rs), Unit: "x", Spread: core.Spread(rs),
					Note: "receiver cost, per-round ratio"})
			}
		}
	}
	if a, s := get("zt1k-allow"), get("stack"); a != nil && s != nil {
		rs := core.Ratios(a, s)
		r.Add(core.Result{Section: sec, Name: "ztgate 1k allowed + stack / stack alone", Value: core.Median(rs), Unit: "x",
			Spread: core.Spread(rs), Note: "receiver cost, per-round ratio: ztgate's share of an accepted packet"})
	}
	if subj == "" || drop == nil {
		return
	}

	zt := get(subj)
	ztNs := core.Median(zt)
	about := fmt.Sprintf("%s%s (worst source drop measured) %.0f ns, XDP_DROP %.0f ns", quick, name(subj), ztNs, dropNs)
	norule := ""
	if nr := get("zt1m-norule"); nr != nil {
		norule = fmt.Sprintf("; the whole decision of a known device (%s) costs %.0f ns", name("zt1m-norule"), core.Median(nr))
	}
	worst := core.Median(core.Ratios(zt, drop))
	note := about
	if worst > vsDropMax {
		live, hc := ztNs-dropNs, hot[subj]-hot["xdpdrop"]
		note += fmt.Sprintf("; ztgate's decision adds %.0f ns live, %.0f ns with hot caches (BPF_PROG_TEST_RUN): "+
			"the decision itself (policy-slot, device and address-binding lookups, per-CPU counters, the event "+
			"limiter's budget slot and timestamp%s)", live, hc, safeRETNote())
		if hc > 0 && live > 1.5*hc {
			note += ", inflated on live traffic by caches and branch predictors cold after the veth and page-pool code"
		}
		note += fmt.Sprintf("; %.1fx leaves %.0f ns for a decision", vsDropMax, (vsDropMax-1)*dropNs)
		if xf := get("xdpfilter"); xf != nil {
			note += fmt.Sprintf(" (xdp-filter's 4 lookups: %.0f ns, %.1fx)", core.Median(xf)-dropNs, core.Median(core.Ratios(xf, drop)))
		}
	}
	r.Check(sec, fmt.Sprintf("ztgate drop path <= %.1fx XDP_DROP (receiver cost)", vsDropMax), worst, "<=",
		vsDropMax, "x", note)

	cheaper := func(key, desc string, limit float64, extra string) {
		c := get(key)
		if c == nil {
			if !cfg.Quick {
				why := skipped[key]
				if why == "" {
					why = "not measured"
				}
				r.Check(sec, desc, math.NaN(), ">=", limit, "x", why)
			}
			return
		}
		m := core.Median(core.Ratios(c, zt))
		note := fmt.Sprintf("%s; %s %.0f ns%s", about, name(key), core.Median(c), extra)
		if m < limit {
			note += fmt.Sprintf("; against the median peer cost, %.0fx needs ztgate at <= %.0f ns, %.0f ns over XDP_DROP",
				limit, core.Median(c)/limit, core.Median(c)/limit-dropNs)
		}
		if nr := get("zt1m-norule"); nr != nil {
			note += fmt.Sprintf("%s: %.1fx", norule, core.Median(core.Ratios(c, nr)))
		}
		r.Check(sec, desc, m, ">=", limit, "x", note)
	}
	cheaper("nftset", fmt.Sprintf("ztgate drop path >= %dx cheaper than the nftables 1k set", vsNftSetMin),
		vsNftSetMin, "")
	ipt := "; each iptables flavour has a target of its own"
	if l, n := get("iptlegacy"), get("iptnft"); l != nil && n != nil {
		cheap := "iptables-legacy"
		if core.Median(n) < core.Median(l) {
			cheap = "iptables-nft"
		}
		ipt += ", the cheaper here: " + cheap
	}
	cheaper("iptlegacy", fmt.Sprintf("ztgate drop path >= %dx cheaper than iptables-legacy, 1,000 rules", vsIptablesMin),
		vsIptablesMin, ipt)
	cheaper("iptnft", fmt.Sprintf("ztgate drop path >= %dx cheaper than iptables-nft, 1,000 rules", vsIptablesMin),
		vsIptablesMin, ipt)
}

// safeRETNote says, for a note, whether every kernel function returns through SRSO's safe-RET
// thunk on this CPU ("" if not, or if the kernel does not say).
func safeRETNote() string {
	b, err := os.ReadFile("/sys/devices/system/cpu/vulnerabilities/spec_rstack_overflow")
	if err != nil || !strings.Contains(string(b), "Safe RET") {
		return ""
	}
	return "; every kernel function it calls returns through SRSO's safe-RET thunk on this CPU"
}
