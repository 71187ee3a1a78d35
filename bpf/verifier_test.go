package bpf_test

import (
	"testing"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/loader"
)

// TestVerifierStats loads the datapath and logs its size: the instructions in the object file and
// the instructions the verifier walked to accept it (the figure a change to the C must not raise
// without a reason). It fails when the kernel reports no verified-instruction count.
func TestVerifierStats(t *testing.T) {
	spec, err := bpf.LoadZtgate()
	if err != nil {
		t.Fatal(err)
	}
	ps, ok := spec.Programs["zt_xdp"]
	if !ok {
		t.Fatal("no program zt_xdp in the object")
	}
	var objInsns uint64
	for _, ins := range ps.Instructions {
		objInsns += ins.Size() / 8
	}
	h := dptest.New(t, loader.Config{})
	info, err := h.DP.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	verified, ok := info.VerifiedInstructions()
	if !ok || verified == 0 {
		t.Fatal("the kernel reports no verified instruction count for zt_xdp")
	}
	t.Logf("zt_xdp: %d instructions in the object, %d processed by the verifier", objInsns, verified)
}
