package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// gateway is a topology with the datapath attached to every device port.
type gateway struct {
	t    *testing.T
	tp   *testenv.Topology
	dp   *loader.Datapath
	maps *maps.Maps
	ev   *maps.EventReader
	rev  uint64
	last *policy.Snapshot // the snapshot applied last: devices keep their ids (and flows) over it
}

// pinDir is a fresh, unique pin directory name in bpffs.
func pinDir() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return filepath.Join("/sys/fs/bpf", "zt-e2e-"+hex.EncodeToString(b[:]))
}

// topology: cam, sensor, broker and attacker devices plus an upstream server.
func topology(t *testing.T) *testenv.Topology {
	testenv.RequirePriv(t)
	return testenv.New(t, testenv.Config{
		Devices:  []testenv.DeviceSpec{{Name: "cam"}, {Name: "sensor"}, {Name: "broker"}, {Name: "attacker"}},
		Upstream: true,
	})
}

// linkLocal is the device's IPv6 link-local address (its kernel sends ND from it).
func linkLocal(t *testing.T, d *testenv.Device) netip.Addr {
	t.Helper()
	l, err := d.NS.Netlink().LinkByIndex(d.Ifindex)
	if err != nil {
		t.Fatal(err)
	}
	as, err := d.NS.Netlink().AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() {
			return ip
		}
	}
	t.Fatalf("%s has no link-local address", d.Name)
	return netip.Addr{}
}

// device returns the policy entry binding d (MAC, addresses with its link-local, gateway port).
func device(t *testing.T, d *testenv.Device, allow ...policy.Rule) policy.Device {
	pd := policy.Device{Name: d.Name, MAC: d.MAC.String(), Port: d.Port.Name, Allow: allow}
	for _, a := range d.IPv4 {
		pd.IPv4 = append(pd.IPv4, a.String())
	}
	for _, a := range append(d.IPv6, linkLocal(t, d)) {
		pd.IPv6 = append(pd.IPv6, a.String())
	}
	return pd
}

// basePolicy: cam may reach the upstream subnet on tcp/udp 7000 and icmp; sensor may send
// udp 7001 to broker; broker and attacker have no rules.
func basePolicy(t *testing.T, tp *testenv.Topology) *policy.Policy {
	cfg := tp.Config()
	up4 := cfg.UplinkIPv4.String()
	up6 := cfg.UplinkIPv6.String()
	p := &policy.Policy{APIVersion: policy.APIVersion, Kind: policy.Kind, Metadata: policy.Metadata{Name: "e2e"}}
	p.Spec.Gateway = policy.Gateway{IPv4: []string{cfg.GatewayIPv4.String()}, IPv6: []string{cfg.GatewayIPv6.String()},
		Services: []policy.Service{policy.ServiceDNS}}
	port := func(n uint16) []policy.PortRange { return []policy.PortRange{{Lo: n, Hi: n}} }
	cam := device(t, tp.Device("cam"),
		policy.Rule{To: policy.Target{CIDR: up4}, Proto: "tcp", Ports: port(7000)},
		policy.Rule{To: policy.Target{CIDR: up6}, Proto: "tcp", Ports: port(7000)},
		policy.Rule{To: policy.Target{CIDR: up4}, Proto: "udp", Ports: port(7000)},
		policy.Rule{To: policy.Target{CIDR: up6}, Proto: "udp", Ports: port(7000)},
		policy.Rule{To: policy.Target{CIDR: up4}, Proto: "icmp"},
		policy.Rule{To: policy.Target{CIDR: up6}, Proto: "icmpv6"},
	)
	sensor := device(t, tp.Device("sensor"),
		policy.Rule{To: policy.Target{Device: "broker"}, Proto: "udp", Ports: port(7001)})
	p.Spec.Devices = []policy.Device{cam, sensor, device(t, tp.Device("broker")), device(t, tp.Device("attacker"))}
	return p
}

// attach loads the datapath in a fresh pin directory, applies p, then attaches to every port
// in the requested mode (the policy is in the maps before any frame is seen).
func attach(t *testing.T, tp *testenv.Topology, mode loader.Mode, p *policy.Policy) *gateway {
	t.Helper()
	dir := pinDir()
	// Registered before Open: a load that fails after pinning maps leaves them behind.
	t.Cleanup(func() {
		if err := loader.Uninstall(dir); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	dp, err := loader.Open(loader.Config{PinDir: dir, Mode: mode, EventBurst: 1 << 30, EventsEnabled: true})
	if err != nil {
		t.Fatalf("open datapath: %+v", err)
	}
	t.Cleanup(func() { _ = dp.Close() })
	m, err := maps.New(dp.Objects(), dp.MapSpecs())
	if err != nil {
		t.Fatal(err)
	}
	ev, err := maps.OpenEvents(dp.Objects())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ev.Close() })
	g := &gateway{t: t, tp: tp, dp: dp, maps: m, ev: ev}
	g.apply(p)
	for _, d := range tp.Devices {
		if err := tp.Gateway.Do(func() error {
			got, err := dp.Attach(d.Port.Name)
			if err == nil && got != mode {
				err = fmt.Errorf("attached in %s mode, asked for %s", got, mode)
			}
			return err
		}); err != nil {
			t.Fatalf("attach %s: %v", d.Port.Name, err)
		}
	}
	return g
}

// apply compiles p (ports resolved in the gateway namespace) and swaps it in.
func (g *gateway) apply(p *policy.Policy) {
	g.t.Helper()
	s, err := g.compile(p)
	if err != nil {
		g.t.Fatal(err)
	}
	if err := g.maps.Apply(s, limits(g.dp)); err != nil {
		g.t.Fatalf("apply: %v", err)
	}
	g.last = s
}

// compile validates and compiles p as the next revision, over the last applied.
func (g *gateway) compile(p *policy.Policy) (*policy.Snapshot, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	g.rev++
	ifindex := func(name string) (uint32, error) {
		idx, err := g.tp.Gateway.LinkIndex(name)
		return uint32(idx), err
	}
	return policy.Compile(p, policy.CompileOptions{Revision: g.rev, Prev: g.last, Ifindex: ifindex})
}

// limits are the map capacities dp was loaded with.
func limits(dp *loader.Datapath) maps.Limits {
	c := dp.Config()
	return maps.Limits{Devices: c.MaxDevices, Addrs: c.MaxAddrs, Rules: c.MaxRules, Prefixes: c.MaxPrefixes}
}

// counter is the (verdict, reason) packet counter summed over CPUs.
func (g *gateway) counter(v bpf.Verdict, r bpf.Reason) uint64 {
	c, err := g.maps.Counters()
	if err != nil {
		g.t.Fatal(err)
	}
	return c[v][r].Packets
}

// waitEvent waits for a drop event with reason r (and, when devID != 0, that device).
func (g *gateway) waitEvent(r bpf.Reason, devID uint32) (bpf.Event, bool) {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		g.ev.SetDeadline(deadline)
		e, err := g.ev.Read()
		if err != nil {
			return e, false
		}
		if bpf.Reason(e.Reason) == r && (devID == 0 || e.DevId == devID) {
			return e, true
		}
	}
	return bpf.Event{}, false
}

// modes runs fn in native and in generic XDP mode.
func modes(t *testing.T, fn func(t *testing.T, mode loader.Mode)) {
	for _, m := range []loader.Mode{loader.ModeNative, loader.ModeGeneric} {
		t.Run(m.String(), func(t *testing.T) { fn(t, m) })
	}
}
