package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/policy"
)

// testSite is a site with the demo's device names and made-up values.
func testSite() site {
	s := site{GatewayIPv4: "10.99.0.1", GatewayIPv6: "fd00:99::1", CloudIPv4: "192.0.2.2", CloudIPv6: "2001:db8:99::2"}
	for i, name := range []string{"thermostat", "camera", "hvac-ctl"} {
		s.Devices = append(s.Devices, siteDevice{
			Name: name,
			MAC:  fmt.Sprintf("02:7a:64:00:00:%02x", i),
			IPv4: []string{fmt.Sprintf("10.99.0.%d", 10+i)},
			IPv6: []string{fmt.Sprintf("fd00:99::%x", 0x10+i), fmt.Sprintf("fe80::%x", 0x10+i)},
			Port: fmt.Sprintf("eth%d", i+1),
		})
	}
	return s
}

// TestPolicyTemplate: the rendered template is a valid policy that compiles, with the three
// segments and devices the demo relies on.
func TestPolicyTemplate(t *testing.T) {
	out, err := renderPolicy(testSite())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "{{") || strings.Contains(string(out), "text/template") {
		t.Errorf("template syntax or the template comment left in the output:\n%s", out)
	}
	p, err := policy.Parse("policy.yaml", out)
	if err != nil {
		t.Fatalf("rendered policy does not parse: %v\n%s", err, out)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	var segs, devs []string
	for _, s := range p.Spec.Segments {
		segs = append(segs, s.Name)
	}
	for _, d := range p.Spec.Devices {
		devs = append(devs, d.Name+"/"+d.Segment+"/"+d.Port)
	}
	if got, want := strings.Join(segs, ","), "sensors,cameras,controllers"; got != want {
		t.Errorf("segments %s, want %s", got, want)
	}
	if got, want := strings.Join(devs, ","),
		"thermostat/sensors/eth1,camera/cameras/eth2,hvac-ctl/controllers/eth3"; got != want {
		t.Errorf("devices %s, want %s", got, want)
	}
	ports := map[string]uint32{"eth1": 11, "eth2": 12, "eth3": 13}
	s, err := policy.Compile(p, policy.CompileOptions{Revision: 1, Ifindex: func(name string) (uint32, error) {
		return ports[name], nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Devices) != 3 || len(s.Rules) == 0 {
		t.Errorf("compiled %d devices, %d rules", len(s.Devices), len(s.Rules))
	}
}

func TestPolicyTemplateMissingDevice(t *testing.T) {
	s := testSite()
	s.Devices = s.Devices[:2]
	if _, err := renderPolicy(s); err == nil || !strings.Contains(err.Error(), "hvac-ctl") {
		t.Fatalf("render without hvac-ctl: %v, want an error naming it", err)
	}
}
