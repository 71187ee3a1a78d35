// Package metrics exports the agent's datapath and control-plane state as Prometheus metrics.
//
// Like cloudflare/ebpf_exporter, the Collector reads the BPF maps at scrape time and reports
// their monotonic counters as const metrics: nothing is cached between scrapes and nothing is
// counted twice. Labels are bounded sets (verdict, reason, segment, map, interface); no metric
// carries a MAC address, an IP address or a device name. Frames are counted by direction:
// from_device (decided by the XDP program as a device sends them) and to_device (decided by
// the TC program as they leave the gateway toward a device).
package metrics

import (
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/maps"
)

// Source is what the collector reads at each scrape.
type Source interface {
	// DirCounters returns packets and bytes by direction, verdict and reason, summed over CPUs.
	DirCounters() ([bpf.NumDirs][bpf.NumVerdicts][bpf.NumReasons]bpf.Counter, error)
	// AllDeviceStats returns the counters of each device by dev_id; DevStats.Packets and
	// DevStats.Bytes (sent by the device) and InPackets and InBytes (toward it) are indexed by
	// verdict.
	AllDeviceStats() (map[uint32]bpf.DevStats, error)
	// EventStats returns the datapath's event counters.
	EventStats() (bpf.EventStats, error)
	// MapUsage returns the fill level of the maps that can fill up.
	MapUsage() ([]maps.MapUsage, error)
	// FlowStats returns the fill level of the flow table.
	FlowStats() (maps.FlowStats, error)
	// State returns the agent's view of what it enforces.
	State() State
}

// State is the control-plane state the collector reports.
type State struct {
	Revision      uint64            // policy revision the agent applied
	Segments      map[uint32]string // dev_id -> segment name ("" = no segment)
	Interfaces    []Interface       // the interfaces the agent manages
	EventsRead    uint64            // events decoded by the agent
	EventsDropped uint64            // events not delivered to slow stream consumers
	Damaged       map[string]bool   // part of the state directory -> found damaged at start, not repaired
}

// Interface is one interface the agent attaches to.
type Interface struct {
	Name     string // interface name
	Mode     string // XDP attach mode, e.g. "native" or "generic"
	Attached bool   // the link runs the agent's program
	State    string // one of InterfaceStates ("" reports none)
	Attaches uint64 // attaches by the agent (the first and every re-attach)
	Repairs  uint64 // program found removed and attached again, or link pin restored
}

// InterfaceStates are the values of the state label of ztgate_interface_state.
var InterfaceStates = []string{"attached", "absent", "failed", "degraded"}

// NoSegment is the segment label of devices that belong to no segment.
const NoSegment = "none"

const namespace = "ztgate"

// Failure labels of ztgate_collector_errors_total: one per Source read.
const (
	srcCounters    = "counters"
	srcDeviceStats = "device_stats"
	srcEventStats  = "event_stats"
	srcMapUsage    = "map_usage"
	srcFlowStats   = "flow_stats"
)

var sources = []string{srcCounters, srcDeviceStats, srcEventStats, srcMapUsage, srcFlowStats}

func desc(subsystem, name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, name), help, labels, nil)
}

var (
	descPackets = desc("datapath", "packets_total",
		"Frames decided by the datapath, by direction (from_device, to_device), verdict and reason.",
		"direction", "verdict", "reason")
	descBytes = desc("datapath", "bytes_total",
		"Bytes of the frames decided by the datapath, by direction (from_device, to_device), verdict and reason.",
		"direction", "verdict", "reason")
	descSegPackets = desc("segment", "packets_total",
		"Frames sent by (from_device) or toward (to_device) the devices of a segment, by direction and verdict.",
		"segment", "direction", "verdict")
	descSegBytes = desc("segment", "bytes_total",
		"Bytes of the frames sent by (from_device) or toward (to_device) the devices of a segment, "+
			"by direction and verdict.", "segment", "direction", "verdict")
	descFlows = desc("", "flows",
		"Connections in the flow table (zt_flows): the policy allowed their first packet, their replies pass.")
	descFlowCapacity = desc("", "flow_capacity",
		"Capacity of the flow table: when it is full, new connections are dropped (flow_table_full).")
	descEvEmitted = desc("events", "emitted_total",
		"Events the datapath wrote to the event ring buffer.")
	descEvLost = desc("events", "lost_total",
		"Events the datapath could not write because the event ring buffer was full.")
	descEvSuppressed = desc("events", "suppressed_total",
		"Events the datapath did not emit because of the per-device event rate limit.")
	descEvRead = desc("agent", "events_read_total",
		"Events the agent read and decoded from the event ring buffer.")
	descEvDropped = desc("agent", "events_dropped_total",
		"Events the agent did not deliver to event stream consumers that were too slow.")
	descMapEntries = desc("map", "entries",
		"Entries currently in a BPF map.", "map")
	descMapCapacity = desc("map", "capacity",
		"Maximum number of entries of a BPF map.", "map")
	descRevision = desc("policy", "revision",
		"Revision of the policy the agent applied.")
	descAttached = desc("interface", "attached",
		"Whether the agent's XDP program is attached to the interface (1) or not (0).", "interface", "mode")
	descIfState = desc("interface", "state",
		"State of a protected interface: 1 for the state it is in (attached, absent: attached when it appears, "+
			"failed: present but not enforced, degraded: attached but a check cannot work there), 0 for the others.",
		"interface", "state")
	descIfAttaches = desc("interface", "attaches_total",
		"XDP attaches of the agent to an interface: more than one after a re-creation or a removal of the program.",
		"interface")
	descIfRepairs = desc("interface", "repairs_total",
		"Tampering the agent repaired on an interface: its XDP program found removed and attached again, "+
			"or its link's pin found removed and pinned again.", "interface")
	descDamaged = desc("state", "damaged",
		"Whether the agent found this part of its state directory damaged at start and enforces fail-closed "+
			"until a policy is applied (1) or not (0).", "part")
	descBuildInfo = desc("", "build_info",
		"Build information of the agent; the value is always 1.", "version", "goversion")
)

// Collector is a prometheus.Collector that reads a Source at each scrape.
type Collector struct {
	src       Source
	buildInfo prometheus.Metric

	applyDuration prometheus.Histogram
	applies       *prometheus.CounterVec
	errors        *prometheus.CounterVec

	mu sync.Mutex // serialises scrapes: a Source need not be safe for concurrent reads
}

// New returns a Collector that reads src at each scrape and reports version in ztgate_build_info.
func New(src Source, version string) *Collector {
	c := &Collector{
		src: src,
		buildInfo: prometheus.MustNewConstMetric(descBuildInfo, prometheus.GaugeValue, 1,
			version, runtime.Version()),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace,
			Subsystem: "policy",
			Name:      "apply_duration_seconds",
			Help:      "Time taken to apply a policy to the datapath, accepted or rejected.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5,
				10},
		}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Subsystem: "policy",
			Name:      "applies_total",
			Help:      "Policy applies, by whether the policy was accepted or rejected.",
		}, []string{"result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Subsystem: "collector",
			Name:      "errors_total",
			Help:      "Failed reads of the datapath state during scrapes, by what was read.",
		}, []string{"source"}),
	}
	c.applies.WithLabelValues("accepted")
	c.applies.WithLabelValues("rejected")
	for _, s := range sources {
		c.errors.WithLabelValues(s)
	}
	return c
}

// ObserveApply records one policy apply: whether it was accepted and how long it took.
func (c *Collector) ObserveApply(accepted bool, d time.Duration) {
	result := "rejected"
	if accepted {
		result = "accepted"
	}
	c.applies.WithLabelValues(result).Inc()
	c.applyDuration.Observe(d.Seconds())
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descPackets, descBytes, descSegPackets, descSegBytes,
		descEvEmitted, descEvLost, descEvSuppressed, descEvRead, descEvDropped,
		descMapEntries, descMapCapacity, descFlows, descFlowCapacity, descRevision, descAttached, descIfState,
		descIfAttaches, descIfRepairs,
		descDamaged, descBuildInfo,
	} {
		ch <- d
	}
	c.applyDuration.Describe(ch)
	c.applies.Describe(ch)
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector. A failed Source read yields an invalid metric for
// the families it feeds (so the scrape reports the error) and the other families as usual.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()

	st := c.src.State()
	c.collectCounters(ch)
	c.collectSegments(ch, st)
	c.collectEvents(ch, st)
	c.collectMaps(ch)
	c.collectFlows(ch)

	ch <- prometheus.MustNewConstMetric(descRevision, prometheus.GaugeValue, float64(st.Revision))
	for _, ifc := range st.Interfaces {
		v := 0.0
		if ifc.Attached {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descAttached, prometheus.GaugeValue, v, ifc.Name, ifc.Mode)
		if ifc.State == "" {
			continue
		}
		for _, s := range InterfaceStates {
			v := 0.0
			if s == ifc.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descIfState, prometheus.GaugeValue, v, ifc.Name, s)
		}
		ch <- counter(descIfAttaches, ifc.Attaches, ifc.Name)
		ch <- counter(descIfRepairs, ifc.Repairs, ifc.Name)
	}
	for part, damaged := range st.Damaged {
		v := 0.0
		if damaged {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descDamaged, prometheus.GaugeValue, v, part)
	}
	ch <- c.buildInfo

	c.applyDuration.Collect(ch)
	c.applies.Collect(ch)
	c.errors.Collect(ch) // last: includes the failures of this scrape
}

// fail reports a failed read of source for the families descs.
func (c *Collector) fail(ch chan<- prometheus.Metric, source string, err error, descs ...*prometheus.Desc) {
	c.errors.WithLabelValues(source).Inc()
	for _, d := range descs {
		ch <- prometheus.NewInvalidMetric(d, fmt.Errorf("read %s: %w", source, err))
	}
}

func counter(d *prometheus.Desc, v uint64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

// datapathSeries are the meaningful (verdict, reason) pairs: pass/allow, and drop and audit
// for every other reason. Other pairs never count.
var datapathSeries = func() [][2]int {
	out := [][2]int{{int(bpf.VerdictPass), int(bpf.ReasonAllow)}}
	for _, v := range []bpf.Verdict{bpf.VerdictDrop, bpf.VerdictAudit} {
		for r := range bpf.NumReasons {
			if bpf.Reason(r) != bpf.ReasonAllow {
				out = append(out, [2]int{int(v), r})
			}
		}
	}
	return out
}()

func (c *Collector) collectCounters(ch chan<- prometheus.Metric) {
	cnt, err := c.src.DirCounters()
	if err != nil {
		c.fail(ch, srcCounters, err, descPackets, descBytes)
		return
	}
	for d := range bpf.NumDirs {
		ds := bpf.Dir(d).String()
		for _, s := range datapathSeries {
			v, r := bpf.Verdict(s[0]), bpf.Reason(s[1])
			ch <- counter(descPackets, cnt[d][s[0]][s[1]].Packets, ds, v.String(), r.String())
			ch <- counter(descBytes, cnt[d][s[0]][s[1]].Bytes, ds, v.String(), r.String())
		}
	}
}

func (c *Collector) collectSegments(ch chan<- prometheus.Metric, st State) {
	stats, err := c.src.AllDeviceStats()
	if err != nil {
		c.fail(ch, srcDeviceStats, err, descSegPackets, descSegBytes)
		return
	}
	type sums struct {
		packets, bytes [bpf.NumDirs][bpf.NumVerdicts]uint64
	}
	seg := map[string]*sums{}
	for _, name := range st.Segments {
		if name != "" {
			seg[name] = &sums{}
		}
	}
	for dev, s := range stats {
		name := st.Segments[dev]
		if name == "" {
			name = NoSegment
		}
		t := seg[name]
		if t == nil {
			t = &sums{}
			seg[name] = t
		}
		for v := range min(len(s.Packets), bpf.NumVerdicts) {
			t.packets[bpf.DirFromDevice][v] += s.Packets[v]
			t.bytes[bpf.DirFromDevice][v] += s.Bytes[v]
			t.packets[bpf.DirToDevice][v] += s.InPackets[v]
			t.bytes[bpf.DirToDevice][v] += s.InBytes[v]
		}
	}
	// Devices of no segment show as "none" once they have traffic, unless "none" is a segment.
	if t := seg[NoSegment]; t != nil && t.packets == ([bpf.NumDirs][bpf.NumVerdicts]uint64{}) &&
		!declared(st, NoSegment) {
		delete(seg, NoSegment)
	}
	names := make([]string, 0, len(seg))
	for name := range seg {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t := seg[name]
		for d := range bpf.NumDirs {
			ds := bpf.Dir(d).String()
			for v := range bpf.NumVerdicts {
				vs := bpf.Verdict(v).String()
				ch <- counter(descSegPackets, t.packets[d][v], name, ds, vs)
				ch <- counter(descSegBytes, t.bytes[d][v], name, ds, vs)
			}
		}
	}
}

func declared(st State, segment string) bool {
	for _, name := range st.Segments {
		if name == segment {
			return true
		}
	}
	return false
}

func (c *Collector) collectEvents(ch chan<- prometheus.Metric, st State) {
	if ev, err := c.src.EventStats(); err != nil {
		c.fail(ch, srcEventStats, err, descEvEmitted, descEvLost, descEvSuppressed)
	} else {
		ch <- counter(descEvEmitted, ev.Emitted)
		ch <- counter(descEvLost, ev.Lost)
		ch <- counter(descEvSuppressed, ev.Suppressed)
	}
	ch <- counter(descEvRead, st.EventsRead)
	ch <- counter(descEvDropped, st.EventsDropped)
}

func (c *Collector) collectMaps(ch chan<- prometheus.Metric) {
	usage, err := c.src.MapUsage()
	if err != nil {
		c.fail(ch, srcMapUsage, err, descMapEntries, descMapCapacity)
		return
	}
	for _, u := range usage {
		ch <- prometheus.MustNewConstMetric(descMapEntries, prometheus.GaugeValue, float64(u.Entries), u.Map)
		ch <- prometheus.MustNewConstMetric(descMapCapacity, prometheus.GaugeValue, float64(u.Capacity), u.Map)
	}
}

func (c *Collector) collectFlows(ch chan<- prometheus.Metric) {
	fs, err := c.src.FlowStats()
	if err != nil {
		c.fail(ch, srcFlowStats, err, descFlows, descFlowCapacity)
		return
	}
	ch <- prometheus.MustNewConstMetric(descFlows, prometheus.GaugeValue, float64(fs.Entries))
	ch <- prometheus.MustNewConstMetric(descFlowCapacity, prometheus.GaugeValue, float64(fs.Capacity))
}

// Handler serves /metrics from reg, /healthz (always 200 "ok") and /readyz (200 "ready" when
// ready reports true, else 503 "not ready").
func Handler(reg *prometheus.Registry, ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ready == nil || !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready"))
			return
		}
		_, _ = w.Write([]byte("ready"))
	})
	return mux
}
