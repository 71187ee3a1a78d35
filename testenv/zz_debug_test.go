package testenv

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestZZDebug(t *testing.T) {
	tp := New(t, Config{Devices: []DeviceSpec{{}}, Upstream: true})
	d := tp.Devices[0]
	sd, _ := d.NS.Sniff(d.Ifname)
	sp, _ := tp.Gateway.Sniff(d.Port.Name)
	t1 := time.Now()
	err := d.NS.Ping(tp.Upstream.IPv6, wait)
	el := time.Since(t1)
	if el > 500*time.Millisecond {
		t.Logf("devmac %s portmac %s", d.MAC, d.Port.MAC)
		for name, s := range map[string]*Sniffer{"dev": sd, "port": sp} {
			for _, f := range s.Frames() {
				p, ok := parseIP(f.Data)
				typ := -1
				if ok && len(p.l4) > 0 {
					typ = int(p.l4[0])
				}
				extra := ""
				if typ == 135 || typ == 136 {
					extra = fmt.Sprint(netip.AddrFrom16([16]byte(p.l4[8:24])), " opt ", p.l4[24:])
				}
				t.Logf("%s %6s out=%v pkt=%d %s>%s %s > %s proto %d type %d %s", f.Time.Sub(t1), name, f.Outgoing, f.PktType, net.HardwareAddr(f.Data[6:12]), net.HardwareAddr(f.Data[:6]), p.src, p.dst, p.proto, typ, extra)
			}
		}
		t.Fatalf("slow %v %v", el, err)
	}
}
