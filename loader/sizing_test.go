package loader

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
)

// TestSizeSpecAsOpen checks that SizeSpec sizes every map and sets every runtime constant as
// Open's spec has them: for the defaults, with events on, and with every size changed.
func TestSizeSpecAsOpen(t *testing.T) {
	custom := DefaultConfig()
	custom.MaxDevices, custom.FragEntries, custom.EventLimitEntries, custom.RingBytes = 1000, 512, 1024, 1<<16
	custom.EventBurst, custom.EventsEnabled, custom.EventLimitSeed = 3, false, 12345
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{name: "defaults", cfg: Config{EventLimitSeed: 7}},
		{name: "events on", cfg: Config{EventsEnabled: true, EventLimitSeed: 7}},
		{name: "custom", cfg: custom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := newSpec(tc.cfg.withDefaults())
			if err != nil {
				t.Fatal(err)
			}
			got, err := bpf.LoadZtgate()
			if err != nil {
				t.Fatal(err)
			}
			if err := SizeSpec(got, tc.cfg); err != nil {
				t.Fatal(err)
			}
			for name, ms := range want.Maps {
				if got.Maps[name].MaxEntries != ms.MaxEntries {
					t.Errorf("map %s: %d entries, want %d", name, got.Maps[name].MaxEntries, ms.MaxEntries)
				}
				if got.Maps[name].Pinning != ebpf.PinNone {
					t.Errorf("map %s: pinned", name)
				}
			}
			for name, vs := range want.Variables {
				w, g := make([]byte, vs.Size()), make([]byte, vs.Size())
				if err := vs.Get(w); err != nil {
					t.Fatal(err)
				}
				if err := got.Variables[name].Get(g); err != nil {
					t.Fatal(err)
				}
				if string(w) != string(g) {
					t.Errorf("variable %s: %x, want %x", name, g, w)
				}
			}
		})
	}
}
