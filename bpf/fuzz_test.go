package bpf_test

import (
	"encoding/hex"
	"testing"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
)

// fixtureMACs are the source MACs a fuzz input can select, so that fuzzed frames get past
// identity and exercise the deeper steps.
var fixtureMACs = []int{dptest.Cam, dptest.Sensor, dptest.Broker, dptest.Pinned, dptest.Ghost,
	dptest.Tagged, dptest.Auditor, dptest.Quar, dptest.Tunneler, dptest.AnyProto, dptest.Wide, dptest.MDNS}

// FuzzDifferential: for arbitrary bytes the kernel and the model agree on verdict and reason.
// The first input byte selects a fixture source MAC (written over bytes 6..11) unless its top
// bit is set; the rest is the frame.
func FuzzDifferential(f *testing.F) {
	for _, c := range threatCases() {
		f.Add(append([]byte{0x80}, c.frame...))
	}
	h := fixtureHarness(f, loader.Config{})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 15 {
			return // BPF_PROG_TEST_RUN (like a NIC) takes no frame shorter than 14 bytes
		}
		frame := append([]byte(nil), in[1:]...)
		if in[0]&0x80 == 0 && len(frame) >= 12 {
			copy(frame[6:12], dptest.Host(fixtureMACs[int(in[0])%len(fixtureMACs)], false).MAC)
		}
		want := h.Model.Decide(frame, dptest.IfLoopback, h.Now())
		ok, got, err := h.RunExpect(frame, want)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatalf("model %s/%s, kernel action %d %s/%s\n%s", want.Verdict, want.Reason,
				got.Action, got.Verdict, got.Reason, hex.Dump(frame))
		}
	})
}

// FuzzSequence: for arbitrary sequences of frames in both directions the kernel and the model
// agree on every verdict and reason, the flow and fragment state included (it carries over from
// one input to the next in both alike). An input is records of a control byte, a length byte and
// that many frame bytes. Control bit 0x80: the frame goes toward a device (TC) rather than from
// one (XDP); bit 0x40: the frame is the answer (dptest.Reply) to the previous one, and the record's
// bytes are not read; otherwise, unless bit 0x20 is set, the low bits select a fixture MAC written
// as the source (from a device) or the destination (toward one).
func FuzzSequence(f *testing.F) {
	cam := dptest.Host(dptest.Cam, false)
	cam6 := dptest.Host(dptest.Cam, true)
	gw := dptest.To("10.0.0.1")
	web := dptest.To("203.0.113.7")
	rec := func(ctrl byte, frame []byte) []byte { return append([]byte{ctrl, byte(len(frame))}, frame...) }
	cat := func(rs ...[]byte) []byte {
		var out []byte
		for _, r := range rs {
			out = append(out, r...)
		}
		return out
	}
	syn := frames.TCP(cam, web, 40000, 443, true, nil)
	f.Add(cat(rec(0xa0, syn), rec(0xc0, nil)))                                  // a reply
	f.Add(cat(rec(0xa0, frames.TCP(web, cam, 443, 40000, true, nil))))          // unsolicited
	f.Add(cat(rec(0xa0, frames.Echo(cam, gw)), rec(0xc0, nil), rec(0xc0, nil))) // echo and reply
	f.Add(cat(rec(0xa0, frames.UDP(cam6, dptest.To("2001:db8:443::9"), 5000, 443, nil)), rec(0xc0, nil)))
	f.Add(cat(rec(0xa0, syn), rec(0xa0, frames.ICMP(web, cam, 3, 3, append(make([]byte, 4), syn[14:14+28]...)))))
	for _, c := range threatCases() {
		if len(c.frame) < 256 {
			f.Add(rec(0xa0, c.frame))
			f.Add(rec(0x80|0x20, c.frame))
		}
	}
	h := fixtureHarness(f, loader.Config{FlowEntries: 64, FlowQuota: 8})
	f.Fuzz(func(t *testing.T, in []byte) {
		var prev []byte
		var prevDir bpf.Dir
		for len(in) >= 2 {
			ctrl, n := in[0], int(in[1])
			in = in[2:]
			dir := bpf.DirFromDevice
			if ctrl&0x80 != 0 {
				dir = bpf.DirToDevice
			}
			var frame []byte
			if ctrl&0x40 != 0 {
				frame = dptest.Reply(prev, prevDir == bpf.DirFromDevice)
				dir = bpf.DirToDevice
				if prevDir == bpf.DirToDevice {
					dir = bpf.DirFromDevice
				}
			} else {
				n = min(n, len(in))
				frame = append([]byte(nil), in[:n]...)
				in = in[n:]
				if ctrl&0x20 == 0 && len(frame) >= 12 {
					mac := dptest.Host(fixtureMACs[int(ctrl&0x1f)%len(fixtureMACs)], false).MAC
					if dir == bpf.DirToDevice {
						copy(frame[0:6], mac)
					} else {
						copy(frame[6:12], mac)
					}
				}
			}
			if len(frame) < 14 {
				continue // BPF_PROG_TEST_RUN (like a NIC) takes no frame shorter than 14 bytes
			}
			if dir == bpf.DirToDevice {
				frame = dptest.TCRunnable(frame)
			}
			want := h.ModelDecide(dir, frame)
			ok, got, err := h.RunExpectDir(dir, frame, want)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				t.Fatalf("%s: model %s/%s, kernel action %d %s/%s\n%s", dir, want.Verdict, want.Reason,
					got.Action, got.Verdict, got.Reason, hex.Dump(frame))
			}
			prev, prevDir = frame, dir
		}
	})
}
