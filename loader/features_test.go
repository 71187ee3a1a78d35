package loader

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/testenv"
)

// TestFeatures: the list follows the object file (the XDP program type, its map types and
// helpers, XDP links) and this kernel has every one of them.
func TestFeatures(t *testing.T) {
	testenv.RequirePriv(t)
	fs, err := Features()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range fs {
		names[f.Name] = true
	}
	for _, want := range []string{"program type XDP", "map type RingBuf", "map type LPMTrie", "map type ArrayOfMaps",
		"helper bpf_map_lookup_elem", "helper bpf_ringbuf_reserve", "helper bpf_xdp_load_bytes", "XDP bpf_link"} {
		if !names[want] {
			t.Errorf("features lack %q: %v", want, names)
		}
	}
	if err := CheckFeatures(fs); err != nil {
		t.Fatal(err)
	}
	// Missing and unprobeable features are named, all of them.
	fs = append(fs, Feature{Name: "map type Imaginary", Probe: func() error { return ebpf.ErrNotSupported }},
		Feature{Name: "helper bpf_imaginary", Probe: func() error { return errors.New("boom") }})
	err = CheckFeatures(fs)
	if err == nil || !strings.Contains(err.Error(), "map type Imaginary: not supported by this kernel") ||
		!strings.Contains(err.Error(), "helper bpf_imaginary: cannot probe: boom") {
		t.Fatalf("CheckFeatures: %v", err)
	}
}
