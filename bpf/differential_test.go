package bpf_test

import (
	"encoding/binary"
	"encoding/hex"
	"os"
	"strconv"
	"testing"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
)

// TestDifferential replays generated sequences of frames in both directions through the kernel
// (the XDP program for frames from devices, the TC program for frames toward them) and the model
// against a policy of 1,000 devices, swapping between two revisions of it now and then: the
// verdict and the reason must agree on every frame, flows and fragments included. The flow table
// is small, so that quotas and a full table are met too. ZTGATE_DIFF_FRAMES overrides the count
// (default 200,000).
func TestDifferential(t *testing.T) {
	n := 200_000
	if s := os.Getenv("ZTGATE_DIFF_FRAMES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		n = 20_000
	}
	h := dptest.New(t, loader.Config{FlowEntries: 2048, FlowQuota: 8})
	big := dptest.NewBig(1000, 1)
	// Rules to multicast prefixes next to wide ones (Big draws 0.0.0.0/0, ::/0 and 224.0.0.0/4
	// too), so that broadcast and multicast frames meet both, and closures that mix them.
	rule := func(cidr, proto string, ports ...uint16) policy.Rule {
		r := policy.Rule{To: policy.Target{CIDR: cidr}, Proto: proto}
		for _, p := range ports {
			r.Ports = append(r.Ports, policy.PortRange{Lo: p, Hi: p})
		}
		return r
	}
	for i, r := range []policy.Rule{
		rule("0.0.0.0/0", "udp", 53, 1900),
		rule("224.0.0.251/32", "udp", 5353),
		rule("::/0", "udp", 5353),
		rule("ff02::fb/128", "udp", 5353),
		rule("ff00::/8", "udp", 1900),
		rule("239.255.255.250/32", "any"),
		rule("255.255.255.255/32", "udp"),
		rule("ff02::/16", "any"),
	} {
		seg := &big.Policy.Spec.Segments[i%4]
		seg.Allow = append(seg.Allow, r)
	}
	if err := big.Policy.Validate(); err != nil {
		t.Fatalf("generated policy is invalid: %v", err)
	}
	// The second revision revokes half of every segment's rules: flows they allowed must stop.
	revoked := *big.Policy
	revoked.Spec.Segments = append([]policy.Segment(nil), big.Policy.Spec.Segments...)
	for i := range revoked.Spec.Segments {
		s := &revoked.Spec.Segments[i]
		s.Allow = s.Allow[:len(s.Allow)/2]
	}
	var revs [2]*policy.Snapshot
	for i, p := range []*policy.Policy{big.Policy, &revoked} {
		s, err := policy.Compile(p, policy.CompileOptions{Revision: uint64(i + 1), Ifindex: dptest.Ifindex})
		if err != nil {
			t.Fatal(err)
		}
		revs[i] = s
	}
	if err := h.Apply(revs[0]); err != nil {
		t.Fatal(err)
	}
	g := dptest.NewSeqGen(big, 2)
	seen := map[[3]int]int{}       // (direction, verdict, reason)
	groups := map[bpf.Reason]int{} // broadcast and multicast UDP frames from devices, outside DHCP, by reason
	bad, swaps := 0, 0
	for i := range n {
		if i > 0 && i%25_000 == 0 {
			swaps++
			s := *revs[swaps%2]
			s.Revision, s.Config.Revision = uint64(swaps+1), uint64(swaps+1)
			if err := h.Apply(&s); err != nil {
				t.Fatal(err)
			}
		}
		st := g.Step()
		f := st.Frame
		want := h.ModelDecide(st.Dir, f)
		ok, got, err := h.RunExpectDir(st.Dir, f, want)
		if err != nil {
			t.Fatal(err)
		}
		seen[[3]int{int(st.Dir), int(want.Verdict), int(want.Reason)}]++
		if want.Verdict == bpf.VerdictPass {
			g.Passed(st)
		}
		if st.Dir == bpf.DirFromDevice && groupUDP(f) {
			groups[want.Reason]++
		}
		if !ok {
			bad++
			if bad <= 10 {
				t.Errorf("frame %d (%s): model %s/%s, kernel action %d %s/%s (on re-run)\n%s",
					i, st.Dir, want.Verdict, want.Reason, got.Action, got.Verdict, got.Reason, hex.Dump(f))
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d frames disagree", bad, n)
	}
	t.Logf("%d frames, 0 disagreements, %d policy swaps; %d direction/verdict/reason classes seen", n, swaps, len(seen))
	for k, c := range seen {
		t.Logf("  %-11s %-5s %-16s %d", bpf.Dir(k[0]), bpf.Verdict(k[1]), bpf.Reason(k[2]), c)
	}
	opened := h.Model.Opened()
	t.Logf("flows opened: %d by the opener's rules, %d by the responder's from: rules", opened[0], opened[1])
	if opened[0] == 0 || opened[1] == 0 {
		t.Errorf("the sequences opened no flow of one kind")
	}
	t.Logf("broadcast and multicast udp frames: %d allowed (by a multicast prefix rule), %d no_rule",
		groups[bpf.ReasonAllow], groups[bpf.ReasonNoRule])
	if groups[bpf.ReasonAllow] == 0 || groups[bpf.ReasonNoRule] == 0 {
		t.Errorf("generator never produced an allowed and a denied broadcast or multicast udp frame")
	}
	count := func(d bpf.Dir, r bpf.Reason) int {
		n := 0
		for _, v := range []bpf.Verdict{bpf.VerdictDrop, bpf.VerdictPass, bpf.VerdictAudit} {
			n += seen[[3]int{int(d), int(v), int(r)}]
		}
		return n
	}
	for _, r := range []bpf.Reason{bpf.ReasonAllow, bpf.ReasonNoRule, bpf.ReasonUnknownDevice, bpf.ReasonSpoofIP,
		bpf.ReasonBadL2Src, bpf.ReasonVLANDenied, bpf.ReasonMalformed, bpf.ReasonTruncated, bpf.ReasonExtDenied,
		bpf.ReasonFragNoState, bpf.ReasonEncapDenied, bpf.ReasonARPSpoof, bpf.ReasonL2DstDenied, bpf.ReasonNDSpoof,
		bpf.ReasonICMPNoFlow, bpf.ReasonFlowTableFull} {
		if count(bpf.DirFromDevice, r) == 0 {
			t.Errorf("generator never produced reason %s from a device", r)
		}
	}
	for _, r := range []bpf.Reason{bpf.ReasonAllow, bpf.ReasonInboundDenied, bpf.ReasonICMPNoFlow,
		bpf.ReasonUnknownDevice, bpf.ReasonL2DstDenied, bpf.ReasonTruncated, bpf.ReasonMalformed,
		bpf.ReasonFragNoState} {
		if count(bpf.DirToDevice, r) == 0 {
			t.Errorf("generator never produced reason %s toward a device", r)
		}
	}
}

// groupUDP reports whether f is an untagged, unfragmented UDP frame to a group MAC (broadcast
// or multicast) outside DHCP: only a rule to a multicast prefix can allow it.
func groupUDP(f []byte) bool {
	if len(f) < 14+40+8 || f[0]&1 == 0 {
		return false
	}
	var l4 []byte
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		ihl := int(f[14]&0xf) * 4
		if f[14+9] != policy.ProtoUDP || binary.BigEndian.Uint16(f[14+6:])&0x3fff != 0 || len(f) < 14+ihl+8 {
			return false
		}
		l4 = f[14+ihl:]
	case 0x86dd:
		if f[14+6] != policy.ProtoUDP {
			return false
		}
		l4 = f[14+40:]
	default:
		return false
	}
	dport := binary.BigEndian.Uint16(l4[2:])
	return dport != 67 && dport != 547
}
