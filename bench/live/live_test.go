package live

import (
	"context"
	"errors"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/rlimit"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/testenv"
)

// testLog sends the suite's progress lines to the test log.
type testLog struct{ t *testing.T }

// Write logs p as one line.
func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestLiveQuick runs the live section in quick mode with the sender picked as `make bench`
// does: it must produce finite figures and target verdicts without errors, and leave no
// namespace or pin behind. No timing is asserted.
func TestLiveQuick(t *testing.T) {
	testenv.RequirePriv(t)
	quickRun(t, core.LiveSenderAuto, "")
}

// TestLiveQuickFallback forces the AF_PACKET sender, so that the fallback of kernels that
// refuse live frames runs everywhere.
func TestLiveQuickFallback(t *testing.T) {
	testenv.RequirePriv(t)
	quickRun(t, core.LiveSenderAFPacket, core.LiveSenderAFPacket)
}

// quickRun runs the live section in quick mode with sender and checks the report; want is
// the sender the figures must name ("": whichever auto picked).
func quickRun(t *testing.T, sender, want string) {
	trace.Lock()
	trace.namespaces, trace.pinDirs = nil, nil
	trace.Unlock()

	cfg := &core.Config{Quick: true, LiveSender: sender, Log: testLog{t}}
	r := core.Run(context.Background(), cfg, []core.Section{Section}, nil)
	for _, e := range r.Errors {
		t.Errorf("section error: %s", e)
	}
	n := 0
	for _, res := range r.Results {
		if res.Section != "live" {
			continue
		}
		n++
		if res.Sender == "" || want != "" && res.Sender != want {
			t.Errorf("%s: sender %q, want %q", res.Name, res.Sender, want)
		}
		// A cost is a difference of two measurements (the variant's minus the sender's alone, or
		// ztgate's minus XDP_DROP's): one round under load may put it at or below zero. Rates
		// and the peers' ratios are quotients of positive figures.
		diff := strings.HasSuffix(res.Name, ": receiver cost") || strings.HasSuffix(res.Name, ": decision over XDP_DROP") ||
			strings.HasSuffix(res.Name, ": transmit cost") || strings.Contains(res.Name, ": over ")
		if math.IsNaN(res.Value) || math.IsInf(res.Value, 0) || !diff && res.Value <= 0 {
			t.Errorf("%s: value %v %s, want a finite figure, positive unless a difference", res.Name, res.Value, res.Unit)
		}
		if res.Base != "" && (math.IsNaN(res.Ratio) || math.IsInf(res.Ratio, 0) || !diff && res.Ratio <= 0) {
			t.Errorf("%s: ratio %v to %s, want a finite ratio, positive unless of a difference", res.Name, res.Ratio,
				res.Base)
		}
	}
	if n == 0 {
		t.Error("no live results")
	}
	targets := 0
	for _, tg := range r.Targets {
		if tg.Section == "live" {
			targets++
			if tg.Sender == "" || want != "" && tg.Sender != want {
				t.Errorf("target %q: sender %q, want %q", tg.Desc, tg.Sender, want)
			}
			if math.IsNaN(tg.Measured) {
				t.Errorf("target %q: not measured (%s)", tg.Desc, tg.Note)
			}
		}
	}
	if targets == 0 {
		t.Error("no live targets checked")
	}

	trace.Lock()
	nss, pins := trace.namespaces, trace.pinDirs
	trace.Unlock()
	if len(nss) == 0 || len(pins) == 0 {
		t.Fatalf("the section recorded %d namespaces and %d pin directories, want some of each", len(nss), len(pins))
	}
	for _, ns := range nss {
		if _, err := os.Stat(filepath.Join(testenv.NetnsDir, ns)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("namespace %s left behind (stat: %v)", ns, err)
		}
	}
	for _, p := range pins {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("pin directory %s left behind (stat: %v)", p, err)
		}
	}
}

// TestLiveChooseSender checks the choice of the sender: auto keeps the kernel's live frames
// where the probe succeeds and falls back to AF_PACKET (saying why) where the kernel refuses
// them, as the simulated refusal of RefuseEnv makes it on any kernel; a forced kernel
// sender fails on a refusal instead; an unknown sender is an error.
func TestLiveChooseSender(t *testing.T) {
	testenv.RequirePriv(t)
	var log strings.Builder
	cfg := &core.Config{Log: &log}
	ok := func() error { return nil }
	t.Setenv(RefuseEnv, "1")
	refused := func() error { return probeFrames(nil) }
	for _, c := range []struct {
		want  string
		probe func() error
		got   string
		err   bool
	}{
		{want: "", probe: ok, got: core.LiveSenderKernel},
		{want: core.LiveSenderAuto, probe: ok, got: core.LiveSenderKernel},
		{want: core.LiveSenderAuto, probe: refused, got: core.LiveSenderAFPacket},
		{want: core.LiveSenderAFPacket, probe: ok, got: core.LiveSenderAFPacket},
		{want: core.LiveSenderKernel, probe: ok, got: core.LiveSenderKernel},
		{want: core.LiveSenderKernel, probe: refused, got: "", err: true},
		{want: "xdp", probe: ok, got: "", err: true},
	} {
		log.Reset()
		got, err := chooseSender(cfg, c.want, c.probe)
		if got != c.got || (err != nil) != c.err {
			t.Errorf("sender %q: got %q, %v; want %q, error %v", c.want, got, err, c.got, c.err)
		}
		fell := strings.Contains(log.String(), "live frames unavailable on this kernel")
		if fell != (got == core.LiveSenderAFPacket && c.want == core.LiveSenderAuto) {
			t.Errorf("sender %q: log %q", c.want, log.String())
		}
	}
}

// TestLiveProbeFrames runs the live-frames probe on this kernel: it either allows live frames
// or refuses them with an error the fallback recognises. The simulated refusal is one too.
func TestLiveProbeFrames(t *testing.T) {
	testenv.RequirePriv(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	tp, err := testenv.Build(testenv.Config{Devices: []testenv.DeviceSpec{{Name: "probe", IPv6: []netip.Addr{}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Error(err)
		}
	})
	d := tp.Devices[0]
	gen, err := newKernelSender(d.Port.Index, buildFrame(unknownHost(), d.MAC, closedPort))
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	err = tp.Gateway.Do(func() error { return probeFrames(gen) })
	if err != nil && !isRefusal(err) {
		t.Fatalf("probe: %v: neither allowed nor a refusal", err)
	}
	if err == nil {
		t.Log("live frames on this kernel: allowed")
	} else {
		t.Logf("live frames on this kernel: refused: %v", err)
	}
	t.Setenv(RefuseEnv, "1")
	if err := tp.Gateway.Do(func() error { return probeFrames(gen) }); !isRefusal(err) {
		t.Fatalf("probe with %s=1: %v, want a refusal", RefuseEnv, err)
	}
}
