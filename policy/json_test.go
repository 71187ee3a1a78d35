package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// toJSON rewrites a YAML document as JSON, indented or not, the way a program generating
// policies would write it.
func toJSON(t testing.TB, doc []byte, indent bool) []byte {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(doc, &v); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if indent {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// jsonFleet is a policy using every field, with n devices.
func jsonFleet(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"apiVersion": "ztgate/v1", "kind": "Policy", "metadata": {"name": "fleet", "revision": 3},
 "spec": {"mode": "audit",
  "gateway": {"ipv4": ["10.0.0.1"], "ipv6": ["fd00::1"], "services": ["dhcp", "dns", "ntp"]},
  "quarantine": {"allow": [{"to": {"gateway": true}, "proto": "udp", "ports": [53]}]},
  "segments": [
   {"name": "s0", "mode": "enforce",
    "allow": [{"to": {"cidr": "203.0.113.0/24"}, "proto": "tcp", "ports": [443, "8000-8080"]},
     {"to": {"segment": "s1"}, "proto": "icmp"},
     {"to": {"gateway": true}, "proto": "icmpv6", "icmp": ["echo-request", 2, "1/4", "destination-unreachable/3"]},
     {"from": {"segment": "s1"}, "proto": "tcp", "ports": [22, "8000-8080"]},
     {"from": {"gateway": true}, "proto": "icmp", "icmp": ["echo-request", 3]}]},
   {"name": "s1", "allow": [{"from": {"cidr": "192.0.2.0/24"}, "proto": "udp"}]}],
  "devices": [`)
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"name": "d%d", "mac": "02:00:00:00:%02x:%02x", "ipv4": ["10.0.%d.%d"], "segment": "s%d"`,
			i, i>>8, i&0xff, 1+i>>8, i&0xff, i%2)
		if i%3 == 0 {
			fmt.Fprintf(&b, `, "ipv6": ["fd00::%x"], "port": "eth%d", "vlan": %d, "mode": "enforce"`, i+16, i%4, 1+i%4094)
		}
		if i%5 == 0 {
			b.WriteString(`, "quarantined": true`)
		}
		fmt.Fprintf(&b, `, "allow": [{"to": {"device": "d%d"}, "proto": "any"}, `+
			`{"to": {"cidr": "198.51.100.0/24"}, "proto": "6", "ports": ["%d"]}, `+
			`{"from": {"device": "d%d"}, "proto": "tcp", "ports": [%d]}]}`, (i+1)%n, 1000+i, (i+n-1)%n, 2000+i)
	}
	b.WriteString("]}}\n")
	return []byte(b.String())
}

// bothPaths parses data through the fast path and the YAML path.
func bothPaths(t testing.TB, data []byte) (fast, slow *Policy, slowErr error) {
	t.Helper()
	fast = ParseJSON("f.json", data)
	slow, slowErr = parseYAML("f.json", data, &errorList{})
	return fast, slow, slowErr
}

func TestJSONFastPath(t *testing.T) {
	valid, err := os.ReadFile("testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string][]byte{
		"valid.yaml compact":  toJSON(t, valid, false),
		"valid.yaml indented": toJSON(t, valid, true),
		"fleet":               jsonFleet(40),
		"fleet indented":      toJSON(t, jsonFleet(40), true),
		"spaces before a colon": []byte(strings.Replace(string(jsonFleet(2)),
			`"name":`, `"name"`+strings.Repeat(" ", 900)+`:`, 1)),
	}
	for name, data := range docs {
		fast, slow, err := bothPaths(t, data)
		if err != nil {
			t.Fatalf("%s: the YAML path rejects the document: %v\n%s", name, err, data)
		}
		if fast == nil {
			t.Fatalf("%s: the fast path gave up on a document in its subset:\n%s", name, data)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%s: the paths differ:\nfast %+v\nslow %+v", name, fast, slow)
		}
		if p, err := Parse("f.json", data); err != nil || !reflect.DeepEqual(p, slow) {
			t.Fatalf("%s: Parse = %v", name, err)
		}
		if path := spareCapacity(reflect.ValueOf(fast).Elem(), "policy"); path != "" {
			t.Errorf("%s: %s has spare capacity (it lives as long as the policy)", name, path)
		}
	}
}

// spareCapacity names a slice within v whose capacity exceeds its length, or returns "".
func spareCapacity(v reflect.Value, path string) string {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if p := spareCapacity(v.Field(i), path+"."+v.Type().Field(i).Name); p != "" {
				return p
			}
		}
	case reflect.Slice:
		if v.Cap() != v.Len() {
			return path
		}
		for i := range v.Len() {
			if p := spareCapacity(v.Index(i), fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	}
	return ""
}

// TestJSONFastPathGivesUp: documents just outside the subset, many of which yaml.v3 reads
// differently from a JSON parser or not at all, are left to the YAML path, which decides.
func TestJSONFastPathGivesUp(t *testing.T) {
	base := `{"apiVersion": "ztgate/v1", "kind": "Policy", "metadata": {"name": "t"}, ` +
		`"spec": {"devices": [{"name": "d1", "mac": "02:00:00:00:00:01"%s}]}}`
	ok := fmt.Sprintf(base, "")
	if fast, _, err := bothPaths(t, []byte(ok)); fast == nil || err != nil {
		t.Fatalf("the base document: fast %v, YAML error %v", fast, err)
	}
	for _, tc := range []struct{ name, doc string }{
		{name: "key and colon on two lines", doc: fmt.Sprintf(base, `, "vlan"`+"\n"+`: 5`)},
		{
			name: "colon far from its key (not a YAML simple key)",
			doc:  fmt.Sprintf(base, `, "vlan"`+strings.Repeat(" ", 1100)+`: 5`),
		},
		{name: "escaped slash (not a YAML escape)", doc: fmt.Sprintf(base, `, "port": "e\/1"`)},
		{name: "unicode escape", doc: fmt.Sprintf(base, `, "port": "\u0065th1"`)},
		{name: "non-ASCII", doc: fmt.Sprintf(base, `, "port": "éth1"`)},
		{name: "tab", doc: fmt.Sprintf(base, `,`+"\t"+`"vlan": 5`)},
		{name: "carriage return", doc: fmt.Sprintf(base, `,`+"\r\n"+`"vlan": 5`)},
		{name: "null", doc: fmt.Sprintf(base, `, "allow": null`)},
		{name: "float", doc: fmt.Sprintf(base, `, "vlan": 5.0`)},
		{name: "exponent", doc: fmt.Sprintf(base, `, "vlan": 5e0`)},
		{name: "negative", doc: fmt.Sprintf(base, `, "vlan": -5`)},
		{name: "out of range", doc: fmt.Sprintf(base, `, "vlan": 4095`)},
		{name: "huge", doc: fmt.Sprintf(base, `, "vlan": 123456789012345678901234`)},
		{name: "leading zero", doc: fmt.Sprintf(base, `, "vlan": 05`)},
		{name: "number for a string", doc: fmt.Sprintf(base, `, "port": 17`)},
		{name: "string for a number", doc: fmt.Sprintf(base, `, "vlan": "5"`)},
		{name: "string for a bool", doc: fmt.Sprintf(base, `, "quarantined": "true"`)},
		{name: "duplicate key", doc: fmt.Sprintf(base, `, "vlan": 5, "vlan": 6`)},
		{name: "unknown key", doc: fmt.Sprintf(base, `, "vlans": 5`)},
		{name: "key in another case", doc: fmt.Sprintf(base, `, "VLAN": 5`)},
		{name: "port 0", doc: fmt.Sprintf(base, `, "allow": [{"to": {"gateway": true}, "proto": "tcp", "ports": [0]}]`)},
		{
			name: "bad port range",
			doc:  fmt.Sprintf(base, `, "allow": [{"to": {"gateway": true}, "proto": "tcp", "ports": ["9-1"]}]`),
		},
		{name: "trailing comma", doc: fmt.Sprintf(base, `,`)},
		{name: "bare word", doc: fmt.Sprintf(base, `, "quarantined": yes`)},
		{name: "plain scalar", doc: fmt.Sprintf(base, `, "vlan": 5 6`)},
		{name: "invalid policy (the YAML path locates it)", doc: fmt.Sprintf(base, `, "ipv4": ["10.0.0.256"]`)},
		{name: "trailing document", doc: ok + "\n---\n" + ok},
		{name: "trailing garbage", doc: ok + " x"},
		{name: "two values", doc: ok + ok},
		{name: "YAML flow", doc: `{apiVersion: ztgate/v1, kind: Policy, metadata: {name: t}, spec: {}}`},
		{name: "comment", doc: ok + " # c"},
		{name: "unterminated", doc: ok[:len(ok)-1]},
	} {
		fast, slow, err := bothPaths(t, []byte(tc.doc))
		if fast != nil {
			t.Errorf("%s: the fast path took %q (YAML path: %+v, %v)", tc.name, tc.doc, slow, err)
		}
	}
}

func TestJSONErrorsAreLocated(t *testing.T) {
	doc := "{\n  \"apiVersion\": \"ztgate/v1\",\n  \"kind\": \"Policy\",\n  \"metadata\": {\"name\": \"t\"},\n" +
		"  \"spec\": {\"devices\": [\n    {\"name\": \"d1\", \"mac\": \"02:00:00:00:00:01\"},\n" +
		"    {\"name\": \"d2\", \"mac\": \"01:00:00:00:00:02\"}\n  ]}\n}\n"
	_, err := Parse("fleet.json", []byte(doc))
	if err == nil || !strings.Contains(err.Error(), "fleet.json:7:") ||
		!strings.Contains(err.Error(), "spec.devices[1].mac") {
		t.Fatalf("error = %v, want it at fleet.json:7 naming spec.devices[1].mac", err)
	}
}

// FuzzJSONFastPath: whatever the fast path accepts, the YAML path accepts as the same policy.
func FuzzJSONFastPath(f *testing.F) {
	valid, err := os.ReadFile("testdata/valid.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(toJSON(f, valid, false))
	f.Add(toJSON(f, valid, true))
	f.Add(jsonFleet(3))
	icmp := `{"apiVersion": "ztgate/v1", "kind": "Policy", "metadata": {"name": "t"}, "spec": {"devices": ` +
		`[{"name": "d1", "mac": "02:00:00:00:00:01", "allow": [{"to": {"gateway": true}, "proto": "%s", "icmp": [%s]}]}]}}`
	for _, seed := range []struct{ proto, icmp string }{
		{proto: "icmp", icmp: `"echo-request", 8, "3/4", "destination-unreachable/3"`},
		{proto: "icmpv6", icmp: `"packet-too-big", 255, "255/255"`},
		{proto: "tcp", icmp: `8`},
		{proto: "icmp", icmp: `256, "3/256", "08", "echo"`},
	} {
		f.Add([]byte(fmt.Sprintf(icmp, seed.proto, seed.icmp)))
		// The same as a from: rule, and with both ends (which the validator refuses).
		f.Add([]byte(strings.Replace(fmt.Sprintf(icmp, seed.proto, seed.icmp), `"to"`, `"from"`, 1)))
		f.Add([]byte(strings.Replace(fmt.Sprintf(icmp, seed.proto, seed.icmp), `"to"`,
			`"from": {"cidr": "192.0.2.0/24"}, "to"`, 1)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, slow, err := bothPaths(t, data)
		if fast == nil {
			return
		}
		if err != nil {
			t.Fatalf("the fast path accepts what the YAML path rejects (%v):\n%q", err, data)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("the paths differ:\nfast %+v\nslow %+v\n%q", fast, slow, data)
		}
	})
}
