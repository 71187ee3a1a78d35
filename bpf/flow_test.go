package bpf_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
)

// flowStep is one frame of a flow case, its direction and the decision both the kernel and the model
// must give it.
type flowStep struct {
	dir     bpf.Dir
	frame   []byte
	verdict bpf.Verdict
	reason  bpf.Reason
}

// flowCase is a sequence of the threat matrix's rows on traffic toward devices and on flows.
type flowCase struct {
	row   int
	name  string
	steps []flowStep
}

var (
	fromDev = bpf.DirFromDevice
	toDev   = bpf.DirToDevice
)

func out(f []byte, v bpf.Verdict, r bpf.Reason) flowStep { return flowStep{fromDev, f, v, r} }
func in(f []byte, v bpf.Verdict, r bpf.Reason) flowStep  { return flowStep{toDev, f, v, r} }

// toward returns h as the destination of a frame leaving the gateway for it: its own MAC.
func toward(n int, v6 bool) frames.Host { return dptest.Host(n, v6) }

// from returns a source on the uplink: ip, sent by the gateway's MAC (a routed gateway).
func from(ip string) frames.Host { return dptest.To(ip) }

// tcpFlags returns the TCP frame f with its flags byte set to flags.
func tcpFlags(f []byte, flags byte) []byte {
	off := 14 + 20
	if binary.BigEndian.Uint16(f[12:]) == 0x86dd {
		off = 14 + 40
	}
	f[off+13] = flags
	return f
}

// echo returns an ICMP or ICMPv6 echo request (reply when reply) with identifier id.
func echo(src, dst frames.Host, id uint16, reply bool) []byte {
	typ, off := uint8(8), 14+20
	if !src.IP.Is4() {
		typ, off = 128, 14+40
	}
	if reply {
		typ = map[uint8]uint8{8: 0, 128: 129}[typ]
	}
	f := frames.ICMP(src, dst, typ, 0, make([]byte, 8))
	binary.BigEndian.PutUint16(f[off+4:], id)
	return f
}

// quoteError returns an ICMP error from src to dst that quotes the IP datagram of frame q (its
// first 48 bytes) after the error's 8-byte header.
func quoteError(src, dst frames.Host, typ, code uint8, q []byte) []byte {
	quote := q[14:min(len(q), 14+48)]
	if src.IP.Is4() {
		return frames.ICMP(src, dst, typ, code, quote) // the ICMPv4 layer writes the 4 unused bytes
	}
	return frames.ICMP(src, dst, typ, code, append(make([]byte, 4), quote...))
}

// bigOpts returns an IPv6 destination options header of 568 bytes whose next header is nh: three
// PadN options (type 1) fill it.
func bigOpts(nh uint8) []byte {
	h := make([]byte, 568)
	h[0], h[1] = nh, 568/8-1
	h[2], h[3] = 1, 255
	h[259], h[260] = 1, 255
	h[516], h[517] = 1, 50
	return h
}

// stranger returns h sent by a MAC that is neither the gateway's, a router's nor a device's.
func stranger(h frames.Host) frames.Host {
	h.MAC = net.HardwareAddr{2, 0x97, 0, 0, 0, 1}
	return h
}

// router returns h sent by the router the fixture's policy names (spec.gateway.macs).
func router(h frames.Host) frames.Host {
	h.MAC = dptest.RouterMAC
	return h
}

// Group destinations toward devices.
var (
	bcastMAC    = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	mdnsMAC     = net.HardwareAddr{1, 0, 0x5e, 0, 0, 0xfb}
)

func toward4(mac net.HardwareAddr, ip string) frames.Host {
	return frames.Host{MAC: mac, IP: netip.MustParseAddr(ip)}
}

func toward6(mac net.HardwareAddr, ip string) frames.Host { return toward4(mac, ip) }

const (
	synAck = 0x12
	ack    = 0x10
	rst    = 0x04
)

func flowCases() []flowCase {
	cam, cam6, camIn, camIn6 := v4(dptest.Cam), v6(dptest.Cam), toward(dptest.Cam, false), toward(dptest.Cam, true)
	sensor, sensorIn := v4(dptest.Sensor), toward(dptest.Sensor, false)
	broker, brokerIn := v4(dptest.Broker), toward(dptest.Broker, false)
	pinger, pingerIn := v4(dptest.Pinger), toward(dptest.Pinger, false)
	web, web6 := from("203.0.113.7"), from("2001:db8:443::9")
	ping := from("198.51.100.9")
	syn := frames.TCP(cam, dptest.To("203.0.113.7"), 40000, 443, true, nil)
	return []flowCase{
		{56, "uplink cannot open tcp, udp or icmp echo toward a device", []flowStep{
			in(frames.TCP(web, camIn, 5555, 22, true, nil), drop, bpf.ReasonInboundDenied),
			in(frames.UDP(web, camIn, 5555, 5683, nil), drop, bpf.ReasonInboundDenied),
			in(echo(web, camIn, 9, false), drop, bpf.ReasonInboundDenied),
			in(frames.TCP(web6, camIn6, 5555, 23, true, nil), drop, bpf.ReasonInboundDenied),
		}},
		{56, "another segment cannot open toward a device", []flowStep{
			in(frames.TCP(v4(dptest.Broker), camIn, 5555, 22, true, nil), drop, bpf.ReasonInboundDenied),
		}},
		{57, "reply-shaped frames with no flow", []flowStep{
			in(tcpFlags(frames.TCP(web, camIn, 443, 40001, true, nil), synAck), drop, bpf.ReasonInboundDenied),
			in(tcpFlags(frames.TCP(web, camIn, 443, 40001, false, nil), ack), drop, bpf.ReasonInboundDenied),
			in(tcpFlags(frames.TCP(web, camIn, 443, 40001, false, nil), rst), drop, bpf.ReasonInboundDenied),
			in(echo(ping, pingerIn, 77, true), drop, bpf.ReasonInboundDenied),
			in(frames.UDP(from("8.8.8.8"), toward(dptest.Wide, false), 53, 5353, nil), drop, bpf.ReasonInboundDenied),
		}},
		{58, "a device's connection gets its replies, on its ports only", []flowStep{
			out(syn, pass, bpf.ReasonAllow),
			in(tcpFlags(frames.TCP(web, camIn, 443, 40000, true, nil), synAck), pass, bpf.ReasonAllow),
			out(tcpFlags(frames.TCP(cam, dptest.To("203.0.113.7"), 40000, 443, false, nil), ack), pass, bpf.ReasonAllow),
			in(tcpFlags(frames.TCP(web, camIn, 443, 40000, false, nil), ack), pass, bpf.ReasonAllow),
			in(tcpFlags(frames.TCP(web, camIn, 444, 40000, false, nil), ack), drop, bpf.ReasonInboundDenied),
			in(tcpFlags(frames.TCP(web, camIn, 443, 40002, false, nil), ack), drop, bpf.ReasonInboundDenied),
			in(tcpFlags(frames.TCP(from("203.0.113.8"), camIn, 443, 40000, false, nil), ack), drop,
				bpf.ReasonInboundDenied),
		}},
		{58, "the same over IPv6", []flowStep{
			out(frames.TCP(cam6, dptest.To("2001:db8:443::9"), 40000, 443, true, nil), pass, bpf.ReasonAllow),
			in(tcpFlags(frames.TCP(web6, camIn6, 443, 40000, true, nil), synAck), pass, bpf.ReasonAllow),
		}},
		{58, "echo replies follow echo requests, by identifier; a request is no reply", []flowStep{
			out(echo(pinger, dptest.To("198.51.100.9"), 7, false), pass, bpf.ReasonAllow),
			in(echo(ping, pingerIn, 7, true), pass, bpf.ReasonAllow),
			in(echo(ping, pingerIn, 8, true), drop, bpf.ReasonInboundDenied),
			in(echo(ping, pingerIn, 7, false), drop, bpf.ReasonInboundDenied),
		}},
		{58, "a dns answer follows its query", []flowStep{
			out(frames.UDP(v4(dptest.Wide), dptest.To("8.8.8.8"), 5300, 53, nil), pass, bpf.ReasonAllow),
			in(frames.UDP(from("8.8.8.8"), toward(dptest.Wide, false), 53, 5300, nil), pass, bpf.ReasonAllow),
			in(frames.UDP(from("8.8.4.4"), toward(dptest.Wide, false), 53, 5300, nil), drop, bpf.ReasonInboundDenied),
		}},
		{59, "icmp errors toward a device about its flow pass, made-up ones do not", []flowStep{
			out(frames.TCP(cam, dptest.To("203.0.113.7"), 40010, 443, true, nil), pass, bpf.ReasonAllow),
			in(quoteError(from("192.0.2.1"), camIn, 3, 4,
				frames.TCP(cam, dptest.To("203.0.113.7"), 40010, 443, true, nil)), pass, bpf.ReasonAllow),
			in(quoteError(from("192.0.2.1"), camIn, 3, 4,
				frames.TCP(cam, dptest.To("203.0.113.7"), 40011, 443, true, nil)), drop, bpf.ReasonICMPNoFlow),
			in(quoteError(from("192.0.2.1"), camIn, 11, 0,
				frames.TCP(v4(dptest.Sensor), dptest.To("203.0.113.7"), 40010, 443, true, nil)), drop,
				bpf.ReasonICMPNoFlow),
		}},
		{59, "a device's icmp error about a flow it is part of passes", []flowStep{
			out(frames.UDP(v4(dptest.Wide), dptest.To("8.8.8.8"), 5301, 53, nil), pass, bpf.ReasonAllow),
			out(quoteError(v4(dptest.Wide), dptest.To("8.8.8.8"), 3, 3,
				frames.UDP(from("8.8.8.8"), toward(dptest.Wide, false), 53, 5301, nil)), pass, bpf.ReasonAllow),
			out(quoteError(v4(dptest.Wide), dptest.To("8.8.8.8"), 3, 3,
				frames.UDP(from("8.8.8.8"), toward(dptest.Wide, false), 53, 5302, nil)), drop, bpf.ReasonICMPNoFlow),
		}},
		{60, "a lateral flow allowed one way works both ways with one rule", []flowStep{
			out(frames.UDP(sensor, dptest.To("10.0.0.11"), 41000, 5683, nil), pass, bpf.ReasonAllow),
			in(frames.UDP(sensor, camIn, 41000, 5683, nil), pass, bpf.ReasonAllow),
			out(frames.UDP(cam, dptest.To("10.0.0.12"), 5683, 41000, nil), pass, bpf.ReasonAllow),
			in(frames.UDP(cam, sensorIn, 5683, 41000, nil), pass, bpf.ReasonAllow),
			// The other way round opens nothing: cam has no rule to sensor.
			out(frames.UDP(cam, dptest.To("10.0.0.12"), 5683, 41001, nil), drop, bpf.ReasonNoRule),
			in(frames.UDP(cam, sensorIn, 5683, 41001, nil), drop, bpf.ReasonInboundDenied),
		}},
		{59, "a device cannot forge an icmp error about another device's flow", []flowStep{
			out(frames.TCP(cam, dptest.To("203.0.113.7"), 40020, 443, true, nil), pass, bpf.ReasonAllow),
			out(quoteError(sensor, dptest.To("203.0.113.7"), 3, 3,
				tcpFlags(frames.TCP(web, camIn, 443, 40020, false, nil), ack)), drop, bpf.ReasonICMPNoFlow),
			in(tcpFlags(frames.TCP(web, camIn, 443, 40020, false, nil), ack), pass, bpf.ReasonAllow),
		}},
		{61, "from: rules open exactly their port from their source, and the replies follow", []flowStep{
			in(frames.TCP(web, brokerIn, 5000, 22, true, nil), pass, bpf.ReasonAllow),
			out(tcpFlags(frames.TCP(broker, dptest.To("203.0.113.7"), 22, 5000, false, nil), synAck), pass,
				bpf.ReasonAllow),
			in(frames.TCP(web, brokerIn, 5000, 23, true, nil), drop, bpf.ReasonInboundDenied),
			in(frames.TCP(from("198.51.100.9"), brokerIn, 5000, 22, true, nil), drop, bpf.ReasonInboundDenied),
			// A lateral connection the receiver's from: rule allows, though the sender has no rule.
			out(frames.UDP(sensor, dptest.To("10.0.0.13"), 41000, 9000, nil), pass, bpf.ReasonAllow),
			in(frames.UDP(sensor, brokerIn, 41000, 9000, nil), pass, bpf.ReasonAllow),
			out(frames.UDP(broker, dptest.To("10.0.0.12"), 9000, 41000, nil), pass, bpf.ReasonAllow),
			out(frames.UDP(sensor, dptest.To("10.0.0.13"), 41000, 9001, nil), drop, bpf.ReasonNoRule),
		}},
		{62, "headers past the first 512 bytes toward a device are truncated", []flowStep{
			in(frames.IPv6(web6, toward(dptest.Broker, true), 60, append(bigOpts(17), frames.UDPHeader(1, 22, nil)...)),
				drop, bpf.ReasonTruncated),
		}},
		{63, "group frames toward devices only from the gateway, a router it names, or a device", []flowStep{
			in(frames.UDP(stranger(web), toward4(bcastMAC, "255.255.255.255"), 5000, 23, nil), drop,
				bpf.ReasonInboundDenied),
			in(frames.ICMP(stranger(from("fe80::99")), toward6(allNodesMAC, "ff02::1"), 134, 0, make([]byte, 12)),
				drop, bpf.ReasonInboundDenied),
			in(frames.ICMP(from("fe80::1"), toward6(allNodesMAC, "ff02::1"), 134, 0, make([]byte, 12)), pass,
				bpf.ReasonAllow),
			in(frames.ICMP(router(from("fe80::2")), toward6(allNodesMAC, "ff02::1"), 134, 0, make([]byte, 12)), pass,
				bpf.ReasonAllow),
			in(frames.UDP(v4(dptest.MDNS), toward4(mdnsMAC, "224.0.0.251"), 5353, 5353, nil), pass, bpf.ReasonAllow),
			in(frames.UDP(from("10.0.0.1"), toward4(bcastMAC, "10.0.0.11"), 67, 68, nil), drop, bpf.ReasonL2DstDenied),
		}},
		{64, "dhcp server messages only from the gateway's address or a router it names", []flowStep{
			in(frames.UDP(from("10.0.0.1"), camIn, 67, 68, nil), pass, bpf.ReasonAllow),
			in(frames.UDP(router(from("192.0.2.1")), camIn, 67, 68, nil), pass, bpf.ReasonAllow),
			in(frames.UDP(web, camIn, 67, 68, nil), drop, bpf.ReasonInboundDenied),
			in(frames.UDP(stranger(from("10.0.0.1")), camIn, 67, 68, nil), drop, bpf.ReasonInboundDenied),
			in(frames.UDP(from("fe80::1"), camIn6, 547, 546, nil), pass, bpf.ReasonAllow),
			in(frames.UDP(web6, camIn6, 547, 546, nil), drop, bpf.ReasonInboundDenied),
		}},
		{56, "toward a device: link plumbing passes, what is not its own does not", []flowStep{
			in(frames.ARP(dptest.To("10.0.0.1"), 1, dptest.GatewayMAC, dptest.To("10.0.0.1").IP, cam.IP), pass,
				bpf.ReasonAllow),
			in(frames.UDP(from("10.0.0.1"), camIn, 67, 68, nil), pass, bpf.ReasonAllow),
			in(frames.UDP(web, frames.Host{MAC: camIn.MAC, IP: v4(dptest.Sensor).IP}, 1, 2, nil), drop,
				bpf.ReasonL2DstDenied),
			in(frames.UDP(web, frames.Host{MAC: dptest.RouterMAC, IP: cam.IP}, 1, 2, nil), drop,
				bpf.ReasonUnknownDevice),
		}},
	}
}

// TestFlows runs the threat matrix's rows on traffic toward devices and on flows, frame by frame in
// order, through the kernel's two programs and the model.
func TestFlows(t *testing.T) {
	h := fixtureHarness(t, loader.Config{})
	for _, c := range flowCases() {
		t.Run(fmt.Sprintf("%02d/%s", c.row, c.name), func(t *testing.T) {
			for i, s := range c.steps {
				t.Run(fmt.Sprint(i), func(t *testing.T) { checkDir(t, h, s.dir, s.frame, s.verdict, s.reason) })
			}
		})
	}
}

// TestFlowRevoked: a swap that revokes the rule of an established flow stops it on its next
// packet, either way; a swap that keeps the rule keeps the flow.
func TestFlowRevoked(t *testing.T) {
	h := fixtureHarness(t, loader.Config{})
	cam, camIn, web := v4(dptest.Cam), toward(dptest.Cam, false), from("203.0.113.7")
	syn := frames.TCP(cam, dptest.To("203.0.113.7"), 40000, 443, true, nil)
	reply := tcpFlags(frames.TCP(web, camIn, 443, 40000, false, nil), ack)
	apply := func(p *policy.Policy, rev uint64) {
		t.Helper()
		s, err := dptest.Compile(p, rev)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Apply(s); err != nil {
			t.Fatal(err)
		}
	}
	checkDir(t, h, fromDev, syn, pass, bpf.ReasonAllow)
	checkDir(t, h, toDev, reply, pass, bpf.ReasonAllow)
	apply(dptest.Fixture(), 2) // the same rules
	checkDir(t, h, toDev, reply, pass, bpf.ReasonAllow)
	revoked := dptest.Fixture()
	revoked.Spec.Segments[0].Allow = revoked.Spec.Segments[0].Allow[1:] // cameras: no tcp 443 to 203.0.113.0/24
	apply(revoked, 3)
	checkDir(t, h, toDev, reply, drop, bpf.ReasonInboundDenied)
	checkDir(t, h, fromDev, tcpFlags(append([]byte(nil), syn...), ack), drop, bpf.ReasonNoRule)
	if n := h.Model.Flows(); n != 0 {
		t.Errorf("model holds %d flows after the revocation, want 0", n)
	}
}

// TestFlowExhaustion: one device opening flows with made-up ports until its quota is refused
// (flow_table_full, counted) and does not disturb another device's established flow; a full
// table refuses new flows of every device and keeps the established ones.
func TestFlowExhaustion(t *testing.T) {
	const quota, entries = 8, 12
	h := fixtureHarness(t, loader.Config{FlowQuota: quota, FlowEntries: entries})
	wide, wideIn, dns := v4(dptest.Wide), toward(dptest.Wide, false), from("8.8.8.8")
	cam, camIn, web := v4(dptest.Cam), toward(dptest.Cam, false), from("203.0.113.7")
	checkDir(t, h, fromDev, frames.TCP(cam, dptest.To("203.0.113.7"), 40000, 443, true, nil), pass, bpf.ReasonAllow)
	for i := range quota {
		checkDir(t, h, fromDev, frames.UDP(wide, dptest.To("8.8.8.8"), uint16(10000+i), 53, nil), pass, bpf.ReasonAllow)
	}
	for i := range 5 { // over the quota
		checkDir(t, h, fromDev, frames.UDP(wide, dptest.To("8.8.8.8"), uint16(20000+i), 53, nil), drop,
			bpf.ReasonFlowTableFull)
	}
	if n, err := h.CounterDir(fromDev, drop, bpf.ReasonFlowTableFull); err != nil || n != 5 {
		t.Errorf("flow_table_full counter %d, %v; want 5", n, err)
	}
	// Its own established flows and the other device's still pass.
	checkDir(t, h, toDev, frames.UDP(dns, wideIn, 53, 10000, nil), pass, bpf.ReasonAllow)
	checkDir(t, h, toDev, tcpFlags(frames.TCP(web, camIn, 443, 40000, false, nil), ack), pass, bpf.ReasonAllow)
	// Cam fills the rest of the table (1 + 8 + 3 = 12 entries); then nobody opens a flow.
	for i := range entries - quota - 1 {
		checkDir(t, h, fromDev, frames.TCP(cam, dptest.To("203.0.113.7"), uint16(41000+i), 443, true, nil), pass,
			bpf.ReasonAllow)
	}
	checkDir(t, h, fromDev, frames.TCP(cam, dptest.To("203.0.113.7"), 42000, 443, true, nil), drop,
		bpf.ReasonFlowTableFull)
	checkDir(t, h, fromDev, frames.UDP(v4(dptest.MDNS), dptest.To("8.8.8.8"), 5000, 53, nil), drop,
		bpf.ReasonFlowTableFull)
	checkDir(t, h, toDev, tcpFlags(frames.TCP(web, camIn, 443, 40000, false, nil), ack), pass, bpf.ReasonAllow)
	if n := h.Model.Flows(); n != entries {
		t.Errorf("model holds %d flows, want %d", n, entries)
	}
}

// TestFlowQuarantine: quarantining a device stops the flows it opened, also those another
// device's from: rules allowed; a quarantined device keeps no from: rules.
func TestFlowQuarantine(t *testing.T) {
	h := fixtureHarness(t, loader.Config{})
	sensor, brokerIn, web := v4(dptest.Sensor), toward(dptest.Broker, false), from("203.0.113.7")
	toBroker := frames.UDP(sensor, dptest.To("10.0.0.13"), 41000, 9000, nil)
	checkDir(t, h, fromDev, toBroker, pass, bpf.ReasonAllow)
	checkDir(t, h, toDev, frames.UDP(sensor, brokerIn, 41000, 9000, nil), pass, bpf.ReasonAllow)
	checkDir(t, h, toDev, frames.TCP(web, brokerIn, 5000, 22, true, nil), pass, bpf.ReasonAllow)
	for i, name := range []string{"sensor", "broker"} {
		p := dptest.Fixture()
		for j := range p.Spec.Devices {
			if p.Spec.Devices[j].Name == name {
				p.Spec.Devices[j].Quarantined = true
			}
		}
		s, err := dptest.Compile(p, uint64(2+i))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Apply(s); err != nil {
			t.Fatal(err)
		}
		if name == "sensor" {
			checkDir(t, h, toDev, frames.UDP(sensor, brokerIn, 41000, 9000, nil), drop, bpf.ReasonInboundDenied)
			checkDir(t, h, fromDev, toBroker, drop, bpf.ReasonQuarantined)
			continue
		}
		checkDir(t, h, toDev, tcpFlags(frames.TCP(web, brokerIn, 5000, 22, false, nil), ack), drop,
			bpf.ReasonQuarantined)
		checkDir(t, h, toDev, frames.TCP(web, brokerIn, 5001, 22, true, nil), drop, bpf.ReasonQuarantined)
	}
}

// TestFlowIDReuse: a device id that a removed device held and a new device is given starts with no
// flow and its whole quota: the new device inherits neither.
func TestFlowIDReuse(t *testing.T) {
	h := fixtureHarness(t, loader.Config{FlowQuota: 3})
	cam, camIn, web := v4(dptest.Cam), toward(dptest.Cam, false), from("203.0.113.7")
	for i := range 3 {
		checkDir(t, h, fromDev, frames.TCP(cam, dptest.To("203.0.113.7"), uint16(40000+i), 443, true, nil), pass,
			bpf.ReasonAllow)
	}
	checkDir(t, h, fromDev, frames.TCP(cam, dptest.To("203.0.113.7"), 40009, 443, true, nil), drop,
		bpf.ReasonFlowTableFull)
	// cam is replaced by another device (another MAC) with its name and addresses: the same id.
	p := dptest.Fixture()
	newMAC := net.HardwareAddr{2, 0, 0, 0, 0x99, dptest.Cam}
	p.Spec.Devices[0].MAC = newMAC.String() // the name stays: rules name it
	s, err := dptest.Compile(p, 2)
	if err != nil {
		t.Fatal(err)
	}
	old := h.Model.Snapshot().Devices[policy.DevKey(cam.MAC)].DevId
	if id := s.Devices[policy.DevKey(newMAC)].DevId; id != old {
		t.Fatalf("newcam has id %d, want cam's %d", id, old)
	}
	if err := h.Apply(s); err != nil {
		t.Fatal(err)
	}
	checkDir(t, h, toDev, tcpFlags(frames.TCP(web, frames.Host{MAC: newMAC, IP: camIn.IP}, 443, 40000, false, nil), ack),
		drop, bpf.ReasonInboundDenied)
	newcam := frames.Host{MAC: newMAC, IP: cam.IP}
	for i := range 3 {
		checkDir(t, h, fromDev, frames.TCP(newcam, dptest.To("203.0.113.7"), uint16(41000+i), 443, true, nil), pass,
			bpf.ReasonAllow)
	}
	if n := h.Model.FlowCount(old); n != 3 {
		t.Errorf("model: id %d holds %d flows, want 3", old, n)
	}
}

// TestFlowQuotaByDirection: flows toward a device's open port (its from: rules) and the flows it
// opens itself have a quota each: a flood of new connections toward it does not stop its own.
func TestFlowQuotaByDirection(t *testing.T) {
	const quota = 2
	h := fixtureHarness(t, loader.Config{FlowQuota: quota})
	brokerIn, broker6 := toward(dptest.Broker, false), v6(dptest.Broker)
	for i := range quota {
		checkDir(t, h, toDev, frames.TCP(from("203.0.113.7"), brokerIn, uint16(5000+i), 22, true, nil), pass,
			bpf.ReasonAllow)
	}
	checkDir(t, h, toDev, frames.TCP(from("203.0.113.8"), brokerIn, 5000, 22, true, nil), drop,
		bpf.ReasonFlowTableFull)
	for i := range quota {
		checkDir(t, h, fromDev, frames.UDP(broker6, dptest.To("2001:db8::53"), uint16(6000+i), 53, nil), pass,
			bpf.ReasonAllow)
	}
	checkDir(t, h, fromDev, frames.UDP(broker6, dptest.To("2001:db8::53"), 6009, 53, nil), drop,
		bpf.ReasonFlowTableFull)
	if n := h.Model.FlowCount(h.Model.Snapshot().Devices[policy.DevKey(broker6.MAC)].DevId); n != 2*quota {
		t.Errorf("model: broker holds %d flows, want %d", n, 2*quota)
	}
}

// TestFlowUnanswered: a flow nobody answered lives the short lifetime (FlowOther), an answered one
// its protocol's; an ICMP error about a flow does not keep it alive.
func TestFlowUnanswered(t *testing.T) {
	const other = 300 * time.Millisecond
	h := fixtureHarness(t, loader.Config{FlowOther: other})
	cam, camIn, web := v4(dptest.Cam), toward(dptest.Cam, false), from("203.0.113.7")
	syn := func(port uint16) []byte { return frames.TCP(cam, dptest.To("203.0.113.7"), port, 443, true, nil) }
	answer := func(port uint16) []byte {
		return tcpFlags(frames.TCP(web, camIn, 443, port, false, nil), synAck)
	}
	checkDir(t, h, fromDev, syn(40000), pass, bpf.ReasonAllow) // never answered
	checkDir(t, h, fromDev, syn(40001), pass, bpf.ReasonAllow)
	checkDir(t, h, toDev, answer(40001), pass, bpf.ReasonAllow)
	time.Sleep(3 * other) // past the short lifetime on both clocks, far from TCP's (an hour here)
	checkDir(t, h, toDev, quoteError(from("192.0.2.1"), camIn, 3, 4, syn(40000)), drop, bpf.ReasonICMPNoFlow)
	checkDir(t, h, toDev, answer(40000), drop, bpf.ReasonInboundDenied)
	checkDir(t, h, toDev, answer(40001), pass, bpf.ReasonAllow)
}
