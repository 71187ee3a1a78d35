package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/ztgate/ztgate/api"
)

var (
	macCam = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x05}
	macGW  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
)

// serialize builds a frame out of layers, with lengths and checksums computed.
func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	for _, l := range ls {
		if tl, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			for _, nl := range ls {
				if n, ok := nl.(gopacket.NetworkLayer); ok {
					tl.SetNetworkLayerForChecksum(n)
				}
			}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tcpSYN(t *testing.T) []byte {
	return serialize(t,
		&layers.Ethernet{SrcMAC: macCam, DstMAC: macGW, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.IPv4(10, 0, 0, 5),
			DstIP: net.IPv4(192, 0, 2, 2)},
		&layers.TCP{SrcPort: 4321, DstPort: 22, SYN: true, Window: 64240, Seq: 1},
	)
}

func arpRequest(t *testing.T) []byte {
	return serialize(t,
		&layers.Ethernet{SrcMAC: macCam, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6,
			ProtAddressSize: 4, Operation: layers.ARPRequest, SourceHwAddress: macCam, SourceProtAddress: []byte{10, 0, 0, 5},
			DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 0, 0, 1}},
	)
}

func icmpv6Echo(t *testing.T) []byte {
	return serialize(t,
		&layers.Ethernet{SrcMAC: macCam, DstMAC: net.HardwareAddr{0x33, 0x33, 0, 0, 0, 0x16},
			EthernetType: layers.EthernetTypeIPv6},
		&layers.IPv6{Version: 6, HopLimit: 1, NextHeader: layers.IPProtocolICMPv6, SrcIP: net.ParseIP("fe80::1"),
			DstIP: net.ParseIP("ff02::16")},
		&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)},
		&layers.ICMPv6Echo{Identifier: 1, SeqNumber: 2},
	)
}

func mldv2Report(t *testing.T) []byte {
	return serialize(t,
		&layers.Ethernet{SrcMAC: macCam, DstMAC: net.HardwareAddr{0x33, 0x33, 0, 0, 0, 0x16},
			EthernetType: layers.EthernetTypeIPv6},
		&layers.IPv6{Version: 6, HopLimit: 1, NextHeader: layers.IPProtocolICMPv6, SrcIP: net.ParseIP("fe80::1"),
			DstIP: net.ParseIP("ff02::16")},
		&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeMLDv2MulticastListenerReportMessageV2, 0)},
		gopacket.Payload([]byte{0, 0, 0, 0}), // reserved, no records
	)
}

func vlanUDP(t *testing.T) []byte {
	return serialize(t,
		&layers.Ethernet{SrcMAC: macCam, DstMAC: macGW, EthernetType: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4(10, 0, 0, 7),
			DstIP: net.IPv4(224, 0, 0, 251)},
		&layers.UDP{SrcPort: 5353, DstPort: 5353},
		gopacket.Payload([]byte("hello")),
	)
}

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{name: "tcp", frame: tcpSYN(t), want: "10.0.0.5:4321 > 192.0.2.2:22 TCP SYN"},
		{name: "arp", frame: arpRequest(t), want: "ARP who-has 10.0.0.1 tell 10.0.0.5"},
		{name: "icmpv6", frame: icmpv6Echo(t), want: "IPv6 fe80::1 > ff02::16 ICMPv6 EchoRequest"},
		{name: "mld", frame: mldv2Report(t), want: "IPv6 fe80::1 > ff02::16 ICMPv6 MLDv2Report"},
		{name: "vlan-udp", frame: vlanUDP(t), want: "vlan 10 10.0.0.7:5353 > 224.0.0.251:5353 UDP"},
		{name: "cut", frame: tcpSYN(t)[:40], want: "IPv4 10.0.0.5 > 192.0.2.2 TCP [truncated]"},
		{
			name:  "lldp",
			frame: append(append(append([]byte{}, macGW...), macCam...), 0x88, 0xcc, 1, 2, 3),
			want:  "ethertype 0x88cc",
		},
		{name: "empty", frame: nil, want: "(no bytes captured)"},
	} {
		got := summarize(tc.frame)
		if tc.name == "lldp" || tc.name == "cut" {
			if !strings.Contains(got, tc.want) {
				t.Errorf("%s: %q does not contain %q", tc.name, got, tc.want)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// testEvents returns events carrying the test frames.
func testEvents(t *testing.T) []api.Event {
	base := time.Date(2025, 3, 14, 12, 0, 0, 123456789, time.UTC)
	frames := [][]byte{tcpSYN(t), arpRequest(t), icmpv6Echo(t), vlanUDP(t)}
	evs := make([]api.Event, len(frames))
	for i, f := range frames {
		evs[i] = api.Event{
			Time: base.Add(time.Duration(i) * time.Millisecond), Device: "cam-1", DevID: 1, Interface: "eth1", Ifindex: 3,
			Revision: 7, Verdict: "drop", Reason: "no_rule", FrameLen: len(f), Frame: f, Direction: "from_device",
		}
	}
	evs[1].Device, evs[1].DevID, evs[1].Reason = "", 0, "unknown_device"
	evs[3].Verdict, evs[3].Reason, evs[3].Direction = "audit", "inbound_denied", "to_device"
	// A frame captured in part: the wire length is larger.
	evs[0].FrameLen = 1514
	return evs
}

// serveEvents streams evs as NDJSON; with follow it then waits for the client to go away.
func serveEvents(evs []api.Event) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		for _, ev := range evs {
			b, _ := json.Marshal(ev)
			w.Write(append(b, '\n'))
		}
		w.(http.Flusher).Flush()
		if r.URL.Query().Get("follow") == "1" {
			<-r.Context().Done()
		}
	}
}

func TestEventsTable(t *testing.T) {
	evs := testEvents(t)
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathEvents: serveEvents(evs)})
	r := fa.run(t, "events")
	wantCode(t, r, exitOK)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 1+len(evs) {
		t.Fatalf("want a header and %d lines: %s", len(evs), r)
	}
	if got := strings.Fields(lines[0]); !reflect.DeepEqual(got, []string{"TIME", "DEVICE", "IFACE", "DIRECTION",
		"VERDICT", "REASON", "LEN", "SUMMARY"}) {
		t.Errorf("header %q", got)
	}
	for i, want := range []string{
		"cam-1 eth1 from_device drop no_rule 1514 10.0.0.5:4321 > 192.0.2.2:22 TCP SYN",
		fmt.Sprintf("- eth1 from_device drop unknown_device %d ARP who-has 10.0.0.1 tell 10.0.0.5", evs[1].FrameLen),
		fmt.Sprintf("cam-1 eth1 from_device drop no_rule %d IPv6 fe80::1 > ff02::16 ICMPv6 EchoRequest",
			evs[2].FrameLen),
		fmt.Sprintf("cam-1 eth1 to_device audit inbound_denied %d vlan 10 10.0.0.7:5353 > 224.0.0.251:5353 UDP",
			evs[3].FrameLen),
	} {
		// Skip the time (three fields: "Mar 14 12:00:00.123").
		got := strings.Join(strings.Fields(lines[i+1])[3:], " ")
		if got != want {
			t.Errorf("line %d: got %q, want %q", i+1, got, want)
		}
	}
}

func TestEventsJSONPassthrough(t *testing.T) {
	evs := testEvents(t)
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathEvents: serveEvents(evs)})
	r := fa.run(t, "events", "-o", "json", "--device", "cam-1", "--reason", "no_rule", "--limit", "50",
		"--direction", "from_device")
	wantCode(t, r, exitOK)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != len(evs) {
		t.Fatalf("want %d lines: %s", len(evs), r)
	}
	for i, l := range lines {
		var got api.Event
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d is not one JSON object: %v: %q", i+1, err, l)
		}
		if !reflect.DeepEqual(got, evs[i]) {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got, evs[i])
		}
	}
	q := fa.lastRequest(t).Query
	want := map[string]string{"device": "cam-1", "reason": "no_rule", "limit": "50", "direction": "from_device"}
	if !reflect.DeepEqual(q, want) {
		t.Errorf("query %v, want %v", q, want)
	}
}

// readPcap reads every packet of a pcap file.
func readPcap(t *testing.T, path string) ([]gopacket.CaptureInfo, [][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pr, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if pr.LinkType() != layers.LinkTypeEthernet || pr.Snaplen() != 65535 {
		t.Errorf("pcap link type %v snaplen %d", pr.LinkType(), pr.Snaplen())
	}
	var (
		cis    []gopacket.CaptureInfo
		frames [][]byte
	)
	for {
		data, ci, err := pr.ReadPacketData()
		if err == io.EOF {
			return cis, frames
		}
		if err != nil {
			t.Fatal(err)
		}
		cis, frames = append(cis, ci), append(frames, data)
	}
}

func checkPcap(t *testing.T, path string, evs []api.Event) {
	t.Helper()
	cis, frames := readPcap(t, path)
	if len(frames) != len(evs) {
		t.Fatalf("pcap has %d packets, want %d", len(frames), len(evs))
	}
	for i, ev := range evs {
		if !bytes.Equal(frames[i], ev.Frame) {
			t.Errorf("packet %d: % x, want % x", i, frames[i], ev.Frame)
		}
		ci := cis[i]
		if ci.CaptureLength != len(ev.Frame) || ci.Length != ev.FrameLen ||
			!ci.Timestamp.Equal(ev.Time.Truncate(time.Microsecond)) {
			t.Errorf("packet %d: capture info %+v, want len %d/%d at %v", i, ci, len(ev.Frame), ev.FrameLen, ev.Time)
		}
	}
}

func TestEventsPcap(t *testing.T) {
	evs := testEvents(t)
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathEvents: serveEvents(evs)})
	path := filepath.Join(t.TempDir(), "events.pcap")
	r := fa.run(t, "events", "--pcap", path, "-o", "json")
	wantCode(t, r, exitOK)
	if n := strings.Count(r.stdout, "\n"); n != len(evs) {
		t.Errorf("with --pcap stdout still has the events: %d lines", n)
	}
	checkPcap(t, path, evs)
}

// lineWriter is a concurrency-safe buffer that signals when it has received n lines.
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	n    int
	done chan struct{}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if bytes.Count(w.buf.Bytes(), []byte("\n")) >= w.n && w.done != nil {
		close(w.done)
		w.done = nil
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestEventsFollowUntilInterrupted(t *testing.T) {
	evs := testEvents(t)
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathEvents: serveEvents(evs)})
	path := filepath.Join(t.TempDir(), "follow.pcap")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lineWriter{n: len(evs), done: make(chan struct{})}
	done := out.done
	var errb bytes.Buffer
	codec := make(chan int, 1)
	go func() {
		codec <- runIO(ctx, []string{"ztgate", "--socket", fa.socket, "--timeout", "50ms", "events", "-f", "-o", "json",
			"--pcap", path},
			strings.NewReader(""), out, &errb)
	}()
	select {
	case <-done:
	case code := <-codec:
		t.Fatalf("events -f returned %d before it was interrupted:\n%s\n%s", code, out, errb.String())
	case <-time.After(10 * time.Second):
		t.Fatal("no events within 10s")
	}
	// Still following after --timeout: the stream is not bounded by it.
	time.Sleep(100 * time.Millisecond)
	select {
	case code := <-codec:
		t.Fatalf("events -f ended on its own with %d: %s", code, errb.String())
	default:
	}
	cancel() // what SIGINT does
	select {
	case code := <-codec:
		if code != exitOK || errb.Len() != 0 {
			t.Errorf("interrupted events -f: exit %d, stderr %q", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("events -f did not stop when interrupted")
	}
	if q := fa.lastRequest(t).Query; q["follow"] != "1" {
		t.Errorf("query %v lacks follow=1", q)
	}
	checkPcap(t, path, evs)
}

func TestEventsFollowInterruptedBeforeConnecting(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathEvents: serveEvents(testEvents(t))})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := ztgate(t, ctx, "", "--socket", fa.socket, "events", "-f")
	wantCode(t, r, exitOK)
	// Without -f an interrupted call is an error.
	r = ztgate(t, ctx, "", "--socket", fa.socket, "events")
	wantCode(t, r, exitError)
}
