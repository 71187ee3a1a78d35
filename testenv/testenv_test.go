package testenv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const wait = 3 * time.Second // generous bound for things that take milliseconds

func TestTopology(t *testing.T) {
	RequirePriv(t)
	lockMAC := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	tp := New(t, Config{Devices: []DeviceSpec{{Name: "cam"}, {Name: "lock", MAC: lockMAC}}, Upstream: true})
	cam, lock, up := tp.Devices[0], tp.Devices[1], tp.Upstream
	if tp.Device("lock") != lock || tp.Device("nope") != nil {
		t.Fatal("Device(name) lookup is wrong")
	}

	t.Run("Layout", func(t *testing.T) {
		want := map[string]string{
			tp.Gateway.Name(): "ztgw-" + tp.ID,
			cam.NS.Name():     "ztdev-" + tp.ID + "-0",
			lock.NS.Name():    "ztdev-" + tp.ID + "-1",
			up.NS.Name():      "ztup-" + tp.ID,
		}
		for got, want := range want {
			if got != want {
				t.Errorf("namespace %q, want %q", got, want)
			}
			if _, err := os.Stat(filepath.Join(NetnsDir, got)); err != nil {
				t.Errorf("namespace %s not mounted: %v", got, err)
			}
		}
		checkAddrs(t, "cam", cam.Addrs(), "10.99.0.10", "fd00:99::10")
		checkAddrs(t, "lock", lock.Addrs(), "10.99.0.11", "fd00:99::11")
		checkAddrs(t, "upstream", []netip.Addr{up.IPv4, up.IPv6, up.GwIPv4, up.GwIPv6},
			"192.0.2.2", "2001:db8:99::2", "192.0.2.1", "2001:db8:99::1")
		if cam.MAC.String() != "02:7a:64:00:00:00" || !bytes.Equal(lock.MAC, lockMAC) {
			t.Errorf("device MACs %s, %s", cam.MAC, lock.MAC)
		}

		for _, d := range tp.Devices {
			// The gateway side: the port, its MAC, the gateway addresses and a link-local.
			checkLink(t, tp.Gateway, d.Port.Name, d.Port.Index, d.Port.MAC,
				[]string{"10.99.0.1/32", "fd00:99::1/128"}, true)
			if want := fmt.Sprintf("02:7a:67:00:00:%02x", d.N); d.Port.MAC.String() != want {
				t.Errorf("port %s MAC %s, want %s", d.Port.Name, d.Port.MAC, want)
			}
			// The device side: its MAC and host addresses.
			checkLink(t, d.NS, d.Ifname, d.Ifindex, d.MAC,
				[]string{d.IPv4[0].String() + "/32", d.IPv6[0].String() + "/128"}, true)
			// Everything, including the other device and the gateway's uplink subnet, is
			// routed via the gateway address.
			for _, dst := range append(tp.Devices[1-d.N].Addrs(), up.IPv4, up.IPv6, netip.MustParseAddr("203.0.113.7")) {
				routes, err := d.NS.Netlink().RouteGet(dst.AsSlice())
				if err != nil || len(routes) != 1 {
					t.Errorf("%s: route to %s: %v %v", d.Name, dst, routes, err)
					continue
				}
				gw := tp.Config().GatewayIPv4
				if dst.Is6() {
					gw = tp.Config().GatewayIPv6
				}
				if r := routes[0]; !r.Gw.Equal(gw.AsSlice()) || r.LinkIndex != d.Ifindex {
					t.Errorf("%s: route to %s via %s dev %d, want via %s dev %d", d.Name, dst, r.Gw, r.LinkIndex, gw, d.Ifindex)
				}
			}
			// The gateway routes each device address out of the device's port.
			for _, a := range d.Addrs() {
				routes, err := tp.Gateway.Netlink().RouteGet(a.AsSlice())
				if err != nil || len(routes) != 1 || routes[0].LinkIndex != d.Port.Index {
					t.Errorf("gateway route to %s: %v %v, want dev %s", a, routes, err, d.Port.Name)
				}
			}
		}
		checkLink(t, tp.Gateway, up.Uplink.Name, up.Uplink.Index, up.Uplink.MAC,
			[]string{"192.0.2.1/24", "2001:db8:99::1/64"}, true)
		checkLink(t, up.NS, up.Ifname, up.Ifindex, up.MAC, []string{"192.0.2.2/24", "2001:db8:99::2/64"}, true)

		for _, name := range []string{cam.Port.Name, cam.Ifname, lock.Port.Name, up.Uplink.Name, up.Ifname} {
			if len(name) > 15 || !strings.HasPrefix(name, "zt"+tp.ID) {
				t.Errorf("interface name %q: want at most 15 bytes, prefix zt%s", name, tp.ID)
			}
		}
	})

	// TCPEcho and UDPEcho: every device reaches an echo server upstream over both families.
	for _, network := range []string{"tcp", "udp"} {
		t.Run(strings.ToUpper(network)+"Echo", func(t *testing.T) {
			echoOn := map[string]func(string) (*EchoServer, error){"tcp": up.NS.EchoTCP, "udp": up.NS.EchoUDP}
			srv, err := echoOn[network](":0")
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range tp.Devices {
				for _, dst := range []netip.Addr{up.IPv4, up.IPv6} {
					raddr := netip.AddrPortFrom(dst, uint16(srv.Port())).String()
					c, err := d.NS.Dial(network, raddr, wait)
					if err != nil {
						t.Fatal(err)
					}
					echo(t, c, d, fmt.Sprintf("hello over %s from %s to %s", network, d.Name, raddr))
					c.Close()
				}
			}
		})
	}

	t.Run("Ping", func(t *testing.T) {
		for _, d := range tp.Devices {
			// Upstream replies cross the gateway: TTL 64 - 1. The gateway itself answers with 64.
			wantTTLs := map[netip.Addr]int{up.IPv4: 63, up.IPv6: 63, tp.Config().GatewayIPv4: 64,
				tp.Config().GatewayIPv6: 64}
			for dst, wantTTL := range wantTTLs {
				ttl, err := d.NS.PingTTL(dst, wait)
				if err != nil {
					t.Error(err)
				} else if ttl != wantTTL {
					t.Errorf("%s: ping %s: reply TTL %d, want %d", d.Name, dst, ttl, wantTTL)
				}
			}
		}
		// Link-local, with a zone (the interface name inside the pinging namespace).
		addrs, err := cam.NS.Netlink().AddrList(linkIdx(cam.Ifindex), netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if ll, _ := netip.AddrFromSlice(a.IP); ll.IsLinkLocalUnicast() {
				if ttl, err := tp.Gateway.PingTTL(ll.WithZone(cam.Port.Name), wait); err != nil || ttl != 64 {
					t.Errorf("ping of cam's link-local: TTL %d, %v", ttl, err)
				}
			}
		}
		// And the other way round.
		for _, dst := range cam.Addrs() {
			if err := up.NS.Ping(dst, wait); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("DeviceToDeviceIsRouted", func(t *testing.T) {
		sn, err := tp.Gateway.Sniff(lock.Port.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer sn.Stop()
		for i, dst := range lock.Addrs() {
			src := cam.Addrs()[i]
			ttl, err := cam.NS.PingTTL(dst, wait)
			if err != nil {
				t.Fatal(err)
			}
			if ttl != 63 {
				t.Errorf("ping %s from cam: reply TTL %d, want 63 (one routed hop)", dst, ttl)
			}
			// The request left the gateway on lock's port, re-addressed by the gateway at L2
			// and with its TTL decremented.
			_, ok := sn.WaitFor(wait, func(f Frame) bool {
				p, ok := parseIP(f.Data)
				return ok && f.Outgoing && p.src == src && p.dst == dst && p.isEchoRequest() &&
					bytes.Equal(f.Data[0:6], lock.MAC) && bytes.Equal(f.Data[6:12], lock.Port.MAC) && p.ttl == 63
			})
			if !ok {
				t.Errorf("no routed echo request %s -> %s (TTL 63, %s -> %s) seen on %s; saw:\n%s",
					src, dst, lock.Port.MAC, lock.MAC, lock.Port.Name, describe(sn.Frames()))
			}
		}
	})

	t.Run("SendFrameIsSniffed", func(t *testing.T) {
		sn, err := tp.Gateway.Sniff(cam.Port.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer sn.Stop()
		pc, err := up.NS.ListenPacket("udp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
		// Spoofed sources: the kernel forwards them (no rp_filter), so only XDP can stop them.
		for _, c := range []struct{ src, dst netip.Addr }{
			{src: netip.MustParseAddr("10.99.0.200"), dst: up.IPv4},
			{src: netip.MustParseAddr("fd00:99::200"), dst: up.IPv6},
		} {
			payload := []byte("spoofed from " + c.src.String())
			frame := udpFrame(cam.MAC, cam.Port.MAC, netip.AddrPortFrom(c.src, 4242), netip.AddrPortFrom(c.dst, port), payload)
			if err := cam.NS.SendFrame(cam.Ifname, frame); err != nil {
				t.Fatal(err)
			}
			if _, ok := sn.WaitFor(wait, func(f Frame) bool { return !f.Outgoing && bytes.Equal(f.Data, frame) }); !ok {
				t.Errorf("frame sent from %s not received on %s; saw:\n%s", c.src, cam.Port.Name, describe(sn.Frames()))
			}
			_ = pc.SetReadDeadline(time.Now().Add(wait))
			buf := make([]byte, 1500)
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatalf("upstream did not get the forwarded datagram from %s: %v", c.src, err)
			}
			if got := from.(*net.UDPAddr).AddrPort(); got.Addr().Unmap() != c.src || !bytes.Equal(buf[:n], payload) {
				t.Errorf("upstream got %q from %s, want %q from %s", buf[:n], got, payload, c.src)
			}
		}
		if len(sn.Received()) == 0 || len(sn.Received()) > len(sn.Frames()) {
			t.Errorf("Received() = %d frames of %d", len(sn.Received()), len(sn.Frames()))
		}
	})

	t.Run("PingErrors", func(t *testing.T) {
		// Nothing answers for 10.99.0.99 (the gateway sends it on to the upstream, which does
		// not forward): Ping times out.
		err := cam.NS.Ping(netip.MustParseAddr("10.99.0.99"), 200*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "no echo reply") {
			t.Errorf("ping of an absent host: %v, want no echo reply", err)
		}
		// An ICMP error about the request ends the wait with that error: Ping reads nothing once its
		// deadline has passed, so the unreachable error proves it came before the timeout.
		for _, p := range []string{"198.51.100.0/24", "2001:db8:dead::/48"} {
			dst := netip.MustParsePrefix(p)
			err := tp.Gateway.Netlink().RouteAdd(&netlink.Route{Dst: prefixNet(dst), Type: unix.RTN_UNREACHABLE})
			if err != nil {
				t.Fatal(err)
			}
			err = cam.NS.Ping(dst.Addr().Next(), wait)
			if err == nil || !strings.Contains(err.Error(), "unreachable") {
				t.Errorf("ping into an unreachable route: %v, want an unreachable error", err)
			}
		}
	})
}

func TestAddRemoveDevice(t *testing.T) {
	RequirePriv(t)
	tp := New(t, Config{Devices: []DeviceSpec{{}}, Upstream: true})
	d, err := tp.AddDevice(DeviceSpec{Name: "late"})
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 1 || d.IPv4[0] != netip.MustParseAddr("10.99.0.11") || len(tp.Devices) != 2 {
		t.Fatalf("added device %+v", d)
	}
	if _, err := tp.AddDevice(DeviceSpec{Name: "late"}); err == nil {
		t.Fatal("AddDevice accepted a duplicate name")
	}
	for _, dst := range []netip.Addr{tp.Upstream.IPv4, tp.Upstream.IPv6, tp.Devices[0].IPv4[0]} {
		if err := d.NS.Ping(dst, wait); err != nil {
			t.Fatal(err)
		}
	}

	// Re-create it: same MAC and addresses, new port (new name, new ifindex).
	spec, oldNS, oldPort := d.Spec(), d.NS.Name(), d.Port
	if err := tp.RemoveDevice(d); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(NetnsDir, oldNS)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace %s still there after RemoveDevice: %v", oldNS, err)
	}
	if _, err := tp.Gateway.Netlink().LinkByName(oldPort.Name); err == nil {
		t.Errorf("port %s still there after RemoveDevice", oldPort.Name)
	}
	d2, err := tp.AddDevice(spec)
	if err != nil {
		t.Fatal(err)
	}
	if d2.Port.Name == oldPort.Name || !bytes.Equal(d2.MAC, spec.MAC) || d2.IPv4[0] != spec.IPv4[0] {
		t.Errorf("re-created device %+v from %+v (old port %+v)", d2, spec, oldPort)
	}
	if err := d2.NS.Ping(tp.Upstream.IPv6, wait); err != nil {
		t.Fatal(err)
	}
	if err := tp.Upstream.AddAddress(netip.MustParseAddr("203.0.113.7")); err != nil {
		t.Fatal(err)
	}
	if ttl, err := d2.NS.PingTTL(netip.MustParseAddr("203.0.113.7"), wait); err != nil || ttl != 63 {
		t.Fatalf("ping of an extra upstream address: TTL %d, %v", ttl, err)
	}
}

// TestXDPOnPort attaches XDP programs to a gateway port from inside the gateway namespace,
// the way the datapath tests will: a dropping program cuts the device off, and the gateway's
// sniffer (behind XDP) no longer sees its frames.
func TestXDPOnPort(t *testing.T) {
	RequirePriv(t)
	tp := New(t, Config{Devices: []DeviceSpec{{}}, Upstream: true})
	d := tp.Devices[0]
	attach := func(action int32) link.Link {
		t.Helper()
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, action), asm.Return()}})
		if err != nil {
			t.Fatal(err)
		}
		defer prog.Close()
		var l link.Link
		err = tp.Gateway.Do(func() error {
			var err error
			l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: d.Port.Index})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	const xdpDrop, xdpPass = 1, 2

	// Resolve the neighbours first: an ARP request lost to XDP_DROP would stall the next ping
	// for the kernel's retransmit time (1s).
	if err := d.NS.Ping(tp.Upstream.IPv4, wait); err != nil {
		t.Fatal(err)
	}
	sn, err := tp.Gateway.Sniff(d.Port.Name)
	if err != nil {
		t.Fatal(err)
	}
	drop := attach(xdpDrop)
	if err := d.NS.Ping(tp.Upstream.IPv4, 200*time.Millisecond); err == nil {
		t.Error("ping passed an XDP_DROP program")
	}
	if in := sn.Received(); len(in) != 0 {
		t.Errorf("the sniffer saw %d frames that XDP dropped:\n%s", len(in), describe(in))
	}
	if err := drop.Close(); err != nil {
		t.Fatal(err)
	}
	pass := attach(xdpPass)
	defer pass.Close()
	if err := d.NS.Ping(tp.Upstream.IPv4, wait); err != nil {
		t.Error(err)
	}
	if _, ok := sn.WaitFor(wait, func(f Frame) bool { return !f.Outgoing }); !ok {
		t.Error("the sniffer saw nothing behind an XDP_PASS program")
	}
}

func TestDo(t *testing.T) {
	RequirePriv(t)
	tp := New(t, Config{})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNetns(t)

	var inside uint64
	err := tp.Gateway.Do(func() error {
		var st syscall.Stat_t
		if err := syscall.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		inside = st.Ino
		if _, err := os.Stat("/sys/fs/bpf"); err != nil {
			return fmt.Errorf("bpffs not visible: %w", err)
		}
		return errors.New("marker")
	})
	if err == nil || err.Error() != "marker" {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(tp.Gateway.Path(), &st); err != nil {
		t.Fatal(err)
	}
	if inside != st.Ino || inside == before {
		t.Errorf("fn ran in netns %d, want the gateway's %d (caller's is %d)", inside, st.Ino, before)
	}
	if after := threadNetns(t); after != before {
		t.Errorf("caller's thread moved from netns %d to %d", before, after)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the panic from fn", r)
			}
		}()
		_ = tp.Gateway.Do(func() error { panic("boom") })
	}()
}

func TestCloseRemovesEverything(t *testing.T) {
	RequirePriv(t)
	tp, err := Build(Config{Devices: []DeviceSpec{{}, {}}, Upstream: true})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			tp.Close()
		}
	}()
	id := tp.ID
	inodes := map[uint64]string{}
	for _, ns := range []*Namespace{tp.Gateway, tp.Devices[0].NS, tp.Devices[1].NS, tp.Upstream.NS} {
		var st syscall.Stat_t
		if err := syscall.Stat(ns.Path(), &st); err != nil {
			t.Fatal(err)
		}
		inodes[st.Ino] = ns.Name()
	}
	if out := ipNetnsList(t); out != "" && strings.Count(out, id) != 4 {
		n := strings.Count(out, id)
		t.Errorf("ip netns list shows %d namespaces with %s before Close, want 4", n, id)
	}
	// Helper sockets and servers are closed by Close too.
	if _, err := tp.Upstream.NS.EchoTCP(":0"); err != nil {
		t.Fatal(err)
	}
	sn, err := tp.Gateway.Sniff(tp.Devices[0].Port.Name)
	if err != nil {
		t.Fatal(err)
	}

	closed = true
	if err := tp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, ok := sn.WaitFor(time.Millisecond, func(Frame) bool { return false }); ok {
		t.Error("sniffer still matching after Close")
	}

	assertGone(t, id, inodes)
}

func TestBuildFailureLeavesNothing(t *testing.T) {
	RequirePriv(t)
	defer func() { buildHook = nil }()
	for _, mode := range []string{"error", "panic"} {
		var id string
		buildHook = func(tp *Topology) error {
			id = tp.ID
			if len(tp.Devices) < 2 {
				return nil
			}
			if mode == "panic" {
				panic("injected")
			}
			return errors.New("injected")
		}
		func() {
			defer func() {
				if r := recover(); (r != nil) != (mode == "panic") {
					t.Errorf("%s: recovered %v", mode, r)
				}
			}()
			tp, err := Build(Config{Devices: []DeviceSpec{{}, {}, {}}, Upstream: true})
			if err == nil || tp != nil || !strings.Contains(err.Error(), "injected") {
				t.Errorf("%s: Build returned %v, %v", mode, tp, err)
			}
		}()
		if id == "" {
			t.Fatalf("%s: the hook never ran", mode)
		}
		assertGone(t, id, nil)
	}
}

// TestParallelTopologies builds topologies concurrently: their names never collide and
// each one works on its own.
func TestParallelTopologies(t *testing.T) {
	RequirePriv(t)
	const n = 3
	errs := make(chan error, n)
	ids := make(chan string, n)
	for range n {
		go func() {
			tp, err := Build(Config{Devices: []DeviceSpec{{}}, Upstream: true})
			if err != nil {
				errs <- err
				return
			}
			ids <- tp.ID
			err = tp.Devices[0].NS.Ping(tp.Upstream.IPv6, wait)
			errs <- errors.Join(err, tp.Close())
		}()
	}
	seen := map[string]bool{}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(ids)
	for id := range ids {
		if seen[id] {
			t.Errorf("ID %s used twice", id)
		}
		seen[id] = true
		assertGone(t, id, nil)
	}
}

func TestConfigErrors(t *testing.T) {
	// Validation happens before anything is created: no privileges needed.
	mc := net.HardwareAddr{0x03, 0, 0, 0, 0, 1}
	for name, cfg := range map[string]Config{
		"multicast MAC":  {Devices: []DeviceSpec{{MAC: mc}}},
		"short MAC":      {Devices: []DeviceSpec{{MAC: net.HardwareAddr{2, 0, 0}}}},
		"duplicate name": {Devices: []DeviceSpec{{Name: "a"}, {Name: "a"}}},
		"duplicate addr": {Devices: []DeviceSpec{
			{IPv4: []netip.Addr{netip.MustParseAddr("10.99.0.5")}},
			{IPv4: []netip.Addr{netip.MustParseAddr("10.99.0.5")}},
		}},
		"gateway addr":    {Devices: []DeviceSpec{{IPv6: []netip.Addr{netip.MustParseAddr("fd00:99::1")}}}},
		"v6 in v4 list":   {Devices: []DeviceSpec{{IPv4: []netip.Addr{netip.MustParseAddr("fd00::5")}}}},
		"v4 gateway6":     {GatewayIPv6: netip.MustParseAddr("10.0.0.1")},
		"tiny uplink":     {Upstream: true, UplinkIPv4: netip.MustParsePrefix("192.0.2.0/31")},
		"uplink conflict": {Upstream: true, Devices: []DeviceSpec{{IPv4: []netip.Addr{netip.MustParseAddr("192.0.2.2")}}}},
		"MTU":             {MTU: 100},
	} {
		if tp, err := Build(cfg); err == nil {
			tp.Close()
			t.Errorf("%s: Build accepted %+v", name, cfg)
		}
	}
	_, specs, err := newTopology(Config{Devices: []DeviceSpec{{IPv4: []netip.Addr{}}}})
	if err != nil || len(specs[0].IPv4) != 0 || len(specs[0].IPv6) != 1 {
		t.Errorf("an empty IPv4 list must mean no IPv4: %+v, %v", specs, err)
	}
}

// ---- helpers ----

// assertGone checks that nothing of topology id remains: no /run/netns entry, no mount, no
// link in this namespace, no file descriptor on one of the namespaces (given by inode).
func assertGone(t *testing.T, id string, inodes map[uint64]string) {
	t.Helper()
	entries, err := os.ReadDir(NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), id) {
			t.Errorf("%s/%s remains after Close", NetnsDir, e.Name())
		}
	}
	if strings.Contains(ipNetnsList(t), id) {
		t.Errorf("ip netns list still shows namespaces of %s", id)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), id) {
		t.Errorf("a mount of %s remains", id)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.Contains(l.Attrs().Name, id) {
			t.Errorf("link %s remains in the root namespace", l.Attrs().Name)
		}
	}
	// No file descriptor of this process refers to a namespace other than its own anymore
	// (tests in this package do not run in parallel with each other).
	var own syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &own); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		var ino uint64
		if _, err := fmt.Sscanf(target, "net:[%d]", &ino); err == nil && ino != own.Ino {
			t.Errorf("fd %s still refers to netns %d %s", fd.Name(), ino, inodes[ino])
		}
	}
}

func checkAddrs(t *testing.T, what string, got []netip.Addr, want ...string) {
	t.Helper()
	var g []string
	for _, a := range got {
		g = append(g, a.String())
	}
	if strings.Join(g, " ") != strings.Join(want, " ") {
		t.Errorf("%s addresses %v, want %v", what, g, want)
	}
}

// checkLink checks that ns has ifname with index, MAC, the given addresses and (if ll) an
// IPv6 link-local address, and that it is up.
func checkLink(t *testing.T, ns *Namespace, ifname string, index int, mac net.HardwareAddr, addrs []string, ll bool) {
	t.Helper()
	l, err := ns.Netlink().LinkByIndex(index)
	if err != nil {
		t.Errorf("%s: no link %d: %v", ns, index, err)
		return
	}
	if l.Attrs().Name != ifname || !bytes.Equal(l.Attrs().HardwareAddr, mac) || l.Attrs().OperState != netlink.OperUp {
		t.Errorf("%s: link %d is %s %s %s, want %s %s up", ns, index, l.Attrs().Name, l.Attrs().HardwareAddr,
			l.Attrs().OperState, ifname, mac)
	}
	list, err := ns.Netlink().AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, a := range list {
		if a.IP.IsLinkLocalUnicast() {
			have["link-local"] = true
		} else {
			have[a.IPNet.String()] = true
		}
	}
	if ll {
		addrs = append(addrs, "link-local")
	}
	for _, a := range addrs {
		if !have[a] {
			t.Errorf("%s/%s lacks %s (has %v)", ns, ifname, a, have)
		}
	}
}

// echo writes msg on c and expects it back; it also checks that c's local address is one of
// the device's (source address selection with /32 and /128 addresses).
func echo(t *testing.T, c net.Conn, d *Device, msg string) {
	t.Helper()
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	found := false
	for _, a := range d.Addrs() {
		found = found || a == local.Addr().Unmap()
	}
	if !found {
		t.Errorf("%s: connection from %s, not from one of %v", d.Name, local, d.Addrs())
	}
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
	if string(buf) != msg {
		t.Errorf("echoed %q, want %q", buf, msg)
	}
}

func threadNetns(t *testing.T) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// ipNetnsList is `ip netns list` (only reads /run/netns), or "" without iproute2.
func ipNetnsList(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		return ""
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	return string(out)
}

// udpFrame builds an Ethernet/IPv4-or-IPv6/UDP frame with valid checksums.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.AddrPort, payload []byte) []byte {
	udp := binary.BigEndian.AppendUint16(nil, src.Port())
	udp = binary.BigEndian.AppendUint16(udp, dst.Port())
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(udp, 0, 0)
	udp = append(udp, payload...)
	s, d := src.Addr().AsSlice(), dst.Addr().AsSlice()
	pseudo := append(append(append([]byte(nil), s...), d...), 0, unix.IPPROTO_UDP)
	pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(udp)))
	sum := checksum(append(pseudo, udp...))
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], sum)

	frame := append(append([]byte(nil), dstMAC...), srcMAC...)
	if src.Addr().Is4() {
		frame = append(frame, 0x08, 0x00)
		ip := []byte{0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, unix.IPPROTO_UDP, 0, 0}
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		ip = append(append(ip, s...), d...)
		binary.BigEndian.PutUint16(ip[10:], checksum(ip))
		return append(append(frame, ip...), udp...)
	}
	frame = append(frame, 0x86, 0xdd)
	ip := []byte{0x60, 0, 0, 0, 0, 0, unix.IPPROTO_UDP, 64}
	binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
	ip = append(append(ip, s...), d...)
	return append(append(frame, ip...), udp...)
}

type ipPacket struct {
	src, dst netip.Addr
	ttl      int
	proto    byte
	l4       []byte
}

func (p ipPacket) isEchoRequest() bool {
	return len(p.l4) > 0 &&
		(p.proto == unix.IPPROTO_ICMP && p.l4[0] == 8 || p.proto == unix.IPPROTO_ICMPV6 && p.l4[0] == 128)
}

// parseIP parses the IP header of an untagged Ethernet frame (no IPv6 extension headers).
func parseIP(f []byte) (ipPacket, bool) {
	if len(f) < 14 {
		return ipPacket{}, false
	}
	b := f[14:]
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800:
		if len(b) < 20 || len(b) < int(b[0]&0xf)*4 {
			return ipPacket{}, false
		}
		return ipPacket{src: netip.AddrFrom4([4]byte(b[12:16])), dst: netip.AddrFrom4([4]byte(b[16:20])),
			ttl: int(b[8]), proto: b[9], l4: b[int(b[0]&0xf)*4:]}, true
	case 0x86dd:
		if len(b) < 40 {
			return ipPacket{}, false
		}
		return ipPacket{src: netip.AddrFrom16([16]byte(b[8:24])), dst: netip.AddrFrom16([16]byte(b[24:40])),
			ttl: int(b[7]), proto: b[6], l4: b[40:]}, true
	}
	return ipPacket{}, false
}

func describe(frames []Frame) string {
	var sb strings.Builder
	for _, f := range frames {
		dir := "in "
		if f.Outgoing {
			dir = "out"
		}
		if p, ok := parseIP(f.Data); ok {
			fmt.Fprintf(&sb, "  %s %s > %s  %s > %s ttl %d proto %d\n", dir,
				net.HardwareAddr(f.Data[6:12]), net.HardwareAddr(f.Data[0:6]), p.src, p.dst, p.ttl, p.proto)
		} else {
			fmt.Fprintf(&sb, "  %s %d bytes % x\n", dir, len(f.Data), f.Data[:min(len(f.Data), 20)])
		}
	}
	return sb.String()
}
