package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

const header = `apiVersion: ztgate/v1
kind: Policy
metadata:
  name: t
`

// withSpec returns a document whose spec is body (indented by two spaces); the first line of
// body is line 6 of the document.
func withSpec(body string) string {
	return header + "spec:\n" + body
}

// device is a valid device entry to build on.
const device = `  devices:
    - name: d1
      mac: "02:00:00:00:00:01"
`

func mustParseFile(t *testing.T, path string) *Policy {
	t.Helper()
	p, err := ParseFile(path)
	if err != nil {
		t.Fatalf("ParseFile(%s): %v", path, err)
	}
	return p
}

func TestParseValid(t *testing.T) {
	p := mustParseFile(t, "testdata/valid.yaml")
	if p.Metadata.Name != "site-a" || p.Metadata.Revision != 7 || p.Spec.Mode != ModeEnforce {
		t.Errorf("header: got %+v mode %q", p.Metadata, p.Spec.Mode)
	}
	if got, want := len(p.Spec.Devices), 2; got != want {
		t.Fatalf("got %d devices, want %d", got, want)
	}
	cam := p.Spec.Devices[0]
	if cam.VLAN != 10 || cam.Port != "eth1" || cam.Segment != "cameras" {
		t.Errorf("cam-1: got %+v", cam)
	}
	wantPorts := []PortRange{{Lo: 8000, Hi: 8080}, {Lo: 443, Hi: 443}}
	if got := cam.Allow[0].Ports; !reflect.DeepEqual(got, wantPorts) {
		t.Errorf("cam-1 ports: got %v, want %v", got, wantPorts)
	}
	wantPorts = []PortRange{{Lo: 514, Hi: 514}, {Lo: 5000, Hi: 5010}}
	if got := p.Spec.Segments[0].Allow[0].Ports; !reflect.DeepEqual(got, wantPorts) {
		t.Errorf("segment ports: got %v, want %v", got, wantPorts)
	}
	if !p.Spec.Devices[1].Quarantined || !p.Spec.Segments[0].Allow[0].To.Gateway {
		t.Errorf("booleans not decoded: %+v", p.Spec)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("Validate on a parsed policy: %v", err)
	}
}

func TestParseAliases(t *testing.T) {
	doc := withSpec(`  segments:
    - name: a
      allow: &web
        - to: {cidr: 10.0.0.0/8}
          proto: tcp
          ports: &ports [80, 443]
    - name: b
      allow: *web
  quarantine:
    allow:
      - to: {gateway: true}
        proto: udp
        ports: *ports
`)
	p, err := Parse("t.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.Spec.Segments[0].Allow, p.Spec.Segments[1].Allow) {
		t.Errorf("alias not expanded: %+v", p.Spec.Segments)
	}
	if got := p.Spec.Quarantine.Allow[0].Ports; len(got) != 2 {
		t.Errorf("quarantine ports: got %v", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // each must appear in the error text
		n    int      // number of errors, when not 0
	}{
		// Document level.
		{name: "empty", doc: "", want: []string{"t.yaml: empty document"}, n: 1},
		{name: "only comments", doc: "# nothing here\n", want: []string{"t.yaml: empty document"}, n: 1},
		{name: "null document", doc: "---\n", want: []string{"empty document"}, n: 1},
		{
			name: "multiple documents",
			doc:  withSpec("  mode: audit\n") + "---\n" + header,
			want: []string{"t.yaml:7:1: more than one YAML document"},
			n:    1,
		},
		{
			name: "syntax",
			doc:  "apiVersion: [ztgate/v1\n",
			want: []string{"t.yaml:1: invalid YAML: did not find expected ',' or ']'"},
			n:    1,
		},
		{name: "top level list", doc: "- a\n", want: []string{"t.yaml:1:1: expected a mapping, got a list"}, n: 1},
		{
			name: "top level scalar",
			doc:  "hello\n",
			want: []string{`t.yaml:1:1: expected a mapping, got string "hello"`},
			n:    1,
		},

		// Strict decoding.
		{name: "unknown top-level field", doc: header + "spec: {}\nextra: 1\n", want: []string{
			`t.yaml:6:1: extra: unknown field "extra", allowed fields are apiVersion, kind, metadata, spec`}, n: 1},
		{
			name: "unknown device field",
			doc:  withSpec(device + "      macc: x\n"),
			want: []string{
				`t.yaml:9:7: spec.devices[0].macc: unknown field "macc", allowed fields are name, mac, ipv4, ipv6, ` +
					`port, vlan, segment, mode, quarantined, auditIdentity, allow`},
			n: 1,
		},
		{name: "duplicate field", doc: withSpec("  gateway:\n    ipv4: [10.0.0.1]\n    ipv4: [10.0.0.2]\n"), want: []string{
			`t.yaml:8:5: spec.gateway.ipv4: duplicate field "ipv4", first defined at line 7`}, n: 1},
		{name: "merge key", doc: withSpec("  gateway: &g {ipv4: [10.0.0.1]}\n  quarantine:\n    <<: *g\n"), want: []string{
			"spec.quarantine: merge keys (<<) are not supported"}, n: 1},
		{
			name: "non-scalar key",
			doc:  withSpec("  ? [a]\n  : b\n"),
			want: []string{"t.yaml:6:5: spec: expected a field name, got a list"},
			n:    1,
		},
		{name: "string for list", doc: withSpec("  gateway:\n    ipv4: 10.0.0.1\n"), want: []string{
			`t.yaml:7:11: spec.gateway.ipv4: expected a list, got string "10.0.0.1"`}, n: 1},
		{
			name: "list for string",
			doc:  withSpec("  devices:\n    - name: [d1]\n      mac: 02:00:00:00:00:01\n"),
			want: []string{
				"t.yaml:7:13: spec.devices[0].name: expected a string, got a list"},
			n: 1,
		},
		{
			name: "mapping for string",
			doc:  withSpec("  mode: {a: b}\n"),
			want: []string{"spec.mode: expected a string, got a mapping"},
			n:    1,
		},
		{
			name: "list for mapping",
			doc:  withSpec("  gateway: [a]\n"),
			want: []string{"spec.gateway: expected a mapping, got a list"},
			n:    1,
		},
		{
			name: "custom tag",
			doc:  withSpec("  mode: !fancy audit\n"),
			want: []string{`spec.mode: expected a string, got !fancy "audit"`},
			n:    1,
		},
		{
			name: "negative vlan",
			doc:  withSpec(device + "      vlan: -1\n"),
			want: []string{"t.yaml:9:13: spec.devices[0].vlan: -1 is out of range 0-4094"},
			n:    1,
		},
		{
			name: "vlan too large",
			doc:  withSpec(device + "      vlan: 4095\n"),
			want: []string{"spec.devices[0].vlan: 4095 is out of range 0-4094"},
			n:    1,
		},
		{
			name: "vlan string",
			doc:  withSpec(device + "      vlan: \"10\"\n"),
			want: []string{`spec.devices[0].vlan: expected an integer, got string "10"`},
			n:    1,
		},
		{
			name: "revision string",
			doc:  "apiVersion: ztgate/v1\nkind: Policy\nmetadata: {name: t, revision: abc}\n",
			want: []string{
				`t.yaml:3:31: metadata.revision: expected an integer, got string "abc"`},
			n: 1,
		},
		{name: "leading zeros", doc: withSpec(device + `      vlan: 010
      allow:
        - {to: {gateway: true}, proto: tcp, ports: [0443, "0443"]}
        - {to: {gateway: true}, proto: "017"}
`), want: []string{
			"spec.devices[0].vlan: 010 has a leading zero, which YAML reads as octal: remove it (or write 0o for octal)",
			"spec.devices[0].allow[0].ports[0]: 0443 has a leading zero",
			`spec.devices[0].allow[1].proto: protocol "017" has a leading zero, remove it`}, n: 3},
		{
			name: "revision float",
			doc:  "apiVersion: ztgate/v1\nkind: Policy\nmetadata: {name: t, revision: 1.5}\n",
			want: []string{
				"metadata.revision: expected an integer, got number 1.5"},
			n: 1,
		},
		{
			name: "revision negative",
			doc:  "apiVersion: ztgate/v1\nkind: Policy\nmetadata: {name: t, revision: -3}\n",
			want: []string{
				"metadata.revision: -3 is out of range 0-18446744073709551615"},
			n: 1,
		},
		{name: "bool as string", doc: withSpec(device + "      quarantined: \"yes\"\n"), want: []string{
			`spec.devices[0].quarantined: expected true or false, got string "yes"`}, n: 1},
		{
			name: "target gateway not bool",
			doc:  withSpec("  quarantine:\n    allow:\n      - to: {gateway: 1}\n"),
			want: []string{
				"spec.quarantine.allow[0].to.gateway: expected true or false, got integer 1"},
			n: 1,
		},
		{name: "ports", doc: withSpec(`  quarantine:
    allow:
      - to: {gateway: true}
        proto: tcp
        ports: [0, 70000, "80-", "9000-8000", 1.5, true, {a: b}, "0-10", "", " 80", "+80", ~]
`), want: []string{
			"t.yaml:10:17: spec.quarantine.allow[0].ports[0]: port 0 is out of range 1-65535",
			"spec.quarantine.allow[0].ports[1]: port 70000 is out of range 1-65535",
			`spec.quarantine.allow[0].ports[2]: "80-" is not a port (443) or a port range ("8000-8080")`,
			"spec.quarantine.allow[0].ports[3]: port range 9000-8000 is reversed, write 8000-9000",
			`spec.quarantine.allow[0].ports[4]: expected a port (443) or a port range ("8000-8080"), got number 1.5`,
			"spec.quarantine.allow[0].ports[5]: expected a port (443) or a port range (\"8000-8080\"), got boolean true",
			"spec.quarantine.allow[0].ports[6]: expected a port (443) or a port range (\"8000-8080\"), got a mapping",
			"spec.quarantine.allow[0].ports[7]: port 0 is out of range 1-65535",
			`spec.quarantine.allow[0].ports[8]: "" is not a port`,
			`spec.quarantine.allow[0].ports[9]: " 80" is not a port`,
			`spec.quarantine.allow[0].ports[10]: "+80" is not a port`,
			"spec.quarantine.allow[0].ports[11]: expected a port (443) or a port range (\"8000-8080\"), got null",
		}, n: 12},

		// Header.
		{name: "missing header", doc: "metadata: {name: t}\n", want: []string{
			`t.yaml:1:1: apiVersion: is required, must be "ztgate/v1"`,
			`t.yaml:1:1: kind: is required, must be "Policy"`}, n: 2},
		{name: "wrong header", doc: "apiVersion: v1\nkind: Pod\nmetadata: {name: t}\n", want: []string{
			`t.yaml:1:13: apiVersion: must be "ztgate/v1", got "v1"`,
			`t.yaml:2:7: kind: must be "Policy", got "Pod"`}, n: 2},
		{name: "missing name", doc: "apiVersion: ztgate/v1\nkind: Policy\nmetadata:\n  name:\n", want: []string{
			"t.yaml:4:3: metadata.name: is required"}, n: 1},
		{
			name: "name too long",
			doc:  "apiVersion: ztgate/v1\nkind: Policy\nmetadata:\n  name: " + strings.Repeat("a", 64) + "\n",
			want: []string{
				"metadata.name: \"" + strings.Repeat("a", 64) + "\" is longer than 63 characters"},
			n: 1,
		},
		{
			name: "name syntax",
			doc:  "apiVersion: ztgate/v1\nkind: Policy\nmetadata:\n  name: Site_A\n",
			want: []string{
				`metadata.name: "Site_A" is not a valid name: use lowercase letters, digits and '-', ` +
					`starting and ending with a letter or digit`},
			n: 1,
		},
		{name: "name trailing dash", doc: "apiVersion: ztgate/v1\nkind: Policy\nmetadata:\n  name: site-\n", want: []string{
			`metadata.name: "site-" is not a valid name`}, n: 1},

		// Modes.
		{name: "modes", doc: withSpec(`  mode: strict
  segments:
    - name: s
      mode: Enforce
  devices:
    - name: d1
      mac: 02:00:00:00:00:01
      mode: off
`), want: []string{
			`t.yaml:6:9: spec.mode: "strict" is not a mode, use enforce or audit`,
			`spec.segments[0].mode: "Enforce" is not a mode, use enforce or audit`,
			`spec.devices[0].mode: "off" is not a mode, use enforce or audit`}, n: 3},

		// Gateway.
		{name: "gateway ipv4", doc: withSpec(`  gateway:
    ipv4: [10.0.0.300, "fd00::1", 0.0.0.0, 224.0.0.1, 127.0.0.1, 10.0.0.1, 10.0.0.1]
`), want: []string{
			"t.yaml:7:11: spec.gateway.ipv4: has 7 addresses, at most 4 are allowed",
			`t.yaml:7:12: spec.gateway.ipv4[0]: "10.0.0.300" is not an IPv4 address`,
			`spec.gateway.ipv4[1]: "fd00::1" is an IPv6 address, list it under ipv6`,
			`spec.gateway.ipv4[2]: "0.0.0.0" is the unspecified address`,
			`spec.gateway.ipv4[3]: "224.0.0.1" is a multicast address`,
			`spec.gateway.ipv4[4]: "127.0.0.1" is a loopback address`,
			"spec.gateway.ipv4[6]: duplicate address 10.0.0.1"}, n: 7},
		{name: "gateway ipv6", doc: withSpec(`  gateway:
    ipv6: ["::ffff:10.0.0.1", "::1", "fe80::1%eth0", "ff02::1", "::", 10.0.0.1, "fd00::zz"]
`), want: []string{
			`spec.gateway.ipv6[0]: "::ffff:10.0.0.1" is an IPv4-mapped IPv6 address, list the IPv4 address under ipv4`,
			`spec.gateway.ipv6[1]: "::1" is a loopback address`,
			`spec.gateway.ipv6[2]: "fe80::1%eth0" has a zone, zones are not allowed`,
			`spec.gateway.ipv6[3]: "ff02::1" is a multicast address`,
			`spec.gateway.ipv6[4]: "::" is the unspecified address`,
			`spec.gateway.ipv6[5]: "10.0.0.1" is an IPv4 address, list it under ipv4`,
			`spec.gateway.ipv6[6]: "fd00::zz" is not an IPv6 address`}, n: 8},
		{name: "gateway services", doc: withSpec("  gateway:\n    services: [dns, http, dns]\n"), want: []string{
			`spec.gateway.services[1]: "http" is not a gateway service, use dhcp, dhcpv6, dns or ntp`,
			"spec.gateway.services[2]: duplicate service dns"}, n: 2},

		// Segments.
		{
			name: "segment names",
			doc:  withSpec("  segments:\n    - name: a\n    - name: a\n    - name: B\n    - mode: audit\n"),
			want: []string{
				`t.yaml:8:13: spec.segments[1].name: duplicate segment name "a", also used by spec.segments[0]`,
				`spec.segments[2].name: "B" is not a valid name`,
				"t.yaml:10:7: spec.segments[3].name: is required"},
			n: 3,
		},

		// Devices.
		{
			name: "device names",
			doc:  withSpec(device + "    - name: d1\n      mac: 02:00:00:00:00:02\n    - mac: 02:00:00:00:00:03\n"),
			want: []string{
				`spec.devices[1].name: duplicate device name "d1", also used by spec.devices[0]`,
				"spec.devices[2].name: is required"},
			n: 2,
		},
		{name: "macs", doc: withSpec(`  devices:
    - {name: a, mac: "02:00:00:zz:00:01"}
    - {name: b, mac: "02:00:00:00:00:00:00:01"}
    - {name: c, mac: "01:00:5e:00:00:01"}
    - {name: d, mac: "ff:ff:ff:ff:ff:ff"}
    - {name: e, mac: "00:00:00:00:00:00"}
    - {name: f, mac: "02:AB:00:00:00:01"}
    - {name: g, mac: "02-ab-00-00-00-01"}
    - {name: h}
`), want: []string{
			`t.yaml:7:22: spec.devices[0].mac: "02:00:00:zz:00:01" is not a MAC address`,
			`spec.devices[1].mac: "02:00:00:00:00:00:00:01" is not a 6-byte MAC address`,
			`spec.devices[2].mac: "01:00:5e:00:00:01" is a multicast MAC address`,
			`spec.devices[3].mac: "ff:ff:ff:ff:ff:ff" is the broadcast MAC address`,
			`spec.devices[4].mac: "00:00:00:00:00:00" is the all-zero MAC address`,
			`spec.devices[6].mac: MAC address 02:ab:00:00:00:01 is already used by device "f"`,
			"t.yaml:14:7: spec.devices[7].mac: is required"}, n: 7},
		{name: "device addresses", doc: withSpec(`  gateway:
    ipv4: [10.0.0.1]
    ipv6: ["fd00::1"]
  devices:
    - name: a
      mac: 02:00:00:00:00:01
      ipv4: [10.0.0.2, 10.0.0.1, 10.0.0.2, "fd00::2", 240.0.0.1, 255.255.255.255]
      ipv6: ["fd00::1", "fd00::2"]
    - name: b
      mac: 02:00:00:00:00:02
      ipv4: [10.0.0.2]
      ipv6: ["fd00:0::2"]
`), want: []string{
			"spec.devices[0].ipv4: has 6 addresses, at most 4 are allowed",
			"spec.devices[0].ipv4[1]: 10.0.0.1 is a gateway address",
			"spec.devices[0].ipv4[2]: duplicate address 10.0.0.2",
			`spec.devices[0].ipv4[3]: "fd00::2" is an IPv6 address, list it under ipv6`,
			`spec.devices[0].ipv4[4]: "240.0.0.1" is in the reserved range 240.0.0.0/4`,
			`spec.devices[0].ipv4[5]: "255.255.255.255" is the broadcast address`,
			"spec.devices[0].ipv6[0]: fd00::1 is a gateway address",
			`t.yaml:16:14: spec.devices[1].ipv4[0]: address 10.0.0.2 of device "b" is already bound to device "a"`,
			`spec.devices[1].ipv6[0]: address fd00::2 of device "b" is already bound to device "a"`}, n: 9},
		{name: "ports and vlans", doc: withSpec(`  devices:
    - {name: a, mac: "02:00:00:00:00:01", port: eth0/1}
    - {name: b, mac: "02:00:00:00:00:02", port: a-very-long-interface}
    - {name: c, mac: "02:00:00:00:00:03", port: "eth 0"}
    - {name: d, mac: "02:00:00:00:00:04", port: ".."}
    - {name: e, mac: "02:00:00:00:00:05", port: "eth0:1"}
    - {name: f, mac: "02:00:00:00:00:06", port: "eth0.10", vlan: 4094}
`), want: []string{
			`spec.devices[0].port: "eth0/1" is not a valid interface name: contains '/'`,
			`spec.devices[1].port: "a-very-long-interface" is not a valid interface name: longer than 15 bytes`,
			`spec.devices[2].port: "eth 0" is not a valid interface name: contains whitespace`,
			`spec.devices[3].port: ".." is not a valid interface name: reserved name`,
			`spec.devices[4].port: "eth0:1" is not a valid interface name: contains ':'`}, n: 5},
		{name: "undefined segment", doc: withSpec(device + "      segment: cams\n"), want: []string{
			`t.yaml:9:16: spec.devices[0].segment: segment "cams" is not defined in spec.segments`}, n: 1},

		// Rules.
		{name: "rule targets", doc: withSpec(device + `      allow:
        - to: {}
        - to: {cidr: 10.0.0.0/8, device: d1}
        - to: {cidr: 10.0.0.1/24}
        - to: {cidr: 10.0.0.1}
        - to: {cidr: "fd00::1/200"}
        - to: {cidr: "::ffff:10.0.0.0/104"}
        - to: {device: nope}
        - to: {segment: nope}
        - to: {gateway: false}
        - proto: tcp
`), want: []string{
			"t.yaml:10:15: spec.devices[0].allow[0].to: must set one of cidr, device, segment or gateway: true",
			"spec.devices[0].allow[1].to: sets cidr and device, must set exactly one",
			`t.yaml:12:22: spec.devices[0].allow[2].to.cidr: "10.0.0.1/24" has host bits set, use 10.0.0.0/24`,
			`spec.devices[0].allow[3].to.cidr: "10.0.0.1" is not a CIDR prefix, write 10.0.0.1/32 for the single address`,
			`spec.devices[0].allow[4].to.cidr: "fd00::1/200" is not a CIDR prefix`,
			`spec.devices[0].allow[5].to.cidr: "::ffff:10.0.0.0/104" is an IPv4-mapped prefix, write it as an IPv4 prefix`,
			`spec.devices[0].allow[6].to.device: device "nope" is not defined in spec.devices`,
			`spec.devices[0].allow[7].to.segment: segment "nope" is not defined in spec.segments`,
			"spec.devices[0].allow[8].to: must set one of cidr",
			"t.yaml:19:11: spec.devices[0].allow[9].to: must set one of cidr"}, n: 10},
		{
			name: "rule protos and ports",
			doc: withSpec(`  quarantine:
    allow:
      - {to: {gateway: true}, proto: ftp}
      - {to: {gateway: true}, proto: "255"}
      - {to: {gateway: true}, proto: 300}
      - {to: {gateway: true}, proto: icmp, ports: [1]}
      - {to: {gateway: true}, ports: [53]}
      - {to: {gateway: true}, proto: 58, ports: [1]}
      - {to: {gateway: true}, proto: TCP}
      - {to: {gateway: true}, proto: 17, ports: [53]}
      - {to: {gateway: true}, proto: 0}
`),
			want: []string{
				`t.yaml:8:38: spec.quarantine.allow[0].proto: "ftp" is not a protocol, ` +
					`use tcp, udp, icmp, icmpv6, any or a number 0-254`,
				"spec.quarantine.allow[1].proto: protocol 255 is reserved, use any for every protocol",
				"spec.quarantine.allow[2].proto: protocol 300 is out of range 0-254",
				"t.yaml:11:51: spec.quarantine.allow[3].ports: ports are only allowed with proto tcp or udp",
				"spec.quarantine.allow[4].ports: ports are only allowed with proto tcp or udp",
				"spec.quarantine.allow[5].ports: ports are only allowed with proto tcp or udp",
				`spec.quarantine.allow[6].proto: "TCP" is not a protocol`},
			n: 7,
		},

		// An error in decoding a field is not followed by validation errors about it.
		{name: "no follow-up errors", doc: withSpec(`  devices:
    - name: d1
      mac: [02:00:00:00:00:01]
      allow:
        - to: {gateway: yes}
`), want: []string{
			"spec.devices[0].mac: expected a string, got a list",
			`spec.devices[0].allow[0].to.gateway: expected true or false, got string "yes"`}, n: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("t.yaml", []byte(tt.doc))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if p != nil {
				t.Errorf("got a policy with an error")
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, not Errors", err)
			}
			text := err.Error()
			t.Logf("errors:\n%s", text)
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("error does not contain\n\t%s\ngot:\n%s", w, text)
				}
			}
			if tt.n != 0 && len(errs) != tt.n {
				t.Errorf("got %d errors, want %d:\n%s", len(errs), tt.n, text)
			}
			for _, e := range errs {
				if e.File != "t.yaml" {
					t.Errorf("error without file: %v", e)
				}
				if e.Line == 0 && e.Path != "" {
					t.Errorf("field error without position: %v", e)
				}
				checkMessage(t, e.Msg)
			}
		})
	}
}

// checkMessage checks the style of an error message: lowercase start, no trailing period.
func checkMessage(t *testing.T, msg string) {
	t.Helper()
	if msg == "" || strings.HasSuffix(msg, ".") {
		t.Errorf("bad message %q", msg)
	}
	if c := msg[0]; c >= 'A' && c <= 'Z' && !strings.HasPrefix(msg, "MAC ") {
		t.Errorf("message starts with a capital: %q", msg)
	}
}

func TestParseOversized(t *testing.T) {
	data := bytes.Repeat([]byte("#"), MaxDocumentSize+1)
	_, err := Parse("big.yaml", data)
	if err == nil || err.Error() != "big.yaml: document is larger than 16 MiB" {
		t.Errorf("got %v", err)
	}
}

func TestParseAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString(withSpec("  quarantine:\n    allow:\n"))
	b.WriteString("      - {to: {gateway: true}, proto: tcp, ports: &p [")
	for i := range 1000 {
		fmt.Fprintf(&b, "%d,", i+1)
	}
	b.WriteString("1]}\n")
	for range 1000 {
		b.WriteString("      - {to: {gateway: true}, proto: tcp, ports: *p}\n")
	}
	_, err := Parse("t.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "aliases expand to more than 262144 values") {
		t.Errorf("got %v", err)
	}
}

func TestErrorsSortedAndCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString(withSpec("  devices:\n"))
	for i := range 2 * MaxErrors {
		fmt.Fprintf(&b, "    - {name: d%d, mac: bad}\n", i)
	}
	b.WriteString("  mode: wrong\n") // last in the document, found first
	_, err := Parse("t.yaml", []byte(b.String()))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got %v", err)
	}
	if len(errs) != MaxErrors+1 {
		t.Fatalf("got %d errors, want %d", len(errs), MaxErrors+1)
	}
	for i := 1; i < MaxErrors; i++ {
		if errs[i].Line < errs[i-1].Line {
			t.Errorf("errors not sorted: %v before %v", errs[i-1], errs[i])
		}
	}
	if got, want := errs[MaxErrors].Error(), "t.yaml: too many errors, 51 more not shown"; got != want {
		t.Errorf("last error: got %q, want %q", got, want)
	}
	if got := strings.Count(err.Error(), "\n"); got != MaxErrors {
		t.Errorf("Error() has %d newlines, want one line per error", got)
	}
}

func TestErrorsAs(t *testing.T) {
	_, err := Parse("site.yaml", []byte(withSpec(device+"      vlan: 9000\n")))
	if !errors.As(err, &Errors{}) {
		t.Fatalf("errors.As(Errors) failed for %v", err)
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("errors.As(*FieldError) failed for %v", err)
	}
	want := FieldError{File: "site.yaml", Line: 9, Col: 13, Path: "spec.devices[0].vlan",
		Msg: "9000 is out of range 0-4094"}
	if *fe != want {
		t.Errorf("got %+v, want %+v", *fe, want)
	}
}

func TestValidateGoValue(t *testing.T) {
	p := &Policy{
		APIVersion: APIVersion,
		Kind:       Kind,
		Metadata:   Metadata{Name: "t"},
		Spec: Spec{Devices: []Device{{
			Name: "d1",
			MAC:  "02:00:00:zz:00:01",
			VLAN: 5000,
			Allow: []Rule{{To: Target{Gateway: true}, Proto: "tcp",
				Ports: []PortRange{{Lo: 0, Hi: 0}, {Lo: 9, Hi: 8}, {Lo: 1, Hi: 65535}}}},
		}}},
	}
	err := p.Validate()
	want := strings.Join([]string{
		`spec.devices[0].mac: "02:00:00:zz:00:01" is not a MAC address`,
		"spec.devices[0].vlan: 5000 is out of range 0-4094",
		"spec.devices[0].allow[0].ports[0]: port 0 is out of range 1-65535",
		"spec.devices[0].allow[0].ports[1]: port range 9-8 is reversed, write 8-9",
	}, "\n")
	if err == nil || err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}
	var fe *FieldError
	if errors.As(err, &fe) && (fe.Line != 0 || fe.Col != 0 || fe.File != "") {
		t.Errorf("Validate gave a position: %+v", fe)
	}
	if err := (*Policy)(nil).Validate(); err == nil {
		t.Error("nil policy validated")
	}
}

// roundTrip marshals p, parses the output back and checks that it is p again.
func roundTrip(t *testing.T, p *Policy) ([]byte, *Policy) {
	t.Helper()
	out, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := Parse("marshalled.yaml", out)
	if err != nil {
		t.Fatalf("parse of Marshal output: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(p, p2) {
		t.Errorf("round trip changed the policy:\n%+v\n%+v", p, p2)
	}
	return out, p2
}

func TestRoundTrip(t *testing.T) {
	p := mustParseFile(t, "testdata/valid.yaml")
	out, p2 := roundTrip(t, p)
	text := string(out)
	for _, want := range []string{"- 443\n", "- 8000-8080\n", "- 5000-5010\n", "revision: 7\n", "quarantined: true\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("Marshal output lacks %q:\n%s", want, text)
		}
	}
	for _, unwanted := range []string{"ipv6: []", "mode: \"\"", "vlan: 0", "lo:", "port: \"\""} {
		if strings.Contains(text, unwanted) {
			t.Errorf("Marshal output has %q:\n%s", unwanted, text)
		}
	}
	out2, err := Marshal(p2)
	if err != nil || !bytes.Equal(out, out2) {
		t.Errorf("Marshal is not stable: %v\n%s\n%s", err, out, out2)
	}
}

func TestRoundTripEmptyLists(t *testing.T) {
	// Empty lists and explicit false/null values decode like absent fields.
	doc := withSpec(`  gateway: {ipv4: [], services: ~}
  segments: []
  devices:
    - {name: d1, mac: "02:00:00:00:00:01", quarantined: false, ipv6: [], allow: []}
`)
	p, err := Parse("t.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, p)
}

func TestParseFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "site.yaml")
	if err := os.WriteFile(path, []byte(withSpec("  mode: fast\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(path)
	if want := path + `:6:9: spec.mode: "fast" is not a mode, use enforce or audit`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if _, err := ParseFile(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v", err)
	}
}

func TestParseProto(t *testing.T) {
	tests := []struct {
		in   string
		want uint8
		ok   bool
	}{
		{
			in:   "",
			want: 255,
			ok:   true,
		}, {
			in:   "any",
			want: 255,
			ok:   true,
		}, {
			in:   "tcp",
			want: 6,
			ok:   true,
		}, {
			in:   "udp",
			want: 17,
			ok:   true,
		},
		{
			in:   "icmp",
			want: 1,
			ok:   true,
		}, {
			in:   "icmpv6",
			want: 58,
			ok:   true,
		}, {
			in:   "0",
			want: 0,
			ok:   true,
		}, {
			in:   "47",
			want: 47,
			ok:   true,
		}, {
			in:   "254",
			want: 254,
			ok:   true,
		},
		{
			in:   "255",
			want: 0,
			ok:   false,
		}, {
			in:   "256",
			want: 0,
			ok:   false,
		}, {
			in:   "06",
			want: 0,
			ok:   false,
		}, {
			in:   "00",
			want: 0,
			ok:   false,
		}, {
			in:   "-1",
			want: 0,
			ok:   false,
		}, {
			in:   "TCP",
			want: 0,
			ok:   false,
		}, {
			in:   " 6",
			want: 0,
			ok:   false,
		}, {
			in:   "0x6",
			want: 0,
			ok:   false,
		},
	}
	for _, tt := range tests {
		got, err := ParseProto(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseProto(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestPortRangeString(t *testing.T) {
	for _, s := range []string{"1", "443", "8000-8080", "1-65535"} {
		r, err := ParsePortRange(s)
		if err != nil || r.String() != s {
			t.Errorf("ParsePortRange(%q) = %v, %v", s, r, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/valid.yaml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(icmpDoc("icmp", `icmp: [echo-request, 8, 3/4, "destination-unreachable/3"]`)))
	f.Add([]byte(icmpDoc("icmpv6", `icmp: [packet-too-big, 255/255, 0]`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 || len(errs) > MaxErrors+1 {
				t.Fatalf("bad error value %T %v", err, err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("parsed policy does not validate: %v", err)
		}
		out, err := Marshal(p)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		p2, err := Parse("fuzz.yaml", out)
		if err != nil {
			t.Fatalf("Marshal output does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("round trip changed the policy:\n%+v\n%+v", p, p2)
		}
	})
}

func TestRoundTripAwkwardStrings(t *testing.T) {
	// Interface names are the one free-form string a valid policy keeps as written.
	ports := []string{"~", "null", "true", "no", "0x1F", "1e3", "0443", "-", "---", "...", "#x", "a#b",
		"*a", "&a", "!x", "%x", "@x", "`x", "'", "\"", "{x}", "[x]", "x,y", "?", "|", ">", "\x7f",
		"\ufeffx", "é", "\u200b", "\x01", "\xff\xfe"}
	p := &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "t"}}
	for i, port := range ports {
		p.Spec.Devices = append(p.Spec.Devices, Device{
			Name: fmt.Sprintf("d%d", i),
			MAC:  fmt.Sprintf("02:00:00:00:00:%02x", i+1),
			Port: port,
		})
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := Parse("t.yaml", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for i := range ports {
		if got := p2.Spec.Devices[i].Port; got != ports[i] {
			t.Errorf("port %q came back as %q", ports[i], got)
		}
	}
}

// TestValidName: the loop accepts exactly what ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ does.
func TestValidName(t *testing.T) {
	re := regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	alphabet := []string{"", "a", "z", "0", "9", "-", "A", "_", ".", "é", " "}
	var walk func(s string, depth int)
	walk = func(s string, depth int) {
		if validName(s) != re.MatchString(s) {
			t.Fatalf("validName(%q) = %v, the expression says %v", s, validName(s), re.MatchString(s))
		}
		if depth == 0 {
			return
		}
		for _, c := range alphabet[1:] {
			walk(s+c, depth-1)
		}
	}
	walk("", 4)
}
