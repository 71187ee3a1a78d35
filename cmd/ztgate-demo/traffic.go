package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/testenv"
)

// ---------------------------------------------------------------------------------------------
// Step 4: allowed traffic.

func (d *demo) allowedTraffic() error {
	d.heading("Allowed traffic passes: real sockets, through the XDP program")
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
		{fmt.Sprintf("thermostat → hvac-ctl %s UDP datagram", hostPort(d.hvac.IPv4[0], portCoAP)),
			"sensors: segment controllers, udp 5683",
			func() error { return d.datagram(d.thermo, d.hvac, portCoAP, "too warm: cool down") }},
		{fmt.Sprintf("hvac-ctl   → thermostat %s UDP datagram", hostPort(d.thermo.IPv4[0], portCoAP)),
			"hvac-ctl: device thermostat, udp 5683",
			func() error { return d.datagram(d.hvac, d.thermo, portCoAP, "ack: cooling") }},
		{fmt.Sprintf("thermostat → gateway %s UDP (DNS)", hostPort(gw4, portDNS)), "gateway service dns",
			func() error { return d.echo(d.thermo, "udp", hostPort(gw4, portDNS), "A? broker.example") }},
		{fmt.Sprintf("hvac-ctl   → cloud %s ping", d.cloud.IPv4), "controllers: cidr, icmp",
			func() error { return d.hvac.NS.Ping(d.cloud.IPv4, okTimeout) }},
	}
	for _, f := range flows {
		if err := d.interrupted(); err != nil {
			return err
		}
		err := f.fn()
		if d.ctx.Err() != nil {
			return d.interrupted()
		}
		d.expect(fmt.Sprintf("%-50s allowed by %s", f.what, f.why), err)
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

// blockedTCP expects a TCP connection from dev to addr to time out: its SYN is dropped (a
// refusal would mean that the SYN got through).
func (d *demo) blockedTCP(dev *testenv.Device, addr string) error { return blockedDial(dev.NS, addr) }

// blockedDial expects a TCP connection from namespace ns to addr to time out.
func blockedDial(ns *testenv.Namespace, addr string) error {
	c, err := ns.Dial("tcp", addr, blockTimeout)
	if err == nil {
		c.Close()
		return errors.New("connected")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return fmt.Errorf("%v (a refusal would mean the SYN got through)", err)
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// Step 5: attacks.

// attack is one attempt the policy must stop.
type attack struct {
	title  string               // what is tried
	try    func() error         // makes the attempt; nil error: it failed as it should
	reason string               // the drop reason the agent must report
	port   *testenv.Device      // the device whose gateway port the frame enters (or leaves by, toward it)
	match  func(frameInfo) bool // picks this attempt's frame among the events
}

// attackReasons are the drop reasons the attacks provoke.
var attackReasons = []string{"no_rule", "spoof_ip", "arp_spoof", "unknown_device", "spoof_mac_port", "inbound_denied"}

func (d *demo) attacks() error {
	d.heading("Lateral movement, spoofing and connections toward devices are dropped, each reported with a reason")
	d.printf("Each attempt must fail, and `ztgate events -o json --reason R` must hold its frame.\n")
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
			title: fmt.Sprintf("lateral movement: the compromised camera → hvac-ctl %s (UDP)",
				hostPort(hvac.IPv4[0], portCoAP)),
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
			reason: "no_rule", port: cam,
			match: func(fi frameInfo) bool { return fi.Dst == hvac.IPv4[0] && fi.DPort == portCoAP },
		},
		{
			title:  fmt.Sprintf("forbidden port: the camera → cloud %s (SSH)", hostPort(cloud4, portSSH)),
			try:    func() error { return d.blockedTCP(cam, hostPort(cloud4, portSSH)) },
			reason: "no_rule", port: cam,
			match: func(fi frameInfo) bool { return fi.Dst == cloud4 && fi.DPort == portSSH },
		},
		{
			title: fmt.Sprintf("IP spoofing: the camera sends as the thermostat (%s) to hvac-ctl", thermo.IPv4[0]),
			try: func() error {
				f := frames.UDP(frames.Host{MAC: cam.MAC, IP: thermo.IPv4[0]}, frames.Host{MAC: cam.Port.MAC, IP: hvac.IPv4[0]},
					spoofSPort, portCoAP, []byte("spoofed: heat to 30C"))
				if err := cam.NS.SendFrame(cam.Ifname, f); err != nil {
					return err
				}
				return quiet(hvacIn, "hvac-ctl")
			},
			reason: "spoof_ip", port: cam,
			match: func(fi frameInfo) bool { return fi.Src == thermo.IPv4[0] && fi.Dst == hvac.IPv4[0] },
		},
		{
			title: fmt.Sprintf("ARP spoofing: the camera claims %s (the thermostat's address) is-at its MAC", thermo.IPv4[0]),
			try: func() error {
				f := frames.ARP(frames.Host{MAC: cam.MAC}, 2, cam.MAC, thermo.IPv4[0], gw4) // a gratuitous reply
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
						return errors.New("the gateway now sends the thermostat's traffic to the camera's MAC")
					}
				}
				return nil
			},
			reason: "arp_spoof", port: cam,
			match: func(fi frameInfo) bool {
				return fi.ARP != nil && bytes.Equal(fi.ARP.SourceProtAddress, thermo.IPv4[0].AsSlice())
			},
		},
		{
			title: fmt.Sprintf("unknown device: the intruder (%s) → cloud %s (TCP)", intruder.MAC,
				hostPort(cloud4, portHTTPS)),
			try: func() error {
				c, err := intruder.NS.Dial("tcp", hostPort(cloud4, portHTTPS), blockTimeout)
				if err == nil {
					c.Close()
					return errors.New("connected")
				}
				return nil // not even its ARP for the gateway gets an answer
			},
			reason: "unknown_device", port: intruder,
			match: func(fi frameInfo) bool { return bytes.Equal(fi.SrcMAC, intruder.MAC) },
		},
		{
			title: fmt.Sprintf("MAC spoofing: the intruder clones the camera (%s, %s) → cloud %s", cam.MAC, cam.IPv4[0],
				hostPort(cloud4, portHTTPS)),
			try: func() error {
				f := frames.TCP(frames.Host{MAC: cam.MAC, IP: cam.IPv4[0]}, frames.Host{MAC: intruder.Port.MAC, IP: cloud4},
					spoofSPort, portHTTPS, true, nil)
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
			reason: "spoof_mac_port", port: intruder,
			match: func(fi frameInfo) bool { return bytes.Equal(fi.SrcMAC, cam.MAC) },
		},
		{
			title: fmt.Sprintf("from the uplink: the cloud → the camera %s (telnet), which no from: rule opens",
				hostPort(cam.IPv4[0], portTelnet)),
			try:    func() error { return blockedDial(d.cloud.NS, hostPort(cam.IPv4[0], portTelnet)) },
			reason: "inbound_denied", port: cam,
			match: func(fi frameInfo) bool { return fi.Dst == cam.IPv4[0] && fi.DPort == portTelnet },
		},
	}
	for i, a := range attacks {
		if err := d.interrupted(); err != nil {
			return err
		}
		d.printf("  %c) %s\n", 'a'+i, a.title)
		err := a.try()
		var ev api.Event
		if err == nil {
			ev, err = d.waitEvent(a.reason, a.port, a.match)
		}
		if d.ctx.Err() != nil {
			return d.interrupted()
		}
		what := "blocked, reported as drop/" + a.reason
		if err == nil {
			what = fmt.Sprintf("blocked: drop/%s on %s (%s): %s", ev.Reason, ev.Interface, orUnknown(ev.Device), summary(ev))
		}
		d.expect(what, err)
	}

	d.printf("Why? The agent answers from the policy in force:\n")
	explained := keepPrefixes("from, to, flow, mode, revision", "Verdict:", "Rule:")
	r, err := d.show(0, explained, "policy", "explain", "--from", "camera", "--to", cloud4.String(), "--proto", "tcp",
		"--port", fmt.Sprint(portHTTPS))
	if err != nil {
		return err
	}
	d.verify("explain: camera → cloud tcp/443 passes", verdict(r.stdout, "pass (allow)"))
	r, err = d.show(0, explained, "policy", "explain", "--from", "camera", "--to", "hvac-ctl", "--proto", "udp", "--port",
		fmt.Sprint(portCoAP))
	if err != nil {
		return err
	}
	d.verify("explain: camera → hvac-ctl udp/5683 is dropped", verdict(r.stdout, "drop (no_rule)"))
	return nil
}

// verdict checks the Verdict line of `ztgate policy explain`.
func verdict(out, want string) error {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Verdict:" {
			if got := strings.Join(f[1:], " "); got != want {
				return fmt.Errorf("verdict %q, want %q", got, want)
			}
			return nil
		}
	}
	return fmt.Errorf("no Verdict line in %q", out)
}

func orUnknown(device string) string {
	if device == "" {
		return "unknown device"
	}
	return device
}

// summary is the one-line decode of an event's frame.
func summary(ev api.Event) string { return decodeFrame(ev.Frame).Text }

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

// waitEvent asks the agent (`ztgate events -o json --reason R`) until it reports a drop
// with reason r whose frame entered the gateway on port's port and matches.
func (d *demo) waitEvent(reason string, port *testenv.Device, match func(frameInfo) bool) (api.Event, error) {
	deadline := time.Now().Add(eventTimeout)
	for {
		evs, _, err := d.events("--reason", reason)
		if err != nil {
			return api.Event{}, err
		}
		for _, ev := range slices.Backward(evs) {
			if ev.Ifindex == uint32(port.Port.Index) && match(decodeFrame(ev.Frame)) {
				return ev, nil
			}
		}
		if time.Now().After(deadline) {
			return api.Event{}, fmt.Errorf("no %s event from %s's port within %v", reason, port.Name, eventTimeout)
		}
		if err := d.sleep(100 * time.Millisecond); err != nil {
			return api.Event{}, err
		}
	}
}

// ---------------------------------------------------------------------------------------------
// Step 6: devices and events.

func (d *demo) observe() error {
	d.heading("What the agent saw: devices, events, a pcap")
	if _, err := d.show(0, nil, "devices"); err != nil {
		return err
	}
	var devs []api.Device
	if err := d.cliJSON(&devs, "devices"); err != nil {
		return err
	}
	byName := map[string]api.Device{}
	for _, dv := range devs {
		byName[dv.Name] = dv
	}
	var missing []string
	for _, name := range []string{"thermostat", "camera", "hvac-ctl"} {
		if byName[name].Allowed.Packets == 0 {
			missing = append(missing, name)
		}
	}
	var err error
	if len(missing) > 0 {
		err = fmt.Errorf("no allowed traffic counted for %s", strings.Join(missing, ", "))
	} else if byName["camera"].Dropped.Packets == 0 {
		err = errors.New("no dropped frames counted for the camera")
	}
	d.expect("every device has allowed traffic; the camera's blocked attempts are charged to it", err)

	if _, err := d.show(0, nil, "events", "--limit", "10"); err != nil {
		return err
	}
	r, err := d.show(0, dropLine("{", "the events as JSON, one a line"), "events", "--pcap", d.pcap, "-o", "json")
	if err != nil {
		return err
	}
	evs, err := parseEvents(r.stdout)
	if err != nil {
		return err
	}
	n, err := countPcap(d.pcap)
	if err == nil && (n == 0 || n != len(evs)) {
		err = fmt.Errorf("%d frames for %d events", n, len(evs))
	}
	if !d.expect(fmt.Sprintf("%d frames written to %s", n, d.pcap), err) {
		return nil
	}
	if d.opts.Pcap != "" {
		d.printf("         open it with `tshark -r %s` or Wireshark\n", d.opts.Pcap)
	} else {
		d.printf("         (in the demo directory, removed at the end: -pcap FILE keeps it)\n")
	}
	seen := map[string]bool{}
	for _, ev := range evs {
		seen[ev.Reason] = true
	}
	var absent []string
	for _, r := range attackReasons {
		if !seen[r] {
			absent = append(absent, r)
		}
	}
	err = nil
	if len(absent) > 0 {
		err = fmt.Errorf("no %s events", strings.Join(absent, ", "))
	}
	d.expect("it holds the frames of every attack ("+strings.Join(attackReasons, ", ")+")", err)
	return nil
}

// countPcap re-reads a pcap file and counts its frames.
func countPcap(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		return 0, fmt.Errorf("%s: link type %v, want Ethernet", path, r.LinkType())
	}
	n := 0
	for {
		_, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("%s: frame %d: %w", path, n+1, err)
		}
		n++
	}
}
