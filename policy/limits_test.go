package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/bpf"
)

// segmentsPolicy has n segments s0..s(n-1), a device in the first and one in the last, and a
// device allowed to reach the last segment only.
func segmentsPolicy(n int) *Policy {
	segs := make([]Segment, n)
	for i := range segs {
		segs[i].Name = fmt.Sprintf("s%d", i)
	}
	last := segs[n-1].Name
	return &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "segments"}, Spec: Spec{
		Segments: segs,
		Devices: []Device{
			{Name: "first", MAC: "02:00:00:00:00:01", IPv4: []string{"10.0.0.1"}, Segment: "s0"},
			{Name: "last", MAC: "02:00:00:00:00:02", IPv4: []string{"10.0.0.2"}, Segment: last},
			{Name: "client", MAC: "02:00:00:00:00:03", IPv4: []string{"10.0.0.3"},
				Allow: []Rule{{To: Target{Segment: last}}}},
		},
	}}
}

func TestSegmentLimit(t *testing.T) {
	p := segmentsPolicy(maxSegments + 2) // the last would take id 1, the first's, if ids wrapped
	err := p.Validate()
	if err == nil || !strings.Contains(err.Error(), "spec.segments: has 65537 segments, at most 65535") {
		t.Fatalf("Validate: %v, want too many segments at spec.segments", err)
	}
	_, err = Compile(p, CompileOptions{Revision: 1})
	var pe *PathError
	if !errors.As(err, &pe) || pe.Path != "spec.segments" {
		t.Fatalf("Compile: %v, want a PathError at spec.segments", err)
	}

	p = segmentsPolicy(maxSegments)
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate %d segments: %v", maxSegments, err)
	}
	s, err := Compile(p, CompileOptions{Revision: 1})
	if err != nil {
		t.Fatalf("Compile %d segments: %v", maxSegments, err)
	}
	if got := s.Devices[DevKey(mustMAC("02:00:00:00:00:02"))].Segment; got != maxSegments {
		t.Fatalf("last segment id %d, want %d", got, maxSegments)
	}
	client := s.Devices[DevKey(mustMAC("02:00:00:00:00:03"))]
	for k := range s.Rules {
		if k.Ruleset == client.Ruleset && k.SelKind == bpf.SelSegment && k.SelId != maxSegments {
			t.Errorf("the client's rule to the last segment allows segment %d", k.SelId)
		}
	}
}

// TestPortLimits: a port that does not fit 16 bits is an error in YAML and JSON (never a
// wrapped port), and more distinct ranges for one destination than a rule holds are refused.
func TestPortLimits(t *testing.T) {
	for _, doc := range []string{
		withSpec("  quarantine:\n    allow:\n      - to: {gateway: true}\n        proto: tcp\n        ports: [65536]\n"),
		withSpec("  quarantine:\n    allow:\n      - to: {gateway: true}\n        proto: tcp\n        ports: [65536-65999]\n"),
		`{"apiVersion": "ztgate/v1", "kind": "Policy", "metadata": {"name": "p"}, "spec": {"quarantine": ` +
			`{"allow": [{"to": {"gateway": true}, "proto": "tcp", "ports": [65536]}]}}}`,
		`{"apiVersion": "ztgate/v1", "kind": "Policy", "metadata": {"name": "p"}, "spec": {"quarantine": ` +
			`{"allow": [{"to": {"gateway": true}, "proto": "tcp", "ports": [65997]}]}}}`,
	} {
		_, err := Parse("t", []byte(doc))
		if err == nil || !strings.Contains(err.Error(), "spec.quarantine.allow[0].ports[0]") ||
			!strings.Contains(err.Error(), "out of range 1-65535") {
			t.Errorf("%s: %v, want the port out of range", doc, err)
		}
	}

	var ranges []PortRange
	for i := range len(bpf.RuleVal{}.Ranges) + 1 {
		ranges = append(ranges, PortRange{Lo: uint16(1000 + 2*i), Hi: uint16(1000 + 2*i)})
	}
	p := &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "ports"}, Spec: Spec{
		Devices: []Device{{Name: "a", MAC: "02:00:00:00:00:01", Allow: []Rule{
			{To: Target{CIDR: "10.0.0.0/8"}, Proto: "tcp", Ports: ranges}}}}}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	_, err := Compile(p, CompileOptions{Revision: 1})
	var pe *PathError
	if !errors.As(err, &pe) || pe.Path != "spec.devices[0].allow" || !strings.Contains(err.Error(), "at most 16") {
		t.Fatalf("Compile: %v, want too many port ranges at spec.devices[0].allow", err)
	}
	p.Spec.Devices[0].Allow[0].Ports = ranges[:len(ranges)-1]
	if _, err := Compile(p, CompileOptions{Revision: 1}); err != nil {
		t.Fatalf("Compile 16 ranges: %v", err)
	}
}

// TestIDLimits lowers each id limit of the compiler: a policy that needs one id more is
// refused with an error naming the field, never compiled with a wrapped id.
func TestIDLimits(t *testing.T) {
	base := func() *Policy {
		return &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "ids"}, Spec: Spec{
			Devices: []Device{
				{Name: "a", MAC: "02:00:00:00:00:01", Allow: []Rule{{To: Target{CIDR: "10.1.0.0/16"}}}},
				{Name: "b", MAC: "02:00:00:00:00:02", Allow: []Rule{{To: Target{CIDR: "10.2.0.0/16"}},
					{To: Target{CIDR: "10.3.0.0/16"}}}},
			},
		}}
	}
	for _, tc := range []struct {
		name  string
		limit *uint64
		fits  uint64 // the largest limit that still fails; one more compiles
		path  string
	}{
		{"devices", &maxDevID, 1, "spec.devices"},
		// Rule set 1 is the quarantine's, 2 device a's, 3 device b's.
		{"rule sets", &maxRulesetID, 2, "spec.devices[1].allow"},
		// Groups 1 for a's prefix, 2 and 3 for b's.
		{"prefix groups", &maxGroupID, 2, "spec.devices[1].allow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := *tc.limit
			t.Cleanup(func() { *tc.limit = old })
			*tc.limit = tc.fits
			_, err := Compile(base(), CompileOptions{Revision: 1})
			var pe *PathError
			if !errors.As(err, &pe) || pe.Path != tc.path {
				t.Fatalf("limit %d: %v, want an error at %s", tc.fits, err, tc.path)
			}
			*tc.limit = tc.fits + 1
			if _, err := Compile(base(), CompileOptions{Revision: 1}); err != nil {
				t.Fatalf("limit %d: %v", tc.fits+1, err)
			}
		})
	}
}
