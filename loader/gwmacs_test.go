package loader

import (
	"net"
	"testing"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/maps/gwmacs"
	"github.com/ztgate/ztgate/testenv"
)

// TestPruneGatewayMACs: a protected port re-created with a new MAC, more times than zt_gwmacs has
// entries, is attached every time, and the map keeps only the MACs of interfaces that have them
// now, plus those added by hand.
func TestPruneGatewayMACs(t *testing.T) {
	requirePriv(t)
	tp := testenv.New(t, testenv.Config{Devices: []testenv.DeviceSpec{{}}})
	d := tp.Devices[0]
	dp := openDatapath(t, testConfig(t))
	m := dp.Objects().ZtGwmacs
	byHand := net.HardwareAddr{0x02, 0x7b, 0xff, 0, 0, 1}
	if err := gwmacs.Add(m, byHand, 0); err != nil {
		t.Fatal(err)
	}
	entries := func() map[string]uint32 {
		t.Helper()
		out := map[string]uint32{}
		var k bpf.DevKey
		var owner uint32
		it := m.Iterate()
		for it.Next(&k, &owner) {
			out[net.HardwareAddr(k.Mac[:]).String()] = owner
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	for i := range int(m.MaxEntries()) + 6 {
		if i > 0 {
			if err := tp.RecreatePort(d, nil); err != nil {
				t.Fatal(err)
			}
		}
		mac := net.HardwareAddr{0x02, 0x7b, 0, 0, byte(i >> 8), byte(i)}
		if err := tp.Gateway.Do(func() error {
			l, err := tp.Gateway.Netlink().LinkByName(d.Port.Name)
			if err == nil {
				err = tp.Gateway.Netlink().LinkSetHardwareAddr(l, mac)
			}
			if err == nil {
				err = dp.PruneGatewayMACs()
			}
			if err == nil {
				_, err = dp.Attach(d.Port.Name)
			}
			return err
		}); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		got := entries()
		if len(got) != 2 || got[mac.String()] == 0 || got[byHand.String()] != 0 {
			t.Fatalf("round %d: zt_gwmacs holds %v, want %s (the port's) and %s (by hand)", i, got, mac, byHand)
		}
	}
}
