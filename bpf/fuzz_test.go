package bpf_test

import (
	"encoding/hex"
	"testing"

	"github.com/ztgate/ztgate/internal/dptest"
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
