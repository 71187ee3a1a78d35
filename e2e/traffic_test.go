package e2e

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/testenv"
)

// echoOnce writes msg on c and expects it back.
func echoOnce(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg)+1)
	var n int
	var err error
	if _, isUDP := c.(*net.UDPConn); isUDP {
		n, err = c.Read(got) // one datagram
	} else {
		n, err = io.ReadFull(c, got[:len(msg)])
	}
	if err != nil || !bytes.Equal(got[:n], msg) {
		t.Fatalf("echo: got %d bytes (%v), want %d", n, err, len(msg))
	}
}

// echoFrom dials addr over network from d and expects msg back.
func echoFrom(t *testing.T, d *testenv.Device, network, addr string, msg []byte) {
	t.Helper()
	c, err := d.NS.Dial(network, addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c, msg)
}

// addrPort is a:p as a dial address.
func addrPort(a netip.Addr, p uint16) string { return netip.AddrPortFrom(a, p).String() }

// TestTraffic: allowed TCP, UDP and ICMP to the upstream pass for real sockets; forbidden ports,
// lateral movement and MAC/IP/ARP spoofing are blocked, counted and reported by events; a
// fragmented UDP datagram arrives whole.
func TestTraffic(t *testing.T) {
	modes(t, func(t *testing.T, mode loader.Mode) {
		tp := topology(t)
		g := attach(t, tp, mode, basePolicy(t, tp))
		up := tp.Upstream
		cam, sensor, broker, attacker := tp.Device("cam"), tp.Device("sensor"), tp.Device("broker"), tp.Device("attacker")
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
		camID := uint32(1) // cam is the first device of the policy

		for _, ip := range []netip.Addr{up.IPv4, up.IPv6} {
			t.Run("allowed tcp to "+ip.String(), func(t *testing.T) {
				echoFrom(t, cam, "tcp", addrPort(ip, 7000), []byte("hello over tcp"))
			})
			t.Run("allowed udp to "+ip.String(), func(t *testing.T) {
				echoFrom(t, cam, "udp", addrPort(ip, 7000), []byte("hello over udp"))
			})
			t.Run("allowed icmp to "+ip.String(), func(t *testing.T) {
				if err := cam.NS.Ping(ip, 3*time.Second); err != nil {
					t.Fatal(err)
				}
			})
			t.Run("fragmented udp to "+ip.String(), func(t *testing.T) {
				echoFrom(t, cam, "udp", addrPort(ip, 7000), bytes.Repeat([]byte("fragment"), 375)) // 3000 bytes, MTU 1500
			})
		}

		t.Run("forbidden port is dropped with an event", func(t *testing.T) {
			before := g.counter(bpf.VerdictDrop, bpf.ReasonNoRule)
			c, err := cam.NS.Dial("tcp", addrPort(up.IPv4, 7002), time.Second)
			if err == nil {
				c.Close()
				t.Fatal("connected to a forbidden port")
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("dial error %v, want a timeout (a refusal means the SYN was delivered)", err)
			}
			if g.counter(bpf.VerdictDrop, bpf.ReasonNoRule) <= before {
				t.Error("no_rule counter did not move")
			}
			if _, ok := g.waitEvent(bpf.ReasonNoRule, camID); !ok {
				t.Error("no no_rule event for cam")
			}
		})

		t.Run("lateral movement", func(t *testing.T) {
			if err := cam.NS.Ping(broker.IPv4[0], time.Second); err == nil {
				t.Error("cam reached broker, which no rule allows")
			}
			pc, err := broker.NS.ListenPacket("udp", ":7001")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			c, err := sensor.NS.Dial("udp", addrPort(broker.IPv4[0], 7001), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("sensor reading")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
			if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "sensor reading" {
				t.Fatalf("broker did not get the allowed datagram: %v", err)
			}
			c2, err := cam.NS.Dial("udp", addrPort(broker.IPv4[0], 7001), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			_, _ = c2.Write([]byte("from cam"))
			_ = pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if n, _, err := pc.ReadFrom(buf); err == nil {
				t.Fatalf("broker got %q from cam, which no rule allows", buf[:n])
			}
		})

		// Spoofed frames go out of the attacker's namespace with a marker payload; the upstream
		// captures everything it receives.
		sn, err := up.NS.Sniff(up.Ifname)
		if err != nil {
			t.Fatal(err)
		}
		defer sn.Stop()
		spoof := func(t *testing.T, src frames.Host, marker string, reason bpf.Reason) {
			t.Helper()
			before := g.counter(bpf.VerdictDrop, reason)
			dst := frames.Host{MAC: attacker.Port.MAC, IP: up.IPv4}
			for range 3 {
				if err := attacker.NS.SendFrame(attacker.Ifname, frames.UDP(src, dst, 40000, 7000, []byte(marker))); err != nil {
					t.Fatal(err)
				}
			}
			if _, ok := g.waitEvent(reason, 0); !ok {
				t.Errorf("no %s event", reason)
			}
			if got := g.counter(bpf.VerdictDrop, reason) - before; got < 3 {
				t.Errorf("%s counter moved by %d, want 3", reason, got)
			}
			marked := func(f testenv.Frame) bool { return bytes.Contains(f.Data, []byte(marker)) }
			if f, ok := sn.WaitFor(300*time.Millisecond, marked); ok {
				t.Errorf("upstream received the spoofed frame: % x", f.Data)
			}
		}
		t.Run("mac spoof from another port", func(t *testing.T) {
			spoof(t, frames.Host{MAC: cam.MAC, IP: cam.IPv4[0]}, "spoofed-mac", bpf.ReasonSpoofMACPort)
		})
		t.Run("ip spoof", func(t *testing.T) {
			spoof(t, frames.Host{MAC: attacker.MAC, IP: cam.IPv4[0]}, "spoofed-ip", bpf.ReasonSpoofIP)
		})
		t.Run("arp spoof leaves the gateway's neighbour table alone", func(t *testing.T) {
			before := g.counter(bpf.VerdictDrop, bpf.ReasonARPSpoof)
			f := frames.ARP(frames.Host{MAC: attacker.MAC}, 2, attacker.MAC, cam.IPv4[0], tp.Config().GatewayIPv4)
			for range 3 {
				if err := attacker.NS.SendFrame(attacker.Ifname, f); err != nil {
					t.Fatal(err)
				}
			}
			if _, ok := g.waitEvent(bpf.ReasonARPSpoof, 0); !ok {
				t.Error("no arp_spoof event")
			}
			if g.counter(bpf.VerdictDrop, bpf.ReasonARPSpoof)-before < 3 {
				t.Error("arp_spoof counter did not count the replies")
			}
			neighs, err := tp.Gateway.Netlink().NeighList(0, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range neighs {
				if n.IP.Equal(cam.IPv4[0].AsSlice()) && bytes.Equal(n.HardwareAddr, attacker.MAC) {
					t.Errorf("gateway maps %s to the attacker's MAC", cam.IPv4[0])
				}
			}
		})
	})
}
