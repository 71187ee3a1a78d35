package maps_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
)

// Flow lifetimes of the sweeper tests: the UDP and ICMP flows expire an hour before the TCP one.
var testLifetimes = maps.FlowLifetimes{TCP: 2 * time.Hour, UDP: time.Minute, Other: 30 * time.Second}

// flowHarness loads the datapath with testLifetimes and quota and applies the fixture.
func flowHarness(t *testing.T, quota int) (*dptest.Harness, *policy.Snapshot) {
	t.Helper()
	h := dptest.New(t, loader.Config{FlowTCP: testLifetimes.TCP, FlowUDP: testLifetimes.UDP,
		FlowOther: testLifetimes.Other, FlowQuota: quota, FlowEntries: 256})
	s, err := dptest.Compile(dptest.Fixture(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Apply(s); err != nil {
		t.Fatal(err)
	}
	return h, s
}

func devID(t *testing.T, s *policy.Snapshot, n int) uint32 {
	t.Helper()
	rec, ok := s.Devices[policy.DevKey(dptest.Host(n, false).MAC)]
	if !ok {
		t.Fatalf("fixture device %d not in the snapshot", n)
	}
	return rec.DevId
}

// mustPass runs frame from a device and fails unless the datapath allowed it.
func mustPass(t *testing.T, h *dptest.Harness, frame []byte, what string) {
	t.Helper()
	res, err := h.Run(frame)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if res.Action != dptest.XDPPass || res.Reason != bpf.ReasonAllow {
		t.Fatalf("%s: %+v, want pass/allow", what, res)
	}
}

func wideDNS(sport uint16) []byte {
	return frames.UDP(dptest.Host(dptest.Wide, false), dptest.To("192.0.2.53"), sport, 53, []byte("q"))
}

func flowCounts(t *testing.T, m *maps.Maps) map[uint32]int {
	t.Helper()
	c, err := m.FlowCounts()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSweepFlows(t *testing.T) {
	h, s := flowHarness(t, 0)
	wide, cam, pinger := devID(t, s, dptest.Wide), devID(t, s, dptest.Cam), devID(t, s, dptest.Pinger)
	const udpFlows = 5
	for i := range udpFlows {
		mustPass(t, h, wideDNS(5000+uint16(i)), "udp from wide")
	}
	mustPass(t, h, wideDNS(5000), "udp from wide again") // the same flow
	mustPass(t, h, frames.TCP(dptest.Host(dptest.Cam, false), dptest.To("203.0.113.5"), 40000, 443, true, nil),
		"tcp from cam")
	// The server answers: an answered flow lives its protocol's lifetime, an unanswered one an echo's.
	answer := frames.TCP(dptest.To("203.0.113.5"), dptest.Host(dptest.Cam, false), 443, 40000, false, nil)
	if res, err := h.RunTo(answer); err != nil || res.Reason != bpf.ReasonAllow {
		t.Fatalf("the answer toward cam: %+v, %v", res, err)
	}
	mustPass(t, h, frames.Echo(dptest.Host(dptest.Pinger, false), dptest.To("198.51.100.7")), "echo from pinger")

	st, err := h.Maps.FlowStats(2)
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != udpFlows+2 || st.Capacity != 256 || st.Devices != 3 {
		t.Errorf("flow stats %+v, want %d entries of 256 for 3 devices", st, udpFlows+2)
	}
	if want := []maps.DeviceFlows{{DevID: wide, Flows: udpFlows}, {DevID: min(cam, pinger), Flows: 1}}; len(st.Top) != 2 ||
		st.Top[0] != want[0] || st.Top[1] != want[1] {
		t.Errorf("top devices %+v, want %+v", st.Top, want)
	}
	use, err := h.Maps.TableUsage()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, u := range use {
		if u.Map == bpf.ZtgateMapZtFlows {
			found = true
			if u.Entries != udpFlows+2 || u.Capacity != 256 {
				t.Errorf("usage of %s: %+v", u.Map, u)
			}
		}
	}
	if !found {
		t.Errorf("usage %+v has no %s", use, bpf.ZtgateMapZtFlows)
	}

	now, err := maps.Now()
	if err != nil {
		t.Fatal(err)
	}
	flows, err := h.Maps.Flows(now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != udpFlows+2 {
		t.Fatalf("listed %d flows, want %d", len(flows), udpFlows+2)
	}
	var dns *maps.Flow
	for i := range flows {
		if flows[i].Opener.Port() == 5003 {
			dns = &flows[i]
		}
		if flows[i].Idle > time.Minute {
			t.Errorf("flow %+v idle for %v, just opened", flows[i], flows[i].Idle)
		}
	}
	want := maps.Flow{Opener: netip.MustParseAddrPort("10.0.0.23:5003"),
		Responder: netip.MustParseAddrPort("192.0.2.53:53"), Proto: 17, DevID: wide, Revision: 1}
	if dns == nil {
		t.Fatalf("no flow from port 5003 in %+v", flows)
	}
	if got := *dns; got.Opener != want.Opener || got.Responder != want.Responder || got.Proto != want.Proto ||
		got.DevID != want.DevID || got.Revision != want.Revision || got.Inbound {
		t.Errorf("flow %+v, want %+v", got, want)
	}
	if few, err := h.Maps.Flows(now, 3); err != nil || len(few) != 3 {
		t.Errorf("Flows(max 3) = %d flows, %v", len(few), err)
	}

	// Nothing is idle yet.
	if n, err := h.Maps.SweepFlows(now, testLifetimes); n != 0 || err != nil {
		t.Errorf("sweep now = %d, %v, want 0, nil", n, err)
	}
	// Ten minutes on, the UDP and ICMP flows expired, the answered TCP one did not.
	n, err := h.Maps.SweepFlows(now+uint64(10*time.Minute), testLifetimes)
	if err != nil || n != udpFlows+1 {
		t.Errorf("sweep +10m = %d, %v, want %d, nil", n, err, udpFlows+1)
	}
	if got := flowCounts(t, h.Maps); len(got) != 1 || got[cam] != 1 {
		t.Errorf("flow counts after +10m: %v, want only cam's 1", got)
	}
	// Far in the future, nothing is left, and every device's count is back to 0.
	n, err = h.Maps.SweepFlows(now+uint64(24*time.Hour), testLifetimes)
	if err != nil || n != 1 {
		t.Errorf("sweep +24h = %d, %v, want 1, nil", n, err)
	}
	if st, err := h.Maps.FlowStats(10); err != nil || st.Entries != 0 || st.Devices != 0 || len(st.Top) != 0 {
		t.Errorf("flow stats after the sweeps: %+v, %v, want empty", st, err)
	}
	if got := flowCounts(t, h.Maps); len(got) != 0 {
		t.Errorf("flow counts after the sweeps: %v, want none", got)
	}
	var c uint32
	if err := h.DP.Objects().ZtFlowCount.Lookup(wide, &c); err != nil || c != 0 {
		t.Errorf("zt_flow_count[wide] = %d, %v, want 0", c, err)
	}

	// The datapath opens flows again as before.
	mustPass(t, h, wideDNS(6000), "udp from wide after the sweep")
	if got := flowCounts(t, h.Maps); len(got) != 1 || got[wide] != 1 {
		t.Errorf("flow counts after a new flow: %v, want wide's 1", got)
	}
	if _, err := h.Maps.SweepFlows(now, maps.FlowLifetimes{TCP: time.Hour, UDP: 0, Other: time.Second}); err == nil {
		t.Error("sweep with a zero lifetime succeeded")
	}
}

func TestSweepFlowsQuota(t *testing.T) {
	// A device at its quota opens no flow until the sweeper gives its expired flows back.
	const quota = 3
	h, s := flowHarness(t, quota)
	for i := range quota {
		mustPass(t, h, wideDNS(7000+uint16(i)), "udp under the quota")
	}
	res, err := h.Run(wideDNS(7100))
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != dptest.XDPDrop || res.Reason != bpf.ReasonFlowTableFull {
		t.Fatalf("flow over the quota: %+v, want drop/flow_table_full", res)
	}
	now, err := maps.Now()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := h.Maps.SweepFlows(now+uint64(time.Hour), testLifetimes); n != quota || err != nil {
		t.Fatalf("sweep = %d, %v, want %d, nil", n, err, quota)
	}
	if got := flowCounts(t, h.Maps); got[devID(t, s, dptest.Wide)] != 0 {
		t.Errorf("flow counts after the sweep: %v", got)
	}
	mustPass(t, h, wideDNS(7100), "udp after the sweep")
}

func TestInboundDeviceStats(t *testing.T) {
	// A reply toward a device, decided by the TC program, is counted in its inbound counters.
	h, s := flowHarness(t, 0)
	wide := devID(t, s, dptest.Wide)
	mustPass(t, h, wideDNS(5353), "udp from wide")
	dev := dptest.Host(dptest.Wide, false)
	reply := frames.UDP(frames.Host{MAC: dptest.GatewayMAC, IP: netip.MustParseAddr("192.0.2.53")}, dev, 53, 5353,
		[]byte("answer"))
	ret, err := h.DP.Objects().ZtTc.Run(&ebpf.RunOptions{Data: reply})
	if err != nil {
		t.Fatalf("run tc: %v", err)
	}
	const tcActUnspec = ^uint32(0) // a pass: TC_ACT_UNSPEC (-1)
	if ret != tcActUnspec {
		t.Fatalf("reply toward the device: tc action %d, want %d (pass)", int32(ret), -1)
	}
	st, err := h.Maps.DeviceStats(wide)
	if err != nil {
		t.Fatal(err)
	}
	all, err := h.Maps.AllDeviceStats()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []bpf.DevStats{st, all[wide]} {
		if s.Packets[bpf.VerdictPass] != 1 || s.InPackets[bpf.VerdictPass] != 1 ||
			s.InBytes[bpf.VerdictPass] != uint64(len(reply)) {
			t.Errorf("device stats %+v, want one frame each way, %d bytes in", s, len(reply))
		}
	}
	dc, err := h.Maps.DirCounters()
	if err != nil {
		t.Fatal(err)
	}
	if got := dc[bpf.DirToDevice][bpf.VerdictPass][bpf.ReasonAllow].Packets; got != 1 {
		t.Errorf("to_device pass/allow = %d, want 1", got)
	}
}
