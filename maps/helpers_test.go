package maps

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps/gwmacs"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// requirePriv skips (or, with ZTGATE_REQUIRE_PRIV=1, fails) the test when not root.
func requirePriv(t *testing.T) { testenv.RequirePriv(t) }

// env is a loaded datapath in a unique pin dir (uninstalled at the end) with typed maps.
type env struct {
	dp  *loader.Datapath
	m   *Maps
	lim Limits
}

func setup(t *testing.T, mod func(*loader.Config)) *env {
	t.Helper()
	requirePriv(t)
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	cfg := loader.DefaultConfig()
	cfg.PinDir = "/sys/fs/bpf/ztgate-test-" + hex.EncodeToString(b)
	cfg.MaxDevices, cfg.MaxAddrs, cfg.MaxRules, cfg.MaxPrefixes = 64, 256, 256, 64
	cfg.FragEntries, cfg.EventLimitEntries, cfg.RingBytes = 128, 128, 1<<16
	if mod != nil {
		mod(&cfg)
	}
	t.Cleanup(func() {
		if err := loader.Uninstall(cfg.PinDir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	dp, err := loader.Open(cfg)
	if err != nil {
		t.Fatalf("open datapath: %v", err)
	}
	t.Cleanup(func() { dp.Close() })
	// The test frames' destination is the gateway, as the loader registers an interface's MAC.
	if err := gwmacs.Add(dp.Objects().ZtGwmacs, gwMAC[:], 0); err != nil {
		t.Fatal(err)
	}
	m, err := New(dp.Objects(), dp.MapSpecs())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &env{dp: dp, m: m, lim: Limits{Devices: cfg.MaxDevices, Addrs: cfg.MaxAddrs, Rules: cfg.MaxRules,
		Prefixes: cfg.MaxPrefixes}}
}

// v4 is an IPv4 address as the datapath stores it: the network-order bytes read as a native u32.
func v4(s string) uint32 {
	a := netip.MustParseAddr(s).As4()
	return binary.NativeEndian.Uint32(a[:])
}

// in6 is the 16-byte form of an address, IPv4 as ::ffff:a.b.c.d.
func in6(s string) bpf.In6 {
	a := netip.MustParseAddr(s)
	if a.Is4() {
		a = netip.AddrFrom16(a.As16())
	}
	return bpf.In6{B: a.As16()}
}

var (
	devMAC     = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	unknownMAC = [6]byte{0x02, 0, 0, 0, 0, 0x99}
	gwMAC      = [6]byte{0x02, 0, 0, 0, 0, 0xfe}
)

// smallSnapshot: one device (02:00:00:00:00:01, 10.0.0.2, rule set 1) that may send UDP to the
// gateway 10.0.0.1, and TCP port 80 to the prefix group 7 (10.1.0.0/16).
func smallSnapshot(rev uint64) *policy.Snapshot {
	rec := bpf.DevRec{DevId: 1, Ruleset: 1, Flags: bpf.DevPrefixRules, N_v4: 1}
	rec.V4[0] = v4("10.0.0.2")
	cfg := bpf.Config{Revision: rev, N_gw4: 1}
	cfg.Gw4[0] = v4("10.0.0.1")
	ports := bpf.RuleVal{N: 1}
	ports.Ranges[0].Lo, ports.Ranges[0].Hi = 80, 80
	return &policy.Snapshot{
		Revision: rev,
		Config:   cfg,
		Devices:  map[bpf.DevKey]bpf.DevRec{{Mac: devMAC}: rec},
		Addrs:    map[bpf.AddrKey]bpf.AddrVal{{Addr: in6("10.0.0.2")}: {DevId: 1, Kind: bpf.AddrDevice}},
		Prefixes: map[bpf.PrefixKey]bpf.PrefixVal{
			{Prefixlen: 32 + 96 + 16, Ruleset: 1, Addr: in6("10.1.0.0")}: {Group: 7},
		},
		Rules: map[bpf.RuleKey]bpf.RuleVal{
			{Ruleset: 1, SelKind: bpf.SelGateway, Proto: 17}:         {Flags: bpf.RuleAllPorts},
			{Ruleset: 1, SelKind: bpf.SelPrefix, SelId: 7, Proto: 6}: ports,
		},
	}
}

// bigSnapshot: n devices, each with one IPv4 address and rule set 1.
func bigSnapshot(rev uint64, n int) *policy.Snapshot {
	s := smallSnapshot(rev)
	s.Devices = make(map[bpf.DevKey]bpf.DevRec, n)
	s.Addrs = make(map[bpf.AddrKey]bpf.AddrVal, n)
	for i := range n {
		id := uint32(i + 1)
		mac := [6]byte{0x02, 0, 0, byte(id >> 16), byte(id >> 8), byte(id)}
		ip := netip.AddrFrom4([4]byte{10, byte(id >> 16), byte(id >> 8), byte(id)})
		rec := bpf.DevRec{DevId: id, Ruleset: 1, N_v4: 1}
		rec.V4[0] = v4(ip.String())
		s.Devices[bpf.DevKey{Mac: mac}] = rec
		s.Addrs[bpf.AddrKey{Addr: in6(ip.String())}] = bpf.AddrVal{DevId: id, Kind: bpf.AddrDevice}
	}
	return s
}

// ipv4Frame builds Ethernet + IPv4 + UDP/TCP (no options), as the datapath parses it.
func ipv4Frame(src [6]byte, sip, dip string, proto uint8, sport, dport uint16) []byte {
	l4len := 8
	if proto == 6 {
		l4len = 20
	}
	payload := 16
	f := make([]byte, 14+20+l4len+payload)
	copy(f[0:6], gwMAC[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+l4len+payload))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	ip[8], ip[9] = 64, proto
	s, d := netip.MustParseAddr(sip).As4(), netip.MustParseAddr(dip).As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	l4 := f[34:]
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	if proto == 17 {
		binary.BigEndian.PutUint16(l4[4:], uint16(8+payload))
	} else {
		l4[12] = 5 << 4 // data offset
		l4[13] = 0x02   // SYN
	}
	return f
}

const (
	xdpDrop = 1
	xdpPass = 2
)

// run runs one frame through the program (BPF_PROG_TEST_RUN) and returns the XDP action.
func run(t *testing.T, e *env, frame []byte) uint32 {
	t.Helper()
	ret, err := e.dp.Program().Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		t.Fatalf("prog test run: %v", err)
	}
	return ret
}

func counterOf(t *testing.T, e *env, v bpf.Verdict, r bpf.Reason) uint64 {
	t.Helper()
	c, err := e.m.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c[v][r].Packets
}

// outerIDs returns the inner map ids in both slots of the four outer maps (0: empty).
func outerIDs(t *testing.T, e *env) [numKinds][2]ebpf.MapID {
	t.Helper()
	var ids [numKinds][2]ebpf.MapID
	for k := range numKinds {
		for slot := range uint32(2) {
			var id uint32
			if err := e.m.outer[k].Lookup(slot, &id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				t.Fatal(err)
			}
			ids[k][slot] = ebpf.MapID(id)
		}
	}
	return ids
}
