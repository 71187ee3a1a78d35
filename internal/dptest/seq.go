package dptest

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
)

// Step is one frame of a sequence and its direction: from a device (the XDP program, arriving on
// IfLoopback) or toward one (the TC program, leaving by IfLoopback).
type Step struct {
	Dir   bpf.Dir
	Frame []byte
}

// SeqGen generates sequences of frames in both directions against a Big policy: the frames of Gen
// from devices, and toward devices the replies to them (and replies that merely look like ones),
// unsolicited connections from the uplink and from other devices, lateral frames delivered to
// their device, ICMP errors quoting tracked and made-up flows, and the devices' answers to what
// reached them.
type SeqGen struct {
	*Gen
	out, in [][]byte // recent frames from and toward devices, newest last
	passed  [][]byte // recent frames from devices that passed (Passed), to open more flows like them
}

// recentN is how many recent frames of each direction a SeqGen answers to.
const recentN = 64

// NewSeqGen returns a sequence generator; the same seed gives the same sequence.
func NewSeqGen(b *Big, seed uint64) *SeqGen { return &SeqGen{Gen: NewGen(b, seed)} }

func remember(list [][]byte, f []byte) [][]byte {
	if len(list) == recentN {
		list = list[1:]
	}
	return append(list, f)
}

func (g *SeqGen) recent(list [][]byte) []byte {
	if len(list) == 0 {
		return nil
	}
	return list[len(list)-1-g.pick(min(len(list), 16))]
}

// Step returns the next frame of the sequence.
func (g *SeqGen) Step() Step {
	var f []byte
	dir := bpf.DirToDevice
	switch k := g.pick(100); {
	case k < 12 && len(g.passed) > 0: // a frame that passed again, or from another port: a new flow
		f, dir = g.again(g.recent(g.passed)), bpf.DirFromDevice
	case k < 20: // a reply to a recent frame of a device
		f = g.reply(g.recent(g.out), true)
	case k < 32: // an unsolicited frame toward a device
		f = g.unsolicited()
	case k < 40: // a lateral frame delivered to its device
		f = g.deliver(g.recent(g.out))
	case k < 46: // an ICMP error toward a device, about one of its frames or made up
		f = g.icmpError(g.recent(g.out), false)
	case k < 52: // a device answers a frame that reached it
		f, dir = g.reply(g.recent(g.in), false), bpf.DirFromDevice
	case k < 55: // a device's ICMP error about a frame that reached it
		f, dir = g.icmpError(g.recent(g.in), true), bpf.DirFromDevice
	default:
		f, dir = g.Frame(), bpf.DirFromDevice
	}
	if f == nil {
		f, dir = g.Frame(), bpf.DirFromDevice
	}
	if dir == bpf.DirFromDevice {
		g.out = remember(g.out, f)
	} else {
		f = TCRunnable(f)
		g.in = remember(g.in, f)
	}
	return Step{Dir: dir, Frame: f}
}

// TCRunnable pads an untagged IPv4 or IPv6 frame shorter than its IP header with zeros to that
// header's end: BPF_PROG_TEST_RUN refuses to build such an skb for a TC program (the kernel's IP
// output never makes one either); the frame's own length fields are left as they were.
func TCRunnable(f []byte) []byte {
	if len(f) < 14 {
		return f
	}
	need := 0
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		need = 14 + 20
	case 0x86dd:
		need = 14 + 40
	}
	if len(f) < need {
		f = append(f, make([]byte, need-len(f))...)
	}
	return f
}

// Passed tells the generator that s passed: a frame from a device that passed is sent again
// later, as it is or from another port, so that flows open and are used.
func (g *SeqGen) Passed(s Step) {
	if s.Dir == bpf.DirFromDevice {
		g.passed = remember(g.passed, s.Frame)
	}
}

// again returns f, or f from another source port (TCP, UDP) or echo identifier.
func (g *SeqGen) again(f []byte) []byte {
	r := append([]byte(nil), f...)
	off, v := l3(r)
	if off == 0 || g.chance(40) {
		return r
	}
	l4, proto := off+40, r[off+6]
	if v == 4 {
		l4, proto = off+int(r[off]&0xf)*4, r[off+9]
	}
	if len(r) >= l4+8 {
		switch proto {
		case 1, 58: // another echo identifier
			binary.BigEndian.PutUint16(r[l4+4:], uint16(g.pick(65536)))
		case 6, 17: // another source port
			binary.BigEndian.PutUint16(r[l4:], uint16(1024+g.pick(64000)))
		}
	}
	return r
}

// l3 returns the IP header offset and version of an untagged or single-tagged frame, or 0.
func l3(f []byte) (int, int) {
	off := 14
	if len(f) >= 18 && binary.BigEndian.Uint16(f[12:]) == 0x8100 {
		off = 18
	}
	if len(f) < off+20 {
		return 0, 0
	}
	switch binary.BigEndian.Uint16(f[off-2:]) {
	case 0x0800:
		return off, 4
	case 0x86dd:
		if len(f) >= off+40 {
			return off, 6
		}
	}
	return 0, 0
}

// reply returns f answered (Reply), with now and then a change that makes it no reply: other TCP
// flags, another port or echo identifier, damage.
func (g *SeqGen) reply(f []byte, toDevice bool) []byte {
	r := Reply(f, toDevice)
	if r == nil {
		return nil
	}
	off, v := l3(r)
	l4, proto := off+40, r[off+6]
	if v == 4 {
		l4, proto = off+int(r[off]&0xf)*4, r[off+9]
	}
	if len(r) < l4+8 {
		return g.mutate(r)
	}
	if !toDevice && g.chance(20) {
		copy(r[6:12], gwMAC) // a device's frame from another MAC: a spoof
	}
	switch proto {
	case 6, 17:
		if proto == 6 && len(r) >= l4+14 {
			r[l4+13] = []byte{0x12, 0x10, 0x04, 0x11, 0x02}[g.pick(5)] // SYN-ACK, ACK, RST, FIN-ACK, SYN
		}
		if g.chance(10) { // another port: no longer the flow
			binary.BigEndian.PutUint16(r[l4:], g.port())
		}
	case 1, 58:
		if g.chance(10) {
			r[l4+4] ^= 1 // another identifier
		}
	}
	return g.mutate(r)
}

// Reply returns the answer to f: MACs, IP addresses and TCP or UDP ports swapped, an ICMP echo
// request turned into its reply, a TCP segment into a SYN-ACK. toDevice: the answer goes back to
// the device that sent f, from the gateway's MAC; otherwise it comes from the device f reached,
// to the gateway's MAC. Nil when f is not an IPv4 or IPv6 frame.
func Reply(f []byte, toDevice bool) []byte {
	off, v := l3(f)
	if off == 0 {
		return nil
	}
	r := append([]byte(nil), f...)
	copy(r[0:6], f[6:12])
	copy(r[6:12], f[0:6])
	if toDevice {
		copy(r[6:12], gwMAC)
	} else {
		copy(r[0:6], gwMAC)
	}
	var l4 int
	var proto uint8
	if v == 4 {
		copy(r[off+12:off+16], f[off+16:off+20])
		copy(r[off+16:off+20], f[off+12:off+16])
		l4, proto = off+int(f[off]&0xf)*4, f[off+9]
	} else {
		copy(r[off+8:off+24], f[off+24:off+40])
		copy(r[off+24:off+40], f[off+8:off+24])
		l4, proto = off+40, f[off+6]
	}
	if len(r) < l4+8 {
		return r
	}
	switch proto {
	case 6, 17:
		copy(r[l4:l4+2], f[l4+2:l4+4])
		copy(r[l4+2:l4+4], f[l4:l4+2])
		if proto == 6 && len(r) >= l4+14 {
			r[l4+13] = 0x12 // SYN-ACK
		}
	case 1, 58:
		switch r[l4] {
		case 8, 128:
			r[l4]++ // echo request -> reply
		}
	}
	return r
}

// unsolicited returns a frame toward a device from the uplink or from another device: a new
// connection, or something that looks like a reply.
func (g *SeqGen) unsolicited() []byte {
	v6 := g.chance(40)
	i := g.pick(len(g.b.Hosts))
	dst := g.host(i, v6)
	src := frames.Host{MAC: gwMAC}
	switch g.pick(3) {
	case 0:
		src = g.host(g.pick(len(g.b.Hosts)), v6)
	default:
		if v6 {
			src.IP = netip.MustParseAddr(dests6[g.pick(len(dests6))])
		} else {
			src.IP = netip.MustParseAddr(dests4[g.pick(len(dests4))])
		}
	}
	if g.chance(10) {
		dst.MAC = g.dstMAC(dst.IP)
	}
	if g.chance(15) { // a host beyond a bridge, neither the gateway nor a device
		src.MAC = net.HardwareAddr{2, 0x97, 0, 0, 0, byte(g.pick(4))}
	}
	if g.chance(15) { // link plumbing: DHCP server messages, neighbour discovery, from anywhere
		switch g.pick(3) {
		case 0:
			if v6 {
				src.IP = netip.MustParseAddr([]string{"fe80::1", "fd00::1", "2001:db8::1"}[g.pick(3)])
				return TCRunnable(frames.UDP(src, dst, 547, 546, nil))
			}
			src.IP = netip.MustParseAddr([]string{"10.0.0.1", "10.255.0.1", "203.0.113.7"}[g.pick(3)])
			return TCRunnable(frames.UDP(src, dst, 67, 68, nil))
		default:
			src.IP = netip.MustParseAddr([]string{"fe80::1", "fd00::1", "fe80::99"}[g.pick(3)])
			if !v6 || g.chance(30) {
				dst = frames.Host{MAC: net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, IP: netip.MustParseAddr("ff02::1")}
			}
			f := frames.ICMP(src, dst, uint8(133+g.pick(5)), 0, make([]byte, 20))
			return g.mutate(f)
		}
	}
	proto, l4 := g.l4(v6)
	if proto == 6 && len(l4) >= 14 {
		l4[13] = []byte{0x02, 0x12, 0x10, 0x04}[g.pick(4)]
	}
	var f []byte
	if v6 {
		ext, nh := g.ext6(proto, len(l4))
		f = frames.IPv6(src, dst, nh, append(ext, l4...))
	} else {
		f = frames.IPv4(src, dst, proto, uint16(g.fragID()), g.frag4(len(l4)), g.opts4(), l4)
	}
	return g.mutate(f)
}

// deliver returns f as it leaves for the device that owns its destination: to that device's MAC,
// from the sender's MAC (a bridge) or the gateway's (a router).
func (g *SeqGen) deliver(f []byte) []byte {
	off, v := l3(f)
	if off == 0 {
		return nil
	}
	var dst netip.Addr
	if v == 4 {
		dst = netip.AddrFrom4([4]byte(f[off+16 : off+20]))
	} else {
		dst = netip.AddrFrom16([16]byte(f[off+24 : off+40]))
	}
	mac := g.dstMAC(dst)
	for _, h := range g.b.Hosts {
		for _, a := range append(h.IPv4, h.IPv6...) {
			if a == dst {
				mac = h.MAC
			}
		}
	}
	r := append([]byte(nil), f...)
	copy(r[0:6], mac)
	if g.chance(50) {
		copy(r[6:12], gwMAC)
	}
	return r
}

// icmpError returns an ICMP error about f (destination unreachable, time exceeded, packet too
// big) sent back to f's source, quoting f's IP header and 8 bytes after it; now and then the
// quote is made up or the error goes elsewhere. fromDevice: the device that received f sends it.
func (g *SeqGen) icmpError(f []byte, fromDevice bool) []byte {
	off, v := l3(f)
	if off == 0 {
		return nil
	}
	hl := 40
	if v == 4 {
		hl = int(f[off]&0xf) * 4
	}
	quote := append([]byte{}, f[off:min(len(f), off+hl+8)]...)
	if g.chance(15) && len(quote) > 0 {
		quote[g.pick(len(quote))] ^= byte(1 + g.pick(255)) // made up
	}
	var src, dst frames.Host
	if v == 4 {
		src.IP = netip.AddrFrom4([4]byte(f[off+16 : off+20]))
		dst.IP = netip.AddrFrom4([4]byte(f[off+12 : off+16]))
	} else {
		src.IP = netip.AddrFrom16([16]byte(f[off+24 : off+40]))
		dst.IP = netip.AddrFrom16([16]byte(f[off+8 : off+24]))
	}
	if fromDevice {
		src.MAC, dst.MAC = net.HardwareAddr(f[0:6]), gwMAC
	} else {
		src.MAC, dst.MAC = gwMAC, net.HardwareAddr(f[6:12])
	}
	if g.chance(10) {
		dst.IP = g.dst(v == 6).IP // to someone else
	}
	typ, code := []uint8{3, 11, 3}[g.pick(3)], uint8(g.pick(5))
	if v == 6 {
		typ = []uint8{1, 2, 3, 4}[g.pick(4)]
	}
	return g.mutate(frames.ICMP(src, dst, typ, code, append(make([]byte, 4), quote...)))
}
