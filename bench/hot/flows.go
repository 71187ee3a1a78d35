package hot

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bench/fleet"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/policy"
)

// The first-packet method: BPF_PROG_TEST_RUN replays one frame, and a replayed frame finds the
// flow its first run opened. A rewriter (an XDP program of the suite) writes the next source
// port of a block into the frame and tail-calls the measured program, so that every run of a
// call is a new flow; the flows a call opened are deleted after it, outside the timing, and
// counted: a call that opened fewer flows than it made runs fails the section. The rewriter's
// own cost is measured as a peer in the same rounds (the same rewriter tail-calling the floor)
// and taken out: first packet = rewriter(ztgate) - rewriter(floor) + floor.
const (
	firstPortBase = 0x4000 // the first-packet ports: firstPortBase | (run & firstPortMask)
	firstPortMask = 0x3fff
	firstRuns     = firstPortMask + 1 // runs per call: every port of the block once
)

// TC actions of the inbound programs.
const (
	tcActUnspec = 0xffffffff // TC_ACT_UNSPEC (-1): pass, the next filter of the hook decides
	tcActShot   = 2          // TC_ACT_SHOT: drop
)

// rewriter is an XDP program that rewrites the frame's TCP source port, then tail-calls its
// target.
type rewriter struct {
	ctr, progs *ebpf.Map
	prog       *ebpf.Program
}

// newRewriter loads a rewriter of the source port at byte off of the frame that tail-calls target,
// an XDP program loaded with the expected attach type at (a tail call needs the same).
func newRewriter(target *ebpf.Program, at ebpf.AttachType, off int16) (_ *rewriter, err error) {
	rw := &rewriter{}
	defer func() {
		if err != nil {
			rw.Close()
		}
	}()
	if rw.ctr, err = ebpf.NewMap(&ebpf.MapSpec{Name: "bench_rw_ctr", Type: ebpf.PerCPUArray, KeySize: 4,
		ValueSize: 8, MaxEntries: 1}); err != nil {
		return nil, fmt.Errorf("rewriter counter: %w", err)
	}
	if rw.progs, err = ebpf.NewMap(&ebpf.MapSpec{Name: "bench_rw_tail", Type: ebpf.ProgramArray, KeySize: 4,
		ValueSize: 4, MaxEntries: 1}); err != nil {
		return nil, fmt.Errorf("rewriter program array: %w", err)
	}
	ins := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R0, 0),
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, rw.ctr.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R7, 1),
		asm.StoreMem(asm.R0, 0, asm.R7, asm.DWord),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // xdp_md.data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // xdp_md.data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, int32(off)+2),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.Mov.Reg(asm.R5, asm.R7),
		asm.RSh.Imm(asm.R5, 8),
		asm.And.Imm(asm.R5, firstPortMask>>8),
		asm.Or.Imm(asm.R5, firstPortBase>>8),
		asm.StoreMem(asm.R2, off, asm.R5, asm.Byte),
		asm.Mov.Reg(asm.R5, asm.R7),
		asm.And.Imm(asm.R5, 0xff),
		asm.StoreMem(asm.R2, off+1, asm.R5, asm.Byte),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, rw.progs.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), // XDP_ABORTED: the tail call failed
		asm.Return(),
	}
	if rw.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "bench_rewrite", Type: ebpf.XDP, AttachType: at,
		License: "GPL", Instructions: ins}); err != nil {
		return nil, fmt.Errorf("load the rewriter: %w", err)
	}
	if err = rw.progs.Put(uint32(0), target); err != nil {
		return nil, fmt.Errorf("rewriter: tail call target: %w", err)
	}
	return rw, nil
}

// Close releases the rewriter's program and maps.
func (rw *rewriter) Close() {
	for _, c := range []interface{ Close() error }{rw.prog, rw.progs, rw.ctr} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// sportOffset is where the TCP source port of a frame of fleet.Classes (no IP options, no
// extension headers) is.
func sportOffset(v6 bool) int16 {
	if v6 {
		return 14 + 40
	}
	return 14 + 20
}

// firstFlows deletes the flows of the first-packet block (a TCP flow with one port in it and 443 at
// the other end) from z's table, gives their devices the quota back as the datapath would, and
// returns how many it deleted.
func (z *ztgateDP) firstFlows() (int, error) {
	flows := z.on.Objects().ZtFlows
	var keys []bpf.FlowKey
	perDev := map[uint32]uint32{}
	const chunk = 4096
	ks := make([]bpf.FlowKey, chunk)
	vs := make([]bpf.FlowVal, chunk)
	var cursor ebpf.MapBatchCursor
	inBlock := func(p uint16) bool { return p&^firstPortMask == firstPortBase }
	for {
		n, err := flows.BatchLookup(&cursor, ks, vs, nil)
		for i, k := range ks[:n] {
			if k.Proto == 6 && (inBlock(k.Aport) && k.Bport == 443 || inBlock(k.Bport) && k.Aport == 443) {
				keys = append(keys, k)
				perDev[vs[i].DevId]++
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("read the flows: %w", err)
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
	if n, err := flows.BatchDelete(keys, nil); err != nil || n != len(keys) {
		return n, fmt.Errorf("delete %d flows: %d deleted: %w", len(keys), n, err)
	}
	counts := z.on.Objects().ZtFlowCount
	for id, n := range perDev {
		var c uint32
		if err := counts.Lookup(id, &c); err != nil {
			return 0, fmt.Errorf("flow count of device %d: %w", id, err)
		}
		if err := counts.Put(id, c-min(c, n)); err != nil {
			return 0, fmt.Errorf("flow count of device %d: %w", id, err)
		}
	}
	return len(keys), nil
}

// firstVariant measures the first packet of flows from the device of frame through rw, in calls
// calls of firstRuns runs: every run of a call opens a new flow, checked by counting and deleting
// them after the call (outside the timing). The cost is the mean over the calls.
func firstVariant(name string, z *ztgateDP, rw *rewriter, frame []byte, calls int) core.Variant {
	return core.Variant{Name: name, Run: func() (float64, error) {
		if _, err := z.firstFlows(); err != nil {
			return 0, err
		}
		sum := 0.0
		for range calls {
			ret, d, err := rw.prog.Benchmark(frame, firstRuns, nil)
			if err != nil {
				return 0, err
			}
			if ret != core.XDPPass {
				return 0, fmt.Errorf("action %d, want XDP_PASS", ret)
			}
			opened, err := z.firstFlows()
			if err != nil {
				return 0, err
			}
			if opened != firstRuns {
				return 0, fmt.Errorf("%d runs opened %d flows, want one each (quota or table full?)", firstRuns,
					opened)
			}
			sum += float64(d.Nanoseconds())
		}
		return sum / float64(calls), nil
	}}
}

// passVariant measures rw tail-calling a program that passes every frame (the rewriter's own cost
// plus the floor's), in calls calls of firstRuns runs as firstVariant does.
func passVariant(name string, rw *rewriter, frame []byte, calls int) core.Variant {
	return core.Variant{Name: name, Run: func() (float64, error) {
		sum := 0.0
		for range calls {
			ret, d, err := rw.prog.Benchmark(frame, firstRuns, nil)
			if err != nil {
				return 0, err
			}
			if ret != core.XDPPass {
				return 0, fmt.Errorf("action %d, want XDP_PASS", ret)
			}
			sum += float64(d.Nanoseconds())
		}
		return sum / float64(calls), nil
	}}
}

// checkFirst proves the first-packet method on z: one call of rw opens a flow per run, each run
// passed and counted as allowed, and the block's flows are gone afterwards.
func checkFirst(z *ztgateDP, rw *rewriter, frame []byte) error {
	if _, err := z.firstFlows(); err != nil {
		return err
	}
	before, err := z.maps.Counters()
	if err != nil {
		return err
	}
	const runs = 256
	ret, err := rw.prog.Run(&ebpf.RunOptions{Data: frame, Repeat: runs})
	if err != nil {
		return err
	}
	after, err := z.maps.Counters()
	if err != nil {
		return err
	}
	if ret != core.XDPPass {
		return fmt.Errorf("first packet: action %d, want XDP_PASS", ret)
	}
	for v := range bpf.NumVerdicts {
		for r := range bpf.NumReasons {
			want := uint64(0)
			if bpf.Verdict(v) == bpf.VerdictPass && bpf.Reason(r) == bpf.ReasonAllow {
				want = runs
			}
			if d := after[v][r].Packets - before[v][r].Packets; d != want {
				return fmt.Errorf("first packet: %d runs moved %s/%s by %d, want %d", runs, bpf.Verdict(v),
					bpf.Reason(r), d, want)
			}
		}
	}
	opened, err := z.firstFlows()
	if err != nil {
		return err
	}
	if opened != runs {
		return fmt.Errorf("first packet: %d runs opened %d flows, want %d", runs, opened, runs)
	}
	return nil
}

// inboundClass is a frame toward a device that the TC program decides.
type inboundClass struct {
	name    string
	frame   func(dev int) []byte
	verdict bpf.Verdict
	reason  bpf.Reason
}

// remote is the remote end of the fleet's allowed flows, behind the gateway.
func remote(ip netip.Addr) frames.Host { return frames.Host{MAC: fleet.GatewayMAC, IP: ip} }

// inboundClasses are the frames toward device dev the TC program decides: the replies of the flows
// the allowed classes open (fleet.Classes: port 40000 to port 443), and a frame of no flow toward
// a device with no from: rule.
var inboundClasses = []inboundClass{
	{name: "inbound-reply-v4", verdict: bpf.VerdictPass, reason: bpf.ReasonAllow, frame: func(d int) []byte {
		return frames.TCP(remote(fleet.Dst4), frames.Host{MAC: fleet.MAC(d), IP: fleet.V4(d)}, 443, 40000, false, nil)
	}},
	{name: "inbound-reply-v6", verdict: bpf.VerdictPass, reason: bpf.ReasonAllow, frame: func(d int) []byte {
		return frames.TCP(remote(fleet.Dst6), frames.Host{MAC: fleet.MAC(d), IP: fleet.V6(d)}, 443, 40000, false, nil)
	}},
	{name: "unsolicited-inbound-drop", verdict: bpf.VerdictDrop, reason: bpf.ReasonInboundDenied,
		frame: func(d int) []byte {
			return frames.TCP(remote(fleet.Dst4), frames.Host{MAC: fleet.MAC(d), IP: fleet.V4(d)}, 443, 40001, true, nil)
		}},
}

// decideTC runs frame once through the TC program p whose counters are z's and returns its action
// and the (verdict, reason) counter toward devices that moved; exactly one counter may move.
func decideTC(z *ztgateDP, p *ebpf.Program, frame []byte) (uint32, bpf.Verdict, bpf.Reason, error) {
	before, err := z.maps.DirCounters()
	if err != nil {
		return 0, 0, 0, err
	}
	ret, err := p.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("test run: %w", err)
	}
	after, err := z.maps.DirCounters()
	if err != nil {
		return 0, 0, 0, err
	}
	moved := 0
	var v bpf.Verdict
	var r bpf.Reason
	for d := range bpf.NumDirs {
		for vi := range bpf.NumVerdicts {
			for ri := range bpf.NumReasons {
				if after[d][vi][ri].Packets != before[d][vi][ri].Packets {
					moved++
					v, r = bpf.Verdict(vi), bpf.Reason(ri)
					if bpf.Dir(d) != bpf.DirToDevice {
						return ret, v, r, fmt.Errorf("a counter of direction %d moved, want toward the device", d)
					}
				}
			}
		}
	}
	if moved != 1 {
		return ret, v, r, fmt.Errorf("%d counters moved for one frame, want exactly 1", moved)
	}
	return ret, v, r, nil
}

// tcFloor loads a TC program that returns TC_ACT_UNSPEC and does nothing else: the floor of the
// TC programs' test runs (an skb, not an xdp_buff).
func tcFloor() (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "bench_tc_floor", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
	if err != nil {
		return nil, fmt.Errorf("load the TC floor: %w", err)
	}
	return p, nil
}

// flowCount is how many flows device dev of the fleet snapshot s holds in z (zt_flow_count).
func (z *ztgateDP) flowCount(s *policy.Snapshot, dev int) (uint32, error) {
	rec, ok := s.Devices[policy.DevKey(fleet.MAC(dev))]
	if !ok {
		return 0, errors.New("device not in the snapshot")
	}
	var c uint32
	if err := z.on.Objects().ZtFlowCount.Lookup(rec.DevId, &c); err != nil {
		return 0, fmt.Errorf("flow count: %w", err)
	}
	return c, nil
}

// flowVariants are the hot section's variants of the flow table and the TC program, and what they
// need: the rewriters of the first-packet method and the TC floor.
type flowVariants struct {
	rws        []*rewriter
	tcFloor    *ebpf.Program
	vs         []core.Variant
	hv         []variant // idx and pass relative to vs until add
	passIdx    [2]int    // the rewriter-to-floor peers by family (0: IPv4, 1: IPv6), relative until add
	tcFloorIdx int
}

// open makes, for every fleet size, the first-packet variants (IPv4, IPv6, events on)
// of calls calls per round and the TC variants (inboundClasses, events on and off), each checked
// to be decided as it should, and their peers: the rewriter tail-calling the floor, by family, and
// the TC floor. The caller closes fv, also on error.
func (fv *flowVariants) open(floor *ebpf.Program, sizes []int, dps map[int]*ztgateDP, snaps map[int]*policy.Snapshot,
	repeat, calls int) error {
	var err error
	if fv.tcFloor, err = tcFloor(); err != nil {
		return err
	}
	fv.tcFloorIdx = len(fv.vs)
	fv.vs = append(fv.vs, core.ProgVariant("TC floor (TC_ACT_UNSPEC only)", fv.tcFloor,
		inboundClasses[0].frame(0), repeat, tcActUnspec))
	for i, v6 := range []bool{false, true} {
		rw, err := newRewriter(floor, ebpf.AttachNone, sportOffset(v6))
		if err != nil {
			return err
		}
		fv.rws = append(fv.rws, rw)
		fv.passIdx[i] = len(fv.vs)
		fv.vs = append(fv.vs, passVariant(fmt.Sprintf("rewriter + floor (IPv%d)", map[bool]int{false: 4, true: 6}[v6]),
			rw, fleet.Classes[i].Frame(0), calls))
	}
	for _, n := range sizes {
		z := dps[n]
		for i, v6 := range []bool{false, true} {
			rw, err := newRewriter(z.on.Program(), ebpf.AttachXDP, sportOffset(v6)) // SEC("xdp")
			if err != nil {
				return err
			}
			fv.rws = append(fv.rws, rw)
			frame := fleet.Classes[i].Frame(device(n))
			class := fmt.Sprintf("first-packet-v%d", map[bool]int{false: 4, true: 6}[v6])
			if err := checkFirst(z, rw, frame); err != nil {
				return fmt.Errorf("%s with %s devices: %w", class, core.Count(n), err)
			}
			fv.hv = append(fv.hv, variant{n: n, class: class, events: true, idx: len(fv.vs), pass: fv.passIdx[i]})
			fv.vs = append(fv.vs, firstVariant(variantName(n, class, true), z, rw, frame, calls))
		}
		for _, c := range inboundClasses {
			frame := c.frame(device(n))
			for _, ev := range []bool{true, false} {
				p := z.off.Objects().ZtTc
				if ev {
					p = z.on.Objects().ZtTc
				}
				ret, v, r, err := decideTC(z, p, frame)
				if err != nil {
					return fmt.Errorf("%s with %s devices: %w", c.name, core.Count(n), err)
				}
				want := uint32(tcActUnspec)
				if c.verdict == bpf.VerdictDrop {
					want = tcActShot
				}
				if v != c.verdict || r != c.reason || ret != want {
					return fmt.Errorf("%s with %s devices: got %s/%s (action %d), want %s/%s (action %d)", c.name,
						core.Count(n), v, r, ret, c.verdict, c.reason, want)
				}
				fv.hv = append(fv.hv, variant{n: n, class: c.name, events: ev, idx: len(fv.vs), tc: true})
				fv.vs = append(fv.vs, core.ProgVariant(variantName(n, c.name, ev), p, frame, repeat, want))
			}
		}
		// The replies found their flows and the unsolicited frame opened none: the device holds
		// the two flows its allowed frames opened.
		if got, err := z.flowCount(snaps[n], device(n)); err != nil || got != 2 {
			return fmt.Errorf("%s devices: the measured device holds %d flows (%v), want 2", core.Count(n), got, err)
		}
	}
	return nil
}

// add appends the variants to vs and hv, with their indexes in vs.
func (fv *flowVariants) add(vs []core.Variant, hv []variant) ([]core.Variant, []variant) {
	base := len(vs)
	for _, h := range fv.hv {
		h.idx += base
		if h.pass > 0 {
			h.pass += base
		}
		hv = append(hv, h)
	}
	fv.tcFloorIdx += base
	for i := range fv.passIdx {
		fv.passIdx[i] += base
	}
	return append(vs, fv.vs...), hv
}

// Close releases the rewriters and the TC floor.
func (fv *flowVariants) Close() {
	for _, rw := range fv.rws {
		rw.Close()
	}
	if fv.tcFloor != nil {
		fv.tcFloor.Close()
	}
}
