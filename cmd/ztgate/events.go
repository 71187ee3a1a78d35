package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/urfave/cli/v3"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/bpf"
)

// pcapSnaplen is the snapshot length in the header of a --pcap file.
const pcapSnaplen = 65535

func (a *app) eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "show sampled drop and audit events with a decode of each frame",
		Description: `Lists the recent events the agent keeps, then returns; with -f keeps streaming new ones
until interrupted (SIGINT/SIGTERM, exit status 0). -o json writes one api.Event JSON object a
line. --pcap FILE also saves every event's captured bytes into a pcap file (Ethernet). DIRECTION
is from_device (a frame a device sent, IFACE the port it came in on) or to_device (a frame
toward a device, IFACE the port it was leaving by).`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep streaming new events until interrupted"},
			&cli.StringFlag{Name: "device", Usage: "only events of this device (name)"},
			&cli.StringFlag{Name: "reason", Usage: "only events of this drop reason (e.g. no_rule, spoof_ip)",
				Validator: func(s string) error {
					if _, ok := bpf.ParseReason(s); !ok {
						return fmt.Errorf("unknown reason %q", s)
					}
					return nil
				}},
			&cli.StringFlag{Name: "direction", Usage: "only events of frames from devices (from_device) or toward them " +
				"(to_device)",
				Validator: func(s string) error {
					if s != bpf.DirFromDevice.String() && s != bpf.DirToDevice.String() {
						return fmt.Errorf("unknown direction %q (want %s or %s)", s, bpf.DirFromDevice, bpf.DirToDevice)
					}
					return nil
				}},
			&cli.IntFlag{Name: "limit", Usage: "at most this many recent events first (0: all the agent keeps)",
				Validator: func(n int) error {
					if n < 0 {
						return fmt.Errorf("limit must not be negative, got %d", n)
					}
					return nil
				}},
			&cli.StringFlag{Name: "pcap", Usage: "also write the events' frames to this pcap `FILE`", TakesFile: true},
			outputFlag(fmtTable, fmtJSON),
		},
		Action: a.events,
	}
}

func (a *app) events(ctx context.Context, cmd *cli.Command) error {
	if err := noArgs(cmd); err != nil {
		return err
	}
	f := api.EventFilter{
		Follow:    cmd.Bool("follow"),
		Device:    cmd.String("device"),
		Reason:    cmd.String("reason"),
		Limit:     cmd.Int("limit"),
		Direction: cmd.String("direction"),
	}

	var (
		sinks      []func(api.Event) error
		header     = func() {}
		headerDone bool
	)
	if cmd.String("output") == fmtJSON {
		enc := json.NewEncoder(a.stdout)
		sinks = append(sinks, func(ev api.Event) error { return enc.Encode(ev) })
	} else {
		// The header comes with the first event (or at the end), not before the agent answered.
		header = func() {
			if !headerDone {
				headerDone = true
				fmt.Fprintf(a.stdout, eventLineFormat, "TIME", "DEVICE", "IFACE", "DIRECTION", "VERDICT", "REASON", "LEN",
					"SUMMARY")
			}
		}
		sinks = append(sinks, func(ev api.Event) error {
			header()
			_, err := fmt.Fprintf(a.stdout, eventLineFormat, ev.Time.Local().Format(eventTimeFormat),
				orDash(ev.Device), orDash(ev.Interface), orDash(ev.Direction), ev.Verdict, ev.Reason, fmt.Sprint(ev.FrameLen),
				summarize(ev.Frame))
			return err
		})
	}
	var pw *pcapFile
	if path := cmd.String("pcap"); path != "" {
		var err error
		if pw, err = createPcap(path); err != nil {
			return err
		}
		sinks = append(sinks, pw.write)
	}

	fn := func(ev api.Event) error {
		for _, s := range sinks {
			if err := s(ev); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if f.Follow {
		// Streams until ctx ends (a signal): no --timeout, and the end is a clean exit.
		c := api.NewClient(cmd.String("socket"))
		err = c.Events(ctx, f, fn)
		c.Close()
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			err = nil
		}
	} else {
		err = call(ctx, cmd, func(ctx context.Context, c *api.Client) error { return c.Events(ctx, f, fn) })
	}
	if err == nil {
		header()
	}
	if pw != nil {
		err = errors.Join(err, pw.close())
	}
	return err
}

// Layout of the event table: fixed widths rather than a tabwriter, so that lines can be
// written as events arrive.
const (
	eventLineFormat = "%-22s %-14s %-10s %-11s %-7s %-16s %5s %s\n"
	eventTimeFormat = "Jan _2 15:04:05.000"
)

// pcapFile is a pcap file being written.
type pcapFile struct {
	f *os.File
	w *pcapgo.Writer
}

func createPcap(path string) (*pcapFile, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(pcapSnaplen, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &pcapFile{f: f, w: w}, nil
}

// write appends the event's frame (written as it arrives: nothing to flush on exit).
func (p *pcapFile) write(ev api.Event) error {
	frame := ev.Frame
	if len(frame) > pcapSnaplen {
		frame = frame[:pcapSnaplen]
	}
	ci := gopacket.CaptureInfo{
		Timestamp:     ev.Time,
		CaptureLength: len(frame),
		Length:        max(ev.FrameLen, len(frame)),
	}
	if err := p.w.WritePacket(ci, frame); err != nil {
		return fmt.Errorf("write %s: %w", p.f.Name(), err)
	}
	return nil
}

func (p *pcapFile) close() error {
	if err := p.f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", p.f.Name(), err)
	}
	return nil
}

// summarize decodes an Ethernet frame (often cut short: events capture its first bytes) into
// one line: "10.0.0.5:4321 > 192.0.2.2:22 TCP SYN", "ARP who-has 10.0.0.1 tell 10.0.0.5",
// "IPv6 fe80::1 > ff02::16 ICMPv6 MLDv2Report".
func summarize(frame []byte) string {
	if len(frame) == 0 {
		return "(no bytes captured)"
	}
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	eth, ok := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !ok {
		return fmt.Sprintf("undecodable frame (%d bytes)", len(frame))
	}
	var parts []string
	for _, l := range p.Layers() {
		if v, ok := l.(*layers.Dot1Q); ok {
			parts = append(parts, fmt.Sprintf("vlan %d", v.VLANIdentifier))
		}
	}
	switch {
	case p.Layer(layers.LayerTypeARP) != nil:
		parts = append(parts, arpSummary(p.Layer(layers.LayerTypeARP).(*layers.ARP)))
	case p.Layer(layers.LayerTypeIPv4) != nil:
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		src, _ := netip.AddrFromSlice(ip.SrcIP.To4())
		dst, _ := netip.AddrFromSlice(ip.DstIP.To4())
		var frag string
		if ip.FragOffset != 0 {
			frag = fmt.Sprintf("fragment offset %d", int(ip.FragOffset)*8)
		}
		parts = append(parts, ipSummary(p, "IPv4", src, dst, uint8(ip.Protocol), frag))
	case p.Layer(layers.LayerTypeIPv6) != nil:
		ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		src, _ := netip.AddrFromSlice(ip.SrcIP)
		dst, _ := netip.AddrFromSlice(ip.DstIP)
		next := uint8(ip.NextHeader)
		var frag string
		if f, ok := p.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment); ok {
			next = uint8(f.NextHeader)
			if f.FragmentOffset != 0 {
				frag = fmt.Sprintf("fragment offset %d", int(f.FragmentOffset)*8)
			}
		}
		parts = append(parts, ipSummary(p, "IPv6", src, dst, next, frag))
	default:
		et := fmt.Sprintf("ethertype %#04x", uint16(eth.EthernetType))
		if name := eth.EthernetType.String(); !strings.HasPrefix(name, "Unknown") {
			et += " (" + name + ")"
		}
		parts = append(parts, fmt.Sprintf("%s > %s %s", eth.SrcMAC, eth.DstMAC, et))
	}
	if el := p.ErrorLayer(); el != nil {
		parts = append(parts, "[truncated]")
	}
	return strings.Join(parts, " ")
}

func arpSummary(a *layers.ARP) string {
	spa, _ := netip.AddrFromSlice(a.SourceProtAddress)
	tpa, _ := netip.AddrFromSlice(a.DstProtAddress)
	switch a.Operation {
	case layers.ARPRequest:
		return fmt.Sprintf("ARP who-has %s tell %s", tpa, spa)
	case layers.ARPReply:
		return fmt.Sprintf("ARP reply %s is-at %s", spa, net.HardwareAddr(a.SourceHwAddress))
	}
	return fmt.Sprintf("ARP op %d %s > %s", a.Operation, spa, tpa)
}

// icmpv6Names names the ICMPv6 types gopacket leaves as numbers.
var icmpv6Names = map[uint8]string{
	layers.ICMPv6TypeMLDv1MulticastListenerQueryMessage:    "MLDQuery",
	layers.ICMPv6TypeMLDv1MulticastListenerReportMessage:   "MLDv1Report",
	layers.ICMPv6TypeMLDv1MulticastListenerDoneMessage:     "MLDDone",
	layers.ICMPv6TypeMLDv2MulticastListenerReportMessageV2: "MLDv2Report",
}

// ipSummary describes an IP packet: with ports for TCP and UDP ("a:p > b:q TCP SYN"),
// else "IPv4 a > b L4".
func ipSummary(p gopacket.Packet, family string, src, dst netip.Addr, proto uint8, frag string) string {
	// A layer whose header was cut short is there, but empty: fall through to the IP summary.
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	var s string
	switch {
	case frag == "" && tcp != nil && len(tcp.Contents) >= 20:
		t := tcp
		s = fmt.Sprintf("%s > %s TCP", netip.AddrPortFrom(src, uint16(t.SrcPort)), netip.AddrPortFrom(dst, uint16(t.DstPort)))
		var flags []string
		for _, f := range []struct {
			on   bool
			name string
		}{{t.SYN, "SYN"}, {t.FIN, "FIN"}, {t.RST, "RST"}, {t.PSH, "PSH"}, {t.ACK, "ACK"}, {t.URG, "URG"}} {
			if f.on {
				flags = append(flags, f.name)
			}
		}
		if len(flags) > 0 {
			s += " " + strings.Join(flags, ",")
		}
		return s
	case frag == "" && udp != nil && len(udp.Contents) >= 8:
		u := udp
		return fmt.Sprintf("%s > %s UDP", netip.AddrPortFrom(src, uint16(u.SrcPort)),
			netip.AddrPortFrom(dst, uint16(u.DstPort)))
	}
	s = fmt.Sprintf("%s %s > %s", family, src, dst)
	switch {
	case frag != "":
		s += fmt.Sprintf(" %s %s", protoLabel(proto), frag)
	case p.Layer(layers.LayerTypeICMPv4) != nil:
		s += " ICMP " + p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4).TypeCode.String()
	case p.Layer(layers.LayerTypeICMPv6) != nil:
		tc := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6).TypeCode
		name, ok := icmpv6Names[tc.Type()]
		if !ok {
			name = tc.String()
		}
		s += " ICMPv6 " + name
	default:
		s += " " + protoLabel(proto)
	}
	return s
}

// protoLabel names an IP protocol number.
func protoLabel(p uint8) string {
	if name := layers.IPProtocol(p).String(); !strings.HasPrefix(name, "Unknown") {
		return name
	}
	return fmt.Sprintf("proto %d", p)
}
