package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
)

// The hot and cold sections are registered here, in this order: init functions run in file
// name order, and the cold section reuses the fleets the hot one compiled.
func init() {
	register(Section{
		Name: "hot",
		Desc: "per-packet decision cost, cache-hot (BPF_PROG_TEST_RUN, one frame replayed) vs xdp-filter and the " +
			"primitives it calls, the XDP_PASS floor as context",
		Run: runHot,
	})
	register(Section{
		Name: "cold",
		Desc: "per-packet decision cost at scale, cache-cold (frames cycle over every device) vs a bare hash lookup",
		Run:  runCold,
	})
}

// Targets of the hot section. They compare with what was measured in the same run on the same
// CPU, xdp-filter and the primitives, never with the empty program: the floor's share of a
// decision differs from host to host (its cost tripled between two hosts whose lookups did not),
// so a ratio to it moves with the host; it stays in the table as context.
const (
	hotAllowedVsFilterMax  = 1.0  // allowed path (IPv4, IPv6), x xdp-filter
	hotIdentityVsFilterMax = 0.5  // identity drops (unknown device, spoofed IP), x xdp-filter
	hotVsPrimitivesMax     = 1.5  // allowed path and identity drops, x (floor + the primitives they call)
	hotFlatMax             = 0.10 // max/min-1 of the allowed-path ratio across fleet sizes
)

// hotCalls are the helper calls of each frame class with events on, as (hash lookups, LPM
// lookups, clock reads), by bpf/ztgate.c as of this suite; with events off a drop reads the
// clock once less (the event limiter's timestamp).
var hotCalls = map[string][3]int{"allowed-v4": {3, 1, 1}, "allowed-v6": {3, 1, 1}, "no-rule-drop": {4, 1, 2},
	"unknown-device-drop": {1, 0, 1}, "spoofed-ip-drop": {1, 0, 1}}

// hotXFHashes is the number of hash lookups xdp-filter makes on the measured frame (MAC and
// IPv4 address, each as source and destination); its two array lookups are left out.
const hotXFHashes = 4

// benchCPU is the CPU the measuring thread is pinned to: the last one, away from CPU 0's
// housekeeping.
func benchCPU() int { return max(0, numCPU()-1) }

// ---------------------------------------------------------------------------------------------
// The fleet: a generated policy whose device i has an identity computable from i (the cold
// build's BPF rewrites frames to device idx's MAC and address from idx alone).

// fleetSegments is the number of segments devices are spread over.
const fleetSegments = 12

// fleetMaxDevices bounds the fleet so that every device address stays inside 10.16.0.0/12+.
const fleetMaxDevices = 1 << 23

// fleetMAC is device i's MAC: 02:5a followed by i as a 32-bit big-endian number.
func fleetMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x5a, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
}

// fleetV4 is device i's IPv4 address: 10.16.0.0 + i.
func fleetV4(i int) netip.Addr {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], 0x0a100000+uint32(i))
	return netip.AddrFrom4(a)
}

// fleetV6 is device i's IPv6 address: fd00:5a::/96 + i.
func fleetV6(i int) netip.Addr {
	a := netip.MustParseAddr("fd00:5a::").As16()
	binary.BigEndian.PutUint32(a[12:], uint32(i))
	return netip.AddrFrom16(a)
}

// Destinations of the benchmark frames.
var (
	fleetGwMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
	fleetDst4  = netip.MustParseAddr("203.0.113.7") // inside every segment's tcp/443 CIDR rule
	fleetDst6  = netip.MustParseAddr("2001:db8::7") // inside every segment's tcp/443 CIDR rule
)

// fleetPolicy is n devices in fleetSegments segments. Every segment allows tcp/443 to a public
// CIDR per family, tcp/8883 to the next segment (a peer rule), icmp to the gateway, and a third
// of them udp/5683 to another CIDR; every device has one IPv4 and one IPv6 address and zero or
// one rule of its own from four templates (so rule sets are shared, as in a fleet managed by
// profiles: 48 rule sets whatever n). DNS and DHCP are gateway services.
func fleetPolicy(n int) *policy.Policy {
	p := &policy.Policy{APIVersion: policy.APIVersion, Kind: policy.Kind, Metadata: policy.Metadata{Name: "bench"}}
	// The frames go to fleetGwMAC: a gateway MAC the policy names, as nothing is attached (the
	// loader registers an interface's own MACs when it attaches).
	p.Spec.Gateway = policy.Gateway{IPv4: []string{"10.0.0.1"}, IPv6: []string{"fd00::1"},
		Services: []policy.Service{policy.ServiceDHCP, policy.ServiceDNS}, MACs: []string{fleetGwMAC.String()}}
	p.Spec.Quarantine.Allow = []policy.Rule{{To: policy.Target{Gateway: true}, Proto: "icmp"}}
	port := func(p uint16) []policy.PortRange { return []policy.PortRange{{Lo: p, Hi: p}} }
	for s := range fleetSegments {
		seg := policy.Segment{Name: fmt.Sprintf("s%d", s), Allow: []policy.Rule{
			{To: policy.Target{CIDR: "203.0.113.0/24"}, Proto: "tcp", Ports: port(443)},
			{To: policy.Target{CIDR: "2001:db8::/32"}, Proto: "tcp", Ports: port(443)},
			{To: policy.Target{Segment: fmt.Sprintf("s%d", (s+1)%fleetSegments)}, Proto: "tcp", Ports: port(8883)},
			{To: policy.Target{Gateway: true}, Proto: "icmp"},
		}}
		if s%3 == 0 {
			seg.Allow = append(seg.Allow, policy.Rule{To: policy.Target{CIDR: "198.51.100.0/24"}, Proto: "udp", Ports: port(5683)})
		}
		p.Spec.Segments = append(p.Spec.Segments, seg)
	}
	templates := [][]policy.Rule{
		nil,
		{{To: policy.Target{Gateway: true}, Proto: "tcp", Ports: port(22)}},
		{{To: policy.Target{Segment: "s0"}, Proto: "udp", Ports: port(5683)}},
		{{To: policy.Target{CIDR: "192.0.2.0/24"}, Proto: "tcp", Ports: []policy.PortRange{{Lo: 8000, Hi: 8080}}}},
	}
	p.Spec.Devices = make([]policy.Device, n)
	for i := range n {
		p.Spec.Devices[i] = policy.Device{
			Name:    fmt.Sprintf("d%d", i),
			MAC:     fleetMAC(i).String(),
			IPv4:    []string{fleetV4(i).String()},
			IPv6:    []string{fleetV6(i).String()},
			Segment: fmt.Sprintf("s%d", i%fleetSegments),
			Allow:   templates[(i/fleetSegments)%len(templates)],
		}
	}
	return p
}

var (
	fleetMu    sync.Mutex
	fleetCache = map[int]*policy.Snapshot{}
)

// fleetSnapshot validates and compiles the fleet of n devices, once per process.
func fleetSnapshot(cfg *Config, n int) (*policy.Snapshot, error) {
	fleetMu.Lock()
	defer fleetMu.Unlock()
	if s := fleetCache[n]; s != nil {
		return s, nil
	}
	if n < 1 || n > fleetMaxDevices {
		return nil, fmt.Errorf("fleet of %d devices: must be between 1 and %d", n, fleetMaxDevices)
	}
	t0 := time.Now()
	p := fleetPolicy(n)
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("fleet of %d devices: %w", n, err)
	}
	s, err := policy.Compile(p, policy.CompileOptions{Revision: 1})
	if err != nil {
		return nil, fmt.Errorf("fleet of %d devices: %w", n, err)
	}
	cfg.Logf("fleet of %s devices compiled in %s (%d addrs, %d rules, %d prefixes)", count(n),
		time.Since(t0).Round(time.Millisecond), len(s.Addrs), len(s.Rules), len(s.Prefixes))
	fleetCache[n] = s
	return s, nil
}

// fleetLimits are the capacities a datapath for the fleet snapshot s needs.
func fleetLimits(s *policy.Snapshot) maps.Limits {
	return maps.Limits{Devices: len(s.Devices), Addrs: max(1, len(s.Addrs)), Rules: max(1, len(s.Rules)),
		Prefixes: max(1, len(s.Prefixes))}
}

// count writes n for a name: 1, 1k, 100k, 1M.
func count(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// ---------------------------------------------------------------------------------------------
// Frame classes.

// hotClass is one kind of frame the hot section replays.
type hotClass struct {
	name    string
	frame   func(dev int) []byte
	verdict bpf.Verdict
	reason  bpf.Reason
}

func fleetHost(i int, v6 bool) frames.Host {
	if v6 {
		return frames.Host{MAC: fleetMAC(i), IP: fleetV6(i)}
	}
	return frames.Host{MAC: fleetMAC(i), IP: fleetV4(i)}
}

func gwHost(ip netip.Addr) frames.Host { return frames.Host{MAC: fleetGwMAC, IP: ip} }

// hotClasses are the frame classes of device dev. The allowed ones take the longest allowed
// path of the datapath: identity and source binding, the guards, a peer lookup of the
// destination (a miss: it is no device), then the prefix trie and the rule it points to.
var hotClasses = []hotClass{
	{"allowed-v4", func(d int) []byte { return frames.TCP(fleetHost(d, false), gwHost(fleetDst4), 40000, 443, true, nil) },
		bpf.VerdictPass, bpf.ReasonAllow},
	{"allowed-v6", func(d int) []byte { return frames.TCP(fleetHost(d, true), gwHost(fleetDst6), 40000, 443, true, nil) },
		bpf.VerdictPass, bpf.ReasonAllow},
	{"no-rule-drop", func(d int) []byte { return frames.TCP(fleetHost(d, false), gwHost(fleetDst4), 40000, 80, true, nil) },
		bpf.VerdictDrop, bpf.ReasonNoRule},
	{"unknown-device-drop", func(d int) []byte {
		h := fleetHost(d, false)
		h.MAC = net.HardwareAddr{0x02, 0x5b, 0, 0, 0, 1}
		return frames.TCP(h, gwHost(fleetDst4), 40000, 443, true, nil)
	}, bpf.VerdictDrop, bpf.ReasonUnknownDevice},
	{"spoofed-ip-drop", func(d int) []byte {
		h := fleetHost(d, false)
		h.IP = netip.MustParseAddr("10.0.0.99") // bound to no device
		return frames.TCP(h, gwHost(fleetDst4), 40000, 443, true, nil)
	}, bpf.VerdictDrop, bpf.ReasonSpoofIP},
}

// ---------------------------------------------------------------------------------------------
// Programs.

const (
	xdpDrop = 1
	xdpPass = 2
)

// floorProgram is an XDP program that returns XDP_PASS and nothing else.
func floorProgram() (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "bench_floor",
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, xdpPass),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load the floor program: %w", err)
	}
	return p, nil
}

// primitives are XDP programs that repeat one operation primOps times: the cost per operation
// on this machine, measured next to the floor, explains the datapath's figures.
type primitives struct {
	maps  []*ebpf.Map
	progs []*ebpf.Program
	names []string
}

// primOps is the number of times each primitive program repeats its operation.
const primOps = 10

// lpmKeyV4 is a zt_prefix_key for ::ffff:a in rule set rs with prefix length plen (IPv4 part).
func lpmKeyV4(rs uint32, a netip.Addr, plen int) []byte {
	k := make([]byte, 24)
	binary.LittleEndian.PutUint32(k[0:], uint32(32+96+plen))
	binary.LittleEndian.PutUint32(k[4:], rs)
	b := netip.AddrFrom16(a.As16()).As16()
	if a.Is4() {
		b = netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff}).As16()
		copy(b[12:], a.AsSlice())
	}
	copy(k[8:], b[:])
	return k
}

func openPrimitives() (_ *primitives, err error) {
	pr := &primitives{}
	defer func() {
		if err != nil {
			pr.Close()
		}
	}()
	newMap := func(ms *ebpf.MapSpec) (*ebpf.Map, error) {
		m, err := ebpf.NewMap(ms)
		if err == nil {
			pr.maps = append(pr.maps, m)
		}
		return m, err
	}
	// A hash like zt_devices' (8-byte key, 104-byte value), looked up with its one key.
	hash, err := newMap(&ebpf.MapSpec{Name: "bench_hash", Type: ebpf.Hash, KeySize: 8, ValueSize: 104, MaxEntries: 1})
	if err != nil {
		return nil, err
	}
	if err := hash.Put(uint64(0), make([]byte, 104)); err != nil {
		return nil, err
	}
	// A hash keyed by a whole flow (ingress port, VLAN, MAC, both addresses, protocol, port:
	// 48 bytes), looked up with its one key: what a datapath that decided in one lookup (a
	// verdict cache) would pay at least.
	flow, err := newMap(&ebpf.MapSpec{Name: "bench_flow", Type: ebpf.Hash, KeySize: 48, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return nil, err
	}
	if err := flow.Put(make([]byte, 48), uint64(0)); err != nil {
		return nil, err
	}
	// A trie like zt_prefixes' (24-byte keys), 124 prefixes in 48 rule sets, a hit on a /24.
	lpm, err := newMap(&ebpf.MapSpec{Name: "bench_lpm", Type: ebpf.LPMTrie, KeySize: 24, ValueSize: 4, MaxEntries: 124,
		Flags: 1 /* BPF_F_NO_PREALLOC */})
	if err != nil {
		return nil, err
	}
	for i := range 124 {
		a := netip.AddrFrom4([4]byte{203, 0, byte(113 + i/48), 0})
		if err := lpm.Put(lpmKeyV4(uint32(i%48), a, 24), uint32(i)); err != nil {
			return nil, err
		}
	}
	// The trie of a one-device policy: its one rule set's 3 prefixes, the same /24 hit.
	lpm3, err := newMap(&ebpf.MapSpec{Name: "bench_lpm3", Type: ebpf.LPMTrie, KeySize: 24, ValueSize: 4, MaxEntries: 3,
		Flags: 1 /* BPF_F_NO_PREALLOC */})
	if err != nil {
		return nil, err
	}
	for i, plen := range []int{24, 16, 0} {
		if err := lpm3.Put(lpmKeyV4(0, netip.AddrFrom4([4]byte{203, 0, 113, 0}), plen), uint32(i)); err != nil {
			return nil, err
		}
	}
	zero := func(size int16) asm.Instructions {
		ins := asm.Instructions{asm.Mov.Imm(asm.R3, 0)}
		for off := -size; off < 0; off += 4 {
			ins = append(ins, asm.StoreMem(asm.RFP, off, asm.R3, asm.Word))
		}
		return ins
	}
	lookup := func(m *ebpf.Map, ks int16) asm.Instructions {
		return asm.Instructions{asm.LoadMapPtr(asm.R1, m.FD()), asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(-ks)), asm.FnMapLookupElem.Call()}
	}
	key := lpmKeyV4(0, fleetDst4, 32)
	lpmKey := asm.Instructions{}
	for off := 0; off < 24; off += 4 {
		lpmKey = append(lpmKey, asm.Mov.Imm32(asm.R3, int32(binary.LittleEndian.Uint32(key[off:]))),
			asm.StoreMem(asm.RFP, int16(off-24), asm.R3, asm.Word))
	}
	ops := []struct {
		name string
		pre  asm.Instructions
		op   asm.Instructions
	}{
		{"hash lookup (8-byte key, hit)", zero(8), lookup(hash, 8)},
		{"LPM trie lookup (24-byte key, 124 prefixes)", lpmKey, lookup(lpm, 24)},
		{"clock read (bpf_jiffies64, inlined; zt_now adds a per-CPU array read)", nil, asm.Instructions{asm.FnJiffies64.Call()}},
		{"hash lookup (48-byte flow key, hit)", zero(48), lookup(flow, 48)},
		{"LPM trie lookup (24-byte key, 3 prefixes)", lpmKey, lookup(lpm3, 24)},
	}
	for _, o := range ops {
		ins := slices.Clone(o.pre)
		for range primOps {
			ins = append(ins, o.op...)
		}
		ins = append(ins, asm.Mov.Imm(asm.R0, xdpPass), asm.Return())
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "bench_prim", Type: ebpf.XDP, License: "GPL", Instructions: ins})
		if err != nil {
			return nil, fmt.Errorf("primitive %s: %w", o.name, err)
		}
		pr.progs = append(pr.progs, p)
		pr.names = append(pr.names, o.name)
	}
	return pr, nil
}

func (pr *primitives) Close() {
	for _, p := range pr.progs {
		p.Close()
	}
	for _, m := range pr.maps {
		m.Close()
	}
}

// warmUp runs every variant once, untimed, so that first-touch effects stay out of round 1.
// Variants made by progVariant run a tenth of their repeats.
func warmUp(vs []Variant) error {
	warming = true
	defer func() { warming = false }()
	for _, v := range vs {
		if _, err := v.Run(); err != nil {
			return fmt.Errorf("%s: %w", v.Name, err)
		}
	}
	return nil
}

// warming is set during warmUp (sections run one at a time, on one goroutine).
var warming bool

// progVariant measures p on frame: Run returns the kernel's time per run in ns and fails when
// the program's action is not want.
func progVariant(name string, p *ebpf.Program, frame []byte, repeat int, want uint32) Variant {
	return Variant{Name: name, Run: func() (float64, error) {
		n := repeat
		if warming {
			n = max(1, repeat/10)
		}
		ret, d, err := p.Benchmark(frame, n, nil)
		if err != nil {
			return 0, err
		}
		if ret != want {
			return 0, fmt.Errorf("action %d, want %d", ret, want)
		}
		return float64(d.Nanoseconds()), nil
	}}
}

// ---------------------------------------------------------------------------------------------
// ztgate, loaded by the loader as the agent does, once with events on and once with events off
// over the same (pinned) maps.

type ztgateDP struct {
	n       int
	pinDir  string
	on, off *loader.Datapath
	maps    *maps.Maps
}

// benchPinDir returns a fresh pin directory of this process under /sys/fs/bpf.
func benchPinDir() string {
	var id [6]byte
	_, _ = rand.Read(id[:])
	return filepath.Join("/sys/fs/bpf", "ztgate-bench-"+hex.EncodeToString(id[:]))
}

// openZtgate loads the datapath sized for s and applies s.
func openZtgate(n int, s *policy.Snapshot) (_ *ztgateDP, err error) {
	lim := fleetLimits(s)
	z := &ztgateDP{n: n, pinDir: benchPinDir()}
	defer func() {
		if err != nil {
			z.Close()
		}
	}()
	cfg := loader.Config{PinDir: z.pinDir, MaxDevices: lim.Devices, MaxAddrs: lim.Addrs, MaxRules: lim.Rules,
		MaxPrefixes: lim.Prefixes, EventsEnabled: true}
	if z.on, err = loader.Open(cfg); err != nil {
		return z, err
	}
	cfg.EventsEnabled = false
	if z.off, err = loader.Open(cfg); err != nil { // adopts the maps pinned by the first Open
		return z, err
	}
	if z.maps, err = maps.New(z.on.Objects(), z.on.MapSpecs()); err != nil {
		return z, err
	}
	if err = z.maps.Apply(s, lim); err != nil {
		return z, err
	}
	return z, nil
}

func (z *ztgateDP) Close() error {
	if z.maps != nil {
		z.maps.Close()
	}
	for _, d := range []*loader.Datapath{z.off, z.on} {
		if d != nil {
			d.Close()
		}
	}
	return loader.Uninstall(z.pinDir)
}

// decide runs frame once through p and returns the (verdict, reason) counter that moved.
func decide(m *maps.Maps, p *ebpf.Program, frame []byte) (bpf.Verdict, bpf.Reason, error) {
	before, err := m.Counters()
	if err != nil {
		return 0, 0, err
	}
	if _, err := p.Run(&ebpf.RunOptions{Data: frame}); err != nil {
		return 0, 0, err
	}
	after, err := m.Counters()
	if err != nil {
		return 0, 0, err
	}
	var v bpf.Verdict
	var r bpf.Reason
	moved := 0
	for i := range bpf.NumVerdicts {
		for j := range bpf.NumReasons {
			if after[i][j].Packets != before[i][j].Packets {
				moved++
				v, r = bpf.Verdict(i), bpf.Reason(j)
			}
		}
	}
	if moved != 1 {
		return 0, 0, fmt.Errorf("%d counters moved for one frame, want 1", moved)
	}
	return v, r, nil
}

// ---------------------------------------------------------------------------------------------
// The hot section.

type hotVariant struct {
	n      int // devices
	class  string
	events bool
	idx    int // in the Interleave slice
}

func runHot(ctx context.Context, cfg *Config, r *Report) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	sizes := cfg.Sizes([]int{1, 1000, 100000, 1000000}, []int{1, 1000})
	rounds := cfg.Pick(11, 3)
	repeat := cfg.Pick(1000000, 20000) // 2M would take the section past 3 minutes

	floor, err := floorProgram()
	if err != nil {
		return err
	}
	defer floor.Close()
	xf, err := openXDPFilter(xfFlagSrc|xfFlagDst, netip.Addr{})
	if err != nil {
		return err
	}
	defer xf.Close()
	prims, err := openPrimitives()
	if err != nil {
		return err
	}
	defer prims.Close()

	dps := map[int]*ztgateDP{}
	snaps := map[int]*policy.Snapshot{}
	defer func() {
		for n, z := range dps {
			if err := z.Close(); err != nil {
				cfg.Logf("hot: release the datapath of %s devices: %v", count(n), err)
			}
		}
	}()
	for _, n := range sizes {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := fleetSnapshot(cfg, n)
		if err != nil {
			return err
		}
		snaps[n] = s
		t0 := time.Now()
		z, err := openZtgate(n, s)
		if err != nil {
			return fmt.Errorf("ztgate with %s devices: %w", count(n), err)
		}
		dps[n] = z
		cfg.Logf("hot: ztgate with %s devices loaded and applied in %s", count(n), time.Since(t0).Round(time.Millisecond))
	}

	// The measured device: one in the middle of the fleet.
	dev := func(n int) int { return n / 2 }
	allowed4 := hotClasses[0].frame(dev(sizes[0]))
	if err := xf.check(allowed4); err != nil {
		return err
	}

	vs := []Variant{
		progVariant("floor", floor, allowed4, repeat, xdpPass),
		progVariant("xdp-filter", xf.prog, allowed4, repeat, xdpPass),
	}
	for i, p := range prims.progs {
		vs = append(vs, progVariant(prims.names[i], p, allowed4, repeat, xdpPass))
	}
	var hv []hotVariant
	for _, n := range sizes {
		z := dps[n]
		for _, c := range hotClasses {
			frame := c.frame(dev(n))
			for _, ev := range []bool{true, false} {
				p := z.off.Program()
				if ev {
					p = z.on.Program()
				}
				v, rs, err := decide(z.maps, p, frame)
				if err != nil {
					return fmt.Errorf("%s with %s devices: %w", c.name, count(n), err)
				}
				if v != c.verdict || rs != c.reason {
					return fmt.Errorf("%s with %s devices: got %s/%s, want %s/%s", c.name, count(n), v, rs, c.verdict, c.reason)
				}
				want := uint32(xdpPass)
				if c.verdict == bpf.VerdictDrop {
					want = xdpDrop
				}
				hv = append(hv, hotVariant{n: n, class: c.name, events: ev, idx: len(vs)})
				vs = append(vs, progVariant(hotName(n, c.name, ev), p, frame, repeat, want))
			}
		}
	}

	unpin, err := PinThread(benchCPU())
	if err != nil {
		return err
	}
	defer unpin()
	if err := warmUp(vs); err != nil {
		return err
	}
	t0 := time.Now()
	res, err := Interleave(rounds, vs)
	if err != nil {
		return err
	}
	cfg.Logf("hot: %d variants x %d rounds x %d repeats in %s", len(vs), rounds, repeat, time.Since(t0).Round(time.Millisecond))

	floorNs, xfNs := res[0], res[1]
	xfRatio := Ratios(xfNs, floorNs)
	r.Add(Result{Section: "hot", Name: "floor (XDP_PASS only)", Value: Median(floorNs), Unit: "ns/pkt",
		Note: fmt.Sprintf("%d rounds x %d runs, CPU %d", rounds, repeat, benchCPU())})
	r.Add(Result{Section: "hot", Name: "xdp-filter 10k MAC + 10k IPv4", Value: Median(xfNs), Unit: "ns/pkt",
		Ratio: Median(xfRatio), Base: "floor", Spread: Spread(xfRatio),
		Note: "xdpfilt_alw_all.o, maps full; frame unlisted: 4 hash + 2 array lookups, pass"})
	// Per-operation costs: (primitive program - floor) / primOps, per round.
	prim := map[string]float64{}
	primRounds := map[string][]float64{}
	for i, name := range prims.names {
		ns := res[2+i]
		per := make([]float64, len(ns))
		for j := range ns {
			per[j] = (ns[j] - floorNs[j]) / primOps
		}
		prim[name], primRounds[name] = Median(per), per
		r.Add(Result{Section: "hot", Name: "primitive: " + name, Value: Median(per), Unit: "ns/op",
			Note: fmt.Sprintf("(%d in a row - floor) / %d", primOps, primOps)})
	}
	hashNs, lpmNs, ktimeNs := prim[prims.names[0]], prim[prims.names[1]], prim[prims.names[2]]
	lpm3Ns := prim[prims.names[4]]
	// need is, per round, the floor plus the primitives a path of k calls makes (clock reads
	// that came out below zero in the noise count as free).
	need := func(k [3]int) []float64 {
		out := make([]float64, len(floorNs))
		for j := range out {
			out[j] = floorNs[j] + float64(k[0])*primRounds[prims.names[0]][j] + float64(k[1])*primRounds[prims.names[1]][j] +
				float64(k[2])*max(0, primRounds[prims.names[2]][j])
		}
		return out
	}
	callsOf := func(class string, events bool) [3]int {
		k := hotCalls[class]
		if !events && strings.HasSuffix(class, "-drop") {
			k[2] = max(0, k[2]-1)
		}
		return k
	}
	xfPrim := Ratios(xfNs, need([3]int{hotXFHashes, 0, 0}))
	r.Add(Result{Section: "hot", Name: "xdp-filter 10k MAC + 10k IPv4", Value: Median(xfNs), Unit: "ns/pkt",
		Ratio: Median(xfPrim), Base: "floor + primitives", Spread: Spread(xfPrim),
		Note: fmt.Sprintf("its %d hash lookups (8-byte key primitive; the 2 array lookups left out)", hotXFHashes)})

	type agg struct {
		ratio, vsXF, vsPrim float64
		name                string
	}
	byKey := map[string]agg{} // class/n/events
	for _, h := range hv {
		ns := res[h.idx]
		rf := Ratios(ns, floorNs)
		rx := Ratios(ns, xfNs)
		name := hotName(h.n, h.class, h.events)
		note := hotNote(h.class, h.events)
		r.Add(Result{Section: "hot", Name: name, Value: Median(ns), Unit: "ns/pkt", Ratio: Median(rf), Base: "floor",
			Spread: Spread(rf), Note: note})
		r.Add(Result{Section: "hot", Name: name, Value: Median(ns), Unit: "ns/pkt", Ratio: Median(rx), Base: "xdp-filter",
			Spread: Spread(rx)})
		k := callsOf(h.class, h.events)
		rp := Ratios(ns, need(k))
		r.Add(Result{Section: "hot", Name: name, Value: Median(ns), Unit: "ns/pkt", Ratio: Median(rp),
			Base: "floor + primitives", Spread: Spread(rp), Note: fmt.Sprintf("%d hash + %d LPM lookups + %d clock reads", k[0], k[1], k[2])})
		byKey[hotKey(h.class, h.n, h.events)] = agg{ratio: Median(rf), vsXF: Median(rx), vsPrim: Median(rp), name: name}
	}

	quick := ""
	if cfg.Quick {
		quick = "quick: N = 1 and 1k only, figures not meant to be read; "
	}
	// worst returns the largest ratio (of the variant to what of picks) over the classes, every
	// size and both event settings, and the variant it came from.
	worst := func(of func(agg) float64, classes ...string) (float64, string) {
		w, at := 0.0, ""
		for _, class := range classes {
			for _, n := range sizes {
				for _, ev := range []bool{true, false} {
					a := byKey[hotKey(class, n, ev)]
					if v := of(a); v > w {
						w, at = v, a.name
					}
				}
			}
		}
		return w, at
	}
	vsXF := func(a agg) float64 { return a.vsXF }
	vsPrim := func(a agg) float64 { return a.vsPrim }
	floorCtx := func(classes ...string) string {
		w, _ := worst(func(a agg) float64 { return a.ratio }, classes...)
		return fmt.Sprintf("; context: %.1fx the floor (%.0f ns here), xdp-filter %.1fx the floor", w, Median(floorNs),
			Median(xfRatio))
	}
	primCost := func(k [3]int) float64 {
		return float64(k[0])*hashNs + float64(k[1])*lpmNs + float64(k[2])*max(0, ktimeNs)
	}
	allowed := []string{"allowed-v4", "allowed-v6"}
	identity := []string{"unknown-device-drop", "spoofed-ip-drop"}
	w, at := worst(vsXF, allowed...)
	r.Check("hot", fmt.Sprintf("allowed path (IPv4, IPv6) <= %.1fx xdp-filter", hotAllowedVsFilterMax), w, "<=",
		hotAllowedVsFilterMax, "x", quick+fmt.Sprintf("worst of every N and event setting: %s; xdp-filter %.0f ns in "+
			"the same rounds; the path's %d hash + %d LPM lookups alone are ~%.0f ns by the primitives, xdp-filter's %d "+
			"hash lookups ~%.0f ns", at, Median(xfNs), hotCalls["allowed-v4"][0], hotCalls["allowed-v4"][1],
			primCost(hotCalls["allowed-v4"]), hotXFHashes, hotXFHashes*hashNs)+floorCtx(allowed...))
	w, at = worst(vsXF, identity...)
	r.Check("hot", fmt.Sprintf("identity drops (unknown device, spoofed IP) <= %.1fx xdp-filter", hotIdentityVsFilterMax),
		w, "<=", hotIdentityVsFilterMax, "x", quick+fmt.Sprintf("worst of every N and event setting: %s; one MAC "+
			"lookup against xdp-filter's %d: the floor plus one hash lookup is %.2fx xdp-filter by itself", at, hotXFHashes,
			(Median(floorNs)+hashNs)/Median(xfNs))+floorCtx(identity...))
	w, at = worst(vsPrim, allowed...)
	r.Check("hot", fmt.Sprintf("allowed path <= %.1fx the floor plus its primitives", hotVsPrimitivesMax), w, "<=",
		hotVsPrimitivesMax, "x", quick+fmt.Sprintf("worst: %s; the floor plus %d hash + %d LPM lookups + %d clock "+
			"reads = ~%.0f ns; xdp-filter is %.2fx its own (the floor plus %d hash lookups)", at,
			hotCalls["allowed-v4"][0], hotCalls["allowed-v4"][1], hotCalls["allowed-v4"][2],
			Median(floorNs)+primCost(hotCalls["allowed-v4"]), Median(xfPrim), hotXFHashes))
	w, at = worst(vsPrim, identity...)
	r.Check("hot", fmt.Sprintf("identity drops <= %.1fx the floor plus their primitives", hotVsPrimitivesMax), w, "<=",
		hotVsPrimitivesMax, "x", quick+fmt.Sprintf("worst: %s; the floor plus 1 hash lookup + 1 clock read (events "+
			"on; events off, no clock) = ~%.0f ns; with events on a drop also takes the event limiter's budget slot "+
			"(an array lookup, not counted)", at, Median(floorNs)+primCost(hotCalls["unknown-device-drop"])))
	lo, hi := 0.0, 0.0
	for i, n := range sizes {
		v := byKey[hotKey("allowed-v4", n, true)].ratio
		if i == 0 || v < lo {
			lo = v
		}
		if i == 0 || v > hi {
			hi = v
		}
	}
	flat := hi/lo - 1
	// The policy grows with the fleet up to its 48 rule sets: one device has one rule set (3
	// prefixes in the trie), 1k devices and more have them all (124). Say how flat the cost is
	// once the policy is complete, to tell the two apart.
	note := "allowed-v4 ratio to the floor, events on, across N"
	var big []float64
	for _, n := range sizes {
		if n >= 1000 {
			big = append(big, byKey[hotKey("allowed-v4", n, true)].ratio)
		}
	}
	if len(big) > 1 {
		note += fmt.Sprintf("; N=1's policy has 1 rule set (%d trie prefixes), N>=1k all 48 (%d): from 1k to %s max/min-1 = %.2f; "+
			"an LPM lookup costs %.0f ns with 124 prefixes and %.0f ns with 3 (primitives): the rule content, not N, makes the difference",
			len(snaps[sizes[0]].Prefixes), len(snaps[sizes[len(sizes)-1]].Prefixes), count(sizes[len(sizes)-1]),
			slices.Max(big)/slices.Min(big)-1, lpmNs, lpm3Ns)
	}
	r.Check("hot", fmt.Sprintf("hot cost flat from %s to %s devices (max/min-1)", count(sizes[0]), count(sizes[len(sizes)-1])),
		flat, "<=", hotFlatMax, "", quick+note)
	return nil
}

func hotKey(class string, n int, events bool) string {
	return fmt.Sprintf("%s/%d/%v", class, n, events)
}

func hotName(n int, class string, events bool) string {
	ev := "on"
	if !events {
		ev = "off"
	}
	return fmt.Sprintf("ztgate %s dev %s ev-%s", count(n), class, ev)
}

func hotNote(class string, events bool) string {
	switch {
	case strings.HasSuffix(class, "-drop") && events:
		return "event limiter: over the burst, suppressed (flood case)"
	case strings.HasPrefix(class, "allowed"):
		return "dev+peer+prefix+rule lookups"
	}
	return ""
}
