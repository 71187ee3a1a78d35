package live

// The machinery of the live section: the in-kernel generator, the receiving veths' settings
// (GRO, NAPI threading), the policy and the peers (ztgate, xdp-filter, nftables, iptables) set
// up inside the receiving namespaces.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bench/fleet"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// newGenerator is the sender: an XDP program that returns bpf_redirect(ifindex, 0). Run with
// BPF_F_TEST_XDP_LIVE_FRAMES in the namespace of ifindex, every repetition is a real xdp_frame
// transmitted on that veth, so its peer receives it as from a NIC's driver.
func newGenerator(ifindex int) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "live_gen", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, int32(ifindex)),
			asm.Mov.Imm(asm.R2, 0),
			asm.FnRedirect.Call(),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load the generator: %w", err)
	}
	return p, nil
}

// pickCPU returns the CPU that was idle the most over a short sample (the last one on a
// tie): other work on the generator's CPU does not enter its CPU time, but it stretches the
// run.
func pickCPU() int {
	idle := func() []uint64 {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return nil
		}
		var out []uint64
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 5 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
				continue
			}
			n, err := strconv.Atoi(f[0][3:])
			if err != nil || n != len(out) {
				return nil
			}
			v, _ := strconv.ParseUint(f[4], 10, 64)
			out = append(out, v)
		}
		return out
	}
	best := max(0, core.NumCPU()-1)
	a := idle()
	time.Sleep(300 * time.Millisecond)
	b := idle()
	if len(a) != core.NumCPU() || len(b) != len(a) {
		return best
	}
	for i := len(a) - 1; i >= 0; i-- {
		if b[i]-a[i] > b[best]-a[best] {
			best = i
		}
	}
	return best
}

// ---------------------------------------------------------------------------------------------
// Receiving veth settings.

// Legacy ethtool commands (include/uapi/linux/ethtool.h): get and set GRO. They are enough to
// turn GRO on, and need no ethtool binary (not installed here) nor the ethtool netlink family.
const (
	ethtoolGGRO = 0x2b
	ethtoolSGRO = 0x2c
)

// ifreq is struct ifreq (40 bytes on 64-bit) with ifr_data.
type ifreq struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte
}

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct{ cmd, data uint32 }

// ethtool runs one ethtool_value command on ifname, in the network namespace of the calling
// thread (the socket's namespace decides).
func ethtool(ifname string, cmd, data uint32) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	v := &ethtoolValue{cmd: cmd, data: data}
	ifr := &ifreq{data: uintptr(unsafe.Pointer(v))}
	copy(ifr.name[:unix.IFNAMSIZ-1], ifname)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr)))
	runtime.KeepAlive(v)
	runtime.KeepAlive(ifr)
	if errno != 0 {
		return 0, errno
	}
	return v.data, nil
}

// setGRO turns GRO on or off on ifname inside ns and reads it back.
func setGRO(ns *testenv.Namespace, ifname string, on bool) error {
	return setFeature(ns, ifname, "gro", ethtoolGGRO, ethtoolSGRO, on)
}

// setFeature turns the feature what on or off on ifname inside ns with the legacy ethtool
// commands set and get, and reads it back.
func setFeature(ns *testenv.Namespace, ifname, what string, get, set uint32, on bool) error {
	want := uint32(0)
	if on {
		want = 1
	}
	return ns.Do(func() error {
		if _, err := ethtool(ifname, set, want); err != nil {
			return fmt.Errorf("set %s %v on %s: %w", what, on, ifname, err)
		}
		got, err := ethtool(ifname, get, 0)
		if err != nil {
			return fmt.Errorf("get %s of %s: %w", what, ifname, err)
		}
		if got != want {
			return fmt.Errorf("%s of %s is %d after setting %d", what, ifname, got, want)
		}
		return nil
	})
}

// checkName accepts the names this section puts in commands (interfaces, namespaces).
func checkName(s string) error {
	if s == "" || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
		return fmt.Errorf("unexpected name %q", s)
	}
	return nil
}

// noThreads sets /sys/class/net/<ifname>/threaded to 0 inside ns, through `ip netns exec` (whose
// private sysfs mount is the only view of the namespace's devices), and returns the value read back.
func noThreads(ns *testenv.Namespace, ifname string) (string, error) {
	if err := errors.Join(checkName(ns.Name()), checkName(ifname)); err != nil {
		return "", err
	}
	f := "/sys/class/net/" + ifname + "/threaded"
	out, err := exec.Command("ip", "netns", "exec", ns.Name(), "sh", "-c",
		"echo 0 > "+f+" && cat "+f).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("threaded=0 on %s in %s: %w: %s", ifname, ns.Name(), err, bytes.TrimSpace(out))
	}
	got := strings.TrimSpace(string(out))
	if got != "0" {
		return got, fmt.Errorf("threaded of %s in %s reads %q after writing 0", ifname, ns.Name(), got)
	}
	return got, nil
}

// runNsenter runs a command inside ns's network namespace only (nsenter --net: the mount
// namespace, /sys and bpffs stay the host's), with stdin.
func runNsenter(ns *testenv.Namespace, stdin []byte, name string, args ...string) error {
	cmd := exec.Command("nsenter", append([]string{"--net=" + ns.Path(), "--", name}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s in %s: %w: %s", name, ns.Name(), err, firstLines(out, 5))
	}
	return nil
}

// firstLines is the first n lines of b, for an error message.
func firstLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, " | ")
}

// udpNoPorts reads Udp NoPorts (datagrams to a closed port: frames that reached the stack's
// UDP layer) of ns.
func udpNoPorts(ns *testenv.Namespace) (uint64, error) {
	b, err := ns.ReadProcNet("snmp")
	if err != nil {
		return 0, err
	}
	var head []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, h := range head {
			if h == "NoPorts" && i < len(f) {
				return strconv.ParseUint(f[i], 10, 64)
			}
		}
	}
	return 0, errors.New("no Udp NoPorts in /proc/net/snmp")
}

// linkStats reads the receive counters of ifname in ns: for a veth, rx_packets counts the
// frames its NAPI took from the ring (XDP or not) and rx_dropped the frames the peer could not
// put in the ring (full), among others.
func linkStats(ns *testenv.Namespace) func(ifname string) (rx, drop uint64, err error) {
	return func(ifname string) (uint64, uint64, error) {
		l, err := ns.Netlink().LinkByName(ifname)
		if err != nil {
			return 0, 0, err
		}
		s := l.Attrs().Statistics
		if s == nil {
			return 0, 0, fmt.Errorf("no statistics for %s", ifname)
		}
		return s.RxPackets, s.RxDropped, nil
	}
}

// ---------------------------------------------------------------------------------------------
// The policy and the frames.

// bigDevices is the size of the dptest.Big policy every fleet starts from (its segments,
// rule shapes and first devices); Big addresses devices with 16 bits, so larger fleets add
// devices of their own beyond it.
const bigDevices = 1000

// policyFleet is n devices: dptest.NewBig(min(n, 1000), 7) (every rule shape, 12 segments, the
// gateway 10.0.0.1 with DHCP, DHCPv6 and DNS), then for n > 1000 devices x<i> with the hot
// section's identities (fleetMAC, fleetV4), spread over the Big segments.
type policyFleet struct {
	n     int
	big   *dptest.Big
	snap  *policy.Snapshot
	model *policy.Model
}

// fleetSeed seeds the generated Big policy of every fleet.
const fleetSeed = 7

// newPolicyFleet compiles the fleet of n devices: the Big policy of the test harness, grown with
// devices of the hot section's fleet.
func newPolicyFleet(n int) (*policyFleet, error) {
	if n < 1 || n > 1<<21 {
		return nil, fmt.Errorf("fleet of %d devices: must be between 1 and %d", n, 1<<21)
	}
	big := dptest.NewBig(min(n, bigDevices), fleetSeed)
	p := big.Policy
	for i := bigDevices; i < n; i++ {
		p.Spec.Devices = append(p.Spec.Devices, policy.Device{
			Name: "x" + strconv.Itoa(i), MAC: fleet.MAC(i).String(),
			IPv4: []string{fleet.V4(i).String()}, Segment: "s" + strconv.Itoa(i%12),
		})
	}
	s, err := dptest.Compile(p, 1)
	if err != nil {
		return nil, fmt.Errorf("fleet of %d devices: %w", n, err)
	}
	return &policyFleet{n: n, big: big, snap: s, model: policy.NewModel(s, 4096, time.Hour)}, nil
}

// Addresses of the frames. The destination is the Big policy's gateway address; the receiving
// namespaces carry it, so frames that pass are delivered locally (to a closed UDP port).
var (
	gatewayIP  = netip.MustParseAddr("10.0.0.1")
	unknownMAC = net.HardwareAddr{0x02, 0x5b, 0, 0, 0, 1} // in no policy, set or rule
	unknownIP  = netip.MustParseAddr("10.200.0.1")
)

// Ports and size of the frames.
const (
	sport      = 40000
	closedPort = 9  // discard: no rule of the fleet allows it to the gateway (checked)
	dnsPort    = 53 // the DNS gateway service: allowed for every device; closed on the receiver
	payload    = 18 // 14 + 20 + 8 + 18 = 60 bytes, a minimum-size frame without FCS
)

// buildFrame is a UDP frame from src to the receiver (dstMAC, 10.0.0.1) port dport.
func buildFrame(src frames.Host, dstMAC net.HardwareAddr, dport uint16) []byte {
	return frames.UDP(src, frames.Host{MAC: dstMAC, IP: gatewayIP}, sport, dport, make([]byte, payload))
}

// unknownHost is a source in no policy, set or rule.
func unknownHost() frames.Host { return frames.Host{MAC: unknownMAC, IP: unknownIP} }

// pickDevice returns a Big device of the fleet (the same in every fleet) whose frame to the
// gateway's port 9 the policy drops for want of a rule and whose DNS query passes: a device
// identified, source checked, and its rule set searched.
func (f *policyFleet) pickDevice() (frames.Host, error) {
	// The receiver's MAC stands for any: attach registers the receiving port's own MAC as the
	// gateway's, as the model is told here.
	mac := net.HardwareAddr{0x02, 0x7a, 0x64, 0, 0, 1}
	f.model.AddGatewayMAC([6]byte(mac))
	for _, h := range f.big.Hosts {
		if h.VLAN != 0 || len(h.IPv4) == 0 {
			continue
		}
		src := frames.Host{MAC: h.MAC, IP: h.IPv4[0]}
		drop := f.model.Decide(buildFrame(src, mac, closedPort), 7, 0)
		pass := f.model.Decide(buildFrame(src, mac, dnsPort), 7, 0)
		if drop.Verdict == bpf.VerdictDrop && drop.Reason == bpf.ReasonNoRule &&
			pass.Verdict == bpf.VerdictPass && pass.Reason == bpf.ReasonAllow {
			return src, nil
		}
	}
	return frames.Host{}, errors.New("no Big device with a no-rule drop and an allowed DNS query")
}

// ---------------------------------------------------------------------------------------------
// ztgate.

// ztgateDP is ztgate loaded for a fleet and attached to a receiving veth.
type ztgateDP struct {
	fleet  *policyFleet
	pinDir string
	dp     *loader.Datapath
	maps   *maps.Maps
}

// openZtgate loads the datapath as the agent does (defaults: events on, native XDP), sized
// for the fleet, and applies its snapshot. The caller closes it, also on error.
func openZtgate(f *policyFleet, pinDir string) (*ztgateDP, error) {
	s := f.snap
	z := &ztgateDP{fleet: f, pinDir: pinDir}
	lim := fleet.Limits(s)
	cfg := loader.DefaultConfig()
	cfg.PinDir = pinDir
	cfg.MaxDevices, cfg.MaxAddrs, cfg.MaxRules, cfg.MaxPrefixes = lim.Devices, lim.Addrs, lim.Rules, lim.Prefixes
	var err error
	if z.dp, err = loader.Open(cfg); err != nil {
		return z, err
	}
	if z.maps, err = maps.New(z.dp.Objects(), z.dp.MapSpecs()); err != nil {
		return z, err
	}
	if err := z.maps.Apply(s, lim); err != nil {
		return z, err
	}
	return z, nil
}

// attach attaches the datapath to ifname inside ns and insists on native mode.
func (z *ztgateDP) attach(ns *testenv.Namespace, ifname string) error {
	return ns.Do(func() error {
		mode, err := z.dp.AttachMode(ifname, loader.ModeNative)
		if err != nil {
			return err
		}
		if mode != loader.ModeNative {
			return fmt.Errorf("ztgate attached to %s in mode %s, want native", ifname, mode)
		}
		return nil
	})
}

// Close releases the datapath and removes its pins.
func (z *ztgateDP) Close() error {
	if z.maps != nil {
		z.maps.Close()
	}
	if z.dp != nil {
		z.dp.Close()
	}
	return loader.Uninstall(z.pinDir) // detaches the pinned links, removes every pin
}

// ---------------------------------------------------------------------------------------------
// netfilter rule sets: 1,000 (MAC, IPv4) pairs allowed, everything else from IPv4 dropped.

// allowPairs are the first n (MAC, IPv4) pairs of the fleet: the allow-list the netfilter
// variants enforce. The frames they receive come from unknownHost, in none.
func allowPairs(f *policyFleet, n int) []frames.Host {
	var out []frames.Host
	for _, h := range f.big.Hosts {
		if len(out) == n {
			break
		}
		if len(h.IPv4) > 0 {
			out = append(out, frames.Host{MAC: h.MAC, IP: h.IPv4[0]})
		}
	}
	return out
}

// nftSetRules is a netdev ingress chain on ifname that drops IPv4 frames whose
// (source MAC, source IPv4) is not in a set.
func nftSetRules(ifname string, pairs []frames.Host) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "table netdev ztbench {\n\tset allowed {\n\t\ttype ether_addr . ipv4_addr\n\t\tsize %d\n",
		2*len(pairs))
	b.WriteString("\t\telements = {\n")
	for i, h := range pairs {
		sep := ","
		if i == len(pairs)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "\t\t\t%s . %s%s\n", h.MAC, h.IP, sep)
	}
	b.WriteString("\t\t}\n\t}\n")
	fmt.Fprintf(&b, "\tchain ingress {\n\t\ttype filter hook ingress device %q priority 0; policy accept;\n", ifname)
	b.WriteString("\t\tether type ip ether saddr . ip saddr != @allowed drop\n\t}\n}\n")
	return []byte(b.String())
}

// nftLinearRules is the same policy as 1,000 rules, one per pair, evaluated in order.
func nftLinearRules(ifname string, pairs []frames.Host) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "table netdev ztbench {\n\tchain ingress {\n\t\ttype filter hook ingress device %q priority 0; "+
		"policy accept;\n", ifname)
	for _, h := range pairs {
		fmt.Fprintf(&b, "\t\tether type ip ether saddr %s ip saddr %s accept\n", h.MAC, h.IP)
	}
	b.WriteString("\t\tether type ip drop\n\t}\n}\n")
	return []byte(b.String())
}

// iptablesRules is the same policy for iptables-restore: raw PREROUTING, one rule per pair
// (source address, then the MAC match), then DROP.
func iptablesRules(pairs []frames.Host) []byte {
	var b strings.Builder
	b.WriteString("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, h := range pairs {
		fmt.Fprintf(&b, "-A PREROUTING -s %s/32 -m mac --mac-source %s -j ACCEPT\n", h.IP, h.MAC)
	}
	b.WriteString("-A PREROUTING -j DROP\nCOMMIT\n")
	return []byte(b.String())
}
