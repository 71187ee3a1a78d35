package policy

import (
	"strings"
	"testing"

	"github.com/ztgate/ztgate/bpf"
)

func gwPolicy() *Policy {
	return &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "gw"}, Spec: Spec{
		Mode:     ModeAudit,
		Gateway:  Gateway{IPv4: []string{"10.0.0.1"}, MACs: []string{"02:00:00:00:00:fe", "02:00:00:00:00:fd"}},
		Segments: []Segment{{Name: "open", AuditIdentity: true}},
		Devices: []Device{
			{Name: "a", MAC: "02:00:00:00:00:01", IPv4: []string{"10.0.0.11"}},
			{Name: "b", MAC: "02:00:00:00:00:02", IPv4: []string{"10.0.0.12"}, Segment: "open"},
			{Name: "c", MAC: "02:00:00:00:00:03", IPv4: []string{"10.0.0.13"}, AuditIdentity: true},
			{Name: "d", MAC: "02:00:00:00:00:04", IPv4: []string{"10.0.0.14"}, AuditIdentity: true, Mode: ModeEnforce},
		},
	}}
}

// TestGatewayMACsCompile: spec.gateway.macs land in the slot's config, and auditIdentity (on the
// policy, a segment or a device) sets the flag of audit-mode devices only.
func TestGatewayMACsCompile(t *testing.T) {
	p := gwPolicy()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := Compile(p, CompileOptions{Revision: 1})
	if err != nil {
		t.Fatal(err)
	}
	if s.Config.N_gwmac != 2 || s.Config.Gwmac[0].B != [6]byte{2, 0, 0, 0, 0, 0xfe} ||
		s.Config.Gwmac[1].B != [6]byte{2, 0, 0, 0, 0, 0xfd} {
		t.Errorf("config gateway MACs %d %v", s.Config.N_gwmac, s.Config.Gwmac)
	}
	want := map[byte]uint16{1: bpf.DevAudit, 2: bpf.DevAudit | bpf.DevAuditIdentity,
		3: bpf.DevAudit | bpf.DevAuditIdentity, 4: 0}
	for k, d := range s.Devices {
		if got := d.Flags & (bpf.DevAudit | bpf.DevAuditIdentity); got != want[k.Mac[5]] {
			t.Errorf("device %x: audit flags %#x, want %#x", k.Mac, got, want[k.Mac[5]])
		}
	}
}

// TestGatewayMACsInvalid: bad gateway MACs are rejected with the field's path.
func TestGatewayMACsInvalid(t *testing.T) {
	for _, c := range []struct {
		macs []string
		want string
	}{
		{macs: []string{"nope"}, want: `spec.gateway.macs[0]: "nope" is not a 6-byte MAC address`},
		{macs: []string{"01:00:5e:00:00:01"}, want: "multicast or broadcast"},
		{macs: []string{"00:00:00:00:00:00"}, want: "all-zero"},
		{macs: []string{"02:00:00:00:00:fe", "02:00:00:00:00:FE"}, want: "duplicate MAC address 02:00:00:00:00:fe"},
		{macs: []string{"02:00:00:00:00:01"}, want: "spec.devices[0].mac: MAC address 02:00:00:00:00:01 is the gateway's"},
		{macs: []string{"02:00:00:00:01:01", "02:00:00:00:01:02", "02:00:00:00:01:03", "02:00:00:00:01:04",
			"02:00:00:00:01:05"}, want: "5 MAC addresses, at most 4"},
	} {
		p := gwPolicy()
		p.Spec.Gateway.MACs = c.macs
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("macs %v: error %v, want %q", c.macs, err, c.want)
		}
	}
}

// TestGatewayMACsParse: the fields read from YAML and from the JSON fast path alike.
func TestGatewayMACsParse(t *testing.T) {
	doc := `apiVersion: ztgate/v1
kind: Policy
metadata: {name: gw}
spec:
  mode: audit
  auditIdentity: true
  gateway: {ipv4: [10.0.0.1], macs: ["02:00:00:00:00:fe"]}
  devices:
    - {name: a, mac: "02:00:00:00:00:01", ipv4: [10.0.0.11], auditIdentity: true}
`
	p, err := Parse("t.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Spec.AuditIdentity || !p.Spec.Devices[0].AuditIdentity || len(p.Spec.Gateway.MACs) != 1 {
		t.Errorf("parsed %+v", p.Spec)
	}
	js := `{"apiVersion": "ztgate/v1", "kind": "Policy", "metadata": {"name": "gw"},
"spec": {"auditIdentity": true, "gateway": {"macs": ["02:00:00:00:00:fe"]}}}`
	pj, err := Parse("t.json", []byte(js))
	if err != nil {
		t.Fatal(err)
	}
	if !pj.Spec.AuditIdentity || len(pj.Spec.Gateway.MACs) != 1 {
		t.Errorf("parsed JSON %+v", pj.Spec)
	}
}
