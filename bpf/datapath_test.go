package bpf_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
)

func fixtureHarness(t testing.TB, cfg loader.Config) *dptest.Harness {
	t.Helper()
	h := dptest.New(t, cfg)
	s, err := dptest.Compile(dptest.Fixture(), 1)
	if err != nil {
		t.Fatalf("compile fixture: %v", err)
	}
	if err := h.Apply(s); err != nil {
		t.Fatalf("apply fixture: %v", err)
	}
	return h
}

// check runs frame from a device through the kernel and the model and compares both with the
// expectation. See checkDir.
func check(t *testing.T, h *dptest.Harness, frame []byte, verdict bpf.Verdict, reason bpf.Reason) {
	t.Helper()
	checkDir(t, h, bpf.DirFromDevice, frame, verdict, reason)
}

// checkDir runs frame in direction d through the kernel and the model and compares both with the
// expectation: action, the (direction, verdict, reason) counter, and for drops and audits the
// event with its direction and header bytes.
func checkDir(t *testing.T, h *dptest.Harness, d bpf.Dir, frame []byte, verdict bpf.Verdict, reason bpf.Reason) {
	t.Helper()
	want := policy.Decision{Verdict: verdict, Reason: reason}
	got := h.ModelDecide(d, frame)
	if got.Verdict != want.Verdict || got.Reason != want.Reason {
		t.Errorf("model: %s/%s, want %s/%s", got.Verdict, got.Reason, verdict, reason)
	}
	h.DrainEvents()
	before, err := h.CounterDir(d, verdict, reason)
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.RunDir(d, frame)
	if err != nil {
		t.Fatal(err)
	}
	after, err := h.CounterDir(d, verdict, reason)
	if err != nil {
		t.Fatal(err)
	}
	wantAction, dropAction := uint32(dptest.XDPPass), uint32(dptest.XDPDrop)
	if d == bpf.DirToDevice {
		wantAction, dropAction = dptest.TCPass, dptest.TCDrop
	}
	if verdict == bpf.VerdictDrop {
		wantAction = dropAction
	}
	if res.Action != wantAction || res.Verdict != verdict || res.Reason != reason || after != before+1 {
		t.Errorf("kernel: action %d %s/%s (%s counter +%d), want action %d %s/%s",
			res.Action, res.Verdict, res.Reason, d, after-before, wantAction, verdict, reason)
	}
	if verdict == bpf.VerdictPass {
		return
	}
	ev, err := h.ExpectEvent(verdict, reason)
	if err != nil {
		t.Errorf("event: %v", err)
		return
	}
	n := min(len(frame), 128)
	if int(ev.FrameLen) != len(frame) || int(ev.CapLen) != n || !bytes.Equal(ev.Data[:n], frame[:n]) {
		t.Errorf("event carries %d/%d bytes that differ from the frame's first %d", ev.CapLen, ev.FrameLen, n)
	}
	if rev := h.Model.Snapshot().Revision; ev.DevId != got.DevID || ev.Revision != rev || bpf.Dir(ev.Dir) != d {
		t.Errorf("event dev_id %d revision %d direction %s, want %d, %d and %s", ev.DevId, ev.Revision,
			bpf.Dir(ev.Dir), got.DevID, rev, d)
	}
}

// TestThreatMatrix runs every U row of the threat matrix through the real program.
func TestThreatMatrix(t *testing.T) {
	h := fixtureHarness(t, loader.Config{})
	rows := map[int]bool{}
	for _, c := range threatCases() {
		rows[c.row] = true
		t.Run(fmt.Sprintf("%02d/%s", c.row, c.name), func(t *testing.T) {
			check(t, h, c.frame, c.verdict, c.reason)
		})
	}
	for _, r := range []int{1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 28, 31,
		32, 33, 34, 35, 36, 38, 51, 52, 53, 54} {
		if !rows[r] {
			t.Errorf("threat matrix row %d has no case", r)
		}
	}
}

// TestRunts (row 20): every length from 0 to a full header, for each protocol, drops (and
// the kernel agrees with the model on the reason).
func TestRunts(t *testing.T) {
	h := fixtureHarness(t, loader.Config{})
	cam4, cam6 := dptest.Host(dptest.Cam, false), dptest.Host(dptest.Cam, true)
	gw4, gw6 := dptest.To("10.0.0.1"), dptest.To("fd00::1")
	full := map[string][]byte{
		"arp":   frames.ARP(cam4, 1, cam4.MAC, cam4.IP, gw4.IP),
		"udp4":  frames.UDP(cam4, gw4, 1, 53, nil),
		"tcp4":  frames.TCP(cam4, gw4, 1, 53, true, nil),
		"icmp4": frames.Echo(cam4, gw4),
		"udp6":  frames.UDP(cam6, gw6, 1, 53, nil),
		"tcp6":  frames.TCP(cam6, gw6, 1, 53, true, nil),
		"icmp6": frames.Echo(cam6, gw6),
		"vlan":  frames.VLAN(frames.UDP(cam4, gw4, 1, 53, nil), 0x8100, 0),
		"ext6":  frames.IPv6(cam6, gw6, 0, cat(frames.Opts(60), frames.Opts(17), frames.UDPHeader(1, 53, nil))),
		"frag6": frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(17, 0, true, 5), frames.UDPHeader(1, 53, nil))),
		"dhcp4": frames.UDP(cam4, gw4, 68, 67, make([]byte, 300)),
		"na6":   frames.NA(cam6, gw6, cam6.IP),
		"opts4": frames.IPv4(cam4, gw4, 17, 1, 0, []byte{1, 1, 0x94, 4, 0, 0}, frames.UDPHeader(1, 53, nil)),
	}
	for name, f := range full {
		for n := 14; n < headerEnd(f); n++ { // test_run refuses frames shorter than an Ethernet header
			frame := f[:n]
			res, err := h.Run(frame)
			if err != nil {
				t.Fatalf("%s[:%d]: %v", name, n, err)
			}
			m := h.Model.Decide(frame, dptest.IfLoopback, h.Now())
			if res.Action != dptest.XDPDrop || res.Verdict != bpf.VerdictDrop {
				t.Errorf("%s[:%d]: action %d %s/%s, want drop", name, n, res.Action, res.Verdict, res.Reason)
			}
			if m.Verdict != res.Verdict || m.Reason != res.Reason {
				t.Errorf("%s[:%d]: kernel %s/%s, model %s/%s", name, n, res.Verdict, res.Reason, m.Verdict, m.Reason)
			}
		}
	}
}

type step struct {
	name    string
	frame   []byte
	verdict bpf.Verdict
	reason  bpf.Reason
}

// TestFragmentSequences covers the stateful fragment rows (25-29, 31) in order.
func TestFragmentSequences(t *testing.T) {
	cam4, cam6 := dptest.Host(dptest.Cam, false), dptest.Host(dptest.Cam, true)
	gw4, gw6 := dptest.To("10.0.0.1"), dptest.To("fd00::1")
	big := frames.UDP(cam4, gw4, 40000, 53, bytes.Repeat([]byte("z"), 3000))
	frags := frames.Fragment4(big, 1480)
	udp := frames.UDPHeader(40000, 53, bytes.Repeat([]byte("q"), 16)) // 24 bytes
	seqs := map[string][]step{
		"26 allowed 3000-byte udp, all fragments pass": {
			{name: "first", frame: frags[0], verdict: pass, reason: bpf.ReasonAllow},
			{name: "second", frame: frags[1], verdict: pass, reason: bpf.ReasonAllow},
			{name: "last", frame: frags[2], verdict: pass, reason: bpf.ReasonAllow},
			{name: "last again, state released", frame: frags[2], verdict: drop, reason: bpf.ReasonFragNoState},
		},
		"27 later fragment before its first": {
			{name: "later first", frame: frames.IPv4(cam4, gw4, 17, 300, 3, nil, udp[:8]),
				verdict: drop, reason: bpf.ReasonFragNoState},
			{name: "then the first", frame: frames.IPv4(cam4, gw4, 17, 300, 0x2000, nil, udp),
				verdict: pass, reason: bpf.ReasonAllow},
		},
		"29 overlap rewriting the l4 header": {
			{name: "first, 24 bytes", frame: frames.IPv4(cam4, gw4, 17, 301, 0x2000, nil, udp),
				verdict: pass, reason: bpf.ReasonAllow},
			{name: "offset 8 overlaps", frame: frames.IPv4(cam4, gw4, 17, 301, 0x2000|1, nil, frames.UDPHeader(1, 443, nil)),
				verdict: drop, reason: bpf.ReasonFragOverlap},
			{name: "offset 0 again, forbidden port",
				frame:   frames.IPv4(cam4, gw4, 17, 301, 0x2000, nil, frames.UDPHeader(1, 443, udp[8:])),
				verdict: drop, reason: bpf.ReasonNoRule},
			{name: "offset 24 follows", frame: frames.IPv4(cam4, gw4, 17, 301, 3, nil, udp[:8]),
				verdict: pass, reason: bpf.ReasonAllow},
		},
		"29 forbidden first fragment, later fragments have no state": {
			{name: "first, port 443", frame: frames.IPv4(cam4, gw4, 17, 302, 0x2000, nil, frames.UDPHeader(1, 443, udp[8:])),
				verdict: drop, reason: bpf.ReasonNoRule},
			{name: "later", frame: frames.IPv4(cam4, gw4, 17, 302, 3, nil, udp[:8]),
				verdict: drop, reason: bpf.ReasonFragNoState},
		},
		"29 later fragment from another device's address": {
			{name: "first", frame: frames.IPv4(cam4, gw4, 17, 303, 0x2000, nil, udp), verdict: pass, reason: bpf.ReasonAllow},
			{name: "later, spoofed source", frame: frames.IPv4(withIP(cam4, "10.0.0.12"), gw4, 17, 303, 3, nil, udp[:8]),
				verdict: drop, reason: bpf.ReasonSpoofIP},
		},
		"31 ipv6 fragments": {
			{name: "first", frame: frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(17, 0, true, 400), udp)),
				verdict: pass, reason: bpf.ReasonAllow},
			{name: "overlap", frame: frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(17, 16, true, 400), udp[:8])),
				verdict: drop, reason: bpf.ReasonFragOverlap},
			{name: "last", frame: frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(17, 24, false, 400), udp[:8])),
				verdict: pass, reason: bpf.ReasonAllow},
			{name: "last again", frame: frames.IPv6(cam6, gw6, 44, cat(frames.Frag6(17, 24, false, 400), udp[:8])),
				verdict: drop, reason: bpf.ReasonFragNoState},
		},
	}
	for name, seq := range seqs {
		t.Run(name, func(t *testing.T) {
			h := fixtureHarness(t, loader.Config{})
			for _, s := range seq {
				t.Run(s.name, func(t *testing.T) { check(t, h, s.frame, s.verdict, s.reason) })
			}
		})
	}
}

// TestFragmentTableFull: first fragments beyond the table's capacity fail closed (row 30's
// mechanism; the flood itself runs over veth in the integration tests).
func TestFragmentTableFull(t *testing.T) {
	h := fixtureHarness(t, loader.Config{FragEntries: 8})
	cam4, gw4 := dptest.Host(dptest.Cam, false), dptest.To("10.0.0.1")
	udp := frames.UDPHeader(40000, 53, make([]byte, 16))
	for id := range uint16(8) {
		check(t, h, frames.IPv4(cam4, gw4, 17, 1000+id, 0x2000, nil, udp), pass, bpf.ReasonAllow)
	}
	check(t, h, frames.IPv4(cam4, gw4, 17, 2000, 0x2000, nil, udp), drop, bpf.ReasonFragTableFull)
	// A datagram already recorded goes on; its last fragment frees a slot for a new one.
	check(t, h, frames.IPv4(cam4, gw4, 17, 1000, 3, nil, udp[:8]), pass, bpf.ReasonAllow)
	check(t, h, frames.IPv4(cam4, gw4, 17, 2000, 0x2000, nil, udp), pass, bpf.ReasonAllow)
}

// TestFragmentTimeout: a first fragment's record lasts FragTimeout on the datapath's coarse
// clock; a later fragment after that has no state.
func TestFragmentTimeout(t *testing.T) {
	const timeout = 250 * time.Millisecond
	h := fixtureHarness(t, loader.Config{FragTimeout: timeout})
	cam4, gw4 := dptest.Host(dptest.Cam, false), dptest.To("10.0.0.1")
	udp := frames.UDPHeader(40000, 53, make([]byte, 16))
	check(t, h, frames.IPv4(cam4, gw4, 17, 500, 0x2000, nil, udp), pass, bpf.ReasonAllow)
	check(t, h, frames.IPv4(cam4, gw4, 17, 500, 0x2000|3, nil, udp[:8]), pass, bpf.ReasonAllow)
	// The clock is read once per jiffy (a scheduler tick): wait well past the timeout.
	time.Sleep(timeout + 100*time.Millisecond)
	check(t, h, frames.IPv4(cam4, gw4, 17, 500, 4, nil, udp[:8]), drop, bpf.ReasonFragNoState)
}

// TestNoPolicyFailsClosed: before any policy is applied every frame that reaches the identity
// step drops as no_policy (earlier steps drop under their own reasons, as always).
func TestNoPolicyFailsClosed(t *testing.T) {
	h := dptest.New(t, loader.Config{})
	cam4, gw4 := dptest.Host(dptest.Cam, false), dptest.To("10.0.0.1")
	fs := [][]byte{
		frames.UDP(cam4, gw4, 1, 53, nil),
		frames.ARP(cam4, 1, cam4.MAC, cam4.IP, gw4.IP),
		frames.VLAN(frames.Echo(cam4, gw4), 0x8100, 0),
	}
	for _, f := range fs {
		res, err := h.Run(f)
		if err != nil {
			t.Fatal(err)
		}
		m := h.Model.Decide(f, 1, 0)
		if res.Action != dptest.XDPDrop || res.Reason != bpf.ReasonNoPolicy ||
			m.Reason != bpf.ReasonNoPolicy || m.Verdict != bpf.VerdictDrop {
			t.Errorf("kernel %d %s, model %s/%s, want drop no_policy", res.Action, res.Reason, m.Verdict, m.Reason)
		}
	}
}

// TestPolicyWideAudit: spec.mode audit turns drops before identification into audit passes.
func TestPolicyWideAudit(t *testing.T) {
	h := dptest.New(t, loader.Config{})
	p := dptest.Fixture()
	p.Spec.Mode = policy.ModeAudit
	s, err := dptest.Compile(p, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Apply(s); err != nil {
		t.Fatal(err)
	}
	cam4, gw4 := dptest.Host(dptest.Cam, false), dptest.To("10.0.0.1")
	check(t, h, frames.UDP(withMAC(cam4, "02:00:00:00:00:99"), gw4, 1, 53, nil), audit, bpf.ReasonUnknownDevice)
	check(t, h, frames.TCP(cam4, dptest.To("203.0.113.5"), 1, 80, true, nil), audit, bpf.ReasonNoRule)
	check(t, h, frames.TCP(cam4, dptest.To("203.0.113.5"), 1, 443, true, nil), pass, bpf.ReasonAllow)
}

// TestOverCapacityRejected (row 41): a policy with more devices than the datapath holds is
// rejected before any write; the running revision still decides.
func TestOverCapacityRejected(t *testing.T) {
	h := fixtureHarness(t, loader.Config{MaxDevices: 16})
	p := dptest.Fixture()
	for i := range 20 {
		p.Spec.Devices = append(p.Spec.Devices, policy.Device{
			Name: fmt.Sprintf("extra-%d", i), MAC: fmt.Sprintf("02:00:00:00:01:%02x", i),
			IPv4: []string{fmt.Sprintf("10.0.1.%d", i+1)},
		})
	}
	big, err := dptest.Compile(p, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Maps.Apply(big, h.Limits); err == nil {
		t.Fatal("apply of 30 devices into a 16-device datapath succeeded")
	} else {
		t.Logf("rejected as expected: %v", err)
	}
	rev, err := h.Maps.ActiveRevision()
	if err != nil || rev != 1 {
		t.Fatalf("active revision %d (%v), want 1", rev, err)
	}
	cam4 := dptest.Host(dptest.Cam, false)
	check(t, h, frames.TCP(cam4, dptest.To("203.0.113.5"), 1, 443, true, nil), pass, bpf.ReasonAllow)
	unknown := withMAC(cam4, "02:00:00:00:01:00")
	check(t, h, frames.UDP(unknown, dptest.To("10.0.0.1"), 1, 53, nil), drop, bpf.ReasonUnknownDevice)
}

// headerEnd is where f's L3 datagram ends (gopacket pads short frames to 60 bytes; cutting
// only padding leaves a whole, valid frame).
func headerEnd(f []byte) int {
	off, et := 14, int(f[12])<<8|int(f[13])
	if et == 0x8100 {
		off, et = 18, int(f[16])<<8|int(f[17])
	}
	switch et {
	case 0x0806:
		return off + 28
	case 0x0800:
		return off + (int(f[off+2])<<8 | int(f[off+3]))
	case 0x86dd:
		return off + 40 + (int(f[off+4])<<8 | int(f[off+5]))
	}
	return len(f)
}
