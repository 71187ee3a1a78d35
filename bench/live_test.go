package bench

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

	"github.com/ztgate/ztgate/testenv"
)

// liveTestLog sends the suite's progress lines to the test log.
type liveTestLog struct{ t *testing.T }

func (l liveTestLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestLiveQuick runs the live section in quick mode with the sender picked as `make bench`
// does: it must produce finite figures and target verdicts without errors, and leave no
// namespace or pin behind. No timing is asserted.
func TestLiveQuick(t *testing.T) {
	testenv.RequirePriv(t)
	liveQuickRun(t, LiveSenderAuto, "")
}

// TestLiveQuickFallback forces the AF_PACKET sender, so that the fallback of kernels that
// refuse live frames runs everywhere.
func TestLiveQuickFallback(t *testing.T) {
	testenv.RequirePriv(t)
	liveQuickRun(t, LiveSenderAFPacket, LiveSenderAFPacket)
}

// liveQuickRun runs the live section in quick mode with sender and checks the report; want is
// the sender the figures must name ("": whichever auto picked).
func liveQuickRun(t *testing.T, sender, want string) {
	liveTrace.Lock()
	liveTrace.namespaces, liveTrace.pinDirs = nil, nil
	liveTrace.Unlock()

	r := Run(context.Background(), &Config{Quick: true, LiveSender: sender, Log: liveTestLog{t}}, []string{"live"})
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
		diff := strings.HasSuffix(res.Name, ": receiver cost") || strings.HasSuffix(res.Name, ": decision over XDP_DROP")
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

	liveTrace.Lock()
	nss, pins := liveTrace.namespaces, liveTrace.pinDirs
	liveTrace.Unlock()
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
// them, as the simulated refusal of LiveRefuseEnv makes it on any kernel; a forced kernel
// sender fails on a refusal instead; an unknown sender is an error.
func TestLiveChooseSender(t *testing.T) {
	testenv.RequirePriv(t)
	var log strings.Builder
	cfg := &Config{Log: &log}
	ok := func() error { return nil }
	t.Setenv(LiveRefuseEnv, "1")
	refused := func() error { return liveProbeFrames(nil) }
	for _, c := range []struct {
		want  string
		probe func() error
		got   string
		err   bool
	}{
		{"", ok, LiveSenderKernel, false},
		{LiveSenderAuto, ok, LiveSenderKernel, false},
		{LiveSenderAuto, refused, LiveSenderAFPacket, false},
		{LiveSenderAFPacket, ok, LiveSenderAFPacket, false},
		{LiveSenderKernel, ok, LiveSenderKernel, false},
		{LiveSenderKernel, refused, "", true},
		{"xdp", ok, "", true},
	} {
		log.Reset()
		got, err := liveChooseSender(cfg, c.want, c.probe)
		if got != c.got || (err != nil) != c.err {
			t.Errorf("sender %q: got %q, %v; want %q, error %v", c.want, got, err, c.got, c.err)
		}
		fell := strings.Contains(log.String(), "live frames unavailable on this kernel")
		if fell != (got == LiveSenderAFPacket && c.want == LiveSenderAuto) {
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
	gen, err := newLiveKernelSender(d.Port.Index, liveFrame(liveUnknownHost(), d.MAC, liveClosedPort))
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	err = tp.Gateway.Do(func() error { return liveProbeFrames(gen) })
	if err != nil && !liveRefused(err) {
		t.Fatalf("probe: %v: neither allowed nor a refusal", err)
	}
	if err == nil {
		t.Log("live frames on this kernel: allowed")
	} else {
		t.Logf("live frames on this kernel: refused: %v", err)
	}
	t.Setenv(LiveRefuseEnv, "1")
	if err := tp.Gateway.Do(func() error { return liveProbeFrames(gen) }); !liveRefused(err) {
		t.Fatalf("probe with %s=1: %v, want a refusal", LiveRefuseEnv, err)
	}
}
