package testenv

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

// TestRecreatePort: the port comes back under the same name with a new ifindex, down until
// beforeUp returns, and the device reaches the gateway and the upstream again.
func TestRecreatePort(t *testing.T) {
	RequirePriv(t)
	tp := New(t, Config{Devices: []DeviceSpec{{}, {}}, Upstream: true})
	d := tp.Devices[0]
	old := d.Port
	called := false
	err := tp.RecreatePort(d, func(idx int) error {
		called = true
		l, err := tp.Gateway.Netlink().LinkByName(old.Name)
		if err != nil {
			return err
		}
		if l.Attrs().Index != idx || idx == old.Index {
			t.Errorf("beforeUp got ifindex %d; port %s has %d, had %d", idx, old.Name, l.Attrs().Index, old.Index)
		}
		if l.Attrs().Flags&net.FlagUp != 0 {
			t.Errorf("port %s is up before beforeUp returned", old.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !called || d.Port.Name != old.Name || d.Port.Index == old.Index {
		t.Fatalf("re-created port %+v, was %+v (beforeUp called: %v)", d.Port, old, called)
	}
	for _, dst := range []netip.Addr{tp.Upstream.IPv4, tp.Upstream.IPv6, tp.Devices[1].IPv4[0]} {
		if err := d.NS.Ping(dst, wait); err != nil {
			t.Fatal(err)
		}
	}
	// An error from beforeUp aborts.
	boom := errors.New("boom")
	if err := tp.RecreatePort(d, func(int) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("RecreatePort with a failing beforeUp: %v", err)
	}
}

// TestBridgeTopology: device ports are ports of the bridge, which carries the gateway's
// addresses; devices reach each other, the gateway and the upstream; a device added later
// is a port too.
func TestBridgeTopology(t *testing.T) {
	RequirePriv(t)
	tp := New(t, Config{Devices: []DeviceSpec{{}, {}}, Upstream: true, Bridge: true})
	if tp.Bridge == nil {
		t.Fatal("no bridge")
	}
	var held int
	late, err := tp.AddDeviceHeld(DeviceSpec{Name: "late"}, func(idx int) error {
		held = idx
		l, err := tp.Gateway.Netlink().LinkByIndex(idx)
		if err != nil {
			return err
		}
		if l.Attrs().MasterIndex != tp.Bridge.Index {
			t.Errorf("held port's master %d, want the bridge %d", l.Attrs().MasterIndex, tp.Bridge.Index)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if held != late.Port.Index {
		t.Errorf("beforeUp got %d, port %d", held, late.Port.Index)
	}
	for _, d := range tp.Devices {
		l, err := tp.Gateway.Netlink().LinkByIndex(d.Port.Index)
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().MasterIndex != tp.Bridge.Index {
			t.Errorf("port %s: master %d, want %d", d.Port.Name, l.Attrs().MasterIndex, tp.Bridge.Index)
		}
		for _, dst := range []netip.Addr{tp.Config().GatewayIPv4, tp.Upstream.IPv4, tp.Upstream.IPv6} {
			if err := d.NS.Ping(dst, wait); err != nil {
				t.Fatalf("%s: %v", d.Name, err)
			}
		}
	}
	if err := tp.Devices[0].NS.Ping(late.IPv4[0], wait); err != nil {
		t.Fatal(err)
	}
	if err := tp.RecreatePort(late, nil); err != nil {
		t.Fatal(err)
	}
	if err := late.NS.Ping(tp.Upstream.IPv4, wait); err != nil {
		t.Fatal(err)
	}
}
