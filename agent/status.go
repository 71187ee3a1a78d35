package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/buildinfo"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/metrics"
	"github.com/ztgate/ztgate/policy"
)

// status is the agent's state; parts that cannot be read are left out (and logged).
func (a *Agent) status() api.Status {
	cur := a.cur.Load()
	st := api.Status{
		Version: buildinfo.Version(),
		PID:     os.Getpid(),
		Started: a.started.UTC(),
		Ready:   a.isReady(),
		Policy:  cur.meta,
	}
	st.Interfaces = a.interfaces()
	if us, err := a.mapUsage(); err == nil {
		for _, u := range us {
			st.Maps = append(st.Maps, api.MapUsage{Map: u.Map, Entries: u.Entries, Capacity: u.Capacity})
		}
	} else {
		a.log.Warn("status: map usage", "err", err)
	}
	if fs, err := a.flowStats(); err == nil {
		st.Flows = fs
	} else {
		a.log.Warn("status: flow table", "err", err)
	}
	if es, err := a.maps.EventStats(); err == nil {
		st.Events = api.EventStats{Emitted: es.Emitted, Lost: es.Lost, Suppressed: es.Suppressed}
	} else {
		a.log.Warn("status: event counters", "err", err)
	}
	st.Events.Read = a.events.read.Load()
	st.Events.Dropped = a.events.dropped.Load()
	st.Damage = a.damage.report()
	return st
}

func deviceState(rec bpf.DevRec) string {
	switch {
	case rec.Flags&bpf.DevQuarantined != 0:
		return "quarantined"
	case rec.Flags&bpf.DevAudit != 0:
		return "audit"
	default:
		return "enforce"
	}
}

// devices lists the devices of the policy in force with their counters.
func (a *Agent) devices() ([]api.Device, error) {
	out := []api.Device{}
	if cur := a.cur.Load(); cur.pol == nil || cur.snap == nil {
		return out, nil
	}
	stats, err := a.maps.AllDeviceStats()
	if err != nil {
		return nil, err
	}
	flows, err := a.maps.FlowCounts()
	if err != nil {
		return nil, err
	}
	a.polMu.RLock()
	defer a.polMu.RUnlock()
	cur := a.cur.Load() // under the lock: its metadata and content agree
	if cur.pol == nil || cur.snap == nil {
		return out, nil
	}
	for _, d := range cur.pol.Spec.Devices {
		rec, ok := cur.snap.Devices[policy.DevKey(mustParseMAC(d.MAC))]
		if !ok {
			continue
		}
		s := stats[rec.DevId]
		dev := api.Device{
			Name: d.Name, ID: rec.DevId, Segment: d.Segment, MAC: d.MAC, IPv4: d.IPv4, IPv6: d.IPv6, Port: d.Port,
			State:   deviceState(rec),
			Allowed: api.Traffic{Packets: s.Packets[bpf.VerdictPass], Bytes: s.Bytes[bpf.VerdictPass]},
			Dropped: api.Traffic{Packets: s.Packets[bpf.VerdictDrop], Bytes: s.Bytes[bpf.VerdictDrop]},
			Audited: api.Traffic{Packets: s.Packets[bpf.VerdictAudit], Bytes: s.Bytes[bpf.VerdictAudit]},
			Inbound: api.Verdicts{
				Allowed: api.Traffic{Packets: s.InPackets[bpf.VerdictPass], Bytes: s.InBytes[bpf.VerdictPass]},
				Dropped: api.Traffic{Packets: s.InPackets[bpf.VerdictDrop], Bytes: s.InBytes[bpf.VerdictDrop]},
				Audited: api.Traffic{Packets: s.InPackets[bpf.VerdictAudit], Bytes: s.InBytes[bpf.VerdictAudit]},
			},
			Flows:    flows[rec.DevId],
			LastSeen: ktimeToWall(s.LastSeen),
		}
		out = append(out, dev)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// flowTop is how many of the devices holding the most flows the status lists.
const flowTop = 5

// flowStats is the fill level of the flow table, naming the devices that hold the most flows.
func (a *Agent) flowStats() (*api.FlowStats, error) {
	fs, err := a.maps.FlowStats(flowTop)
	if err != nil {
		return nil, err
	}
	out := &api.FlowStats{Entries: fs.Entries, Capacity: fs.Capacity, Quota: a.dp.Config().FlowQuota,
		Devices: fs.Devices}
	names := a.deviceNames()
	for _, d := range fs.Top {
		out.Top = append(out.Top, api.DeviceFlows{Device: names[d.DevID], DevID: d.DevID, Flows: d.Flows})
	}
	return out, nil
}

// deviceNames returns the names of the devices of the policy in force by dev_id.
func (a *Agent) deviceNames() map[uint32]string {
	a.polMu.RLock()
	defer a.polMu.RUnlock()
	names := map[uint32]string{}
	if cur := a.cur.Load(); cur != nil && cur.snap != nil {
		for id, name := range cur.snap.DeviceNames {
			names[id] = name
		}
	}
	return names
}

// errNoDevice is returned for a device name the policy in force does not have.
var errNoDevice = errors.New("no such device in the policy in force")

// flows lists the flow table, only the flows charged to device when it is not empty, at most
// limit of them (0: all).
func (a *Agent) flows(device string, limit int) ([]api.Flow, error) {
	names := a.deviceNames()
	var want uint32
	if device != "" {
		for id, name := range names {
			if name == device {
				want = id
			}
		}
		if want == 0 {
			return nil, fmt.Errorf("%w: %q", errNoDevice, device)
		}
	}
	now, err := maps.Now()
	if err != nil {
		return nil, err
	}
	all, err := a.maps.Flows(now, 0)
	if err != nil {
		return nil, err
	}
	out := []api.Flow{}
	for _, f := range all {
		if want != 0 && f.DevID != want {
			continue
		}
		if limit > 0 && len(out) >= limit {
			break
		}
		dir := bpf.DirFromDevice
		if f.Inbound {
			dir = bpf.DirToDevice
		}
		out = append(out, api.Flow{Opener: f.Opener.String(), Responder: f.Responder.String(),
			Proto: protoName(f.Proto), Direction: dir.String(), Device: names[f.DevID], DevID: f.DevID,
			Revision: f.Revision, Idle: f.Idle})
	}
	return out, nil
}

// protoName names the IP protocols of the flow table.
func protoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 58:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}

func mustParseMAC(s string) net.HardwareAddr {
	m, _ := net.ParseMAC(s) // validated by policy.Parse
	return m
}

// source is the metrics collector's view of the agent: it reads the maps at scrape time.
type source struct{ a *Agent }

var _ metrics.Source = source{}

func (s source) DirCounters() ([bpf.NumDirs][bpf.NumVerdicts][bpf.NumReasons]bpf.Counter, error) {
	return s.a.maps.DirCounters()
}
func (s source) FlowStats() (maps.FlowStats, error)               { return s.a.maps.FlowStats(0) }
func (s source) AllDeviceStats() (map[uint32]bpf.DevStats, error) { return s.a.maps.AllDeviceStats() }
func (s source) EventStats() (bpf.EventStats, error)              { return s.a.maps.EventStats() }
func (s source) MapUsage() ([]maps.MapUsage, error)               { return s.a.mapUsage() }

func (s source) State() metrics.State {
	s.a.polMu.RLock()
	cur := s.a.cur.Load()
	st := metrics.State{Revision: cur.meta.Revision, Segments: map[uint32]string{}}
	if cur.snap != nil {
		for _, rec := range cur.snap.Devices {
			st.Segments[rec.DevId] = cur.snap.SegmentNames[rec.Segment]
		}
	}
	s.a.polMu.RUnlock()
	for _, ifc := range s.a.interfaces() {
		st.Interfaces = append(st.Interfaces, metrics.Interface{Name: ifc.Name, Mode: ifc.Mode, Attached: ifc.Attached,
			State: ifc.State, Attaches: ifc.Attaches, Repairs: ifc.Repairs})
	}
	st.EventsRead = s.a.events.read.Load()
	st.EventsDropped = s.a.events.dropped.Load()
	st.Damaged = map[string]bool{}
	for _, p := range damageParts {
		st.Damaged[p] = s.a.damage.has(p)
	}
	return st
}

// mapUsage is the fill level of the maps: the policy maps from the snapshot in force (the
// maps hold exactly it), the datapath's tables counted in the kernel.
func (a *Agent) mapUsage() ([]maps.MapUsage, error) {
	a.polMu.RLock()
	out := maps.PolicyUsage(a.cur.Load().snap, a.lim)
	a.polMu.RUnlock()
	tables, err := a.maps.TableUsage()
	if err != nil {
		return nil, err
	}
	return append(out, tables...), nil
}
