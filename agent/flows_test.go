package agent

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
)

// flowPolicy has one device, dns, that may send DNS queries anywhere; frames to the gateway
// carry the router MAC it lists.
const flowPolicy = `apiVersion: ztgate/v1
kind: Policy
metadata: {name: flows}
spec:
  gateway: {ipv4: [10.0.1.254], macs: ["02:00:00:00:00:fe"]}
  devices:
    - name: dns
      mac: "02:00:00:00:01:01"
      ipv4: [10.0.1.1]
      allow:
        - {to: {cidr: 0.0.0.0/0}, proto: udp, ports: [53]}
`

var (
	flowDev    = frames.Host{MAC: net.HardwareAddr{2, 0, 0, 0, 1, 1}, IP: netip.MustParseAddr("10.0.1.1")}
	flowRouter = frames.Host{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0xfe}, IP: netip.MustParseAddr("192.0.2.53")}
)

// TestFlows runs a query from a device and its answer through the agent's real datapath and
// checks what the status, the devices view, the flows listing and the metrics say of them, and
// that a sweep far enough in the future empties the flow table.
func TestFlows(t *testing.T) {
	a := startTestAgent(t, 16)
	if _, err := a.apply("flows.yaml", []byte(flowPolicy), self); err != nil {
		t.Fatal(err)
	}
	query := frames.UDP(flowDev, flowRouter, 5000, 53, []byte("q"))
	res, err := dptest.Decide(a.maps, a.dp.Program(), query)
	if err != nil || res.Action != dptest.XDPPass || res.Reason != bpf.ReasonAllow {
		t.Fatalf("query from the device: %+v, %v, want pass/allow", res, err)
	}
	answer := frames.UDP(flowRouter, flowDev, 53, 5000, []byte("answer"))
	if ret, err := a.dp.Objects().ZtTc.Run(&ebpf.RunOptions{Data: answer}); err != nil || int32(ret) != -1 {
		t.Fatalf("answer toward the device: tc action %d, %v, want -1 (TC_ACT_UNSPEC: pass)", int32(ret), err)
	}
	id := a.cur.Load().snap.Devices[policy.DevKey(flowDev.MAC)].DevId

	st := a.status()
	if st.Flows == nil {
		t.Fatal("status has no flow table")
	}
	if got, want := *st.Flows, (api.FlowStats{Entries: 1, Capacity: 65536, Quota: 1024, Devices: 1,
		Top: []api.DeviceFlows{{Device: "dns", DevID: id, Flows: 1}}}); got.Entries != want.Entries ||
		got.Capacity != want.Capacity || got.Quota != want.Quota || got.Devices != want.Devices ||
		len(got.Top) != 1 || got.Top[0] != want.Top[0] {
		t.Errorf("status flows %+v, want %+v", got, want)
	}
	found := false
	for _, m := range st.Maps {
		found = found || m.Map == bpf.ZtgateMapZtFlows && m.Entries == 1
	}
	if !found {
		t.Errorf("status maps %+v: no zt_flows with 1 entry", st.Maps)
	}

	ds, err := a.devices()
	if err != nil || len(ds) != 1 {
		t.Fatalf("devices: %+v, %v", ds, err)
	}
	d := ds[0]
	if d.Allowed.Packets != 1 || d.Inbound.Allowed.Packets != 1 || d.Inbound.Allowed.Bytes != uint64(len(answer)) ||
		d.Inbound.Dropped.Packets != 0 || d.Flows != 1 {
		t.Errorf("device %+v: want one frame each way, %d bytes in, one flow", d, len(answer))
	}

	get := func(query string) (int, []api.Flow) {
		t.Helper()
		w := httptest.NewRecorder()
		a.handleFlows(w, httptest.NewRequest("GET", api.PathFlows+query, nil))
		var fs []api.Flow
		if w.Code == http.StatusOK {
			if err := json.NewDecoder(w.Body).Decode(&fs); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
		}
		return w.Code, fs
	}
	code, fs := get("")
	want := api.Flow{Opener: "10.0.1.1:5000", Responder: "192.0.2.53:53", Proto: "udp", Direction: "from_device",
		Device: "dns", DevID: id, Revision: a.cur.Load().meta.Revision}
	if code != http.StatusOK || len(fs) != 1 {
		t.Fatalf("GET flows: %d %+v", code, fs)
	}
	if got := fs[0]; got.Idle < 0 || got.Idle > time.Hour {
		t.Errorf("flow idle for %v", got.Idle)
	}
	if fs[0].Idle = 0; fs[0] != want {
		t.Errorf("flow %+v, want %+v", fs[0], want)
	}
	for _, tc := range []struct {
		query string
		code  int
		n     int
	}{
		{query: "?device=dns", code: 200, n: 1},
		{query: "?limit=1", code: 200, n: 1},
		{query: "?device=nosuch", code: 404},
		{query: "?limit=x", code: 400},
	} {
		if code, fs := get(tc.query); code != tc.code || len(fs) != tc.n {
			t.Errorf("GET flows%s: %d, %d flows, want %d, %d", tc.query, code, len(fs), tc.code, tc.n)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(a.metrics)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	metric := func(name string, labels map[string]string) float64 {
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		next:
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
						continue next
					}
				}
				if m.GetGauge() != nil {
					return m.GetGauge().GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
		return -1
	}
	if got := metric("ztgate_flows", nil); got != 1 {
		t.Errorf("ztgate_flows = %v, want 1", got)
	}
	if got := metric("ztgate_flow_capacity", nil); got != 65536 {
		t.Errorf("ztgate_flow_capacity = %v, want 65536", got)
	}
	for _, dir := range []string{"from_device", "to_device"} {
		l := map[string]string{"direction": dir, "verdict": "pass", "reason": "allow"}
		if got := metric("ztgate_datapath_packets_total", l); got != 1 {
			t.Errorf("ztgate_datapath_packets_total%v = %v, want 1", l, got)
		}
	}

	// The periodic sweep leaves the live flow; one far in the future removes it.
	if n := a.sweepFlowsOnce(a.flowLifetimes()); n != 0 {
		t.Errorf("sweep now removed %d flows", n)
	}
	now, err := maps.Now()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := a.maps.SweepFlows(now+uint64(24*time.Hour), a.flowLifetimes()); n != 1 || err != nil {
		t.Errorf("sweep +24h = %d, %v, want 1, nil", n, err)
	}
	if st := a.status(); st.Flows == nil || st.Flows.Entries != 0 || st.Flows.Devices != 0 {
		t.Errorf("status flows after the sweep: %+v", st.Flows)
	}

	// The sweeper stops with its context.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.sweepFlows(ctx)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the flow sweeper did not stop with its context")
	}
}

func TestFlowSweepInterval(t *testing.T) {
	for _, tc := range []struct {
		lim  maps.FlowLifetimes
		want time.Duration
	}{
		{lim: maps.FlowLifetimes{TCP: 2 * time.Hour, UDP: 2 * time.Minute, Other: 30 * time.Second},
			want: 7500 * time.Millisecond},
		{lim: maps.FlowLifetimes{TCP: time.Hour, UDP: time.Hour, Other: time.Hour}, want: flowSweepMax},
		{lim: maps.FlowLifetimes{TCP: time.Hour, UDP: time.Second, Other: time.Hour}, want: 250 * time.Millisecond},
		{lim: maps.FlowLifetimes{TCP: time.Hour, UDP: time.Hour, Other: time.Millisecond}, want: flowSweepMin},
	} {
		if got := flowSweepInterval(tc.lim); got != tc.want {
			t.Errorf("flowSweepInterval(%+v) = %v, want %v", tc.lim, got, tc.want)
		}
	}
}

func TestEventDirection(t *testing.T) {
	a := testAgent(t, access{})
	for _, tc := range []struct {
		dir  bpf.Dir
		want string
	}{{bpf.DirFromDevice, "from_device"}, {bpf.DirToDevice, "to_device"}} {
		ev := bpf.Event{Dir: uint8(tc.dir), Ifindex: 3, Verdict: uint8(bpf.VerdictDrop),
			Reason: uint8(bpf.ReasonInboundDenied)}
		if got := a.toAPIEvent(&ev); got.Direction != tc.want || got.Reason != "inbound_denied" {
			t.Errorf("event of direction %d: %+v, want direction %s", tc.dir, got, tc.want)
		}
	}
}
