package main

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// frameInfo is what the demo reads out of the header bytes a drop event captured.
type frameInfo struct {
	SrcMAC, DstMAC net.HardwareAddr
	ARP            *layers.ARP
	Src, Dst       netip.Addr // IP addresses (invalid for ARP and other ethertypes)
	SPort, DPort   uint16     // TCP/UDP ports
	L4             string     // "TCP", "UDP", "ICMPv4", "ICMPv6" or "proto N"
	Text           string     // one line: "IPv4 10.99.0.12 → 192.0.2.2 UDP 40000 → 7000"
}

// decodeFrame decodes an Ethernet frame (possibly cut short: events capture the first 128
// bytes) down to the transport header.
func decodeFrame(b []byte) frameInfo {
	var fi frameInfo
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	eth, ok := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !ok {
		fi.Text = fmt.Sprintf("undecodable frame (% x)", b[:min(len(b), 16)])
		return fi
	}
	fi.SrcMAC, fi.DstMAC = eth.SrcMAC, eth.DstMAC
	var parts []string
	if vlan, ok := p.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q); ok {
		parts = append(parts, fmt.Sprintf("VLAN %d", vlan.VLANIdentifier))
	}
	switch {
	case p.Layer(layers.LayerTypeARP) != nil:
		a := p.Layer(layers.LayerTypeARP).(*layers.ARP)
		fi.ARP = a
		spa, _ := netip.AddrFromSlice(a.SourceProtAddress)
		tpa, _ := netip.AddrFromSlice(a.DstProtAddress)
		switch a.Operation {
		case layers.ARPRequest:
			parts = append(parts, fmt.Sprintf("ARP request who-has %s tell %s", tpa, spa))
		case layers.ARPReply:
			parts = append(parts, fmt.Sprintf("ARP reply %s is-at %s", spa, net.HardwareAddr(a.SourceHwAddress)))
		default:
			parts = append(parts, fmt.Sprintf("ARP op %d", a.Operation))
		}
	case p.Layer(layers.LayerTypeIPv4) != nil:
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		fi.Src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		fi.Dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		parts = append(parts, fmt.Sprintf("IPv4 %s → %s", fi.Src, fi.Dst))
		parts = append(parts, fi.transport(p, uint8(ip.Protocol)))
	case p.Layer(layers.LayerTypeIPv6) != nil:
		ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		fi.Src, _ = netip.AddrFromSlice(ip.SrcIP)
		fi.Dst, _ = netip.AddrFromSlice(ip.DstIP)
		parts = append(parts, fmt.Sprintf("IPv6 %s → %s", fi.Src, fi.Dst))
		parts = append(parts, fi.transport(p, uint8(ip.NextHeader)))
	default:
		parts = append(parts, "ethertype "+eth.EthernetType.String())
	}
	if el := p.ErrorLayer(); el != nil {
		parts = append(parts, "(cut short: "+el.Error().Error()+")")
	}
	fi.Text = strings.Join(parts, " ")
	return fi
}

var mldNames = map[uint8]string{
	130: "MLD query",
	131: "MLDv1 listener report",
	132: "MLD listener done",
	143: "MLDv2 listener report",
}

// transport describes the layer above IP and records its ports.
func (fi *frameInfo) transport(p gopacket.Packet, proto uint8) string {
	switch {
	case p.Layer(layers.LayerTypeTCP) != nil:
		t := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		fi.L4, fi.SPort, fi.DPort = "TCP", uint16(t.SrcPort), uint16(t.DstPort)
		var flags []string
		for _, f := range []struct {
			on   bool
			name string
		}{{t.SYN, "SYN"}, {t.ACK, "ACK"}, {t.FIN, "FIN"}, {t.RST, "RST"}, {t.PSH, "PSH"}} {
			if f.on {
				flags = append(flags, f.name)
			}
		}
		return fmt.Sprintf("TCP %d → %d [%s]", fi.SPort, fi.DPort, strings.Join(flags, ","))
	case p.Layer(layers.LayerTypeUDP) != nil:
		u := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		fi.L4, fi.SPort, fi.DPort = "UDP", uint16(u.SrcPort), uint16(u.DstPort)
		return fmt.Sprintf("UDP %d → %d", fi.SPort, fi.DPort)
	case p.Layer(layers.LayerTypeICMPv4) != nil:
		fi.L4 = "ICMPv4"
		return "ICMPv4 " + p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4).TypeCode.String()
	case p.Layer(layers.LayerTypeICMPv6) != nil:
		fi.L4 = "ICMPv6"
		tc := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6).TypeCode
		if name, ok := mldNames[tc.Type()]; ok { // gopacket does not name the MLD messages
			return "ICMPv6 " + name
		}
		return "ICMPv6 " + tc.String()
	}
	fi.L4 = fmt.Sprintf("proto %d", proto)
	return fi.L4
}
