package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/maps"
)

// fakeSource is a Source with fixed contents; a non-nil error field makes that read fail.
type fakeSource struct {
	counters [bpf.NumDirs][bpf.NumVerdicts][bpf.NumReasons]bpf.Counter
	devs     map[uint32]bpf.DevStats
	ev       bpf.EventStats
	usage    []maps.MapUsage
	flows    maps.FlowStats
	state    State

	countersErr, devsErr, evErr, usageErr, flowsErr error
}

func (f *fakeSource) DirCounters() ([bpf.NumDirs][bpf.NumVerdicts][bpf.NumReasons]bpf.Counter, error) {
	return f.counters, f.countersErr
}

func (f *fakeSource) FlowStats() (maps.FlowStats, error) { return f.flows, f.flowsErr }

func (f *fakeSource) AllDeviceStats() (map[uint32]bpf.DevStats, error) { return f.devs, f.devsErr }
func (f *fakeSource) EventStats() (bpf.EventStats, error)              { return f.ev, f.evErr }
func (f *fakeSource) MapUsage() ([]maps.MapUsage, error)               { return f.usage, f.usageErr }
func (f *fakeSource) State() State                                     { return f.state }

// devStats is a device's counters: pass, drop and audit frames of 100 bytes from the device, and
// twice as many toward it.
func devStats(pass, drop, audit uint64) bpf.DevStats {
	var s bpf.DevStats
	s.Packets[bpf.VerdictPass], s.Bytes[bpf.VerdictPass] = pass, pass*100
	s.Packets[bpf.VerdictDrop], s.Bytes[bpf.VerdictDrop] = drop, drop*100
	s.Packets[bpf.VerdictAudit], s.Bytes[bpf.VerdictAudit] = audit, audit*100
	for v := range s.Packets {
		s.InPackets[v], s.InBytes[v] = 2*s.Packets[v], 2*s.Bytes[v]
	}
	return s
}

func newFake() *fakeSource {
	f := &fakeSource{
		devs: map[uint32]bpf.DevStats{
			1: devStats(10, 1, 0), // cams
			2: devStats(5, 0, 2),  // cams
			3: devStats(7, 3, 0),  // in Segments with "": none
			4: devStats(1, 1, 1),  // not in Segments: none
		},
		ev:    bpf.EventStats{Emitted: 40, Lost: 2, Suppressed: 9},
		flows: maps.FlowStats{Entries: 12, Capacity: 65536, Devices: 2},
		usage: []maps.MapUsage{
			{Map: "devices", Entries: 4, Capacity: 1024},
			{Map: "zt_frags", Entries: 0, Capacity: 4096},
		},
		state: State{
			Revision: 17,
			Segments: map[uint32]string{1: "cams", 2: "cams", 3: "", 5: "printers"},
			Interfaces: []Interface{
				{Name: "lan0", Mode: "native", Attached: true, State: "attached", Attaches: 2, Repairs: 1},
				{Name: "lan1", Mode: "none", Attached: false, State: "absent", Attaches: 1},
			},
			EventsRead:    38,
			EventsDropped: 3,
			Damaged:       map[string]bool{"state": false, "journal": true, "audit": false},
		},
	}
	from, to := &f.counters[bpf.DirFromDevice], &f.counters[bpf.DirToDevice]
	from[bpf.VerdictPass][bpf.ReasonAllow] = bpf.Counter{Packets: 100, Bytes: 6400}
	from[bpf.VerdictDrop][bpf.ReasonNoRule] = bpf.Counter{Packets: 7, Bytes: 420}
	from[bpf.VerdictAudit][bpf.ReasonSpoofIP] = bpf.Counter{Packets: 3, Bytes: 180}
	to[bpf.VerdictPass][bpf.ReasonAllow] = bpf.Counter{Packets: 80, Bytes: 8000}
	to[bpf.VerdictDrop][bpf.ReasonInboundDenied] = bpf.Counter{Packets: 5, Bytes: 300}
	// A pair the datapath never counts: must not be exported.
	from[bpf.VerdictPass][bpf.ReasonNoRule] = bpf.Counter{Packets: 99, Bytes: 99}
	return f
}

func newRegistry(t *testing.T, src Source) (*prometheus.Registry, *Collector) {
	t.Helper()
	c := New(src, "1.2.3")
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("register: %v", err)
	}
	return reg, c
}

// sample is one gathered series: family name, labels and value.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// gather returns every series of g and the error of Gather.
func gather(t *testing.T, g prometheus.Gatherer) ([]sample, error) {
	t.Helper()
	mfs, err := g.Gather()
	var out []sample
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			s := sample{name: mf.GetName(), labels: map[string]string{}}
			for _, lp := range m.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				s.value = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				s.value = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				s.value = float64(m.GetHistogram().GetSampleCount())
			}
			out = append(out, s)
		}
	}
	return out, err
}

// value returns the value of the series name{labels...} (pairs of name, value) and whether it
// exists.
func value(samples []sample, name string, labels ...string) (float64, bool) {
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, s := range samples {
		if s.name != name || len(s.labels) != len(want) {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
			}
		}
		if match {
			return s.value, true
		}
	}
	return 0, false
}

func families(samples []sample) []string {
	var out []string
	for _, s := range samples {
		if !slices.Contains(out, s.name) {
			out = append(out, s.name)
		}
	}
	slices.Sort(out)
	return out
}

var allFamilies = []string{
	"ztgate_agent_events_dropped_total",
	"ztgate_agent_events_read_total",
	"ztgate_build_info",
	"ztgate_collector_errors_total",
	"ztgate_datapath_bytes_total",
	"ztgate_datapath_packets_total",
	"ztgate_events_emitted_total",
	"ztgate_events_lost_total",
	"ztgate_events_suppressed_total",
	"ztgate_flow_capacity",
	"ztgate_flows",
	"ztgate_interface_attached",
	"ztgate_interface_attaches_total",
	"ztgate_interface_repairs_total",
	"ztgate_interface_state",
	"ztgate_map_capacity",
	"ztgate_map_entries",
	"ztgate_policy_applies_total",
	"ztgate_policy_apply_duration_seconds",
	"ztgate_policy_revision",
	"ztgate_segment_bytes_total",
	"ztgate_segment_packets_total",
	"ztgate_state_damaged",
}

func TestAllFamiliesPresent(t *testing.T) {
	reg, _ := newRegistry(t, newFake())
	samples, err := gather(t, reg)
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	if got := families(samples); !slices.Equal(got, allFamilies) {
		t.Errorf("families:\n got %q\nwant %q", got, allFamilies)
	}
}

func TestAllFamiliesDescribed(t *testing.T) {
	c := New(newFake(), "1.2.3")
	ch := make(chan *prometheus.Desc, 100)
	c.Describe(ch)
	close(ch)
	var got []string
	for d := range ch {
		// Desc has no name getter; its String() is `Desc{fqName: "name", ...}`.
		s := d.String()
		i := strings.Index(s, `fqName: "`)
		if i < 0 {
			t.Fatalf("unexpected Desc format %q", s)
		}
		s = s[i+len(`fqName: "`):]
		got = append(got, s[:strings.IndexByte(s, '"')])
	}
	slices.Sort(got)
	if !slices.Equal(got, allFamilies) {
		t.Errorf("described:\n got %q\nwant %q", got, allFamilies)
	}
}

func TestDatapath(t *testing.T) {
	reg, _ := newRegistry(t, newFake())
	samples, err := gather(t, reg)
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	wantSeries := bpf.NumDirs * (1 + 2*(bpf.NumReasons-1))
	for _, name := range []string{"ztgate_datapath_packets_total", "ztgate_datapath_bytes_total"} {
		n := 0
		for _, s := range samples {
			if s.name == name {
				n++
			}
		}
		if n != wantSeries {
			t.Errorf("%s: %d series, want %d", name, n, wantSeries)
		}
	}
	// Every drop and audit reason exists in both directions, even at zero.
	for d := range bpf.NumDirs {
		dir := bpf.Dir(d).String()
		for r := range bpf.NumReasons {
			reason := bpf.Reason(r)
			if reason == bpf.ReasonAllow {
				continue
			}
			for _, v := range []string{"drop", "audit"} {
				if _, ok := value(samples, "ztgate_datapath_packets_total", "direction", dir, "verdict", v,
					"reason", reason.String()); !ok {
					t.Errorf("missing ztgate_datapath_packets_total{direction=%q,verdict=%q,reason=%q}", dir, v, reason)
				}
			}
		}
	}
	const from, to = "from_device", "to_device"
	for _, tc := range []struct {
		name, dir, verdict, reason string
		want                       float64
		exists                     bool
	}{
		{name: "ztgate_datapath_packets_total", dir: from, verdict: "pass", reason: "allow", want: 100, exists: true},
		{name: "ztgate_datapath_bytes_total", dir: from, verdict: "pass", reason: "allow", want: 6400, exists: true},
		{name: "ztgate_datapath_packets_total", dir: from, verdict: "drop", reason: "no_rule", want: 7, exists: true},
		{name: "ztgate_datapath_bytes_total", dir: from, verdict: "drop", reason: "no_rule", want: 420, exists: true},
		{name: "ztgate_datapath_packets_total", dir: from, verdict: "audit", reason: "spoof_ip", want: 3, exists: true},
		{name: "ztgate_datapath_packets_total", dir: from, verdict: "drop", reason: "arp_spoof", want: 0, exists: true},
		{name: "ztgate_datapath_packets_total", dir: from, verdict: "pass", reason: "no_rule", want: 0},
		{name: "ztgate_datapath_packets_total", dir: from, verdict: "drop", reason: "allow", want: 0},
		{name: "ztgate_datapath_packets_total", dir: from, verdict: "audit", reason: "allow", want: 0},
		{name: "ztgate_datapath_packets_total", dir: to, verdict: "pass", reason: "allow", want: 80, exists: true},
		{name: "ztgate_datapath_bytes_total", dir: to, verdict: "pass", reason: "allow", want: 8000, exists: true},
		{name: "ztgate_datapath_packets_total", dir: to, verdict: "drop", reason: "inbound_denied", want: 5, exists: true},
		{name: "ztgate_datapath_bytes_total", dir: to, verdict: "drop", reason: "inbound_denied", want: 300, exists: true},
		{name: "ztgate_datapath_packets_total", dir: to, verdict: "drop", reason: "no_rule", want: 0, exists: true},
		{name: "ztgate_datapath_packets_total", dir: from, verdict: "drop", reason: "inbound_denied", want: 0,
			exists: true},
		{name: "ztgate_datapath_packets_total", dir: to, verdict: "pass", reason: "no_rule", want: 0},
	} {
		got, ok := value(samples, tc.name, "direction", tc.dir, "verdict", tc.verdict, "reason", tc.reason)
		if ok != tc.exists || got != tc.want {
			t.Errorf("%s{direction=%q,verdict=%q,reason=%q} = %v (exists %v), want %v (exists %v)",
				tc.name, tc.dir, tc.verdict, tc.reason, got, ok, tc.want, tc.exists)
		}
	}
	// Without the direction label nothing matches: every series has one.
	if _, ok := value(samples, "ztgate_datapath_packets_total", "verdict", "pass", "reason", "allow"); ok {
		t.Error("a ztgate_datapath_packets_total series has no direction label")
	}
}

func TestSegments(t *testing.T) {
	f := newFake()
	c := New(f, "1.2.3")
	want := `
# HELP ztgate_segment_packets_total Frames sent by (from_device) or toward (to_device) the devices ` +
		`of a segment, by direction and verdict.
# TYPE ztgate_segment_packets_total counter
ztgate_segment_packets_total{direction="from_device",segment="cams",verdict="audit"} 2
ztgate_segment_packets_total{direction="from_device",segment="cams",verdict="drop"} 1
ztgate_segment_packets_total{direction="from_device",segment="cams",verdict="pass"} 15
ztgate_segment_packets_total{direction="from_device",segment="none",verdict="audit"} 1
ztgate_segment_packets_total{direction="from_device",segment="none",verdict="drop"} 4
ztgate_segment_packets_total{direction="from_device",segment="none",verdict="pass"} 8
ztgate_segment_packets_total{direction="from_device",segment="printers",verdict="audit"} 0
ztgate_segment_packets_total{direction="from_device",segment="printers",verdict="drop"} 0
ztgate_segment_packets_total{direction="from_device",segment="printers",verdict="pass"} 0
ztgate_segment_packets_total{direction="to_device",segment="cams",verdict="audit"} 4
ztgate_segment_packets_total{direction="to_device",segment="cams",verdict="drop"} 2
ztgate_segment_packets_total{direction="to_device",segment="cams",verdict="pass"} 30
ztgate_segment_packets_total{direction="to_device",segment="none",verdict="audit"} 2
ztgate_segment_packets_total{direction="to_device",segment="none",verdict="drop"} 8
ztgate_segment_packets_total{direction="to_device",segment="none",verdict="pass"} 16
ztgate_segment_packets_total{direction="to_device",segment="printers",verdict="audit"} 0
ztgate_segment_packets_total{direction="to_device",segment="printers",verdict="drop"} 0
ztgate_segment_packets_total{direction="to_device",segment="printers",verdict="pass"} 0
# HELP ztgate_segment_bytes_total Bytes of the frames sent by (from_device) or toward (to_device) ` +
		`the devices of a segment, by direction and verdict.
# TYPE ztgate_segment_bytes_total counter
ztgate_segment_bytes_total{direction="from_device",segment="cams",verdict="audit"} 200
ztgate_segment_bytes_total{direction="from_device",segment="cams",verdict="drop"} 100
ztgate_segment_bytes_total{direction="from_device",segment="cams",verdict="pass"} 1500
ztgate_segment_bytes_total{direction="from_device",segment="none",verdict="audit"} 100
ztgate_segment_bytes_total{direction="from_device",segment="none",verdict="drop"} 400
ztgate_segment_bytes_total{direction="from_device",segment="none",verdict="pass"} 800
ztgate_segment_bytes_total{direction="from_device",segment="printers",verdict="audit"} 0
ztgate_segment_bytes_total{direction="from_device",segment="printers",verdict="drop"} 0
ztgate_segment_bytes_total{direction="from_device",segment="printers",verdict="pass"} 0
ztgate_segment_bytes_total{direction="to_device",segment="cams",verdict="audit"} 400
ztgate_segment_bytes_total{direction="to_device",segment="cams",verdict="drop"} 200
ztgate_segment_bytes_total{direction="to_device",segment="cams",verdict="pass"} 3000
ztgate_segment_bytes_total{direction="to_device",segment="none",verdict="audit"} 200
ztgate_segment_bytes_total{direction="to_device",segment="none",verdict="drop"} 800
ztgate_segment_bytes_total{direction="to_device",segment="none",verdict="pass"} 1600
ztgate_segment_bytes_total{direction="to_device",segment="printers",verdict="audit"} 0
ztgate_segment_bytes_total{direction="to_device",segment="printers",verdict="drop"} 0
ztgate_segment_bytes_total{direction="to_device",segment="printers",verdict="pass"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"ztgate_segment_packets_total", "ztgate_segment_bytes_total"); err != nil {
		t.Error(err)
	}

	// Without traffic from unsegmented devices there is no "none" segment.
	f.devs = map[uint32]bpf.DevStats{1: devStats(1, 0, 0), 3: {}}
	if n := testutil.CollectAndCount(c, "ztgate_segment_packets_total"); n != 12 {
		t.Errorf("ztgate_segment_packets_total: %d series, want 12 (cams, printers)", n)
	}
}

func TestScalars(t *testing.T) {
	c := New(newFake(), "1.2.3")
	want := `
# HELP ztgate_events_emitted_total Events the datapath wrote to the event ring buffer.
# TYPE ztgate_events_emitted_total counter
ztgate_events_emitted_total 40
# HELP ztgate_events_lost_total Events the datapath could not write because the event ring buffer was full.
# TYPE ztgate_events_lost_total counter
ztgate_events_lost_total 2
# HELP ztgate_events_suppressed_total Events the datapath did not emit because of the per-device event rate limit.
# TYPE ztgate_events_suppressed_total counter
ztgate_events_suppressed_total 9
# HELP ztgate_agent_events_read_total Events the agent read and decoded from the event ring buffer.
# TYPE ztgate_agent_events_read_total counter
ztgate_agent_events_read_total 38
# HELP ztgate_agent_events_dropped_total Events the agent did not deliver to event stream consumers that were too slow.
# TYPE ztgate_agent_events_dropped_total counter
ztgate_agent_events_dropped_total 3
# HELP ztgate_map_entries Entries currently in a BPF map.
# TYPE ztgate_map_entries gauge
ztgate_map_entries{map="devices"} 4
ztgate_map_entries{map="zt_frags"} 0
# HELP ztgate_map_capacity Maximum number of entries of a BPF map.
# TYPE ztgate_map_capacity gauge
ztgate_map_capacity{map="devices"} 1024
ztgate_map_capacity{map="zt_frags"} 4096
# HELP ztgate_flows Connections in the flow table (zt_flows): the policy allowed their first packet, their replies pass.
# TYPE ztgate_flows gauge
ztgate_flows 12
# HELP ztgate_flow_capacity Capacity of the flow table: when it is full, new connections are dropped (flow_table_full).
# TYPE ztgate_flow_capacity gauge
ztgate_flow_capacity 65536
# HELP ztgate_policy_revision Revision of the policy the agent applied.
# TYPE ztgate_policy_revision gauge
ztgate_policy_revision 17
# HELP ztgate_interface_attached Whether the agent's XDP program is attached to the interface (1) or not (0).
# TYPE ztgate_interface_attached gauge
ztgate_interface_attached{interface="lan0",mode="native"} 1
ztgate_interface_attached{interface="lan1",mode="none"} 0
# HELP ztgate_interface_state State of a protected interface: 1 for the state it is in (attached, absent: ` +
		`attached when it appears, failed: present but not enforced, degraded: attached but a check cannot work ` +
		`there), 0 for the others.
# TYPE ztgate_interface_state gauge
ztgate_interface_state{interface="lan0",state="absent"} 0
ztgate_interface_state{interface="lan0",state="attached"} 1
ztgate_interface_state{interface="lan0",state="degraded"} 0
ztgate_interface_state{interface="lan0",state="failed"} 0
ztgate_interface_state{interface="lan1",state="absent"} 1
ztgate_interface_state{interface="lan1",state="attached"} 0
ztgate_interface_state{interface="lan1",state="degraded"} 0
ztgate_interface_state{interface="lan1",state="failed"} 0
# HELP ztgate_interface_attaches_total XDP attaches of the agent to an interface: more than one after a ` +
		`re-creation or a removal of the program.
# TYPE ztgate_interface_attaches_total counter
ztgate_interface_attaches_total{interface="lan0"} 2
ztgate_interface_attaches_total{interface="lan1"} 1
# HELP ztgate_interface_repairs_total Tampering the agent repaired on an interface: its XDP program found ` +
		`removed and attached again, or its link's pin found removed and pinned again.
# TYPE ztgate_interface_repairs_total counter
ztgate_interface_repairs_total{interface="lan0"} 1
ztgate_interface_repairs_total{interface="lan1"} 0
`
	names := []string{
		"ztgate_events_emitted_total", "ztgate_events_lost_total", "ztgate_events_suppressed_total",
		"ztgate_agent_events_read_total", "ztgate_agent_events_dropped_total",
		"ztgate_map_entries", "ztgate_map_capacity", "ztgate_flows", "ztgate_flow_capacity", "ztgate_policy_revision",
		"ztgate_interface_attached",
		"ztgate_interface_state", "ztgate_interface_attaches_total", "ztgate_interface_repairs_total",
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	samples, err := gather(t, reg)
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, s := range samples {
		if s.name != "ztgate_build_info" {
			continue
		}
		if s.value != 1 || s.labels["version"] != "1.2.3" || !strings.HasPrefix(s.labels["goversion"], "go") {
			t.Errorf("ztgate_build_info = %v %v, want 1 {version=1.2.3, goversion=go...}", s.value, s.labels)
		}
		return
	}
	t.Error("no ztgate_build_info")
}

func TestNoDeviceLabels(t *testing.T) {
	reg, c := newRegistry(t, newFake())
	c.ObserveApply(true, time.Millisecond)
	samples, err := gather(t, reg)
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	if len(samples) == 0 {
		t.Fatal("no samples")
	}
	forbidden := []string{"mac", "ip", "ipv4", "ipv6", "addr", "address", "device", "dev", "dev_id", "device_id",
		"name", "host", "hostname"}
	for _, s := range samples {
		for l := range s.labels {
			if slices.Contains(forbidden, strings.ToLower(l)) {
				t.Errorf("%s has per-device label %q", s.name, l)
			}
		}
	}
}

func TestSourceErrors(t *testing.T) {
	boom := errors.New("map read failed")
	for _, tc := range []struct {
		source  string
		set     func(*fakeSource)
		missing []string
	}{
		{source: "counters", set: func(f *fakeSource) { f.countersErr = boom },
			missing: []string{"ztgate_datapath_packets_total", "ztgate_datapath_bytes_total"}},
		{source: "device_stats", set: func(f *fakeSource) { f.devsErr = boom },
			missing: []string{"ztgate_segment_packets_total", "ztgate_segment_bytes_total"}},
		{source: "event_stats", set: func(f *fakeSource) { f.evErr = boom },
			missing: []string{"ztgate_events_emitted_total", "ztgate_events_lost_total", "ztgate_events_suppressed_total"}},
		{source: "map_usage", set: func(f *fakeSource) { f.usageErr = boom },
			missing: []string{"ztgate_map_entries", "ztgate_map_capacity"}},
		{source: "flow_stats", set: func(f *fakeSource) { f.flowsErr = boom },
			missing: []string{"ztgate_flows", "ztgate_flow_capacity"}},
	} {
		t.Run(tc.source, func(t *testing.T) {
			f := newFake()
			tc.set(f)
			reg, _ := newRegistry(t, f)
			samples, err := gather(t, reg)
			if err == nil {
				t.Fatal("gather succeeded, want an error")
			}
			for _, name := range tc.missing {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("error %q does not name %s", err, name)
				}
			}
			if !strings.Contains(err.Error(), boom.Error()) {
				t.Errorf("error %q does not carry the cause %q", err, boom)
			}
			var want []string
			for _, name := range allFamilies {
				if !slices.Contains(tc.missing, name) {
					want = append(want, name)
				}
			}
			if got := families(samples); !slices.Equal(got, want) {
				t.Errorf("families:\n got %q\nwant %q", got, want)
			}
			for _, s := range sources {
				wantErrs := 0.0
				if s == tc.source {
					wantErrs = 1
				}
				if got, ok := value(samples, "ztgate_collector_errors_total", "source", s); !ok || got != wantErrs {
					t.Errorf("ztgate_collector_errors_total{source=%q} = %v (exists %v), want %v", s, got, ok, wantErrs)
				}
			}
			// The counter is monotonic across scrapes.
			samples, _ = gather(t, reg)
			if got, _ := value(samples, "ztgate_collector_errors_total", "source", tc.source); got != 2 {
				t.Errorf("after 2 scrapes ztgate_collector_errors_total{source=%q} = %v, want 2", tc.source, got)
			}
		})
	}
}

func TestObserveApply(t *testing.T) {
	c := New(newFake(), "1.2.3")
	want := `
# HELP ztgate_policy_applies_total Policy applies, by whether the policy was accepted or rejected.
# TYPE ztgate_policy_applies_total counter
ztgate_policy_applies_total{result="accepted"} 0
ztgate_policy_applies_total{result="rejected"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "ztgate_policy_applies_total"); err != nil {
		t.Errorf("before any apply: %v", err)
	}

	c.ObserveApply(true, 5*time.Millisecond)
	c.ObserveApply(false, 2*time.Second)
	c.ObserveApply(true, 20*time.Millisecond)
	if got := testutil.ToFloat64(c.applies.WithLabelValues("accepted")); got != 2 {
		t.Errorf("accepted = %v, want 2", got)
	}
	if got := testutil.ToFloat64(c.applies.WithLabelValues("rejected")); got != 1 {
		t.Errorf("rejected = %v, want 1", got)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "ztgate_policy_apply_duration_seconds" {
			continue
		}
		found = true
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 3 {
			t.Errorf("sample count = %d, want 3", h.GetSampleCount())
		}
		if s := h.GetSampleSum(); s < 2.0249 || s > 2.0251 {
			t.Errorf("sample sum = %v, want 2.025", s)
		}
		b := h.GetBucket()
		if first, last := b[0].GetUpperBound(), b[len(b)-1].GetUpperBound(); first != 0.001 || last != 10 {
			t.Errorf("buckets from %v to %v, want 0.001 to 10", first, last)
		}
		for _, bk := range b {
			var want uint64
			switch ub := bk.GetUpperBound(); {
			case ub >= 2.5:
				want = 3
			case ub >= 0.025:
				want = 2
			case ub >= 0.005:
				want = 1
			}
			if bk.GetCumulativeCount() != want {
				t.Errorf("bucket le=%v: %d, want %d", bk.GetUpperBound(), bk.GetCumulativeCount(), want)
			}
		}
	}
	if !found {
		t.Error("no ztgate_policy_apply_duration_seconds")
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return rec.Code, string(body)
}

func TestHandler(t *testing.T) {
	f := newFake()
	reg, _ := newRegistry(t, f)
	ready := false
	h := Handler(reg, func() bool { return ready })

	if code, body := get(t, h, "/healthz"); code != http.StatusOK || body != "ok" {
		t.Errorf("/healthz = %d %q, want 200 \"ok\"", code, body)
	}
	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || body != "not ready" {
		t.Errorf("/readyz before ready = %d %q, want 503 \"not ready\"", code, body)
	}
	ready = true
	if code, body := get(t, h, "/readyz"); code != http.StatusOK || body != "ready" {
		t.Errorf("/readyz when ready = %d %q, want 200 \"ready\"", code, body)
	}
	if code, body := get(t, h, "/metrics"); code != http.StatusOK || !strings.Contains(body, "ztgate_build_info{") {
		t.Errorf("/metrics = %d, body without ztgate_build_info:\n%s", code, body)
	}

	// A failing read still serves the other families (ContinueOnError).
	f.countersErr = errors.New("map read failed")
	code, body := get(t, h, "/metrics")
	if code != http.StatusOK {
		t.Errorf("/metrics with a failing source = %d, want 200", code)
	}
	if strings.Contains(body, "ztgate_datapath_packets_total{") {
		t.Error("/metrics serves ztgate_datapath_packets_total although its read failed")
	}
	if !strings.Contains(body, `ztgate_collector_errors_total{source="counters"} 1`) {
		t.Errorf("/metrics does not count the failure:\n%s", body)
	}
	if !strings.Contains(body, "ztgate_segment_packets_total{") {
		t.Error("/metrics lost ztgate_segment_packets_total because another read failed")
	}
}

// TestLintMetrics lints the full exposition (with the Go and process collectors the agent
// registers beside ours) with client_golang's promlint, as registered and as served.
func TestLintMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c := New(newFake(), "1.2.3")
	reg.MustRegister(c)
	c.ObserveApply(true, 3*time.Millisecond)
	c.ObserveApply(false, 40*time.Millisecond)

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	code, exposition := get(t, Handler(reg, nil), "/metrics")
	if code != http.StatusOK || !strings.Contains(exposition, "ztgate_policy_apply_duration_seconds_bucket{") {
		t.Fatalf("/metrics = %d:\n%s", code, exposition)
	}

	// What `promtool check metrics` does, without the binary: parse the text exposition the
	// handler serves and lint it.
	textProblems, err := promlint.New(strings.NewReader(exposition)).Lint()
	if err != nil {
		t.Fatalf("lint the exposition: %v", err)
	}
	for _, p := range textProblems {
		t.Errorf("exposition: %s: %s", p.Metric, p.Text)
	}
}
