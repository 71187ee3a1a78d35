package e2e

import (
	"bytes"
	"crypto/rand"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/testenv"
)

// ndFrame is a neighbour solicitation (135) or advertisement (136) from src to dst for target,
// with a nonce option (a marker to find it by) and, when lladdr is set, a link-layer address
// option of type opt.
func ndFrame(src, dst frames.Host, typ uint8, target netip.Addr, opt uint8, lladdr net.HardwareAddr) ([]byte, []byte) {
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce)
	body := append(make([]byte, 4), target.AsSlice()...)
	if typ == 136 {
		body[0] = 0x20 // override
	}
	body = append(append(body, 14, 1), nonce...)
	if lladdr != nil {
		body = append(append(body, opt, 1), lladdr...)
	}
	return frames.ICMP(src, dst, typ, 0, body), nonce
}

// TestNDLinkScope: neighbour discovery from a device passes without a rule only on the link: a
// solicitation or advertisement to an upstream or another device's global address, from a device
// no rule lets reach them, is not forwarded; and a solicitation whose source link-layer address
// option names another device's MAC is dropped as nd_spoof, leaving the gateway's neighbour entry
// alone.
func TestNDLinkScope(t *testing.T) {
	modes(t, func(t *testing.T, mode loader.Mode) {
		tp := topology(t)
		g := attach(t, tp, mode, basePolicy(t, tp))
		up := tp.Upstream
		cam, sensor, broker, attacker := tp.Device("cam"), tp.Device("sensor"), tp.Device("broker"), tp.Device("attacker")
		camSrc := frames.Host{MAC: cam.MAC, IP: cam.IPv6[0]}
		sensorSrc := frames.Host{MAC: sensor.MAC, IP: sensor.IPv6[0]}

		upSn, err := up.NS.Sniff(up.Ifname)
		if err != nil {
			t.Fatal(err)
		}
		defer upSn.Stop()
		brSn, err := broker.NS.Sniff(broker.Ifname)
		if err != nil {
			t.Fatal(err)
		}
		defer brSn.Stop()
		send := func(t *testing.T, d *testenv.Device, f []byte) {
			t.Helper()
			for range 3 {
				if err := d.NS.SendFrame(d.Ifname, f); err != nil {
					t.Fatal(err)
				}
			}
		}
		seen := func(sn *testenv.Sniffer, marker []byte) bool {
			_, ok := sn.WaitFor(500*time.Millisecond, func(f testenv.Frame) bool { return bytes.Contains(f.Data, marker) })
			return ok
		}

		for _, c := range []struct {
			name   string
			dst    netip.Addr
			target netip.Addr
			sn     *testenv.Sniffer
			typ    uint8
		}{
			{name: "ns to the upstream's address", dst: up.IPv6, target: up.IPv6, sn: upSn, typ: 135},
			{name: "na to the upstream's address", dst: up.IPv6, target: sensor.IPv6[0], sn: upSn, typ: 136},
			{name: "ns to another device's address", dst: broker.IPv6[0], target: broker.IPv6[0], sn: brSn, typ: 135},
		} {
			t.Run(c.name+" is not forwarded", func(t *testing.T) {
				before := g.counter(bpf.VerdictDrop, bpf.ReasonNoRule)
				f, nonce := ndFrame(sensorSrc, frames.Host{MAC: sensor.Port.MAC, IP: c.dst}, c.typ, c.target, 1, sensor.MAC)
				send(t, sensor, f)
				if got := g.counter(bpf.VerdictDrop, bpf.ReasonNoRule) - before; got < 3 {
					t.Errorf("no_rule counter moved by %d, want 3", got)
				}
				if seen(c.sn, nonce) {
					t.Errorf("%s received sensor's neighbour discovery message", c.dst)
				}
			})
		}

		// solicit sends cam's solicitation for the gateway naming lladdr three times and checks
		// that they were counted under (v, r).
		solicit := func(t *testing.T, lladdr net.HardwareAddr, v bpf.Verdict, r bpf.Reason) {
			t.Helper()
			before := g.counter(v, r)
			gw := frames.Host{MAC: cam.Port.MAC, IP: tp.Config().GatewayIPv6}
			f, _ := ndFrame(camSrc, gw, 135, tp.Config().GatewayIPv6, 1, lladdr)
			send(t, cam, f)
			if got := g.counter(v, r) - before; got < 3 {
				t.Errorf("%s counter moved by %d, want 3", r, got)
			}
		}

		t.Run("ns naming another device's mac leaves the neighbour entry alone", func(t *testing.T) {
			solicit(t, attacker.MAC, bpf.VerdictDrop, bpf.ReasonNDSpoof)
			if _, ok := g.waitEvent(bpf.ReasonNDSpoof, 1); !ok {
				t.Error("no nd_spoof event for cam")
			}
			neighs, err := tp.Gateway.Netlink().NeighList(cam.Port.Index, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range neighs {
				if n.IP.Equal(cam.IPv6[0].AsSlice()) && bytes.Equal(n.HardwareAddr, attacker.MAC) {
					t.Errorf("gateway maps %s to the attacker's MAC", cam.IPv6[0])
				}
			}
		})

		t.Run("ns with its own mac passes", func(t *testing.T) {
			solicit(t, cam.MAC, bpf.VerdictPass, bpf.ReasonAllow)
		})
	})
}
