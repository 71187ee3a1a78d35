package e2e

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// dirCounter is the (direction, verdict, reason) packet counter summed over CPUs.
func (g *gateway) dirCounter(d bpf.Dir, v bpf.Verdict, r bpf.Reason) uint64 {
	c, err := g.maps.DirCounters()
	if err != nil {
		g.t.Fatal(err)
	}
	return c[d][v][r].Packets
}

// blocked expects a TCP connection from ns to addr to time out: its SYN is dropped on the way (a
// refusal would mean it was delivered).
func blocked(t *testing.T, ns *testenv.Namespace, addr string) {
	t.Helper()
	c, err := ns.Dial("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("connected to %s", addr)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dial %s: %v, want a timeout (a refusal means the SYN was delivered)", addr, err)
	}
}

// nothingArrives sends msg from ns to addr over UDP and expects pc not to receive it.
func nothingArrives(t *testing.T, ns *testenv.Namespace, pc net.PacketConn, addr string) {
	t.Helper()
	c, err := ns.Dial("udp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("unsolicited")); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 64)
	if n, _, err := pc.ReadFrom(buf); err == nil {
		t.Fatalf("received %q, which no rule allows", buf[:n])
	}
}

// inboundPolicy is basePolicy with from: rules: cam accepts TCP 2222 from the upstream, and
// broker accepts UDP 7003 from segment-less device sensor; attacker has none.
func inboundPolicy(t *testing.T, tp *testenv.Topology) *policy.Policy {
	p := basePolicy(t, tp)
	up4 := tp.Config().UplinkIPv4.String()
	port := func(n uint16) []policy.PortRange { return []policy.PortRange{{Lo: n, Hi: n}} }
	for i := range p.Spec.Devices {
		d := &p.Spec.Devices[i]
		switch d.Name {
		case "cam":
			d.Allow = append(d.Allow, policy.Rule{From: policy.Target{CIDR: up4}, Proto: "tcp", Ports: port(2222)})
		case "broker":
			d.Allow = append(d.Allow, policy.Rule{From: policy.Target{Device: "attacker"}, Proto: "udp", Ports: port(7003)})
		}
	}
	return p
}

// TestInbound: on routed and bridged gateways, in native and generic XDP mode, with real sockets:
// the uplink and another device cannot open TCP, UDP or ICMP echo toward a device unless a from:
// rule allows it; the device's own connections get their replies; a reply with no flow is
// dropped; a lateral flow allowed one way works both ways with one rule; a swap that revokes a
// rule stops an established connection on its next packet.
func TestInbound(t *testing.T) {
	for _, bridged := range []bool{false, true} {
		name := "routed"
		if bridged {
			name = "bridged"
		}
		t.Run(name, func(t *testing.T) {
			modes(t, func(t *testing.T, mode loader.Mode) { inbound(t, mode, bridged) })
		})
	}
}

func inbound(t *testing.T, mode loader.Mode, bridged bool) {
	testenv.RequirePriv(t)
	tp := testenv.New(t, testenv.Config{
		Devices:  []testenv.DeviceSpec{{Name: "cam"}, {Name: "sensor"}, {Name: "broker"}, {Name: "attacker"}},
		Upstream: true, Bridge: bridged,
	})
	p := inboundPolicy(t, tp)
	g := attach(t, tp, mode, p)
	up := tp.Upstream
	cam, sensor, broker, attacker := tp.Device("cam"), tp.Device("sensor"), tp.Device("broker"), tp.Device("attacker")

	// Services on the devices, reachable only where a from: rule or a flow says so.
	for _, d := range []*testenv.Device{cam, broker} {
		for _, port := range []string{":22", ":2222"} {
			l, err := d.NS.Listen("tcp", port)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
	}
	camUDP, err := cam.NS.ListenPacket("udp", ":5683")
	if err != nil {
		t.Fatal(err)
	}
	defer camUDP.Close()
	tcpEcho, err := up.NS.EchoTCP(":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpEcho.Close()
	udpEcho, err := up.NS.EchoUDP(":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer udpEcho.Close()

	t.Run("the uplink cannot open toward a device", func(t *testing.T) {
		before := g.dirCounter(bpf.DirToDevice, bpf.VerdictDrop, bpf.ReasonInboundDenied)
		blocked(t, up.NS, addrPort(cam.IPv4[0], 22))
		blocked(t, up.NS, addrPort(cam.IPv6[0], 22))
		nothingArrives(t, up.NS, camUDP, addrPort(cam.IPv4[0], 5683))
		if err := up.NS.Ping(cam.IPv4[0], time.Second); err == nil {
			t.Error("the uplink pinged cam")
		}
		if err := up.NS.Ping(cam.IPv6[0], time.Second); err == nil {
			t.Error("the uplink pinged cam over IPv6")
		}
		if g.dirCounter(bpf.DirToDevice, bpf.VerdictDrop, bpf.ReasonInboundDenied) <= before {
			t.Error("inbound_denied counter toward devices did not move")
		}
	})
	t.Run("a from: rule opens one port from one source", func(t *testing.T) {
		c, err := up.NS.Dial("tcp", addrPort(cam.IPv4[0], 2222), 3*time.Second)
		if err != nil {
			t.Fatalf("from: rule did not open tcp 2222: %v", err)
		}
		c.Close()
		blocked(t, attacker.NS, addrPort(cam.IPv4[0], 2222))
	})
	t.Run("the device's own connections get their replies", func(t *testing.T) {
		for _, ip := range []string{addrPort(up.IPv4, 7000), addrPort(up.IPv6, 7000)} {
			echoFrom(t, cam, "tcp", ip, []byte("hello over tcp"))
			echoFrom(t, cam, "udp", ip, []byte("hello over udp"))
		}
		if err := cam.NS.Ping(up.IPv4, 3*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := cam.NS.Ping(up.IPv6, 3*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a reply with no flow is dropped", func(t *testing.T) {
		before := g.dirCounter(bpf.DirToDevice, bpf.VerdictDrop, bpf.ReasonInboundDenied)
		sn, err := cam.NS.Sniff(cam.Ifname)
		if err != nil {
			t.Fatal(err)
		}
		defer sn.Close()
		src := frames.Host{MAC: up.MAC, IP: up.IPv4}
		dst := frames.Host{MAC: up.Uplink.MAC, IP: cam.IPv4[0]}
		synAck := frames.TCP(src, dst, 7000, 45678, false, []byte("no flow"))
		synAck[14+20+13] = 0x12
		if err := up.NS.SendFrame(up.Ifname, synAck); err != nil {
			t.Fatal(err)
		}
		if _, ok := sn.WaitFor(time.Second, func(f testenv.Frame) bool {
			return len(f.Data) > 14+20+4 && f.Data[14+20+2] == 45678>>8 && f.Data[14+20+3] == 45678&0xff
		}); ok {
			t.Error("an unsolicited SYN-ACK reached cam")
		}
		if g.dirCounter(bpf.DirToDevice, bpf.VerdictDrop, bpf.ReasonInboundDenied) <= before {
			t.Error("inbound_denied counter toward devices did not move")
		}
	})
	t.Run("a lateral flow allowed one way works with one rule", func(t *testing.T) {
		echo, err := broker.NS.EchoUDP(":7001")
		if err != nil {
			t.Fatal(err)
		}
		defer echo.Close()
		echoFrom(t, sensor, "udp", addrPort(broker.IPv4[0], 7001), []byte("sensor to broker and back"))
		blocked(t, broker.NS, addrPort(sensor.IPv4[0], 22)) // the other way round opens nothing
		// broker's from: rule lets attacker (no rules of its own) send to udp 7003, and only there.
		pc, err := broker.NS.ListenPacket("udp", ":7003")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		c, err := attacker.NS.Dial("udp", addrPort(broker.IPv4[0], 7003), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("consented")); err != nil {
			t.Fatal(err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 64)
		if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "consented" {
			t.Fatalf("broker's from: rule: got %q, %v", buf[:n], err)
		}
		blocked(t, attacker.NS, addrPort(broker.IPv4[0], 22))
	})
	t.Run("a swap that revokes a rule stops an established connection", func(t *testing.T) {
		c, err := cam.NS.Dial("tcp", addrPort(up.IPv4, 7000), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echoOnce(t, c, []byte("before the swap"))
		revoked := inboundPolicy(t, tp)
		for i := range revoked.Spec.Devices {
			if d := &revoked.Spec.Devices[i]; d.Name == "cam" {
				d.Allow = d.Allow[1:] // no more tcp 7000 to the upstream over IPv4
			}
		}
		before := g.dirCounter(bpf.DirToDevice, bpf.VerdictDrop, bpf.ReasonInboundDenied) +
			g.dirCounter(bpf.DirFromDevice, bpf.VerdictDrop, bpf.ReasonNoRule)
		g.apply(revoked)
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("after the swap")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 32)
		if n, err := c.Read(buf); err == nil {
			t.Fatalf("the revoked connection still carried %q", buf[:n])
		}
		after := g.dirCounter(bpf.DirToDevice, bpf.VerdictDrop, bpf.ReasonInboundDenied) +
			g.dirCounter(bpf.DirFromDevice, bpf.VerdictDrop, bpf.ReasonNoRule)
		if after <= before {
			t.Error("no drop counted for the revoked connection")
		}
	})
}
