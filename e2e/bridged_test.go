package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/testenv"
)

// bridgePorts makes tp a bridged gateway: a bridge of a unique name in the gateway namespace
// with the gateway side of each named device's veth as a port (XDP stays on the ports). It is
// built here with netlink rather than in testenv; the bridge is removed on cleanup (and goes
// with the gateway namespace at the latest).
func bridgePorts(t *testing.T, tp *testenv.Topology, names ...string) *netlink.Bridge {
	t.Helper()
	var id [4]byte
	_, _ = rand.Read(id[:])
	h := tp.Gateway.Netlink()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ztbr" + hex.EncodeToString(id[:])}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatalf("add bridge: %v", err)
	}
	t.Cleanup(func() {
		if err := h.LinkDel(br); err != nil && !errors.Is(err, unix.ENODEV) {
			t.Errorf("delete bridge %s: %v", br.Name, err)
		}
	})
	for _, n := range names {
		port, err := h.LinkByName(tp.Device(n).Port.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetMaster(port, br); err != nil {
			t.Fatalf("enslave %s: %v", port.Attrs().Name, err)
		}
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatalf("bridge up: %v", err)
	}
	l, err := h.LinkByName(br.Name)
	if err != nil {
		t.Fatal(err)
	}
	br.LinkAttrs = *l.Attrs()
	return br
}

// TestBridgedLateral: on a bridged gateway (device ports in a bridge, XDP on each port) a
// device's frame whose IP header its rules allow upstream, but whose destination MAC is another
// device's, the broadcast address or an unknown unicast MAC, is dropped as l2_dst_denied and
// never reaches the other device; a frame to the other device's MAC that a rule allows for that
// device's address is delivered. Attach registers the ports' and the bridge's MACs as the
// gateway's.
func TestBridgedLateral(t *testing.T) {
	modes(t, func(t *testing.T, mode loader.Mode) {
		tp := topology(t)
		br := bridgePorts(t, tp, "cam", "sensor", "broker")
		g := attach(t, tp, mode, basePolicy(t, tp))
		cam, sensor, broker := tp.Device("cam"), tp.Device("sensor"), tp.Device("broker")

		for _, mac := range []net.HardwareAddr{br.HardwareAddr, cam.Port.MAC, broker.Port.MAC} {
			var k bpf.DevKey
			copy(k.Mac[:], mac)
			var ifindex uint32
			if err := g.dp.Objects().ZtGwmacs.Lookup(&k, &ifindex); err != nil {
				t.Errorf("gateway MAC %s not registered at attach: %v", mac, err)
			}
		}

		sn, err := broker.NS.Sniff(broker.Ifname)
		if err != nil {
			t.Fatal(err)
		}
		defer sn.Stop()
		received := func(marker string, wait time.Duration) bool {
			_, ok := sn.WaitFor(wait, func(f testenv.Frame) bool { return bytes.Contains(f.Data, []byte(marker)) })
			return ok
		}
		send := func(t *testing.T, d *testenv.Device, f []byte) {
			t.Helper()
			for range 3 {
				if err := d.NS.SendFrame(d.Ifname, f); err != nil {
					t.Fatal(err)
				}
			}
		}

		t.Run("allowed lateral frame to the device's mac is delivered", func(t *testing.T) {
			src := frames.Host{MAC: sensor.MAC, IP: sensor.IPv4[0]}
			dst := frames.Host{MAC: broker.MAC, IP: broker.IPv4[0]}
			send(t, sensor, frames.UDP(src, dst, 40000, 7001, []byte("lateral-allowed")))
			if !received("lateral-allowed", 3*time.Second) {
				t.Fatal("broker did not receive the allowed frame across the bridge")
			}
		})

		up4, up6 := tp.Upstream.IPv4, tp.Upstream.IPv6
		for _, c := range []struct {
			name   string
			mac    net.HardwareAddr
			ip     netip.Addr
			marker string
		}{
			{name: "another device's mac", mac: broker.MAC, ip: up4, marker: "l2-device"},
			{name: "another device's mac v6", mac: broker.MAC, ip: up6, marker: "l2-device-v6"},
			{name: "the broadcast mac", mac: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ip: up4, marker: "l2-bcast"},
			{
				name:   "an unknown unicast mac",
				mac:    net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x99, 0x99},
				ip:     up4,
				marker: "l2-unknown",
			},
		} {
			t.Run("upstream-allowed ip to "+c.name+" is dropped", func(t *testing.T) {
				before := g.counter(bpf.VerdictDrop, bpf.ReasonL2DstDenied)
				srcIP := cam.IPv4[0]
				if c.ip.Is6() {
					srcIP = cam.IPv6[0]
				}
				src := frames.Host{MAC: cam.MAC, IP: srcIP}
				send(t, cam, frames.UDP(src, frames.Host{MAC: c.mac, IP: c.ip}, 40000, 7000, []byte(c.marker)))
				if _, ok := g.waitEvent(bpf.ReasonL2DstDenied, 1); !ok {
					t.Error("no l2_dst_denied event for cam")
				}
				if got := g.counter(bpf.VerdictDrop, bpf.ReasonL2DstDenied) - before; got < 3 {
					t.Errorf("l2_dst_denied counter moved by %d, want 3", got)
				}
				if received(c.marker, 500*time.Millisecond) {
					t.Errorf("broker received cam's frame to %s", c.mac)
				}
			})
		}
	})
}
