package agentrun

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
)

// Segments is the number of segments of a generated policy.
const Segments = 8

// WritePolicy writes a policy of n devices in Segments segments: each segment allows
// three rules (a CIDR with two ports, NTP to the gateway, ICMP within the segment), each device
// one more rule of its own; every device has a distinct MAC and IPv4 address, one in four an
// IPv6 address too; no device is bound to a port, so any n compiles on any topology. Device i's
// own rule is to port base+i%4 (so changing base changes every device). Devices are written
// one per line in YAML flow style (about 157 bytes each).
func WritePolicy(path string, n, base int) (int64, error) {
	return writeFile(path, func(w *bufio.Writer) {
		w.WriteString("apiVersion: ztgate/v1\nkind: Policy\nmetadata:\n  name: bench\nspec:\n  gateway:\n" +
			"    ipv4: [10.0.0.1]\n    ipv6: [\"fd00::1\"]\n    services: [dns]\n  segments:\n")
		for s := range Segments {
			fmt.Fprintf(w, "    - name: s%d\n      allow:\n"+
				"        - {to: {cidr: 203.0.%d.0/24}, proto: tcp, ports: [443, 8883]}\n"+
				"        - {to: {gateway: true}, proto: udp, ports: [123]}\n"+
				"        - {to: {segment: s%d}, proto: icmp}\n", s, 100+s, s)
		}
		w.WriteString("  devices:\n")
		var b []byte
		for i := range n {
			b = appendDeviceYAML(append(b[:0], "    - "...), i, base+i%4)
			w.Write(b)
		}
	})
}

// WritePolicyJSON writes the policy of WritePolicy(path, n, base) as JSON, one device a
// line (about 180 bytes each): the format a program generating a fleet's policy writes, which
// the agent decodes without yaml.v3 (see policy.Parse).
func WritePolicyJSON(path string, n, base int) (int64, error) {
	return writeFile(path, func(w *bufio.Writer) {
		w.WriteString(`{"apiVersion": "ztgate/v1", "kind": "Policy", "metadata": {"name": "bench"}, "spec": {` + "\n" +
			`"gateway": {"ipv4": ["10.0.0.1"], "ipv6": ["fd00::1"], "services": ["dns"]},` + "\n" + `"segments": [`)
		for s := range Segments {
			if s > 0 {
				w.WriteString(",")
			}
			fmt.Fprintf(w, "\n"+`{"name": "s%d", "allow": [`+
				`{"to": {"cidr": "203.0.%d.0/24"}, "proto": "tcp", "ports": [443, 8883]}, `+
				`{"to": {"gateway": true}, "proto": "udp", "ports": [123]}, `+
				`{"to": {"segment": "s%d"}, "proto": "icmp"}]}`, s, 100+s, s)
		}
		w.WriteString("],\n" + `"devices": [`)
		var b []byte
		for i := range n {
			b = b[:0]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, "\n{\"name\": \"d"...)
			b = strconv.AppendInt(b, int64(i), 10)
			b = fmt.Appendf(b, `", "mac": "%s", "ipv4": ["%s"]`, mac(i), V4(i))
			if i%4 == 0 {
				b = fmt.Appendf(b, `, "ipv6": ["%s"]`, v6(i))
			}
			b = fmt.Appendf(b, `, "segment": "s%d", "allow": [{"to": {"cidr": "198.51.100.0/24"}, "proto": "tcp", `+
				`"ports": [%d]}]}`, i%Segments, base+i%4)
			w.Write(b)
		}
		w.WriteString("\n]}}\n")
	})
}

// writeFile creates path, writes it with write (buffered) and returns its size.
func writeFile(path string, write func(w *bufio.Writer)) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	write(w)
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, err
	}
	return st.Size(), f.Close()
}

// DeviceDoc is device i of WritePolicy as a device document (`policy set-device`), its own
// rule to port.
func DeviceDoc(i, port int) []byte { return appendDeviceYAML(nil, i, port) }

// appendDeviceYAML appends device i of WritePolicy, its own rule to port, as a YAML flow
// mapping and a newline.
func appendDeviceYAML(b []byte, i, port int) []byte {
	b = append(b, "{name: d"...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = fmt.Appendf(b, ", mac: \"%s\", ipv4: [%s]", mac(i), V4(i))
	if i%4 == 0 {
		b = fmt.Appendf(b, ", ipv6: [\"%s\"]", v6(i))
	}
	return fmt.Appendf(b, ", segment: s%d, allow: [{to: {cidr: 198.51.100.0/24}, proto: tcp, ports: [%d]}]}\n",
		i%Segments, port)
}

// mac is device i's MAC address.
func mac(i int) string {
	return fmt.Sprintf("02:20:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

// v6 is the IPv6 address of device i (one in four devices has one).
func v6(i int) string { return fmt.Sprintf("fd00:20::%x:%x", (i+1)>>16, (i+1)&0xffff) }

// V4 is device i's IPv4 address (distinct for i < 2^24 - 2^20).
func V4(i int) string {
	return fmt.Sprintf("10.%d.%d.%d", 16+(i>>16)&0xff, byte(i>>8), byte(i))
}
