package live

// Inbound traffic: frames the gateway sends toward a device, through ztgate's TC program at the
// egress of the port (the device namespace's veth here, where the XDP program sees the frames
// from the device). An AF_PACKET socket cannot send through the TC egress hook itself: a frame
// the hook drops ends its send with ENOBUFS, one frame at a time. So the sender sends to an
// injection veth instead, whose other end redirects every frame (a TC ingress program) to the
// port's egress, as a gateway forwarding toward the device does; what passes reaches the other
// end of the port's veth, which drops it at the IP layer (not its MAC). For the inbound sender
// alone, the injection's program drops the frames instead of redirecting them.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/testenv"
)

// Keys of the inbound variants.
const (
	inGen    = "in-gen"
	inNone   = "in-none"
	inTCDrop = "in-tcdrop"
	inReply  = "in-zt1k-reply"
	inFlood  = "in-zt1k-flood"
)

// tcActShot is TC_ACT_SHOT.
const tcActShot = 2

// upstreamIP is the unsolicited flood's source: a host beyond the gateway in no rule of the fleet.
var upstreamIP = netip.MustParseAddr("198.51.100.7")

// Names of the injection veth's ends, in a variant's namespace.
const (
	injName     = "ztbinj0" // the sender's
	injPeerName = "ztbinj1" // the redirecting one's
)

// upstreamMAC is the source MAC of the inbound frames: the next hop the gateway forwards them from.
var upstreamMAC = net.HardwareAddr{0x02, 0x5c, 0, 0, 0, 1}

// injector adds the injection veth to ns, its far end redirecting every frame it receives to
// the egress of ifindex to (0: dropping it there instead), and returns the near end's ifindex.
// The namespace's removal removes both.
func (e *env) injector(ns *testenv.Namespace, to int) (int, error) {
	nl := ns.Netlink()
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: injName}, PeerName: injPeerName}); err != nil {
		return 0, fmt.Errorf("add the injection veth: %w", err)
	}
	for _, n := range []string{injName, injPeerName} {
		l, err := nl.LinkByName(n)
		if err == nil {
			err = nl.LinkSetUp(l)
		}
		if err != nil {
			return 0, fmt.Errorf("set %s up: %w", n, err)
		}
	}
	ins := asm.Instructions{asm.Mov.Imm(asm.R1, int32(to)), asm.Mov.Imm(asm.R2, 0), asm.FnRedirect.Call(), asm.Return()}
	if to == 0 {
		ins = asm.Instructions{asm.Mov.Imm(asm.R0, tcActShot), asm.Return()}
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "live_inject", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: ins})
	if err != nil {
		return 0, fmt.Errorf("load the injection program: %w", err)
	}
	e.cleanups = append(e.cleanups, p.Close)
	peer, err := ns.LinkIndex(injPeerName)
	if err != nil {
		return 0, err
	}
	if err := ns.Do(func() error {
		l, err := link.AttachTCX(link.TCXOptions{Interface: peer, Program: p, Attach: ebpf.AttachTCXIngress})
		if err == nil {
			e.cleanups = append(e.cleanups, l.Close)
		}
		return err
	}); err != nil {
		return 0, fmt.Errorf("attach the injection program: %w", err)
	}
	return ns.LinkIndex(injName)
}

// inboundFrame is the frame of an inbound variant, from the port's MAC (portMAC) to the device
// (dev): the reply to the device's DNS query (sent by the gateway's service), or otherwise an
// unsolicited datagram from upstreamIP to a port no rule opens.
func inboundFrame(reply bool, portMAC []byte, dev frames.Host) []byte {
	if reply {
		return frames.UDP(frames.Host{MAC: portMAC, IP: gatewayIP}, dev, dnsPort, sport, make([]byte, payload))
	}
	return frames.UDP(frames.Host{MAC: portMAC, IP: upstreamIP}, dev, sport, closedPort, make([]byte, payload))
}

// inboundVariant sets up an inbound variant: its sender on the device namespace's veth (or on
// an ifb sink there for the sender alone), and its program at that veth's egress.
func (e *env) inboundVariant(v *variant) error {
	ns := v.dev.NS
	v.gw = e.tp.Gateway
	v.frame = inboundFrame(v.reply, upstreamMAC, e.devHost)
	to := v.dev.Ifindex
	if v.kind == kindBaseline {
		to = 0
	}
	from, err := e.injector(ns, to)
	if err != nil {
		return err
	}
	if err := ns.Do(func() error {
		tx, err := newAFPacketSender(from, v.frame)
		if err == nil {
			v.tx = tx
		}
		return err
	}); err != nil {
		return err
	}
	e.cleanups = append(e.cleanups, v.tx.Close)
	switch {
	case v.variantSpec.zt != 0:
		return e.inboundZtgate(v)
	case v.key == inTCDrop:
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "live_tc_drop", Type: ebpf.SchedCLS, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, tcActShot), asm.Return()}})
		if err != nil {
			return fmt.Errorf("load the TC drop program: %w", err)
		}
		e.cleanups = append(e.cleanups, p.Close)
		v.hotProg = p
		return ns.Do(func() error {
			l, err := link.AttachTCX(link.TCXOptions{Interface: v.dev.Ifindex, Program: p,
				Attach: ebpf.AttachTCXEgress})
			if err == nil {
				e.cleanups = append(e.cleanups, l.Close)
			}
			return err
		})
	}
	return nil
}

// inboundZtgate attaches ztgate (XDP and TC) to the variant's veth and checks that the model
// decides its frame as the variant says. For the reply, the device's DNS query is sent to the
// veth first, through the XDP program, which opens the flow the replies then find.
func (e *env) inboundZtgate(v *variant) error {
	z, err := e.ztgate(v.variantSpec.zt)
	if err != nil {
		return err
	}
	v.zt = z
	z.fleet.model.AddGatewayMAC([6]byte(v.dev.MAC))
	query := buildFrame(e.devHost, v.dev.MAC, dnsPort)
	if v.reply {
		if d := z.fleet.model.Decide(query, uint32(v.dev.Ifindex), 0); d.Verdict != bpf.VerdictPass {
			return fmt.Errorf("the model decides the device's query %s/%s, want pass", d.Verdict, d.Reason)
		}
	}
	want := z.fleet.model.DecideToDevice(v.frame, uint32(v.dev.Ifindex), 0)
	if want.Verdict != v.verdict || want.Reason != v.reason {
		return fmt.Errorf("the model decides %s/%s toward the device, want %s/%s", want.Verdict, want.Reason,
			v.verdict, v.reason)
	}
	if err := z.attach(v.dev.NS, v.dev.Ifname); err != nil {
		return err
	}
	v.hotProg = z.dp.Objects().ZtTc
	// The veth takes frames (NAPI) once the XDP program is attached: the query can be sent.
	if !v.reply {
		return nil
	}
	c0, err := z.counterDir(bpf.DirFromDevice, bpf.VerdictPass, bpf.ReasonAllow)
	if err != nil {
		return err
	}
	err = v.gw.Do(func() error {
		tx, err := newAFPacketSender(v.dev.Port.Index, query)
		if err != nil {
			return err
		}
		defer tx.Close()
		_, err = tx.send(1)
		return err
	})
	if err != nil {
		return fmt.Errorf("send the device's query: %w", err)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c1, err := z.counterDir(bpf.DirFromDevice, bpf.VerdictPass, bpf.ReasonAllow)
		if err != nil {
			return err
		}
		if c1 > c0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the device's query was not passed by ztgate")
		}
	}
}

// counterDir reads one (direction, verdict, reason) counter, summed over CPUs.
func (z *ztgateDP) counterDir(d bpf.Dir, v bpf.Verdict, r bpf.Reason) (uint64, error) {
	c, err := z.maps.DirCounters()
	if err != nil {
		return 0, err
	}
	return c[d][v][r].Packets, nil
}

// probeInbound sends a few frames and checks what the variant says: all received by the
// injection veth's far end; all received at the gateway's end of the port's veth, or none when
// the sender is alone or a TC program drops them, and ztgate's to-device counter for the expected verdict and reason
// moved by as many.
func (v *variant) probeInbound() error {
	port := linkStats(v.gw)
	rx0, _, err := port(v.dev.Port.Name)
	if err != nil {
		return err
	}
	inj0, _, err := linkStats(v.dev.NS)(injPeerName)
	if err != nil {
		return err
	}
	var zc0 uint64
	if v.zt != nil {
		if zc0, err = v.zt.counterDir(bpf.DirToDevice, v.verdict, v.reason); err != nil {
			return err
		}
	}
	if _, err := v.tx.send(probeFrameCount); err != nil {
		return err
	}
	time.Sleep(20 * time.Millisecond)
	rx1, _, err := port(v.dev.Port.Name)
	if err != nil {
		return err
	}
	want := uint64(probeFrameCount)
	if v.kind == kindBaseline || v.verdict == bpf.VerdictDrop || v.key == inTCDrop {
		want = 0
	}
	const slack = 16 // the odd frame of the device namespace's own
	if rx := rx1 - rx0; rx < want || rx > want+slack {
		return fmt.Errorf("probe: %d frames sent, %d received at the gateway's end, want %d", probeFrameCount, rx,
			want)
	}
	inj1, _, err := linkStats(v.dev.NS)(injPeerName)
	if err != nil {
		return err
	}
	if n := inj1 - inj0; n < probeFrameCount || n > probeFrameCount+slack {
		return fmt.Errorf("probe: %d frames sent, %d received by %s, want all", probeFrameCount, n, injPeerName)
	}
	if v.zt != nil {
		zc1, err := v.zt.counterDir(bpf.DirToDevice, v.verdict, v.reason)
		if err != nil {
			return err
		}
		// The odd frame of the namespace's own (neighbour discovery) may be counted too.
		if n := zc1 - zc0; n < probeFrameCount || n > probeFrameCount+slack {
			return fmt.Errorf("probe: ztgate counted %d frames toward the device as %s/%s, want %d", n,
				v.verdict, v.reason, probeFrameCount)
		}
	}
	return nil
}

// countInbound returns ztgate's to-device counter of the variant's verdict and reason, 0 for a
// variant without ztgate.
func (v *variant) countInbound() (uint64, error) {
	if v.zt == nil {
		return 0, nil
	}
	return v.zt.counterDir(bpf.DirToDevice, v.verdict, v.reason)
}

// addInboundCost reports an inbound variant's transmit cost (its CPU time per frame less the
// inbound sender's alone, round by round) against no program.
func (p *reporter) addInboundCost(i int, v *variant) {
	if p.cost[i] == nil {
		return
	}
	res := core.Result{Section: sec, Name: v.name + ": transmit cost", Value: core.Median(p.cost[i]), Unit: "ns/pkt",
		Note: "CPU ns/frame minus the inbound sender's alone: the TC egress hook and program, then for what passes " +
			"the veth and the gateway end's receive (an IP-layer drop: not its MAC)"}
	if none := p.get(inNone); none != nil && v.key != inNone {
		rs := core.Ratios(p.cost[i], none)
		res.Ratio, res.Base, res.Spread, res.Note = core.Median(rs), p.name(inNone), core.Spread(rs), ""
	}
	p.r.Add(res)
}

// addInbound reports what ztgate's TC program adds, live and with hot caches, how many frames
// its to-device counters saw, and the flood's transmit cost against TC_ACT_SHOT. No target: the
// transmit costs are differences of a few tens of ns between totals that vary more than that
// from round to round.
func (p *reporter) addInbound() {
	hot := p.m.hot
	none, shot := p.get(inNone), p.get(inTCDrop)
	for _, pair := range []struct {
		zt, peer string
		peerNs   []float64
	}{{inReply, inNone, none}, {inFlood, inTCDrop, shot}} {
		zt := p.get(pair.zt)
		if zt == nil || pair.peerNs == nil {
			continue
		}
		v := p.vs[p.idx[pair.zt]]
		live := core.Median(zt) - core.Median(pair.peerNs)
		res := core.Result{Section: sec, Name: v.name + ": over " + p.name(pair.peer), Value: live, Unit: "ns/pkt",
			Note: "transmit cost, medians' difference"}
		if h, ok := hot[pair.zt]; ok {
			res.Note += fmt.Sprintf("; the TC program alone with hot caches (BPF_PROG_TEST_RUN, same frame): %.0f ns", h)
			if hs, ok := hot[inTCDrop]; ok {
				res.Note += fmt.Sprintf(", TC_ACT_SHOT's %.0f ns", hs)
			}
		}
		p.r.Add(res)
	}
	for _, key := range []string{inReply, inFlood} {
		i, ok := p.idx[key]
		if !ok || p.vs[i].frames == 0 {
			continue
		}
		v := p.vs[i]
		p.r.Add(core.Result{Section: sec, Name: fmt.Sprintf("%s: counted %s/%s", v.name, v.verdict, v.reason),
			Value: float64(v.counted) / float64(v.frames), Unit: "of sent",
			Note: fmt.Sprintf("ztgate's to-device counters (maps.DirCounters()[bpf.DirToDevice]): %d of the %d frames "+
				"sent while measured", v.counted, v.frames)})
	}
	zt := p.get(inFlood)
	if zt == nil || shot == nil {
		return
	}
	rs := core.Ratios(zt, shot)
	note := "per-round ratio of two small differences (the inbound sender's own cost taken out of each): read " +
		"the spread; the medians' difference is above"
	if none != nil {
		note += fmt.Sprintf("; delivering the frame instead (no program) costs %.0f ns", core.Median(none))
	}
	p.r.Add(core.Result{Section: sec, Name: p.name(inFlood) + ": transmit cost", Value: core.Median(zt),
		Unit: "ns/pkt", Ratio: core.Median(rs), Base: p.name(inTCDrop), Spread: core.Spread(rs), Note: note})
}
