package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Config describes a topology. Zero fields get the defaults listed in the package
// documentation.
type Config struct {
	// Devices get one namespace and one gateway port each, in order (device n = Devices[n]).
	Devices []DeviceSpec
	// Upstream adds the upstream namespace and the uplink.
	Upstream bool
	// Bridge makes the device ports ports of one bridge in the gateway namespace
	// (Topology.Bridge), which carries the gateway's addresses; the uplink stays routed.
	Bridge bool

	// GatewayIPv4 and GatewayIPv6 are the gateway's addresses on every port (default
	// 10.99.0.1 and fd00:99::1); devices route everything via them.
	GatewayIPv4 netip.Addr
	GatewayIPv6 netip.Addr

	// UplinkIPv4 and UplinkIPv6 are the uplink subnets (default 192.0.2.0/24 and
	// 2001:db8:99::/64): the gateway takes the first host address, the upstream the second.
	UplinkIPv4 netip.Prefix
	UplinkIPv6 netip.Prefix

	// MTU of every veth; 0 keeps the kernel default (1500). Native XDP on veth needs an MTU
	// that fits a page (about 3.5 KiB) unless the program supports fragments.
	MTU int

	// ReadyTimeout bounds the wait for links and addresses to become usable (default 10s).
	ReadyTimeout time.Duration
}

// DeviceSpec describes a device. Zero fields get defaults derived from the device's number n
// (see the package documentation); a nil address slice means "default", an empty non-nil
// slice "none of that family".
type DeviceSpec struct {
	Name string           // default "dev<n>"; unique within the topology
	MAC  net.HardwareAddr // default 02:7a:64:00:<n>; must be unicast
	IPv4 []netip.Addr     // default [gateway /24 . 10+n]
	IPv6 []netip.Addr     // default [gateway /112 :: 0x10+n]
}

// Port is one end of a veth as seen from the gateway namespace.
type Port struct {
	Name  string           // interface name inside the gateway namespace
	Index int              // ifindex inside the gateway namespace (attach XDP here)
	MAC   net.HardwareAddr // the port's MAC (devices send to it)
}

// Device is a device namespace and its link to the gateway. Treat it as read-only.
type Device struct {
	Name    string
	N       int // the device's number: used in its names, default MAC and default addresses
	NS      *Namespace
	Ifname  string // the device's interface (inside NS)
	Ifindex int    // its ifindex (inside NS)
	MAC     net.HardwareAddr
	IPv4    []netip.Addr
	IPv6    []netip.Addr
	Port    Port // the gateway side of the device's veth
}

// Spec returns the (defaulted) spec the device was built from: pass it to
// [Topology.AddDevice] to re-create a removed device with the same MAC and addresses.
func (d *Device) Spec() DeviceSpec {
	return DeviceSpec{Name: d.Name, MAC: slices.Clone(d.MAC), IPv4: slices.Clone(d.IPv4), IPv6: slices.Clone(d.IPv6)}
}

// Addrs returns the device's IPv4 and IPv6 addresses.
func (d *Device) Addrs() []netip.Addr { return append(slices.Clone(d.IPv4), d.IPv6...) }

// Upstream is the server namespace behind the gateway. Treat it as read-only.
type Upstream struct {
	NS      *Namespace
	Ifname  string // the upstream's interface (inside NS)
	Ifindex int    // its ifindex (inside NS)
	MAC     net.HardwareAddr
	IPv4    netip.Addr // the upstream's address on the uplink
	IPv6    netip.Addr
	Uplink  Port       // the gateway side of the uplink veth
	GwIPv4  netip.Addr // the gateway's address on the uplink (the upstream's default gateway)
	GwIPv6  netip.Addr
}

// AddAddress adds a (/32 or /128) address to the upstream's loopback, so that the upstream
// also answers for it; devices reach it through the gateway's default route.
func (u *Upstream) AddAddress(a netip.Addr) error {
	lo, err := u.NS.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	if err := u.NS.nl.AddrAdd(lo, hostAddr(a)); err != nil {
		return fmt.Errorf("testenv: add %s to upstream: %w", a, err)
	}
	return nil
}

// Topology is a built test topology. Its methods are not safe for concurrent use, except
// that the helpers on its namespaces may be used from several goroutines.
type Topology struct {
	// ID is the random part of every name: namespaces "ztgw-<ID>", "ztdev-<ID>-<n>",
	// "ztup-<ID>", interfaces "zt<ID>...".
	ID       string
	Gateway  *Namespace
	Devices  []*Device
	Upstream *Upstream // nil without Config.Upstream
	Bridge   *Port     // the bridge of the device ports, "zt<ID>br"; nil without Config.Bridge

	cfg Config

	mu         sync.Mutex
	namespaces []*Namespace
	closers    []io.Closer
	nextDev    int
	closed     bool
	closeErr   error
}

// Config returns the configuration with defaults filled in (device specs as given).
func (tp *Topology) Config() Config { return tp.cfg }

// Device returns the device called name, or nil.
func (tp *Topology) Device(name string) *Device {
	for _, d := range tp.Devices {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// New builds a topology for a test, failing the test if that fails. It calls [RequirePriv]
// first and registers a t.Cleanup that tears the topology down, even when the test fails or
// New itself fails half-way.
func New(t testing.TB, cfg Config) *Topology {
	t.Helper()
	RequirePriv(t)
	tp, specs, err := newTopology(cfg)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("testenv: teardown: %v", err)
		}
	})
	if err := tp.build(specs); err != nil {
		t.Fatalf("testenv: build topology: %v", err)
	}
	return tp
}

// Build builds a topology for non-test callers; the caller must Close it. If Build fails it
// leaves nothing behind.
func Build(cfg Config) (_ *Topology, err error) {
	tp, specs, err := newTopology(cfg)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	ok := false
	defer func() { // also runs when build panics
		if !ok {
			err = errors.Join(err, tp.Close())
		}
	}()
	if err := tp.build(specs); err != nil {
		return nil, fmt.Errorf("testenv: build topology: %w", err)
	}
	ok = true
	return tp, nil
}

var (
	defaultGatewayIPv4 = netip.MustParseAddr("10.99.0.1")
	defaultGatewayIPv6 = netip.MustParseAddr("fd00:99::1")
	defaultUplinkIPv4  = netip.MustParsePrefix("192.0.2.0/24")
	defaultUplinkIPv6  = netip.MustParsePrefix("2001:db8:99::/64")
)

const defaultReadyTimeout = 10 * time.Second

// newTopology fills in and validates cfg, with no side effects.
func newTopology(cfg Config) (*Topology, []DeviceSpec, error) {
	if !cfg.GatewayIPv4.IsValid() {
		cfg.GatewayIPv4 = defaultGatewayIPv4
	}
	if !cfg.GatewayIPv6.IsValid() {
		cfg.GatewayIPv6 = defaultGatewayIPv6
	}
	if !cfg.UplinkIPv4.IsValid() {
		cfg.UplinkIPv4 = defaultUplinkIPv4
	}
	if !cfg.UplinkIPv6.IsValid() {
		cfg.UplinkIPv6 = defaultUplinkIPv6
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = defaultReadyTimeout
	}
	cfg.UplinkIPv4, cfg.UplinkIPv6 = cfg.UplinkIPv4.Masked(), cfg.UplinkIPv6.Masked()
	switch {
	case !cfg.GatewayIPv4.Is4() || !cfg.GatewayIPv4.IsGlobalUnicast():
		return nil, nil, fmt.Errorf("GatewayIPv4 %s is not a unicast IPv4 address", cfg.GatewayIPv4)
	case !cfg.GatewayIPv6.Is6() || cfg.GatewayIPv6.Is4In6() || !cfg.GatewayIPv6.IsGlobalUnicast():
		return nil, nil, fmt.Errorf("GatewayIPv6 %s is not a global/ULA unicast IPv6 address", cfg.GatewayIPv6)
	case !cfg.UplinkIPv4.Addr().Is4() || cfg.UplinkIPv4.Bits() > 30:
		return nil, nil, fmt.Errorf("UplinkIPv4 %s is not an IPv4 prefix of at most /30", cfg.UplinkIPv4)
	case !cfg.UplinkIPv6.Addr().Is6() || cfg.UplinkIPv6.Addr().Is4In6() || cfg.UplinkIPv6.Bits() > 126:
		return nil, nil, fmt.Errorf("UplinkIPv6 %s is not an IPv6 prefix of at most /126", cfg.UplinkIPv6)
	case cfg.MTU != 0 && (cfg.MTU < 1280 || cfg.MTU > 65535):
		return nil, nil, fmt.Errorf("MTU %d out of range [1280, 65535]", cfg.MTU)
	}
	tp := &Topology{cfg: cfg}
	used := tp.usedAddrs()
	names := map[string]bool{}
	specs := make([]DeviceSpec, len(cfg.Devices))
	for n, s := range cfg.Devices {
		var err error
		if specs[n], err = tp.completeSpec(s, n, used, names); err != nil {
			return nil, nil, err
		}
	}
	return tp, specs, nil
}

// uplinkAddrs returns the gateway's and the upstream's addresses on the uplink.
func (tp *Topology) uplinkAddrs() (gw4, up4, gw6, up6 netip.Addr) {
	gw4 = tp.cfg.UplinkIPv4.Addr().Next()
	gw6 = tp.cfg.UplinkIPv6.Addr().Next()
	return gw4, gw4.Next(), gw6, gw6.Next()
}

// usedAddrs maps every address taken in the topology (as configured) to its owner.
func (tp *Topology) usedAddrs() map[netip.Addr]string {
	used := map[netip.Addr]string{tp.cfg.GatewayIPv4: "the gateway", tp.cfg.GatewayIPv6: "the gateway"}
	if tp.cfg.Upstream {
		gw4, up4, gw6, up6 := tp.uplinkAddrs()
		used[gw4], used[gw6] = "the gateway's uplink", "the gateway's uplink"
		used[up4], used[up6] = "the upstream", "the upstream"
	}
	for _, d := range tp.Devices {
		for _, a := range d.Addrs() {
			used[a] = "device " + d.Name
		}
	}
	return used
}

// completeSpec fills in the defaults of device n and validates it against the addresses and
// names already used (which it then extends).
func (tp *Topology) completeSpec(s DeviceSpec, n int, used map[netip.Addr]string,
	names map[string]bool) (DeviceSpec, error) {
	if s.Name == "" {
		s.Name = fmt.Sprintf("dev%d", n)
	}
	if names[s.Name] {
		return s, fmt.Errorf("duplicate device name %q", s.Name)
	}
	if s.MAC == nil {
		s.MAC = mac(0x64, n)
	}
	if len(s.MAC) != 6 || s.MAC[0]&1 != 0 || [6]byte(s.MAC) == [6]byte{} {
		return s, fmt.Errorf("device %q: MAC %s is not a unicast Ethernet address", s.Name, s.MAC)
	}
	s.MAC = slices.Clone(s.MAC)
	if s.IPv4 == nil {
		if n > 244 {
			return s, fmt.Errorf("device %q: no default IPv4 address for device number %d, give one", s.Name, n)
		}
		b := tp.cfg.GatewayIPv4.As4()
		b[3] = byte(10 + n)
		s.IPv4 = []netip.Addr{netip.AddrFrom4(b)}
	}
	if s.IPv6 == nil {
		b := tp.cfg.GatewayIPv6.As16()
		b[14], b[15] = byte((0x10+n)>>8), byte(0x10+n)
		s.IPv6 = []netip.Addr{netip.AddrFrom16(b)}
	}
	s.IPv4, s.IPv6 = slices.Clone(s.IPv4), slices.Clone(s.IPv6)
	for _, a := range s.IPv4 {
		if !a.Is4() || !a.IsGlobalUnicast() {
			return s, fmt.Errorf("device %q: %s is not a unicast IPv4 address", s.Name, a)
		}
	}
	for _, a := range s.IPv6 {
		if !a.Is6() || a.Is4In6() || !a.IsGlobalUnicast() || a.Zone() != "" {
			return s, fmt.Errorf("device %q: %s is not a global/ULA unicast IPv6 address", s.Name, a)
		}
	}
	for _, a := range append(slices.Clone(s.IPv4), s.IPv6...) {
		if owner, ok := used[a]; ok {
			return s, fmt.Errorf("device %q: address %s is already used by %s", s.Name, a, owner)
		}
		used[a] = "device " + s.Name
	}
	names[s.Name] = true
	return s, nil
}

// mac returns 02:7a:<kind>:00:<n>, a locally administered unicast MAC.
func mac(kind byte, n int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x7a, kind, 0x00, byte(n >> 8), byte(n)}
}

var (
	uplinkGatewayMAC  = net.HardwareAddr{0x02, 0x7a, 0x75, 0x00, 0x00, 0x01}
	uplinkUpstreamMAC = net.HardwareAddr{0x02, 0x7a, 0x75, 0x00, 0x00, 0x02}
)

// hostAddr is a as a /32 or /128 address, usable at once and without a prefix route.
func hostAddr(a netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(a, a.BitLen())),
		Flags: unix.IFA_F_NODAD | unix.IFA_F_NOPREFIXROUTE}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func randomID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// build creates everything; on error the caller closes the topology.
func (tp *Topology) build(specs []DeviceSpec) error {
	for attempt := 0; ; attempt++ {
		id := randomID()
		gw, err := tp.newNamespace("ztgw-" + id)
		if errors.Is(err, os.ErrExist) && attempt < 8 {
			continue
		}
		if err != nil {
			return err
		}
		tp.ID, tp.Gateway = id, gw
		break
	}
	err := tp.Gateway.setSysctls(
		[2]string{"ipv6/conf/all/accept_dad", "0"},
		[2]string{"ipv6/conf/default/accept_dad", "0"},
		[2]string{"ipv4/conf/all/rp_filter", "0"},
		[2]string{"ipv4/conf/default/rp_filter", "0"},
		[2]string{"ipv4/conf/all/send_redirects", "0"},
		[2]string{"ipv4/conf/default/send_redirects", "0"},
		[2]string{"ipv4/ip_forward", "1"},
		[2]string{"ipv6/conf/all/forwarding", "1"},
	)
	if err != nil {
		return err
	}
	if tp.cfg.Upstream {
		if err := tp.buildUpstream(); err != nil {
			return err
		}
	}
	if tp.cfg.Bridge {
		if err := tp.buildBridge(); err != nil {
			return err
		}
	}
	for n, s := range specs {
		tp.nextDev = n + 1
		d, err := tp.addDevice(s, n, nil)
		if err != nil {
			return err
		}
		tp.Devices = append(tp.Devices, d)
		if buildHook != nil {
			if err := buildHook(tp); err != nil {
				return err
			}
		}
	}
	tp.nextDev = len(specs)
	return nil
}

// buildHook, set by tests only, runs in build after each device; an error aborts the build.
var buildHook func(tp *Topology) error

// leafSysctls are the settings of device and upstream namespaces.
var leafSysctls = [][2]string{
	{"ipv6/conf/all/accept_dad", "0"},
	{"ipv6/conf/default/accept_dad", "0"},
	{"ipv6/conf/all/accept_ra", "0"},
	{"ipv6/conf/default/accept_ra", "0"},
	{"ipv6/conf/all/router_solicitations", "0"},
	{"ipv6/conf/default/router_solicitations", "0"},
}

// newNamespace creates and registers a namespace and brings its loopback up.
func (tp *Topology) newNamespace(name string) (*Namespace, error) {
	h, err := createNamedNetns(name)
	if err != nil {
		return nil, err
	}
	ns := &Namespace{name: name, handle: h, tp: tp}
	tp.mu.Lock()
	tp.namespaces = append(tp.namespaces, ns)
	tp.mu.Unlock()
	err = ns.Do(func() error {
		var err error
		ns.nl, err = netlink.NewHandle()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("testenv: netlink handle in %s: %w", name, err)
	}
	lo, err := ns.nl.LinkByName("lo")
	if err == nil {
		err = ns.nl.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("testenv: loopback up in %s: %w", name, err)
	}
	return ns, nil
}

// veth creates a veth: local end name (with localMAC) in the gateway namespace, a port of
// bridge master (an ifindex, 0: none), peer end peerName (with peerMAC) directly in peerNS;
// both ends are brought up, after beforeUp (if not nil) returned with the local end's ifindex.
// It returns the ifindexes.
func (tp *Topology) veth(name string, localMAC net.HardwareAddr, peerNS *Namespace, peerName string,
	peerMAC net.HardwareAddr, master int, beforeUp func(int) error) (int, int, error) {
	la := netlink.NewLinkAttrs()
	la.Name, la.HardwareAddr = name, localMAC
	if tp.cfg.MTU > 0 {
		la.MTU = tp.cfg.MTU
	}
	v := &netlink.Veth{
		LinkAttrs:        la,
		PeerName:         peerName,
		PeerHardwareAddr: peerMAC,
		PeerNamespace:    netlink.NsFd(peerNS.handle),
		PeerTxQLen:       -1,
	}
	gw := tp.Gateway
	if err := gw.nl.LinkAdd(v); err != nil {
		return 0, 0, fmt.Errorf("testenv: create veth %s/%s: %w", name, peerName, err)
	}
	local, err := gw.nl.LinkByName(name)
	if err == nil && master != 0 {
		err = gw.nl.LinkSetMasterByIndex(local, master)
	}
	if err == nil && beforeUp != nil {
		err = beforeUp(local.Attrs().Index)
	}
	if err == nil {
		err = gw.nl.LinkSetUp(local)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("testenv: %s in %s: %w", name, gw, err)
	}
	peer, err := peerNS.nl.LinkByName(peerName)
	if err == nil {
		err = peerNS.nl.LinkSetUp(peer)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("testenv: %s in %s: %w", peerName, peerNS, err)
	}
	return local.Attrs().Index, peer.Attrs().Index, nil
}

func (tp *Topology) buildUpstream() error {
	ns, err := tp.newNamespace("ztup-" + tp.ID)
	if err != nil {
		return err
	}
	if err := ns.setSysctls(leafSysctls...); err != nil {
		return err
	}
	gw4, up4, gw6, up6 := tp.uplinkAddrs()
	u := &Upstream{
		NS: ns, Ifname: "zt" + tp.ID + "u", MAC: slices.Clone(uplinkUpstreamMAC),
		IPv4: up4, IPv6: up6, GwIPv4: gw4, GwIPv6: gw6,
		Uplink: Port{Name: "zt" + tp.ID + "gu", MAC: slices.Clone(uplinkGatewayMAC)},
	}
	u.Uplink.Index, u.Ifindex, err = tp.veth(u.Uplink.Name, u.Uplink.MAC, ns, u.Ifname, u.MAC, 0, nil)
	if err != nil {
		return err
	}
	nodad := func(a netip.Addr, p netip.Prefix) *netlink.Addr {
		return &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(a, p.Bits())), Flags: unix.IFA_F_NODAD}
	}
	steps := []struct {
		ns   *Namespace
		what string
		do   func(h *netlink.Handle) error
	}{
		{ns: tp.Gateway, what: "uplink address", do: func(h *netlink.Handle) error {
			return h.AddrAdd(linkIdx(u.Uplink.Index), nodad(gw4, tp.cfg.UplinkIPv4))
		}},
		{ns: tp.Gateway, what: "uplink address", do: func(h *netlink.Handle) error {
			return h.AddrAdd(linkIdx(u.Uplink.Index), nodad(gw6, tp.cfg.UplinkIPv6))
		}},
		{ns: ns, what: "upstream address", do: func(h *netlink.Handle) error {
			return h.AddrAdd(linkIdx(u.Ifindex), nodad(up4, tp.cfg.UplinkIPv4))
		}},
		{ns: ns, what: "upstream address", do: func(h *netlink.Handle) error {
			return h.AddrAdd(linkIdx(u.Ifindex), nodad(up6, tp.cfg.UplinkIPv6))
		}},
		{ns: ns, what: "upstream default route", do: func(h *netlink.Handle) error {
			return h.RouteAdd(&netlink.Route{LinkIndex: u.Ifindex, Gw: gw4.AsSlice()})
		}},
		{ns: ns, what: "upstream default route", do: func(h *netlink.Handle) error {
			return h.RouteAdd(&netlink.Route{LinkIndex: u.Ifindex, Gw: gw6.AsSlice()})
		}},
		{ns: tp.Gateway, what: "gateway default route", do: func(h *netlink.Handle) error {
			return h.RouteAdd(&netlink.Route{LinkIndex: u.Uplink.Index, Gw: up4.AsSlice()})
		}},
		{ns: tp.Gateway, what: "gateway default route", do: func(h *netlink.Handle) error {
			return h.RouteAdd(&netlink.Route{LinkIndex: u.Uplink.Index, Gw: up6.AsSlice()})
		}},
	}
	for _, s := range steps {
		if err := s.do(s.ns.nl); err != nil {
			return fmt.Errorf("testenv: %s in %s: %w", s.what, s.ns, err)
		}
	}
	deadline := time.Now().Add(tp.cfg.ReadyTimeout)
	if err := waitReady(tp.Gateway, u.Uplink.Name, []netip.Addr{gw4, gw6}, deadline); err != nil {
		return err
	}
	if err := waitReady(ns, u.Ifname, []netip.Addr{up4, up6}, deadline); err != nil {
		return err
	}
	tp.Upstream = u
	return nil
}

// buildBridge creates the bridge of the device ports with the gateway's addresses.
func (tp *Topology) buildBridge() error {
	la := netlink.NewLinkAttrs()
	la.Name, la.HardwareAddr = "zt"+tp.ID+"br", mac(0x62, 0)
	if tp.cfg.MTU > 0 {
		la.MTU = tp.cfg.MTU
	}
	gw := tp.Gateway
	if err := gw.nl.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		return fmt.Errorf("testenv: create bridge %s: %w", la.Name, err)
	}
	br, err := gw.nl.LinkByName(la.Name)
	if err == nil {
		err = gw.nl.LinkSetUp(br)
	}
	for _, a := range []netip.Addr{tp.cfg.GatewayIPv4, tp.cfg.GatewayIPv6} {
		if err == nil {
			err = gw.nl.AddrAdd(br, hostAddr(a))
		}
	}
	if err != nil {
		return fmt.Errorf("testenv: bridge %s in %s: %w", la.Name, gw, err)
	}
	tp.Bridge = &Port{Name: la.Name, Index: br.Attrs().Index, MAC: la.HardwareAddr}
	return nil
}

// linkIdx is a netlink.Link that only carries an ifindex (all AddrAdd needs).
func linkIdx(index int) netlink.Link {
	la := netlink.NewLinkAttrs()
	la.Index = index
	return &netlink.Dummy{LinkAttrs: la}
}

// addDevice builds device n from a completed spec.
func (tp *Topology) addDevice(s DeviceSpec, n int, beforeUp func(int) error) (*Device, error) {
	ns, err := tp.newNamespace(fmt.Sprintf("ztdev-%s-%d", tp.ID, n))
	if err != nil {
		return nil, err
	}
	if err := ns.setSysctls(leafSysctls...); err != nil {
		return nil, err
	}
	d := &Device{
		Name: s.Name, N: n, NS: ns, Ifname: fmt.Sprintf("zt%sd%d", tp.ID, n), MAC: s.MAC,
		IPv4: s.IPv4, IPv6: s.IPv6,
		Port: Port{Name: fmt.Sprintf("zt%sg%d", tp.ID, n), MAC: mac(0x67, n)},
	}
	if err := tp.plug(d, beforeUp); err != nil {
		return nil, err
	}
	return d, nil
}

// plug creates d's veth (see veth for beforeUp), its addresses and routes, and waits until
// the device can reach the gateway.
func (tp *Topology) plug(d *Device, beforeUp func(int) error) error {
	var err error
	ns := d.NS
	master := 0
	if tp.Bridge != nil {
		master = tp.Bridge.Index
	}
	d.Port.Index, d.Ifindex, err = tp.veth(d.Port.Name, d.Port.MAC, ns, d.Ifname, d.MAC, master, beforeUp)
	if err != nil {
		return err
	}
	gw, gwh, dh := tp.Gateway, tp.Gateway.nl, ns.nl
	port, dev := linkIdx(d.Port.Index), linkIdx(d.Ifindex)
	via, viaName := d.Port.Index, d.Port.Name
	if tp.Bridge != nil {
		via, viaName = tp.Bridge.Index, tp.Bridge.Name // the bridge carries the gateway's addresses
	} else {
		for _, a := range []netip.Addr{tp.cfg.GatewayIPv4, tp.cfg.GatewayIPv6} {
			if err := gwh.AddrAdd(port, hostAddr(a)); err != nil {
				return fmt.Errorf("testenv: add %s to %s in %s: %w", a, d.Port.Name, gw, err)
			}
		}
	}
	for _, a := range d.Addrs() {
		if err := dh.AddrAdd(dev, hostAddr(a)); err != nil {
			return fmt.Errorf("testenv: add %s to %s in %s: %w", a, d.Ifname, ns, err)
		}
		r := &netlink.Route{LinkIndex: via, Dst: prefixNet(netip.PrefixFrom(a, a.BitLen()))}
		if a.Is4() {
			r.Scope = netlink.SCOPE_LINK
		}
		if err := gwh.RouteReplace(r); err != nil {
			return fmt.Errorf("testenv: route %s via %s in %s: %w", a, viaName, gw, err)
		}
	}
	for _, g := range []struct {
		gw   netip.Addr
		have bool
	}{{gw: tp.cfg.GatewayIPv4, have: len(d.IPv4) > 0}, {gw: tp.cfg.GatewayIPv6, have: len(d.IPv6) > 0}} {
		if !g.have {
			continue
		}
		r := &netlink.Route{LinkIndex: d.Ifindex, Gw: g.gw.AsSlice(), Flags: int(netlink.FLAG_ONLINK)}
		if err := dh.RouteAdd(r); err != nil {
			return fmt.Errorf("testenv: default route via %s in %s: %w", g.gw, ns, err)
		}
	}
	deadline := time.Now().Add(tp.cfg.ReadyTimeout)
	if err := waitReady(gw, viaName, []netip.Addr{tp.cfg.GatewayIPv4, tp.cfg.GatewayIPv6}, deadline); err != nil {
		return err
	}
	return waitReady(ns, d.Ifname, d.Addrs(), deadline)
}

// AddDevice adds a device to a built topology (defaults as for Config.Devices, with the next
// free device number) and waits until it is usable.
func (tp *Topology) AddDevice(spec DeviceSpec) (*Device, error) {
	return tp.AddDeviceHeld(spec, nil)
}

// AddDeviceHeld is AddDevice with both ends of the device's veth kept down (and, with
// Config.Bridge, the port already a bridge port) until beforeUp, if not nil, returns with the
// new gateway port's ifindex; an error from it aborts the addition.
func (tp *Topology) AddDeviceHeld(spec DeviceSpec, beforeUp func(portIndex int) error) (*Device, error) {
	tp.mu.Lock()
	closed := tp.closed
	n := tp.nextDev
	tp.nextDev++
	tp.mu.Unlock()
	if closed || tp.Gateway == nil {
		return nil, errors.New("testenv: AddDevice on a closed topology")
	}
	names := map[string]bool{}
	for _, d := range tp.Devices {
		names[d.Name] = true
	}
	s, err := tp.completeSpec(spec, n, tp.usedAddrs(), names)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	d, err := tp.addDevice(s, n, beforeUp)
	if err != nil {
		// Undo what was made of it: its port (if any) and its namespace (if any).
		_ = tp.removeDevice(&Device{N: n, Port: Port{Name: fmt.Sprintf("zt%sg%d", tp.ID, n)}})
		return nil, err
	}
	tp.Devices = append(tp.Devices, d)
	return d, nil
}

// RemoveDevice deletes a device's veth and namespace (sockets still open in it keep the
// namespace, without links, alive until they are closed).
func (tp *Topology) RemoveDevice(d *Device) error {
	i := slices.Index(tp.Devices, d)
	if i < 0 {
		return fmt.Errorf("testenv: device %q is not part of topology %s", d.Name, tp.ID)
	}
	tp.Devices = slices.Delete(tp.Devices, i, i+1)
	return tp.removeDevice(d)
}

func (tp *Topology) removeDevice(d *Device) error {
	var errs []error
	if l, err := tp.Gateway.nl.LinkByName(d.Port.Name); err == nil {
		if err := tp.Gateway.nl.LinkDel(l); err != nil && !isNoDev(err) {
			errs = append(errs, fmt.Errorf("testenv: delete %s: %w", d.Port.Name, err))
		}
	} else if !isNoDev(err) {
		errs = append(errs, fmt.Errorf("testenv: find %s: %w", d.Port.Name, err))
	}
	name := fmt.Sprintf("ztdev-%s-%d", tp.ID, d.N)
	tp.mu.Lock()
	var ns *Namespace
	if i := slices.IndexFunc(tp.namespaces, func(ns *Namespace) bool { return ns.name == name }); i >= 0 {
		ns = tp.namespaces[i]
		tp.namespaces = slices.Delete(tp.namespaces, i, i+1)
	}
	tp.mu.Unlock()
	if ns != nil {
		ns.close()
		if err := deleteNamedNetns(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func isNoDev(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.Is(err, unix.ENODEV) || errors.As(err, &nf)
}

// track registers c to be closed when the topology is closed (or closes it at once if the
// topology is already closed).
func (tp *Topology) track(c io.Closer) {
	tp.mu.Lock()
	if tp.closed {
		tp.mu.Unlock()
		_ = c.Close()
		return
	}
	tp.closers = append(tp.closers, c)
	tp.mu.Unlock()
}

// Close tears the topology down: it closes every socket, sniffer and echo server made
// through its namespaces' helpers, deletes its veths, closes its handles and unmounts and
// removes its /run/netns entries. It is idempotent and returns the first call's result.
func (tp *Topology) Close() error {
	tp.mu.Lock()
	if tp.closed {
		tp.mu.Unlock()
		return tp.closeErr
	}
	tp.closed = true
	closers, nss := tp.closers, tp.namespaces
	tp.closers, tp.namespaces = nil, nil
	tp.mu.Unlock()

	for i := len(closers) - 1; i >= 0; i-- {
		_ = closers[i].Close() // helper sockets: an error here (already closed) is no concern
	}
	var errs []error
	// Delete the veths explicitly: that is synchronous, whereas a namespace is destroyed
	// asynchronously, and only once nothing refers to it anymore. Deleting one end of a veth
	// deletes the other.
	prefix := "zt" + tp.ID
	for _, ns := range nss {
		if ns.nl == nil || tp.ID == "" {
			continue
		}
		links, err := ns.nl.LinkList()
		if err != nil {
			errs = append(errs, fmt.Errorf("testenv: list links in %s: %w", ns, err))
			continue
		}
		for _, l := range links {
			if !strings.HasPrefix(l.Attrs().Name, prefix) {
				continue
			}
			if err := ns.nl.LinkDel(l); err != nil && !isNoDev(err) {
				errs = append(errs, fmt.Errorf("testenv: delete %s in %s: %w", l.Attrs().Name, ns, err))
			}
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		nss[i].close()
		if err := deleteNamedNetns(nss[i].name); err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	tp.mu.Lock()
	tp.closeErr = err
	tp.mu.Unlock()
	return err
}

// waitReady polls until ifname in ns is operationally up and has every address in want
// plus an IPv6 link-local address, all usable (not tentative, DAD not failed).
func waitReady(ns *Namespace, ifname string, want []netip.Addr, deadline time.Time) error {
	const bad = unix.IFA_F_TENTATIVE | unix.IFA_F_DADFAILED
	for {
		why := ""
		l, err := ns.nl.LinkByName(ifname)
		switch {
		case err != nil:
			why = err.Error()
		case l.Attrs().OperState != netlink.OperUp:
			why = "link is " + l.Attrs().OperState.String()
		default:
			addrs, err := ns.nl.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				why = err.Error()
				break
			}
			ready := map[netip.Addr]bool{}
			var v6 []netip.Addr
			linkLocal := false
			for _, a := range addrs {
				ip, ok := netip.AddrFromSlice(a.IP)
				if !ok || a.Flags&bad != 0 {
					continue
				}
				ip = ip.Unmap()
				ready[ip] = true
				if ip.Is6() {
					v6 = append(v6, ip)
					linkLocal = linkLocal || ip.IsLinkLocalUnicast()
				}
			}
			for _, a := range want {
				if !ready[a] {
					why = a.String() + " not usable yet"
				}
			}
			if why == "" && !linkLocal {
				why = "no usable IPv6 link-local address yet"
			}
			if why == "" {
				why = missingSolicitedNode(ns, l.Attrs().Index, v6)
			}
		}
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testenv: %s in %s not ready: %s", ifname, ns, why)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// missingSolicitedNode returns why neighbour discovery cannot work yet for one of the IPv6
// addresses on interface index: the interface has not joined the address's solicited-node
// multicast group (that happens asynchronously, after the address is added), so neighbour
// solicitations for it would be dropped and resolution would stall for a second.
func missingSolicitedNode(ns *Namespace, index int, addrs []netip.Addr) string {
	igmp6, err := ns.ReadProcNet("igmp6")
	if err != nil {
		return err.Error()
	}
	joined := map[string]bool{}
	for _, line := range strings.Split(string(igmp6), "\n") {
		// "<ifindex> <ifname> <group as 32 hex digits> <users> <flags> <timer>"
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == strconv.Itoa(index) {
			joined[f[2]] = true
		}
	}
	for _, a := range addrs {
		b := a.As16()
		group := [16]byte{0: 0xff, 1: 0x02, 11: 0x01, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]}
		if !joined[hex.EncodeToString(group[:])] {
			return "solicited-node group of " + a.String() + " not joined yet"
		}
	}
	return ""
}
