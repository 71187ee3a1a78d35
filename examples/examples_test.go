package examples

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ztgate/ztgate/policy"
)

// TestExamples: every examples/*.yaml and the deploy/policy.yaml starting point parses,
// validates and compiles, and each names at least one device.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found %d example policies (%v), want home, office and factory at least", len(files), files)
	}
	for _, file := range append(files, filepath.Join("..", "deploy", "policy.yaml")) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			p, err := policy.Parse(file, data)
			if err != nil {
				t.Fatalf("parse:\n%v", err)
			}
			if err := p.Validate(); err != nil {
				t.Fatalf("validate:\n%v", err)
			}
			ports := map[string]uint32{}
			s, err := policy.Compile(p, policy.CompileOptions{Revision: 1, Ifindex: func(name string) (uint32, error) {
				if ports[name] == 0 {
					ports[name] = uint32(len(ports) + 1)
				}
				return ports[name], nil
			}})
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if len(p.Spec.Devices) == 0 || len(s.Devices) != len(p.Spec.Devices) {
				t.Errorf("%d devices in the policy, %d compiled", len(p.Spec.Devices), len(s.Devices))
			}
		})
	}
}
