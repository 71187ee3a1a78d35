package bpf_test

import (
	"encoding/hex"
	"os"
	"strconv"
	"testing"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
)

// TestDifferential runs generated frames through the kernel and the model against a policy
// of 1,000 devices: the verdict and the reason must agree on every frame. ZTGATE_DIFF_FRAMES
// overrides the count (default 200,000).
func TestDifferential(t *testing.T) {
	n := 200_000
	if s := os.Getenv("ZTGATE_DIFF_FRAMES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		n = 20_000
	}
	h := dptest.New(t, loader.Config{})
	big := dptest.NewBig(1000, 1)
	if err := big.Policy.Validate(); err != nil {
		t.Fatalf("generated policy is invalid: %v", err)
	}
	s, err := policy.Compile(big.Policy, policy.CompileOptions{Revision: 1, Ifindex: dptest.Ifindex})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Apply(s); err != nil {
		t.Fatal(err)
	}
	g := dptest.NewGen(big, 2)
	seen := map[[2]int]int{}
	bad := 0
	for i := range n {
		f := g.Frame()
		want := h.Model.Decide(f, dptest.IfLoopback, h.Now())
		ok, got, err := h.RunExpect(f, want)
		if err != nil {
			t.Fatal(err)
		}
		seen[[2]int{int(want.Verdict), int(want.Reason)}]++
		if !ok {
			bad++
			if bad <= 10 {
				t.Errorf("frame %d: model %s/%s, kernel action %d %s/%s (on re-run)\n%s",
					i, want.Verdict, want.Reason, got.Action, got.Verdict, got.Reason, hex.Dump(f))
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d frames disagree", bad, n)
	}
	t.Logf("%d frames, 0 disagreements; %d verdict/reason classes seen", n, len(seen))
	for k, c := range seen {
		t.Logf("  %-5s %-16s %d", bpf.Verdict(k[0]), bpf.Reason(k[1]), c)
	}
	for _, r := range []bpf.Reason{bpf.ReasonAllow, bpf.ReasonNoRule, bpf.ReasonUnknownDevice, bpf.ReasonSpoofIP,
		bpf.ReasonBadL2Src, bpf.ReasonVLANDenied, bpf.ReasonMalformed, bpf.ReasonTruncated, bpf.ReasonExtDenied,
		bpf.ReasonFragNoState, bpf.ReasonEncapDenied, bpf.ReasonARPSpoof, bpf.ReasonL2DstDenied, bpf.ReasonNDSpoof} {
		if seen[[2]int{int(bpf.VerdictDrop), int(r)}]+seen[[2]int{int(bpf.VerdictPass), int(r)}]+seen[[2]int{int(bpf.VerdictAudit), int(r)}] == 0 {
			t.Errorf("generator never produced reason %s", r)
		}
	}
}
