package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/examples"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// Options tune the demo.
type Options struct {
	// Mode is the XDP attach mode (loader.ModeAuto: native, else generic).
	Mode loader.Mode
	// PinDir is the bpffs directory of the datapath's pins; empty: a fresh
	// /sys/fs/bpf/ztgate-demo-<random>. It is removed at the end.
	PinDir string
}

const totalSteps = 7

// Timeouts: generous for what must work, short for what must not (the demo waits that long
// to be sure that nothing came through).
const (
	okTimeout    = 3 * time.Second
	blockTimeout = time.Second
	quietPeriod  = 500 * time.Millisecond
	eventTimeout = 2 * time.Second
)

// Ports of the demo's services.
const (
	portMQTT   = 8883 // thermostat -> cloud, TCP
	portCoAPS  = 5684 // thermostat -> cloud, UDP
	portCoAP   = 5683 // sensors <-> controllers, UDP
	portHTTPS  = 443  // camera -> cloud, TCP
	portSSH    = 22   // camera -> cloud, not allowed
	portDNS    = 53   // gateway service
	spoofSPort = 40000
)

// demo is the state of one run.
type demo struct {
	ctx      context.Context
	out      io.Writer
	opts     Options
	step     int
	failures []string
	cleanups []cleanup

	tp                          *testenv.Topology
	thermo, cam, hvac, intruder *testenv.Device
	cloud                       *testenv.Upstream
	linkLocal                   map[string]netip.Addr // device name -> its IPv6 link-local address
	portLabel                   map[uint32]string     // gateway ifindex -> "zt...g1 (camera's port)"

	snap   *policy.Snapshot
	pinDir string
	dp     *loader.Datapath
	maps   *maps.Maps
	events *maps.EventReader
	others []seenEvent // events read while waiting for another one
}

// seenEvent is a drop event and its decoded frame.
type seenEvent struct {
	ev bpf.Event
	fi frameInfo
}

type cleanup struct {
	what string
	fn   func() error
}

// run is the whole demo: it writes the walkthrough to out and returns nil only if every
// expectation held. Whatever happens (error, panic, ctx cancelled), everything it created is
// removed before it returns.
func run(ctx context.Context, out io.Writer, opts Options) (err error) {
	d := &demo{ctx: ctx, out: out, opts: opts, linkLocal: map[string]netip.Addr{}, portLabel: map[uint32]string{}}
	fmt.Fprintln(out, "ztgate demo: zero-trust enforcement for the devices behind an IoT gateway")
	fmt.Fprintln(out, "Every frame a device sends into the gateway meets an XDP program that checks who sent it")
	fmt.Fprintln(out, "(MAC bound to a gateway port, source address bound to that MAC) and whether the policy")
	fmt.Fprintln(out, "allows where it goes. Everything else is dropped, counted and reported.")
	defer func() {
		if err != nil {
			fmt.Fprintf(out, "\n  !! stopping early: %v\n", err)
		}
		err = errors.Join(err, d.teardown())
		if err == nil && len(d.failures) > 0 {
			err = fmt.Errorf("%d expectation(s) did not hold:\n  - %s", len(d.failures), strings.Join(d.failures, "\n  - "))
		}
		if err == nil {
			fmt.Fprintln(out, "\nAll expectations held.")
		}
	}()
	for _, step := range []func() error{d.buildLab, d.writePolicy, d.loadDatapath, d.allowedTraffic, d.attacks, d.counters} {
		if err := d.interrupted(); err != nil {
			return err
		}
		if err := step(); err != nil {
			return err
		}
	}
	return d.interrupted()
}

// interrupted returns an error once ctx is cancelled (Ctrl-C).
func (d *demo) interrupted() error {
	if d.ctx.Err() != nil {
		return fmt.Errorf("interrupted (%w)", context.Cause(d.ctx))
	}
	return nil
}

func (d *demo) heading(title string) {
	d.step++
	line := fmt.Sprintf("[%d/%d] %s", d.step, totalSteps, title)
	fmt.Fprintf(d.out, "\n%s\n%s\n", line, strings.Repeat("=", len([]rune(line))))
}

func (d *demo) printf(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

// expect reports one expectation: "[ok] what" or "[FAIL] what: why".
func (d *demo) expect(what string, err error) bool {
	if err == nil {
		d.printf("  [ok]   %s\n", what)
		return true
	}
	d.printf("  [FAIL] %s: %v\n", what, err)
	d.failures = append(d.failures, what+": "+err.Error())
	return false
}

// onCleanup registers fn to run at teardown (last registered, first run).
func (d *demo) onCleanup(what string, fn func() error) {
	d.cleanups = append(d.cleanups, cleanup{what, fn})
}

// ---------------------------------------------------------------------------------------------
// Step 1: the lab network.

func (d *demo) buildLab() error {
	d.heading("Build a lab: four devices plugged into a gateway, and a cloud behind it")
	d.printf("Each box is a network namespace, each wire a veth pair (testenv). The devices route\n")
	d.printf("everything, even traffic to each other, through their gateway port.\n\n")
	start := time.Now()
	tp, err := testenv.Build(testenv.Config{
		Devices:  []testenv.DeviceSpec{{Name: "thermostat"}, {Name: "camera"}, {Name: "hvac-ctl"}, {Name: "intruder"}},
		Upstream: true,
	})
	if err != nil {
		return err
	}
	d.tp = tp
	d.onCleanup("removed the lab network (namespaces "+d.nsPattern()+", veths)", tp.Close)
	d.thermo, d.cam, d.hvac, d.intruder = tp.Device("thermostat"), tp.Device("camera"), tp.Device("hvac-ctl"), tp.Device("intruder")
	d.cloud = tp.Upstream
	for _, dev := range tp.Devices {
		ll, err := linkLocal(dev)
		if err != nil {
			return err
		}
		d.linkLocal[dev.Name] = ll
		d.portLabel[uint32(dev.Port.Index)] = fmt.Sprintf("%s (%s's port)", dev.Port.Name, dev.Name)
	}
	d.drawLab()
	d.printf("\n  Built in %v. The intruder is a rogue box someone plugged into a free gateway port:\n", time.Since(start).Round(time.Millisecond))
	d.printf("  the policy will not know it. The camera will later play a compromised device.\n")
	return nil
}

// nsPattern is the glob of the lab's namespace names.
func (d *demo) nsPattern() string { return "zt*-" + d.tp.ID + "*" }

// linkLocal is the IPv6 link-local address of a device (its kernel sends neighbour discovery
// from it, so the policy binds it too).
func linkLocal(dev *testenv.Device) (netip.Addr, error) {
	l, err := dev.NS.Netlink().LinkByIndex(dev.Ifindex)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: %w", dev.Name, err)
	}
	as, err := dev.NS.Netlink().AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: %w", dev.Name, err)
	}
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no IPv6 link-local address", dev.Name)
}

// drawLab prints the topology.
func (d *demo) drawLab() {
	cfg := d.tp.Config()
	var col int // column of the vertical bus
	for _, dev := range d.tp.Devices {
		line := fmt.Sprintf("  %-10s  %s  %-10s  %-11s  --[ %s ]--+", dev.Name, dev.MAC, dev.IPv4[0], dev.IPv6[0], dev.Port.Name)
		col = len([]rune(line)) - 1
		d.printf("%s\n", line)
	}
	bar := func(suffix string) { d.printf("%s|%s\n", strings.Repeat(" ", col), suffix) }
	box := []string{
		"GATEWAY  netns " + d.tp.Gateway.Name(),
		fmt.Sprintf("%s, %s on every device port", cfg.GatewayIPv4, cfg.GatewayIPv6),
		"ztgate XDP program on every device port",
	}
	w := 0
	for _, l := range box {
		w = max(w, len(l))
	}
	w += 4 // "| " + text + " |"
	left := max(col-w/2, 0)
	edge := []rune(strings.Repeat(" ", left) + "+" + strings.Repeat("-", w-2) + "+")
	edge[col] = '+'
	bar("")
	d.printf("%s\n", string(edge))
	for _, l := range box {
		d.printf("%s| %-*s |\n", strings.Repeat(" ", left), w-4, l)
	}
	d.printf("%s\n", string(edge))
	bar(fmt.Sprintf(" uplink %s %s (not filtered)", d.cloud.Uplink.Name, d.cloud.GwIPv4))
	bar("")
	cloud := fmt.Sprintf("CLOUD  netns %s  %s  %s  %s", d.cloud.NS.Name(), d.cloud.MAC, d.cloud.IPv4, d.cloud.IPv6)
	d.printf("%s%s\n", strings.Repeat(" ", max(col-len(cloud)/2, 0)), cloud)
}

// ---------------------------------------------------------------------------------------------
// Step 2: the policy.

func (d *demo) writePolicy() error {
	d.heading("Write the policy: examples/policy.yaml rendered with the lab's MACs, addresses and ports")
	cfg := d.tp.Config()
	site := examples.Site{
		GatewayIPv4: cfg.GatewayIPv4.String(), GatewayIPv6: cfg.GatewayIPv6.String(),
		CloudIPv4: d.cloud.IPv4.String(), CloudIPv6: d.cloud.IPv6.String(),
	}
	for _, dev := range []*testenv.Device{d.thermo, d.cam, d.hvac} { // not the intruder
		sd := examples.Device{Name: dev.Name, MAC: dev.MAC.String(), Port: dev.Port.Name}
		for _, a := range dev.IPv4 {
			sd.IPv4 = append(sd.IPv4, a.String())
		}
		for _, a := range append(slices.Clone(dev.IPv6), d.linkLocal[dev.Name]) {
			sd.IPv6 = append(sd.IPv6, a.String())
		}
		site.Devices = append(site.Devices, sd)
	}
	doc, err := examples.RenderPolicy(site)
	if err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimRight(string(doc), "\n"), "\n") {
		d.printf("  | %s\n", l)
	}
	d.printf("\n")

	p, err := policy.Parse("examples/policy.yaml (rendered)", doc)
	if !d.expect("parsed (strict YAML: unknown fields, bad values and duplicates are errors)", err) {
		return err
	}
	if err := p.Validate(); !d.expect("validated", err) {
		return err
	}
	// Ports are names: compile resolves them to ifindexes in the gateway's namespace.
	s, err := policy.Compile(p, policy.CompileOptions{Revision: 1, Ifindex: func(name string) (uint32, error) {
		idx, err := d.tp.Gateway.LinkIndex(name)
		return uint32(idx), err
	}})
	if !d.expect("compiled into map entries", err) {
		return err
	}
	d.snap = s

	rulesets := map[uint32]bool{s.Config.QuarantineRuleset: true}
	for _, rec := range s.Devices {
		rulesets[rec.Ruleset] = true
	}
	d.printf("\n  revision %d: %d devices, %d rule sets, %d rules, %d CIDR prefixes, %d bound addresses\n",
		s.Revision, len(s.Devices), len(rulesets), len(s.Rules), len(s.Prefixes), len(s.Addrs))
	d.printf("  %-6s  %-10s  %-11s  %-10s  %-24s  %s\n", "dev_id", "device", "segment", "rule set", "port (ifindex)", "addresses")
	recs := make([]bpf.DevRec, 0, len(s.Devices))
	for _, rec := range s.Devices {
		recs = append(recs, rec)
	}
	slices.SortFunc(recs, func(a, b bpf.DevRec) int { return int(a.DevId) - int(b.DevId) })
	for _, rec := range recs {
		name := s.DeviceNames[rec.DevId]
		port := fmt.Sprintf("%s (%d)", d.tp.Device(name).Port.Name, rec.Ifindex)
		d.printf("  %-6d  %-10s  %-11s  %-10d  %-24s  %d IPv4, %d IPv6\n",
			rec.DevId, name, s.SegmentNames[rec.Segment], rec.Ruleset, port, rec.N_v4, rec.N_v6)
	}
	d.printf("  (quarantine rule set %d; gateway %s, %s; intruder: not listed)\n",
		s.Config.QuarantineRuleset, cfg.GatewayIPv4, cfg.GatewayIPv6)
	return nil
}

// ---------------------------------------------------------------------------------------------
// Step 3: the datapath.

func (d *demo) loadDatapath() error {
	d.heading("Load the XDP datapath, install the policy, then attach to every device port")
	d.pinDir = d.opts.PinDir
	if d.pinDir == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		d.pinDir = "/sys/fs/bpf/ztgate-demo-" + hex.EncodeToString(b[:])
	}
	// Registered before Open: a half-done Open may already have created pins.
	d.onCleanup("uninstalled the datapath (detached XDP, removed "+d.pinDir+")", func() error { return loader.Uninstall(d.pinDir) })
	cfg := loader.DefaultConfig()
	cfg.PinDir, cfg.Mode = d.pinDir, d.opts.Mode
	cfg.EventBurst = 1 << 20 // report every drop (the default rate-limits events per device and reason)
	dp, err := loader.Open(cfg)
	if err != nil {
		return err
	}
	d.dp = dp
	d.onCleanup("closed the datapath", dp.Close)
	d.printf("  loaded the program, maps pinned in %s\n", dp.Dir())

	m, err := maps.New(dp.Objects(), dp.MapSpecs())
	if err != nil {
		return err
	}
	d.maps = m
	d.onCleanup("released the policy maps", m.Close)
	ev, err := maps.OpenEvents(dp.Objects())
	if err != nil {
		return err
	}
	d.events = ev
	d.onCleanup("closed the event reader", ev.Close)

	c := dp.Config()
	lim := maps.Limits{Devices: c.MaxDevices, Addrs: c.MaxAddrs, Rules: c.MaxRules, Prefixes: c.MaxPrefixes}
	if err := m.Apply(d.snap, lim); err != nil {
		return err
	}
	rev, err := m.ActiveRevision()
	if err == nil && rev != d.snap.Revision {
		err = fmt.Errorf("active revision %d, want %d", rev, d.snap.Revision)
	}
	d.expect(fmt.Sprintf("policy revision %d is active in the maps before any port is attached (fail closed)", rev), err)

	for _, dev := range d.tp.Devices {
		var mode loader.Mode
		err := d.tp.Gateway.Do(func() error { // interface names are looked up in the gateway's namespace
			var err error
			mode, err = dp.Attach(dev.Port.Name)
			return err
		})
		if err != nil {
			return err
		}
		if d.opts.Mode != loader.ModeAuto && mode != d.opts.Mode {
			err = fmt.Errorf("got %s mode, asked for %s", mode, d.opts.Mode)
		}
		d.expect(fmt.Sprintf("attached to %-25s in %s mode", dev.Port.Name+" ("+dev.Name+")", mode), err)
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// Step 4: allowed traffic.

func (d *demo) allowedTraffic() error {
	d.heading("Allowed traffic passes: real sockets, through the XDP program")
	cloud, gw := d.cloud.NS, d.tp.Gateway
	for _, srv := range []struct {
		ns    *testenv.Namespace
		proto string
		port  int
	}{{cloud, "tcp", portMQTT}, {cloud, "udp", portCoAPS}, {cloud, "tcp", portHTTPS}, {gw, "udp", portDNS}} {
		var err error
		if srv.proto == "tcp" {
			_, err = srv.ns.EchoTCP(fmt.Sprintf(":%d", srv.port))
		} else {
			_, err = srv.ns.EchoUDP(fmt.Sprintf(":%d", srv.port))
		}
		if err != nil {
			return err
		}
	}
	d.printf("  echo servers: cloud tcp/%d, udp/%d, tcp/%d; gateway udp/%d (a stand-in resolver)\n\n",
		portMQTT, portCoAPS, portHTTPS, portDNS)

	gw4 := d.tp.Config().GatewayIPv4
	flows := []struct {
		what, why string
		fn        func() error
	}{
		{fmt.Sprintf("thermostat → cloud %s TCP echo", hostPort(d.cloud.IPv4, portMQTT)), "sensors: cidr, tcp 8883",
			func() error { return d.echo(d.thermo, "tcp", hostPort(d.cloud.IPv4, portMQTT), "temp=21.5C") }},
		{fmt.Sprintf("thermostat → cloud %s TCP echo", hostPort(d.cloud.IPv6, portMQTT)), "sensors: cidr, tcp 8883, IPv6",
			func() error { return d.echo(d.thermo, "tcp", hostPort(d.cloud.IPv6, portMQTT), "temp=21.5C") }},
		{fmt.Sprintf("thermostat → cloud %s UDP echo", hostPort(d.cloud.IPv4, portCoAPS)), "sensors: cidr, udp 5684",
			func() error { return d.echo(d.thermo, "udp", hostPort(d.cloud.IPv4, portCoAPS), "humidity=40%") }},
		{fmt.Sprintf("camera     → cloud %s TCP echo", hostPort(d.cloud.IPv4, portHTTPS)), "cameras: cidr, tcp 443",
			func() error {
				return d.echo(d.cam, "tcp", hostPort(d.cloud.IPv4, portHTTPS), strings.Repeat("video-frame ", 300))
			}},
		{fmt.Sprintf("thermostat → hvac-ctl %s UDP datagram", hostPort(d.hvac.IPv4[0], portCoAP)), "sensors: segment controllers, udp 5683",
			func() error { return d.datagram(d.thermo, d.hvac, portCoAP, "too warm: cool down") }},
		{fmt.Sprintf("hvac-ctl   → thermostat %s UDP datagram", hostPort(d.thermo.IPv4[0], portCoAP)), "hvac-ctl: device thermostat, udp 5683",
			func() error { return d.datagram(d.hvac, d.thermo, portCoAP, "ack: cooling") }},
		{fmt.Sprintf("thermostat → gateway %s UDP (DNS)", hostPort(gw4, portDNS)), "gateway service dns",
			func() error { return d.echo(d.thermo, "udp", hostPort(gw4, portDNS), "A? broker.example") }},
		{fmt.Sprintf("thermostat → gateway %s ping", gw4), "sensors: gateway, icmp",
			func() error { return d.thermo.NS.Ping(gw4, okTimeout) }},
		{fmt.Sprintf("hvac-ctl   → cloud %s ping", d.cloud.IPv4), "controllers: cidr, icmp",
			func() error { return d.hvac.NS.Ping(d.cloud.IPv4, okTimeout) }},
	}
	for _, f := range flows {
		if err := d.interrupted(); err != nil {
			return err
		}
		d.expect(fmt.Sprintf("%-54s allowed by %s", f.what, f.why), f.fn())
	}
	return nil
}

func hostPort(a netip.Addr, port int) string { return netip.AddrPortFrom(a, uint16(port)).String() }

// echo sends msg from dev to addr and expects it back (an echo server answers).
func (d *demo) echo(dev *testenv.Device, network, addr, msg string) error {
	c, err := dev.NS.Dial(network, addr, okTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(okTimeout))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if network == "udp" {
		n, err := c.Read(got)
		got = got[:n]
		if err != nil {
			return fmt.Errorf("no echo: %w", err)
		}
	} else if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("no echo: %w", err)
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// datagram sends msg from one device to a UDP port of another and expects it to arrive.
func (d *demo) datagram(from, to *testenv.Device, port int, msg string) error {
	pc, err := to.NS.ListenPacket("udp", fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	defer pc.Close()
	c, err := from.NS.Dial("udp", hostPort(to.IPv4[0], port), okTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	_ = pc.SetReadDeadline(time.Now().Add(okTimeout))
	n, src, err := pc.ReadFrom(buf)
	if err != nil {
		return fmt.Errorf("%s received nothing: %w", to.Name, err)
	}
	if string(buf[:n]) != msg {
		return fmt.Errorf("%s received %q from %s, want %q", to.Name, buf[:n], src, msg)
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// Step 5: attacks.

// attack is one attempt the policy must stop.
type attack struct {
	title  string               // what is tried
	try    func() error         // makes the attempt; nil error: it failed as it should
	reason bpf.Reason           // the drop reason the datapath must report
	port   *testenv.Device      // the device whose gateway port the frame enters
	match  func(frameInfo) bool // picks this attempt's frame among the events
}

func (d *demo) attacks() error {
	d.heading("Attacks are dropped, each with a reason and an event from the ring buffer")
	sn, err := d.cloud.NS.Sniff(d.cloud.Ifname) // what reaches the cloud
	if err != nil {
		return err
	}
	defer sn.Stop()
	hvacIn, err := d.hvac.NS.ListenPacket("udp", fmt.Sprintf(":%d", portCoAP)) // what reaches hvac-ctl
	if err != nil {
		return err
	}
	defer hvacIn.Close()

	gw4 := d.tp.Config().GatewayIPv4
	cam, thermo, hvac, intruder := d.cam, d.thermo, d.hvac, d.intruder
	cloud4 := d.cloud.IPv4
	attacks := []attack{
		{
			title: fmt.Sprintf("lateral movement: the compromised camera sends to hvac-ctl %s (UDP)", hostPort(hvac.IPv4[0], portCoAP)),
			try: func() error {
				c, err := cam.NS.Dial("udp", hostPort(hvac.IPv4[0], portCoAP), blockTimeout)
				if err != nil {
					return err
				}
				defer c.Close()
				if _, err := c.Write([]byte("open all dampers")); err != nil {
					return err
				}
				return quiet(hvacIn, "hvac-ctl")
			},
			reason: bpf.ReasonNoRule, port: cam,
			match: func(fi frameInfo) bool { return fi.Dst == hvac.IPv4[0] && fi.DPort == portCoAP },
		},
		{
			title: fmt.Sprintf("forbidden port: the camera opens SSH to the cloud %s", hostPort(cloud4, portSSH)),
			try: func() error {
				c, err := cam.NS.Dial("tcp", hostPort(cloud4, portSSH), blockTimeout)
				if err == nil {
					c.Close()
					return errors.New("connected")
				}
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					return fmt.Errorf("%v (a refusal would mean the SYN got through)", err)
				}
				return nil
			},
			reason: bpf.ReasonNoRule, port: cam,
			match: func(fi frameInfo) bool { return fi.Dst == cloud4 && fi.DPort == portSSH },
		},
		{
			title: fmt.Sprintf("IP spoofing: the camera sends as the thermostat (%s) to hvac-ctl, which the thermostat may reach", thermo.IPv4[0]),
			try: func() error {
				f := udpFrame(cam.MAC, thermo.IPv4[0], cam.Port.MAC, hvac.IPv4[0], portCoAP, "spoofed: heat to 30C")
				if err := cam.NS.SendFrame(cam.Ifname, f); err != nil {
					return err
				}
				return quiet(hvacIn, "hvac-ctl")
			},
			reason: bpf.ReasonSpoofIP, port: cam,
			match: func(fi frameInfo) bool { return fi.Src == thermo.IPv4[0] && fi.Dst == hvac.IPv4[0] },
		},
		{
			title: fmt.Sprintf("ARP spoofing: the camera announces %s (the thermostat's address) is-at its own MAC", thermo.IPv4[0]),
			try: func() error {
				f := arpReply(cam.MAC, thermo.IPv4[0], gw4)
				if err := cam.NS.SendFrame(cam.Ifname, f); err != nil {
					return err
				}
				time.Sleep(50 * time.Millisecond) // the kernel would have processed it by now
				neighs, err := d.tp.Gateway.Netlink().NeighList(0, 0)
				if err != nil {
					return err
				}
				for _, n := range neighs {
					if n.IP.Equal(thermo.IPv4[0].AsSlice()) && bytes.Equal(n.HardwareAddr, cam.MAC) {
						return fmt.Errorf("the gateway now sends the thermostat's traffic to the camera's MAC")
					}
				}
				return nil
			},
			reason: bpf.ReasonARPSpoof, port: cam,
			match: func(fi frameInfo) bool {
				return fi.ARP != nil && bytes.Equal(fi.ARP.SourceProtAddress, thermo.IPv4[0].AsSlice())
			},
		},
		{
			title: fmt.Sprintf("unknown device: the intruder (%s) tries the cloud %s (TCP)", intruder.MAC, hostPort(cloud4, portHTTPS)),
			try: func() error {
				c, err := intruder.NS.Dial("tcp", hostPort(cloud4, portHTTPS), blockTimeout)
				if err == nil {
					c.Close()
					return errors.New("connected")
				}
				return nil // not even its ARP for the gateway gets an answer
			},
			reason: bpf.ReasonUnknownDevice, port: intruder,
			match: func(fi frameInfo) bool { return bytes.Equal(fi.SrcMAC, intruder.MAC) },
		},
		{
			title: fmt.Sprintf("MAC spoofing: the intruder clones the camera (%s, %s) and sends to the cloud %s",
				cam.MAC, cam.IPv4[0], hostPort(cloud4, portHTTPS)),
			try: func() error {
				f := synFrame(cam.MAC, cam.IPv4[0], intruder.Port.MAC, cloud4, portHTTPS)
				if err := intruder.NS.SendFrame(intruder.Ifname, f); err != nil {
					return err
				}
				if _, ok := sn.WaitFor(quietPeriod, func(f testenv.Frame) bool {
					fi := decodeFrame(f.Data)
					return fi.L4 == "TCP" && fi.SPort == spoofSPort
				}); ok {
					return errors.New("the cloud received the cloned camera's SYN")
				}
				return nil
			},
			reason: bpf.ReasonSpoofMACPort, port: intruder,
			match: func(fi frameInfo) bool { return bytes.Equal(fi.SrcMAC, cam.MAC) },
		},
	}
	for i, a := range attacks {
		if err := d.interrupted(); err != nil {
			return err
		}
		d.printf("\n  %c) %s\n", 'a'+i, a.title)
		d.expect("blocked", a.try())
		ev, fi, err := d.waitEvent(a.reason, uint32(a.port.Port.Index), a.match)
		if d.expect(fmt.Sprintf("drop event %s on %s", a.reason, a.port.Port.Name), err) {
			d.printEvent(ev, fi)
		}
	}
	return nil
}

// udpFrame is a raw UDP datagram with any source MAC and IP, sent to the gateway port gwMAC.
func udpFrame(srcMAC net.HardwareAddr, src netip.Addr, gwMAC net.HardwareAddr, dst netip.Addr, dport uint16, payload string) []byte {
	return frames.UDP(frames.Host{MAC: srcMAC, IP: src}, frames.Host{MAC: gwMAC, IP: dst}, spoofSPort, dport, []byte(payload))
}

// synFrame is a raw TCP SYN with any source MAC and IP, sent to the gateway port gwMAC.
func synFrame(srcMAC net.HardwareAddr, src netip.Addr, gwMAC net.HardwareAddr, dst netip.Addr, dport uint16) []byte {
	return frames.TCP(frames.Host{MAC: srcMAC, IP: src}, frames.Host{MAC: gwMAC, IP: dst}, spoofSPort, dport, true, nil)
}

// arpReply is a broadcast ARP reply "ip is-at mac" (a gratuitous announcement), from mac.
func arpReply(mac net.HardwareAddr, ip, target netip.Addr) []byte {
	return frames.ARP(frames.Host{MAC: mac}, 2, mac, ip, target)
}

// quiet expects nothing to arrive on pc for a while.
func quiet(pc net.PacketConn, who string) error {
	buf := make([]byte, 1500)
	_ = pc.SetReadDeadline(time.Now().Add(quietPeriod))
	n, src, err := pc.ReadFrom(buf)
	if err == nil {
		return fmt.Errorf("%s received %q from %s", who, buf[:n], src)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return err
	}
	return nil
}

// waitEvent reads events until one with reason r, from ingress port ifindex, whose frame
// matches (other events, e.g. of background traffic, are skipped).
func (d *demo) waitEvent(r bpf.Reason, ifindex uint32, match func(frameInfo) bool) (bpf.Event, frameInfo, error) {
	deadline := time.Now().Add(eventTimeout)
	for {
		d.events.SetDeadline(deadline)
		ev, err := d.events.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ev, frameInfo{}, fmt.Errorf("no %s event within %v", r, eventTimeout)
		}
		if err != nil {
			return ev, frameInfo{}, err
		}
		fi := decodeFrame(ev.Data[:min(int(ev.CapLen), len(ev.Data))])
		if bpf.Reason(ev.Reason) == r && ev.Ifindex == ifindex && match(fi) {
			return ev, fi, nil
		}
		d.others = append(d.others, seenEvent{ev, fi})
	}
}

// drainEvents reads what is left in the ring buffer into d.others.
func (d *demo) drainEvents() {
	for {
		d.events.SetDeadline(time.Now().Add(100 * time.Millisecond))
		ev, err := d.events.Read()
		if err != nil {
			return
		}
		d.others = append(d.others, seenEvent{ev, decodeFrame(ev.Data[:min(int(ev.CapLen), len(ev.Data))])})
	}
}

func (d *demo) deviceName(devID uint32) string {
	if devID == 0 {
		return "none (unknown MAC)"
	}
	if name, ok := d.snap.DeviceNames[devID]; ok {
		return name
	}
	return fmt.Sprintf("dev_id %d", devID)
}

func (d *demo) printEvent(ev bpf.Event, fi frameInfo) {
	dev := d.deviceName(ev.DevId)
	if ev.DevId != 0 {
		dev += fmt.Sprintf(" (dev_id %d)", ev.DevId)
	}
	port, ok := d.portLabel[ev.Ifindex]
	if !ok {
		port = fmt.Sprintf("ifindex %d", ev.Ifindex)
	}
	d.printf("         event: %s/%s  device %s  ingress %s  revision %d  %d bytes\n",
		bpf.Verdict(ev.Verdict), bpf.Reason(ev.Reason), dev, port, ev.Revision, ev.FrameLen)
	d.printf("         frame: %s → %s  %s\n", fi.SrcMAC, fi.DstMAC, fi.Text)
}

// ---------------------------------------------------------------------------------------------
// Step 6: counters.

func (d *demo) counters() error {
	d.heading("Counters: what the datapath counted, by verdict and reason, and by device")
	c, err := d.maps.Counters()
	if err != nil {
		return err
	}
	d.printf("  %-7s  %-16s  %8s  %9s\n", "verdict", "reason", "packets", "bytes")
	for v := range bpf.NumVerdicts {
		for r := range bpf.NumReasons {
			if n := c[v][r]; n.Packets != 0 {
				d.printf("  %-7s  %-16s  %8d  %9d\n", bpf.Verdict(v), bpf.Reason(r), n.Packets, n.Bytes)
			}
		}
	}
	d.printf("\n")
	if c[bpf.VerdictPass][bpf.ReasonAllow].Packets == 0 {
		d.expect("pass/allow counted", errors.New("zero"))
	}
	for _, r := range []bpf.Reason{bpf.ReasonNoRule, bpf.ReasonSpoofIP, bpf.ReasonARPSpoof, bpf.ReasonUnknownDevice, bpf.ReasonSpoofMACPort} {
		var err error
		if c[bpf.VerdictDrop][r].Packets == 0 {
			err = errors.New("zero")
		}
		d.expect(fmt.Sprintf("drop/%s counted", r), err)
	}

	stats, err := d.maps.AllDeviceStats()
	if err != nil {
		return err
	}
	d.printf("\n  Per device (frames that passed the identity and source checks; spoofed frames and\n")
	d.printf("  unknown devices show only in the table above):\n")
	d.printf("  %-10s  %12s  %12s  %12s  %12s\n", "device", "passed pkts", "passed bytes", "dropped pkts", "dropped bytes")
	ids := make([]uint32, 0, len(stats))
	for id := range stats {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s := stats[id]
		name, ok := d.snap.DeviceNames[id]
		if !ok {
			name = fmt.Sprintf("dev_id %d", id)
		}
		d.printf("  %-10s  %12d  %12d  %12d  %12d\n", name, s.Packets[bpf.VerdictPass], s.Bytes[bpf.VerdictPass],
			s.Packets[bpf.VerdictDrop], s.Bytes[bpf.VerdictDrop])
	}
	d.drainEvents()
	if len(d.others) > 0 {
		d.printf("\n  The other drop events in the ring buffer: retries of the attempts above, and background\n")
		d.printf("  traffic of the devices' own kernels that no rule allows:\n")
		type key struct{ what, dev, frame string }
		var order []key
		count := map[key]int{}
		for _, o := range d.others {
			k := key{fmt.Sprintf("%s/%s", bpf.Verdict(o.ev.Verdict), bpf.Reason(o.ev.Reason)), d.deviceName(o.ev.DevId), o.fi.Text}
			if count[k] == 0 {
				order = append(order, k)
			}
			count[k]++
		}
		for _, k := range order {
			d.printf("    %2dx %-20s %-18s %s\n", count[k], k.what, k.dev, k.frame)
		}
	}
	es, err := d.maps.EventStats()
	if err != nil {
		return err
	}
	d.printf("  events: %d emitted, %d lost, %d suppressed by the rate limit\n\n", es.Emitted, es.Lost, es.Suppressed)

	byName := map[string]bpf.DevStats{}
	for id, s := range stats {
		byName[d.snap.DeviceNames[id]] = s
	}
	for _, name := range []string{"thermostat", "camera", "hvac-ctl"} {
		var err error
		if byName[name].Packets[bpf.VerdictPass] == 0 {
			err = errors.New("no passed frames counted")
		}
		d.expect(name+" has passed traffic", err)
	}
	var camErr error
	if byName["camera"].Packets[bpf.VerdictDrop] == 0 {
		camErr = errors.New("no dropped frames counted")
	}
	d.expect("the camera's blocked attempts (lateral movement, SSH) are charged to it", camErr)
	return nil
}

// ---------------------------------------------------------------------------------------------
// Step 7: teardown.

// teardown undoes everything, in reverse order, and checks that nothing is left. It always
// runs (deferred by run).
func (d *demo) teardown() error {
	d.step = totalSteps - 1
	d.heading("Tear down and check that nothing is left behind")
	var errs []error
	for i := len(d.cleanups) - 1; i >= 0; i-- {
		c := d.cleanups[i]
		if err := c.fn(); err != nil {
			d.printf("  [FAIL] %s: %v\n", c.what, err)
			errs = append(errs, fmt.Errorf("%s: %w", c.what, err))
			continue
		}
		d.printf("  %s\n", c.what)
	}
	d.cleanups = nil
	if d.tp != nil {
		var left []string
		entries, err := os.ReadDir(testenv.NetnsDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		for _, e := range entries {
			if strings.Contains(e.Name(), "-"+d.tp.ID) {
				left = append(left, e.Name())
			}
		}
		var err2 error
		if len(left) > 0 {
			err2 = fmt.Errorf("left behind: %s", strings.Join(left, " "))
			errs = append(errs, err2)
		}
		d.expect(fmt.Sprintf("no network namespace %s in %s", d.nsPattern(), testenv.NetnsDir), err2)
	}
	if d.pinDir != "" {
		var err error
		if _, statErr := os.Lstat(d.pinDir); statErr == nil {
			err = errors.New("still exists")
		} else if !errors.Is(statErr, fs.ErrNotExist) {
			err = statErr
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", d.pinDir, err))
		}
		d.expect("no pin directory "+filepath.Clean(d.pinDir), err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	d.printf("  cleaned up\n")
	return nil
}
