package dptest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/maps/gwmacs"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// Harness is the real datapath loaded into the kernel (in a pin directory of its own) next to
// the reference model, both deciding from the same snapshot.
type Harness struct {
	t      testing.TB
	DP     *loader.Datapath
	Maps   *maps.Maps
	Events *maps.EventReader
	Model  *policy.Model
	Limits maps.Limits
	start  time.Time
}

// Result is what the kernel did with one frame.
type Result struct {
	Action  uint32 // XDP_DROP (1) or XDP_PASS (2); TCDrop or TCPass toward devices
	Verdict bpf.Verdict
	Reason  bpf.Reason
}

// XDP actions.
const (
	XDPDrop = 1
	XDPPass = 2
)

// TC actions of the program toward devices.
const (
	TCPass = math.MaxUint32 // TC_ACT_UNSPEC (-1): the next program or filter decides, if any
	TCDrop = 2              // TC_ACT_SHOT
)

// New loads the datapath with cfg (zero fields: defaults; events on with a large budget) and
// removes every pin on cleanup. Frame ingress is the loopback device.
func New(t testing.TB, cfg loader.Config) *Harness {
	t.Helper()
	testenv.RequirePriv(t)
	var id [6]byte
	_, _ = rand.Read(id[:])
	cfg.PinDir = filepath.Join("/sys/fs/bpf", "zt-test-"+hex.EncodeToString(id[:]))
	def := loader.DefaultConfig()
	if cfg.EventBurst == 0 {
		cfg.EventBurst = 1 << 40
		cfg.EventsEnabled = true
	}
	if cfg.FragTimeout == 0 {
		cfg.FragTimeout = time.Hour
	}
	if cfg.FragEntries == 0 {
		cfg.FragEntries = def.FragEntries
	}
	// Flows outlive a test unless it sets a lifetime: the model's clock and the kernel's differ
	// by the time between two frames, which must never cross a lifetime.
	for _, d := range []*time.Duration{&cfg.FlowTCP, &cfg.FlowUDP, &cfg.FlowOther} {
		if *d == 0 {
			*d = time.Hour
		}
	}
	// Registered before Open: a load that fails after pinning maps leaves them behind.
	t.Cleanup(func() {
		if err := loader.Uninstall(cfg.PinDir); err != nil {
			t.Errorf("uninstall %s: %v", cfg.PinDir, err)
		}
	})
	dp, err := loader.Open(cfg)
	if err != nil {
		t.Fatalf("open datapath: %+v", err)
	}
	t.Cleanup(func() { _ = dp.Close() })
	m, err := maps.New(dp.Objects(), dp.MapSpecs())
	if err != nil {
		t.Fatalf("maps: %v", err)
	}
	ev, err := maps.OpenEvents(dp.Objects())
	if err != nil {
		t.Fatalf("events: %v", err)
	}
	t.Cleanup(func() { _ = ev.Close() })
	c := dp.Config()
	h := &Harness{
		t: t, DP: dp, Maps: m, Events: ev, start: time.Now(),
		Model:  policy.NewModel(nil, c.FragEntries, c.FragTimeout),
		Limits: maps.Limits{Devices: c.MaxDevices, Addrs: c.MaxAddrs, Rules: c.MaxRules, Prefixes: c.MaxPrefixes},
	}
	h.Model.SetFlowLimits(policy.FlowLimits{Entries: c.FlowEntries, Quota: c.FlowQuota, TCP: c.FlowTCP,
		UDP: c.FlowUDP, Other: c.FlowOther})
	// The fixture frames' destination: the gateway's MAC, as the loader registers an interface's.
	if err := h.AddGatewayMAC(GatewayMAC); err != nil {
		t.Fatal(err)
	}
	return h
}

// AddGatewayMAC registers mac as one of the gateway's own in the kernel (zt_gwmacs) and in the
// model.
func (h *Harness) AddGatewayMAC(mac net.HardwareAddr) error {
	if err := gwmacs.Add(h.DP.Objects().ZtGwmacs, mac, 0); err != nil {
		return err
	}
	h.Model.AddGatewayMAC([6]byte(mac))
	return nil
}

// Apply installs s in the kernel and in the model. Its fresh device ids are those the snapshot in
// force does not give the same devices, as an agent compiling over it would find.
func (h *Harness) Apply(s *policy.Snapshot) error {
	if prev := h.Model.Snapshot(); prev != nil {
		s.Fresh = s.FreshOver(prev)
	}
	if err := h.Maps.Apply(s, h.Limits); err != nil {
		return err
	}
	h.Model.SetSnapshot(s)
	return nil
}

// Now is the model's clock.
func (h *Harness) Now() time.Duration { return time.Since(h.start) }

// Run runs frame through the XDP program as received on ifindex 1 and reports the action and
// the (verdict, reason) counter that moved.
func (h *Harness) Run(frame []byte) (Result, error) { return Decide(h.Maps, h.DP.Program(), frame) }

// RunTo runs frame through the TC program toward devices, as leaving by ifindex 1 (the loopback
// BPF_PROG_TEST_RUN gives the skb), and reports the action and the counter that moved.
func (h *Harness) RunTo(frame []byte) (Result, error) {
	return Decide(h.Maps, h.DP.Objects().ZtTc, frame)
}

// RunDir is Run for a frame from a device (bpf.DirFromDevice), RunTo for one toward a device.
func (h *Harness) RunDir(d bpf.Dir, frame []byte) (Result, error) {
	if d == bpf.DirToDevice {
		return h.RunTo(frame)
	}
	return h.Run(frame)
}

// ModelDecide is the model's decision for frame in direction d at the harness clock.
func (h *Harness) ModelDecide(d bpf.Dir, frame []byte) policy.Decision {
	if d == bpf.DirToDevice {
		return h.Model.DecideToDevice(frame, IfLoopback, h.Now())
	}
	return h.Model.Decide(frame, IfLoopback, h.Now())
}

// Decide runs frame once through p, a datapath program whose counters are m's, and returns its
// action and the (verdict, reason) counter that moved; exactly one must.
func Decide(m *maps.Maps, p *ebpf.Program, frame []byte) (Result, error) {
	before, err := m.Counters()
	if err != nil {
		return Result{}, err
	}
	ret, err := p.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		return Result{}, fmt.Errorf("test run: %w", err)
	}
	after, err := m.Counters()
	if err != nil {
		return Result{}, err
	}
	res := Result{Action: ret}
	moved := 0
	for v := range bpf.NumVerdicts {
		for r := range bpf.NumReasons {
			if d := after[v][r].Packets - before[v][r].Packets; d != 0 {
				moved++
				res.Verdict, res.Reason = bpf.Verdict(v), bpf.Reason(r)
			}
		}
	}
	if moved != 1 {
		return res, fmt.Errorf("%d counters moved for one frame, want exactly 1", moved)
	}
	return res, nil
}

// NextEvent returns the next event from the ring buffer, waiting up to wait.
func (h *Harness) NextEvent(wait time.Duration) (bpf.Event, error) {
	h.Events.SetDeadline(time.Now().Add(wait))
	ev, err := h.Events.Read()
	if err != nil {
		return ev, fmt.Errorf("read event: %w", err)
	}
	return ev, nil
}

// DrainEvents discards buffered events.
func (h *Harness) DrainEvents() {
	for {
		if _, err := h.NextEvent(time.Millisecond); err != nil {
			return
		}
	}
}

// ErrNoEvent is returned by ExpectEvent when no matching event arrived.
var ErrNoEvent = errors.New("no matching event")

// ExpectEvent waits for an event with the given verdict and reason, skipping others.
func (h *Harness) ExpectEvent(v bpf.Verdict, r bpf.Reason) (bpf.Event, error) {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		ev, err := h.NextEvent(time.Until(deadline))
		if err != nil {
			break
		}
		if bpf.Verdict(ev.Verdict) == v && bpf.Reason(ev.Reason) == r {
			return ev, nil
		}
	}
	return bpf.Event{}, fmt.Errorf("%w: %s/%s", ErrNoEvent, v, r)
}

// Counter reads one (verdict, reason) counter of frames from devices, summed over CPUs.
func (h *Harness) Counter(v bpf.Verdict, r bpf.Reason) (uint64, error) {
	return h.CounterDir(bpf.DirFromDevice, v, r)
}

// CounterDir reads one (direction, verdict, reason) counter summed over CPUs.
func (h *Harness) CounterDir(d bpf.Dir, v bpf.Verdict, r bpf.Reason) (uint64, error) {
	var per []bpf.Counter
	if err := h.DP.Objects().ZtCounters.Lookup(bpf.CounterIndex(d, v, r), &per); err != nil {
		return 0, fmt.Errorf("read counter %s %s/%s: %w", d, v, r, err)
	}
	var n uint64
	for _, c := range per {
		n += c.Packets
	}
	return n, nil
}

// RunExpect runs frame from a device and reports whether the kernel chose exactly want's verdict
// and reason. See RunExpectDir.
func (h *Harness) RunExpect(frame []byte, want policy.Decision) (bool, Result, error) {
	return h.RunExpectDir(bpf.DirFromDevice, frame, want)
}

// RunExpectDir runs frame in direction d and reports whether the kernel chose exactly want's
// verdict and reason: the one counter want names moved (each frame moves exactly one) and the
// action matches. It reads one counter instead of all of them, for long differential runs. On a
// mismatch the Result comes from running the frame once more with a full counter comparison (a
// diagnosis: fragment and flow state may have moved on).
func (h *Harness) RunExpectDir(d bpf.Dir, frame []byte, want policy.Decision) (bool, Result, error) {
	before, err := h.CounterDir(d, want.Verdict, want.Reason)
	if err != nil {
		return false, Result{}, err
	}
	prog, pass, drop := h.DP.Program(), uint32(XDPPass), uint32(XDPDrop)
	if d == bpf.DirToDevice {
		prog, pass, drop = h.DP.Objects().ZtTc, TCPass, TCDrop
	}
	ret, err := prog.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		return false, Result{}, fmt.Errorf("test run: %w", err)
	}
	after, err := h.CounterDir(d, want.Verdict, want.Reason)
	if err != nil {
		return false, Result{}, err
	}
	wantAction := pass
	if want.Verdict == bpf.VerdictDrop {
		wantAction = drop
	}
	if after == before+1 && ret == wantAction {
		return true, Result{Action: ret, Verdict: want.Verdict, Reason: want.Reason}, nil
	}
	res, err := h.RunDir(d, frame)
	return false, res, err
}
