package loader

import (
	"slices"
	"testing"

	"github.com/ztgate/ztgate/testenv"
)

// TestDisableVLANOffload: a veth strips VLAN tags on receive by default; afterwards it does not,
// and a second call is a no-op.
func TestDisableVLANOffload(t *testing.T) {
	testenv.RequirePriv(t)
	tp := testenv.New(t, testenv.Config{Devices: []testenv.DeviceSpec{{}}})
	port := tp.Devices[0].Port.Name
	on := func() []string {
		t.Helper()
		var on []string
		if err := tp.Gateway.Do(func() (err error) {
			on, err = VLANOffloadsOn(port)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return on
	}
	if on := on(); !slices.Contains(on, "rx-vlan-hw-parse") {
		t.Skipf("rx-vlan-hw-parse is off on a new veth already: %v", on)
	}
	for range 2 {
		if err := tp.Gateway.Do(func() error { return DisableVLANOffload(port) }); err != nil {
			t.Fatal(err)
		}
		if on := on(); len(on) > 0 {
			t.Errorf("%v still on", on)
		}
	}
}
