package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// forbiddenPort is where the devices' forbidden datagrams go: no device may send there.
const forbiddenPort = 22

// minProbes is how many forbidden frames a device sends once its re-created link is up.
const minProbes = 1000

// counter counts the datagrams an upstream port receives.
type counter struct {
	n    atomic.Int64
	conn net.PacketConn
	wg   sync.WaitGroup
}

// countUpstream counts the datagrams the upstream receives on udp port.
func countUpstream(t *testing.T, tp *testenv.Topology, port int) *counter {
	t.Helper()
	c, err := tp.Upstream.NS.ListenPacket("udp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	k := &counter{conn: c}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
			k.n.Add(1)
		}
	}()
	t.Cleanup(func() { c.Close(); k.wg.Wait() })
	return k
}

// prober sends a forbidden frame from a device as fast as its link takes them, from the moment
// the link is up; sent counts the frames the kernel accepted.
type prober struct {
	sent atomic.Int64
	stop chan struct{}
	done chan struct{}
}

// probe starts sending frame on d's interface (looked up now: call it once the interface
// exists, up or down).
func probe(t *testing.T, d *testenv.Device, frame []byte) *prober {
	t.Helper()
	s, err := d.NS.NewSender(d.Ifname)
	if err != nil {
		t.Fatal(err)
	}
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer s.Close()
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			if s.Send(frame) == nil { // ENETDOWN until the link is up
				p.sent.Add(1)
			} else {
				time.Sleep(50 * time.Microsecond)
			}
		}
	}()
	t.Cleanup(p.end)
	return p
}

// end stops the prober (once) and waits for it.
func (p *prober) end() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// waitSent waits until the prober sent n frames, then stops it.
func (p *prober) waitSent(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for p.sent.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d forbidden frames sent", p.sent.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.end()
}

// forbiddenFrame is a datagram from d to the upstream's forbiddenPort through d's gateway port.
func forbiddenFrame(tp *testenv.Topology, d *testenv.Device, gwMAC net.HardwareAddr) []byte {
	return frames.UDP(frames.Host{MAC: d.MAC, IP: d.IPv4[0]}, frames.Host{MAC: gwMAC, IP: tp.Upstream.IPv4},
		4000, forbiddenPort, []byte("forbidden"))
}

// waitIface polls the status until interface name satisfies ok.
func (l *lab) waitIface(name, what string, ok func(api.Interface) bool) api.Interface {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, ifc := range l.status().Interfaces {
			if ifc.Name == name && ok(ifc) {
				return ifc
			}
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: interface %s: %+v\nagent log:\n%s", what, name, l.status().Interfaces, l.agent.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// attachedAt waits until the agent attached to name at ifindex idx.
func (l *lab) attachedAt(name string, idx int) api.Interface {
	l.t.Helper()
	return l.waitIface(name, "attach", func(ifc api.Interface) bool {
		return ifc.Attached && ifc.State == "attached" && ifc.Ifindex == idx
	})
}

// checkIfaceMetrics checks the interface's state and attach count in the metrics.
func (l *lab) checkIfaceMetrics(name, state string, attaches int) {
	l.t.Helper()
	_, expo := l.scrape("/metrics")
	if v := metricValue(l.t, expo, fmt.Sprintf(`ztgate_interface_state{interface=%q,state=%q}`, name, state)); v != 1 {
		l.t.Errorf("ztgate_interface_state{interface=%q,state=%q} = %v, want 1", name, state, v)
	}
	if attaches >= 0 {
		series := fmt.Sprintf(`ztgate_interface_attaches_total{interface=%q}`, name)
		if v := metricValue(l.t, expo, series); v != float64(attaches) {
			l.t.Errorf("ztgate_interface_attaches_total{interface=%q} = %v, want %d\nagent log:\n%s", name, v, attaches,
				l.agent.log.String())
		}
	}
}

// TestAgentInterfaceRecreated: under a running agent, a protected port is deleted and re-created
// under the same name (a new ifindex). Status and metrics show it absent, then attached again;
// the agent attaches while the link is still down, and of the forbidden frames the device sends
// from the moment the link is up none is delivered; the device's allowed flow passes again (the
// policy binds it to the new port).
func TestAgentInterfaceRecreated(t *testing.T) {
	for _, mode := range []string{"native", "generic"} {
		t.Run(mode, func(t *testing.T) { testInterfaceRecreated(t, mode) })
	}
}

// testInterfaceRecreated is TestAgentInterfaceRecreated in XDP mode mode.
func testInterfaceRecreated(t *testing.T, mode string) {
	l := newLab(t, func(c *agent.Config) { c.XDPMode = mode })
	tp := l.tp
	f := listenFlows(t, tp)
	bad := countUpstream(t, tp, forbiddenPort)
	cam, attacker := tp.Device("cam"), tp.Device("attacker")

	// The forbidden frames are delivered without the agent: the count below proves something.
	p := probe(t, cam, forbiddenFrame(tp, cam, cam.Port.MAC))
	p.waitSent(t, 50)
	waitCount(t, &bad.n, 1, "forbidden frames without the agent")
	delivered := bad.n.Load()

	l.run(basePolicy(t, tp))
	f.probe(tp, 5*time.Millisecond)
	f.waitAllowed("policy")
	if bad.n.Load() != delivered {
		t.Fatalf("%d forbidden frames delivered after the sender stopped", bad.n.Load()-delivered)
	}

	for _, d := range []*testenv.Device{attacker, cam} {
		before := l.status()
		if err := tp.DeletePort(d); err != nil {
			t.Fatal(err)
		}
		l.waitIface(d.Port.Name, "deleted", func(ifc api.Interface) bool { return ifc.State == "absent" && !ifc.Attached })
		l.checkIfaceMetrics(d.Port.Name, "absent", 1)
		if st := l.status(); st.Ready != true {
			t.Errorf("%s absent: status not ready: an absent interface must not make the agent unready", d.Port.Name)
		}

		var p *prober
		err := tp.RecreatePort(d, func(idx int) error {
			l.attachedAt(d.Port.Name, idx) // attached while the link is down
			p = probe(t, d, forbiddenFrame(tp, d, d.Port.MAC))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		p.waitSent(t, minProbes)
		f.waitAllowed(d.Name + " re-created")
		if n := bad.n.Load() - delivered; n != 0 {
			t.Fatalf("%s re-created: %d of %d forbidden frames delivered", d.Name, n, p.sent.Load())
		}
		f.checkNoLeak(d.Name + " re-created")
		ifc := l.attachedAt(d.Port.Name, d.Port.Index)
		if ifc.Attaches != 2 || ifc.Mode != mode {
			t.Errorf("%s: %d attaches in mode %s, want 2 in mode %s", d.Port.Name, ifc.Attaches, ifc.Mode, mode)
		}
		l.checkIfaceMetrics(d.Port.Name, "attached", 2)
		after := l.status()
		// The policy in force binds the device to the new port: one more revision.
		if after.Policy.Revision != before.Policy.Revision+1 || !after.Ready {
			t.Errorf("%s re-created: revision %d (was %d), ready %v", d.Name, after.Policy.Revision,
				before.Policy.Revision, after.Ready)
		}
		t.Logf("%s re-created (ifindex %d): %d forbidden frames sent from link up, 0 delivered", d.Port.Name,
			d.Port.Index, p.sent.Load())
	}
	if !strings.Contains(l.agent.log.String(), "attached (re-created interface)") {
		t.Errorf("agent log:\n%s", l.agent.log.String())
	}
}

// waitCount waits until c reaches n.
func waitCount(t *testing.T, c *atomic.Int64, n int64, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want at least %d", what, c.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lateDevice is the spec of a device added while the agent runs, and its policy entry (allowed:
// udp 7000 to the upstream), bound to port.
func lateDevice(tp *testenv.Topology, port string) (testenv.DeviceSpec, policy.Device) {
	spec := testenv.DeviceSpec{Name: "late", MAC: net.HardwareAddr{0x02, 0x7a, 0x64, 0x00, 0x00, 0x40},
		IPv4: []netip.Addr{netip.MustParseAddr("10.99.0.40")}, IPv6: []netip.Addr{}}
	pd := policy.Device{Name: "late", MAC: spec.MAC.String(), IPv4: []string{"10.99.0.40"}, Port: port,
		Allow: []policy.Rule{{To: policy.Target{CIDR: tp.Config().UplinkIPv4.String()}, Proto: "udp",
			Ports: []policy.PortRange{{Lo: 7000, Hi: 7000}}}}}
	return spec, pd
}

// TestAgentInterfaceLate: the agent protects the ports by a pattern, or by their names with one
// absent at start; a port created after the agent started (named in the policy already) is
// attached while it is down; its forbidden frames are not delivered, its allowed flow passes.
func TestAgentInterfaceLate(t *testing.T) {
	for _, byName := range []bool{false, true} {
		t.Run(map[bool]string{false: "pattern", true: "absent at start"}[byName], func(t *testing.T) {
			testInterfaceLate(t, byName)
		})
	}
}

// testInterfaceLate is TestAgentInterfaceLate with the ports configured by name or by pattern.
func testInterfaceLate(t *testing.T, byName bool) {
	tp := topology(t)
	port := fmt.Sprintf("zt%sg%d", tp.ID, len(tp.Devices)) // the next device's port
	l := newLabOn(t, tp, func(c *agent.Config) {
		if byName {
			c.Interfaces = append(c.Interfaces, port)
		} else {
			c.Interfaces = []string{"zt" + tp.ID + "g[0-9]*"}
		}
	})
	f := listenFlows(t, tp)
	bad := countUpstream(t, tp, forbiddenPort)
	spec, pd := lateDevice(tp, port)
	pol := basePolicy(t, tp)
	pol.Spec.Devices = append(pol.Spec.Devices, pd)

	v1, _ := binaries(t)
	l.start(v1)
	st := l.status()
	if byName {
		absent := st.Interfaces[len(st.Interfaces)-1]
		if absent.Name != port || absent.State != "absent" || absent.Attached {
			t.Fatalf("the absent port: %+v", absent)
		}
		l.checkIfaceMetrics(port, "absent", 0)
		st.Interfaces = st.Interfaces[:len(st.Interfaces)-1]
	}
	checkAttached(t, st, len(tp.Devices))
	// The policy names a port that does not exist yet: it matches the pattern, so it is
	// accepted, and the device is bound to no port until it appears.
	l.must("policy", "apply", l.writePolicy("p.yaml", pol))
	f.probe(tp, 5*time.Millisecond)
	f.waitAllowed("policy")

	var p *prober
	late, err := tp.AddDeviceHeld(spec, func(idx int) error {
		l.attachedAt(port, idx)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = p
	p = probe(t, late, forbiddenFrame(tp, late, late.Port.MAC))
	p.waitSent(t, minProbes)
	if !sendOnce(t, late, tp.Upstream.IPv4, 7000) {
		t.Errorf("the late device's allowed flow does not pass:\n%s", l.agent.log.String())
	}
	if n := bad.n.Load(); n != 0 {
		t.Fatalf("%d of %d forbidden frames of the late device delivered", n, p.sent.Load())
	}
	f.checkNoLeak("late device")
	l.checkIfaceMetrics(port, "attached", 1)
	// VLAN tags stay in the frames the program reads: the agent turned the offload off.
	checkVLANOffloadOff(t, tp, port)
	checkVLANOffloadOff(t, tp, tp.Devices[0].Port.Name)
}

// checkVLANOffloadOff checks that no VLAN offload is on for the gateway port.
func checkVLANOffloadOff(t *testing.T, tp *testenv.Topology, port string) {
	t.Helper()
	var on []string
	if err := tp.Gateway.Do(func() (err error) {
		on, err = loader.VLANOffloadsOn(port)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(on) > 0 {
		t.Errorf("%s: %v on under the agent", port, on)
	}
}

// TestAgentBridgePort: the agent protects every port of a bridge; a port added to the bridge
// while the agent runs is attached while it is down; its forbidden frames are not delivered, its
// allowed flow passes.
func TestAgentBridgePort(t *testing.T) {
	testenv.RequirePriv(t)
	tp := testenv.New(t, testenv.Config{
		Devices:  []testenv.DeviceSpec{{Name: "cam"}, {Name: "sensor"}, {Name: "broker"}, {Name: "attacker"}},
		Upstream: true, Bridge: true,
	})
	l := newLabOn(t, tp, func(c *agent.Config) { c.Interfaces, c.Bridges = nil, []string{tp.Bridge.Name} })
	f := listenFlows(t, tp)
	bad := countUpstream(t, tp, forbiddenPort)
	port := fmt.Sprintf("zt%sg%d", tp.ID, len(tp.Devices))
	spec, pd := lateDevice(tp, port)
	pol := basePolicy(t, tp)

	v1, _ := binaries(t)
	l.start(v1)
	checkAttached(t, l.status(), len(tp.Devices))
	l.must("policy", "apply", l.writePolicy("p.yaml", pol))
	f.probe(tp, 5*time.Millisecond)
	f.waitAllowed("policy")

	late, err := tp.AddDeviceHeld(spec, func(idx int) error {
		l.attachedAt(port, idx)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	p := probe(t, late, forbiddenFrame(tp, late, tp.Bridge.MAC))
	p.waitSent(t, minProbes)
	if n := bad.n.Load(); n != 0 {
		t.Fatalf("%d of %d forbidden frames of the new bridge port delivered", n, p.sent.Load())
	}
	// Not in the policy: nothing of it passes; once it is, its allowed flow does.
	if sendOnce(t, late, tp.Upstream.IPv4, 7000) {
		t.Error("a device of no policy passes on a new bridge port")
	}
	pol.Spec.Devices = append(pol.Spec.Devices, pd)
	l.must("policy", "apply", l.writePolicy("p2.yaml", pol))
	if !sendOnce(t, late, tp.Upstream.IPv4, 7000) {
		t.Errorf("the new bridge port's allowed flow does not pass:\n%s", l.agent.log.String())
	}
	f.checkNoLeak("bridge port")
	l.checkIfaceMetrics(port, "attached", 1)
}

// TestAgentTamper: `ip link set dev X xdp off` cannot remove the agent's program (the kernel
// refuses it for a bpf_link); a removed link pin is detected and pinned again (alert in the log,
// the repair in status and metrics), so enforcement survives the agent being killed afterwards.
func TestAgentTamper(t *testing.T) {
	l := newLab(t, nil)
	tp := l.tp
	l.run(basePolicy(t, tp))
	f := l.probeFlows(5*time.Millisecond, "policy")
	port := tp.Device("attacker").Port

	for _, off := range []string{"xdp", "xdpgeneric", "xdpdrv"} {
		out, err := exec.Command("nsenter", "--net="+tp.Gateway.Path(), "ip", "link", "set", "dev", port.Name,
			off, "off").CombinedOutput()
		t.Logf("ip link set dev %s %s off: %v: %s", port.Name, off, err, strings.TrimSpace(string(out)))
		if off == "xdp" && err == nil {
			t.Errorf("ip link set dev %s xdp off was not refused", port.Name)
		}
		if !l.attachedAt(port.Name, port.Index).Attached {
			t.Fatalf("%s off detached the program", off)
		}
	}
	f.waitAllowed("xdp off refused")
	f.checkNoLeak("xdp off refused")

	pin := filepath.Join(loader.LayoutDir(l.pinDir), "link-"+port.Name)
	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	ifc := l.waitIface(port.Name, "pin removed", func(ifc api.Interface) bool { return ifc.Repairs == 1 })
	if _, err := os.Stat(pin); err != nil || !ifc.Attached {
		t.Fatalf("pin %s: %v; %+v", pin, err, ifc)
	}
	if !strings.Contains(l.agent.log.String(), "pin of a protected interface's link was removed: pinned again") {
		t.Errorf("no alert in the agent log:\n%s", l.agent.log.String())
	}
	_, expo := l.scrape("/metrics")
	if v := metricValue(t, expo, fmt.Sprintf(`ztgate_interface_repairs_total{interface=%q}`, port.Name)); v != 1 {
		t.Errorf("ztgate_interface_repairs_total = %v, want 1", v)
	}
	// Someone detaches the program toward devices (no link event follows): the agent's check of
	// the TC programs attaches it again.
	tcPin := filepath.Join(loader.LayoutDir(l.pinDir), "tc-"+port.Name)
	tl, err := link.LoadPinnedLink(tcPin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tl.Detach(); err != nil {
		t.Fatal(err)
	}
	tl.Close()
	ifc = l.waitIface(port.Name, "tc detached", func(ifc api.Interface) bool { return ifc.Repairs == 2 })
	if !ifc.Attached || !strings.Contains(l.agent.log.String(), "TC toward devices) is gone") {
		t.Errorf("tc detached: %+v; agent log:\n%s", ifc, l.agent.log.String())
	}
	f.waitAllowed("tc attached again")
	f.checkNoLeak("tc attached again")
	l.agent.kill()
	lk, err := tp.Gateway.Netlink().LinkByIndex(port.Index)
	if err != nil {
		t.Fatal(err)
	}
	if x := lk.Attrs().Xdp; x == nil || !x.Attached {
		t.Fatalf("the program went with the agent: %+v", x)
	}
	f.waitAllowed("agent killed")
	f.checkNoLeak("agent killed")
}
