// Package live is the benchmark suite's live section: what a receiver costs per packet of live
// traffic over a veth, for ztgate and its peers (XDP_DROP, xdp-filter, nftables, iptables, the
// stack), with the serial method that docs/benchmarks.md describes.
package live

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bench/core"
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
	inbound bool // toward the device: sent out of the device's veth through its TC egress hook
	reply   bool // inbound: the reply to the device's DNS query (the device asks first)
	tools   []string
	note    string
}

// allSpecs are the variants of a full run, the generator alone first.
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
	{key: "nftlinear", name: "nftables 1,000 rules drop", kind: kindNoXDP, dport: closedPort,
		tools: []string{"nft", "nsenter"},
		note:  "netdev ingress, 1,000 ether saddr + ip saddr accept rules, then drop"},
	{key: "iptlegacy", name: "iptables-legacy 1,000 rules drop", kind: kindNoXDP, dport: closedPort,
		tools: []string{"iptables-legacy-restore", "nsenter"},
		note:  "raw PREROUTING, 1,000 -s + -m mac ACCEPT rules, then DROP"},
	{key: "iptnft", name: "iptables-nft 1,000 rules drop", kind: kindNoXDP, dport: closedPort,
		tools: []string{"iptables-nft-restore", "nsenter"},
		note:  "raw PREROUTING, 1,000 -s + -m mac ACCEPT rules, then DROP"},
	{key: "stack", name: "no filter (stack, closed UDP port)", kind: kindNoXDP, dport: closedPort, stack: true},
	{key: inGen, name: "inbound: sender alone", kind: kindBaseline, inbound: true,
		note: "AF_PACKET to the injection veth, whose TC ingress drops the frames: the inbound sender's own cost"},
	{key: inNone, name: "inbound: no program", kind: kindNoXDP, inbound: true,
		note: "unsolicited frames toward the device, nothing at the veth's egress"},
	{key: inTCDrop, name: "inbound: TC_ACT_SHOT", kind: kindNoXDP, inbound: true,
		note: "a tcx egress program that drops every frame"},
	{key: inReply, name: "ztgate 1k inbound reply", kind: kindNoXDP, zt: 1000, inbound: true, reply: true,
		verdict: bpf.VerdictPass, reason: bpf.ReasonAllow,
		note: "DNS replies to the device's query: destination device and flow lookups at TC egress"},
	{key: inFlood, name: "ztgate 1k inbound unsolicited drop", kind: kindNoXDP, zt: 1000, inbound: true,
		verdict: bpf.VerdictDrop, reason: bpf.ReasonInboundDenied,
		note: "a flood from an upstream host to a port no from: rule opens: inbound_denied"},
}

// quickKeys are the variants of a quick run.
var quickKeys = []string{"gen", "xdpdrop", "zt1k-spoof", "nftset", inGen, inNone, inTCDrop, inReply, inFlood}

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

	gw              *testenv.Namespace // inbound: the gateway's namespace, with the veth's other end
	hotProg         *ebpf.Program      // inbound: the TC program measured with hot caches, if any
	counted, frames uint64             // inbound ztgate: to-device counter moves and frames sent, measured
}

// trace records what the last run of the section created (for its test: all gone after).
var trace struct {
	sync.Mutex
	namespaces, pinDirs []string
}

// traceCreated records the namespaces and pin directories the section created.
func traceCreated(ns []string, pins []string) {
	trace.Lock()
	defer trace.Unlock()
	trace.namespaces = append(trace.namespaces, ns...)
	trace.pinDirs = append(trace.pinDirs, pins...)
}

// Frames per generator call and per probe.
const (
	batchFrames     = 64 // frames per generator batch (NAPI_POLL_WEIGHT)
	probeFrameCount = 512
)

// run runs the section: it sets up a receiver per variant, measures them in interleaved rounds
// and reports. Whatever it set up is removed, also when it fails half-way.
func run(ctx context.Context, cfg *core.Config, r *core.Report) (err error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	for _, t := range []string{"ip", "sh"} { // NAPI threading is set through `ip netns exec ... sh`
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s not installed", t)
		}
	}
	specs, skipped := selectSpecs(cfg)
	e := &env{cfg: cfg, zts: map[int]*ztgateDP{}}
	defer func() { err = errors.Join(err, e.cleanUp()) }()
	if err := e.setUp(specs); err != nil {
		return err
	}
	vs, err := e.variants(ctx, specs)
	if err != nil {
		return err
	}
	m := &measurement{rounds: cfg.Pick(5, 1), dur: time.Duration(cfg.Pick(800, 250)) * time.Millisecond, cpu: pickCPU()}
	if err := e.tp.Gateway.Do(func() error { return m.run(ctx, cfg, vs, e.dropProg) }); err != nil {
		return err
	}
	writeReport(cfg, r, vs, m, skipped, e.sender)
	return nil
}

// selectSpecs returns the variants to run (a quick run's few), less those whose tools are not
// installed, which it returns with why.
func selectSpecs(cfg *core.Config) ([]variantSpec, map[string]string) {
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
	return specs, skipped
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
// expected verdict and reason (from devices: the receiver's ICMP errors toward the device pass
// the TC program) moved by as many, and the stack's UDP layer reached by every frame or by none.
func (v *variant) probe() error {
	if v.inbound {
		return v.probeInbound()
	}
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
		if zc0, err = v.zt.counterDir(bpf.DirFromDevice, v.verdict, v.reason); err != nil {
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
		return fmt.Errorf("probe: %d frames sent, %d received and %d dropped by the veth, want %d received",
			probeFrameCount, rx, dr, want)
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
		zc1, err := v.zt.counterDir(bpf.DirFromDevice, v.verdict, v.reason)
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

// run sends the variant's frames once (repeat frames).
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
	zc0, err := v.countInbound()
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
	zc1, err := v.countInbound()
	if err != nil {
		return 0, err
	}
	v.counted, v.frames = v.counted+zc1-zc0, v.frames+sent
	frames := sent
	if v.kind != kindBaseline && !v.inbound {
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

// newCPUClock finds ksoftirqd of cpu.
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

// now is the CPU time so far.
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

// safeRETNote says, for a note, whether every kernel function returns through SRSO's safe-RET
// thunk on this CPU ("" if not, or if the kernel does not say).
func safeRETNote() string {
	b, err := os.ReadFile("/sys/devices/system/cpu/vulnerabilities/spec_rstack_overflow")
	if err != nil || !strings.Contains(string(b), "Safe RET") {
		return ""
	}
	return "; every kernel function it calls returns through SRSO's safe-RET thunk on this CPU"
}
