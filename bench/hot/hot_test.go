package hot

import (
	"context"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/bench/cold"
	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bench/fleet"
	"github.com/ztgate/ztgate/testenv"
)

// TestHotColdQuick runs the hot and cold sections in quick mode and checks the shape of the
// report: every expected figure present and positive, a verdict for every target, no error.
// Timings are not asserted: they are the suite's output, not a property of the code.
func TestHotColdQuick(t *testing.T) {
	testenv.RequirePriv(t)
	cfg := &core.Config{Quick: true, Log: io.Discard}
	if testing.Verbose() {
		cfg.Log = testWriter{t}
	}
	r := core.Run(context.Background(), cfg, []core.Section{Section, cold.Section}, nil)
	if len(r.Errors) > 0 {
		t.Fatalf("errors: %v", r.Errors)
	}
	got := map[string]core.Result{}
	for _, res := range r.Results {
		// A primitive is (program - floor) / ops: a near-free operation (the inlined clock read)
		// can come out at or below zero in a quick run's noise.
		if res.Value <= 0 && !strings.HasPrefix(res.Name, "primitive: ") || math.IsNaN(res.Value) {
			t.Errorf("%s/%s: value %v, want > 0", res.Section, res.Name, res.Value)
		}
		if res.Base != "" && res.Ratio <= 0 {
			t.Errorf("%s/%s: ratio %v to %s, want > 0", res.Section, res.Name, res.Ratio, res.Base)
		}
		got[res.Section+"/"+res.Name+"/"+res.Base] = res
	}
	want := []string{
		"hot/floor (XDP_PASS only)/",
		"hot/xdp-filter 10k MAC + 10k IPv4/floor",
		"hot/xdp-filter 10k MAC + 10k IPv4/floor + primitives",
		"hot/primitive: hash lookup (8-byte key, hit)/",
		"hot/primitive: LPM trie lookup (24-byte key, 124 prefixes)/",
		"hot/primitive: clock read (bpf_jiffies64, inlined; zt_now adds a per-CPU array read)/",
		"hot/primitive: hash lookup (48-byte flow key, hit)/",
		"hot/primitive: LPM trie lookup (24-byte key, 3 prefixes)/",
		"hot/primitive: " + primFlowHit + "/",
		"hot/primitive: " + primFlowMiss + "/",
		"hot/primitive: " + primInsDel + "/",
		"hot/primitive: " + primArray + "/",
		"hot/primitive: " + primAtomic + "/",
		"cold/control 1k dev (hash lookup + counter)/",
		"cold/control 10k dev, record values + device stats/control",
		"cold/control 1k dev, record values/control",
		"cold/ztgate 1k dev allowed-v4 cold/control",
		"cold/ztgate 10k dev allowed-v4 hot/control",
	}
	want = append(want, "hot/TC floor (TC_ACT_UNSPEC only)/floor", "hot/rewriter + floor (IPv4)/floor",
		"hot/rewriter + floor (IPv6)/floor")
	for _, n := range []int{1, 1000} {
		for _, c := range fleet.Classes {
			for _, ev := range []bool{true, false} {
				name := variantName(n, hotClass(c.Name), ev)
				want = append(want, "hot/"+name+"/floor", "hot/"+name+"/xdp-filter", "hot/"+name+"/floor + primitives")
			}
		}
		for _, c := range firstClasses {
			name := variantName(n, c, true)
			want = append(want, "hot/"+name+"/floor", "hot/"+name+"/xdp-filter", "hot/"+name+"/floor + primitives")
		}
		for _, c := range inboundClasses {
			for _, ev := range []bool{true, false} {
				name := variantName(n, c.name, ev)
				want = append(want, "hot/"+name+"/TC floor", "hot/"+name+"/xdp-filter",
					"hot/"+name+"/floor + primitives")
			}
		}
	}
	for _, w := range want {
		if _, ok := got[w]; !ok {
			t.Errorf("missing result %q", w)
		}
	}
	if len(got) != len(r.Results) {
		t.Errorf("%d results, %d distinct: a name is reported twice", len(r.Results), len(got))
	}
	sections := map[string]int{}
	for _, tg := range r.Targets {
		sections[tg.Section]++
		if math.IsNaN(tg.Measured) || tg.Measured < 0 || tg.Limit <= 0 {
			t.Errorf("target %s/%q: measured %v, limit %v", tg.Section, tg.Desc, tg.Measured, tg.Limit)
		}
		if !strings.HasPrefix(tg.Note, "quick") {
			t.Errorf("target %s/%q: note %q does not say quick", tg.Section, tg.Desc, tg.Note)
		}
	}
	// hot: first packet, established path, identity drops, inbound reply and unsolicited inbound
	// drop against xdp-filter, the established path and identity drops against their primitives,
	// flatness; cold: one per N. No hot target is relative to the floor alone.
	if sections["hot"] != 8 || sections["cold"] != 2 {
		t.Errorf("targets per section %v, want hot 8, cold 2", sections)
	}
	for _, tg := range r.Targets {
		if tg.Section == "hot" && strings.HasSuffix(tg.Desc, "x the floor") {
			t.Errorf("target %q: relative to the floor alone", tg.Desc)
		}
	}
}

// testWriter sends the suite's progress lines to the test log.
type testWriter struct{ t *testing.T }

// Write logs p as one line.
func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
