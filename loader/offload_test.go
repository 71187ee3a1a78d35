package loader

import (
	"testing"

	"github.com/safchain/ethtool"

	"github.com/ztgate/ztgate/testenv"
)

// TestDisableVLANOffload: a veth strips VLAN tags on receive by default; afterwards it does not,
// and a second call is a no-op.
func TestDisableVLANOffload(t *testing.T) {
	testenv.RequirePriv(t)
	tp := testenv.New(t, testenv.Config{Devices: []testenv.DeviceSpec{{}}})
	port := tp.Devices[0].Port.Name
	features := func() map[string]bool {
		t.Helper()
		var fs map[string]bool
		if err := tp.Gateway.Do(func() error {
			e, err := ethtool.NewEthtool()
			if err != nil {
				return err
			}
			defer e.Close()
			fs, err = e.Features(port)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return fs
	}
	if fs := features(); !fs["rx-vlan-hw-parse"] {
		t.Skipf("rx-vlan-hw-parse is off on a new veth already: %v", fs["rx-vlan-hw-parse"])
	}
	for range 2 {
		if err := tp.Gateway.Do(func() error { return DisableVLANOffload(port) }); err != nil {
			t.Fatal(err)
		}
		fs := features()
		for _, f := range VLANOffloads {
			if fs[f] {
				t.Errorf("%s still on", f)
			}
		}
	}
}
