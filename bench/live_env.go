package bench

// The machinery of the live section: the in-kernel generator, the receiving veths' settings
// (GRO, NAPI threading), the policy and the peers (ztgate, xdp-filter, nftables, iptables) set
// up inside the receiving namespaces. Identifiers start with "live": the package is shared with
// the other sections.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/dptest"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// liveXDPDrop is the XDP_DROP action.
const liveXDPDrop = 1

// liveReturnProg is an XDP program that returns action and does nothing else.
func liveReturnProg(name string, action int32) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: name, Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, action), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	return p, nil
}

// liveGenerator is the sender: an XDP program that returns bpf_redirect(ifindex, 0). Run with
// BPF_F_TEST_XDP_LIVE_FRAMES in the namespace of ifindex, every repetition is a real xdp_frame
// transmitted on that veth, so its peer receives it as from a NIC's driver.
func liveGenerator(ifindex int) (*ebpf.Program, error) {
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

// livePickCPU returns the CPU that was idle the most over a short sample (the last one on a
// tie): other work on the generator's CPU does not enter its CPU time, but it stretches the
// run.
func livePickCPU() int {
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
	best := max(0, numCPU()-1)
	a := idle()
	time.Sleep(300 * time.Millisecond)
	b := idle()
	if len(a) != numCPU() || len(b) != len(a) {
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
	liveEthtoolGGRO = 0x2b
	liveEthtoolSGRO = 0x2c
)

// liveIfreq is struct ifreq (40 bytes on 64-bit) with ifr_data.
type liveIfreq struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte
}

// liveEthtoolValue is struct ethtool_value.
type liveEthtoolValue struct{ cmd, data uint32 }

// liveEthtool runs one ethtool_value command on ifname, in the network namespace of the calling
// thread (the socket's namespace decides).
func liveEthtool(ifname string, cmd, data uint32) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	v := &liveEthtoolValue{cmd: cmd, data: data}
	ifr := &liveIfreq{data: uintptr(unsafe.Pointer(v))}
	copy(ifr.name[:unix.IFNAMSIZ-1], ifname)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr)))
	runtime.KeepAlive(v)
	runtime.KeepAlive(ifr)
	if errno != 0 {
		return 0, errno
	}
	return v.data, nil
}

// liveSetGRO turns GRO on or off on ifname inside ns and reads it back.
func liveSetGRO(ns *testenv.Namespace, ifname string, on bool) error {
	want := uint32(0)
	if on {
		want = 1
	}
	return ns.Do(func() error {
		if _, err := liveEthtool(ifname, liveEthtoolSGRO, want); err != nil {
			return fmt.Errorf("set gro %v on %s: %w", on, ifname, err)
		}
		got, err := liveEthtool(ifname, liveEthtoolGGRO, 0)
		if err != nil {
			return fmt.Errorf("get gro of %s: %w", ifname, err)
		}
		if got != want {
			return fmt.Errorf("gro of %s is %d after setting %d", ifname, got, want)
		}
		return nil
	})
}

// liveSafeName accepts the names this section puts in commands (interfaces, namespaces).
func liveSafeName(s string) error {
	if s == "" || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
		return fmt.Errorf("unexpected name %q", s)
	}
	return nil
}

// liveNoThreads sets /sys/class/net/<ifname>/threaded to 0 inside ns (the receiver's NAPI then
// runs in softirq on the CPU that scheduled it, the generator's) and returns the value read
// back (0 is also the default here; it is written so that the method does not depend on it).
// sysfs shows the devices of the network namespace it was mounted in, so the host's /sys never
// lists ifname and a thread switched with setns still sees the host's view; `ip link` here has
// no option for it. `ip netns exec` mounts a fresh sysfs in a private mount namespace of its
// own child process only: the host's mounts (and bpffs, which that child does not need) are
// not touched.
func liveNoThreads(ns *testenv.Namespace, ifname string) (string, error) {
	if err := errors.Join(liveSafeName(ns.Name()), liveSafeName(ifname)); err != nil {
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

// liveNsenter runs a command inside ns's network namespace only (nsenter --net: the mount
// namespace, /sys and bpffs stay the host's), with stdin.
func liveNsenter(ns *testenv.Namespace, stdin []byte, name string, args ...string) error {
	cmd := exec.Command("nsenter", append([]string{"--net=" + ns.Path(), "--", name}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s in %s: %w: %s", name, ns.Name(), err, liveFirstLines(out, 5))
	}
	return nil
}

func liveFirstLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, " | ")
}

// liveUDPNoPorts reads Udp NoPorts (datagrams to a closed port: frames that reached the stack's
// UDP layer) of ns.
func liveUDPNoPorts(ns *testenv.Namespace) (uint64, error) {
	var b []byte
	if err := ns.Do(func() error {
		var err error
		b, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	}); err != nil {
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

// liveLinkStats reads the receive counters of ifname in ns: for a veth, rx_packets counts the
// frames its NAPI took from the ring (XDP or not) and rx_dropped the frames the peer could not
// put in the ring (full), among others.
func liveLinkStats(ns *testenv.Namespace) func(ifname string) (rx, drop uint64, err error) {
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

// liveBigDevices is the size of the dptest.Big policy every fleet starts from (its segments,
// rule shapes and first devices); Big addresses devices with 16 bits, so larger fleets add
// devices of their own beyond it.
const liveBigDevices = 1000

// liveFleet is n devices: dptest.NewBig(min(n, 1000), 7) (every rule shape, 12 segments, the
// gateway 10.0.0.1 with DHCP, DHCPv6 and DNS), then for n > 1000 devices x<i> with the hot
// section's identities (fleetMAC, fleetV4), spread over the Big segments.
type liveFleet struct {
	n     int
	big   *dptest.Big
	snap  *policy.Snapshot
	model *policy.Model
}

const liveFleetSeed = 7

func newLiveFleet(n int) (*liveFleet, error) {
	if n < 1 || n > 1<<21 {
		return nil, fmt.Errorf("fleet of %d devices: must be between 1 and %d", n, 1<<21)
	}
	big := dptest.NewBig(min(n, liveBigDevices), liveFleetSeed)
	p := big.Policy
	for i := liveBigDevices; i < n; i++ {
		p.Spec.Devices = append(p.Spec.Devices, policy.Device{
			Name: "x" + strconv.Itoa(i), MAC: fleetMAC(i).String(),
			IPv4: []string{fleetV4(i).String()}, Segment: "s" + strconv.Itoa(i%12),
		})
	}
	s, err := dptest.Compile(p, 1)
	if err != nil {
		return nil, fmt.Errorf("fleet of %d devices: %w", n, err)
	}
	return &liveFleet{n: n, big: big, snap: s, model: policy.NewModel(s, 4096, time.Hour)}, nil
}

// Addresses of the frames. The destination is the Big policy's gateway address; the receiving
// namespaces carry it, so frames that pass are delivered locally (to a closed UDP port).
var (
	liveGatewayIP  = netip.MustParseAddr("10.0.0.1")
	liveUnknownMAC = net.HardwareAddr{0x02, 0x5b, 0, 0, 0, 1} // in no policy, set or rule
	liveUnknownIP  = netip.MustParseAddr("10.200.0.1")
)

const (
	liveSport      = 40000
	liveClosedPort = 9  // discard: no rule of the fleet allows it to the gateway (checked)
	liveDNSPort    = 53 // the DNS gateway service: allowed for every device; closed on the receiver
	livePayload    = 18 // 14 + 20 + 8 + 18 = 60 bytes, a minimum-size frame without FCS
)

// liveFrame is a UDP frame from src to the receiver (dstMAC, 10.0.0.1) port dport.
func liveFrame(src frames.Host, dstMAC net.HardwareAddr, dport uint16) []byte {
	return frames.UDP(src, frames.Host{MAC: dstMAC, IP: liveGatewayIP}, liveSport, dport, make([]byte, livePayload))
}

func liveUnknownHost() frames.Host { return frames.Host{MAC: liveUnknownMAC, IP: liveUnknownIP} }

// pickDevice returns a Big device of the fleet (the same in every fleet) whose frame to the
// gateway's port 9 the policy drops for want of a rule and whose DNS query passes: a device
// identified, source checked, and its rule set searched.
func (f *liveFleet) pickDevice() (frames.Host, error) {
	// The receiver's MAC stands for any: attach registers the receiving port's own MAC as the
	// gateway's, as the model is told here.
	mac := net.HardwareAddr{0x02, 0x7a, 0x64, 0, 0, 1}
	f.model.AddGatewayMAC([6]byte(mac))
	for _, h := range f.big.Hosts {
		if h.VLAN != 0 || len(h.IPv4) == 0 {
			continue
		}
		src := frames.Host{MAC: h.MAC, IP: h.IPv4[0]}
		drop := f.model.Decide(liveFrame(src, mac, liveClosedPort), 7, 0)
		pass := f.model.Decide(liveFrame(src, mac, liveDNSPort), 7, 0)
		if drop.Verdict == bpf.VerdictDrop && drop.Reason == bpf.ReasonNoRule &&
			pass.Verdict == bpf.VerdictPass && pass.Reason == bpf.ReasonAllow {
			return src, nil
		}
	}
	return frames.Host{}, errors.New("no Big device with a no-rule drop and an allowed DNS query")
}

// ---------------------------------------------------------------------------------------------
// ztgate.

type liveZtgate struct {
	fleet  *liveFleet
	pinDir string
	dp     *loader.Datapath
	maps   *maps.Maps
}

func livePinDir(tag string) string {
	var id [6]byte
	_, _ = rand.Read(id[:])
	return filepath.Join("/sys/fs/bpf", "ztgate-bench-live-"+hex.EncodeToString(id[:])+"-"+tag)
}

// openLiveZtgate loads the datapath as the agent does (defaults: events on, native XDP), sized
// for the fleet, and applies its snapshot. The caller closes it, also on error.
func openLiveZtgate(f *liveFleet, pinDir string) (*liveZtgate, error) {
	s := f.snap
	z := &liveZtgate{fleet: f, pinDir: pinDir}
	lim := maps.Limits{Devices: len(s.Devices), Addrs: max(1, len(s.Addrs)), Rules: max(1, len(s.Rules)),
		Prefixes: max(1, len(s.Prefixes))}
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
func (z *liveZtgate) attach(ns *testenv.Namespace, ifname string) error {
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

// counter reads one (verdict, reason) counter, summed over CPUs.
func (z *liveZtgate) counter(v bpf.Verdict, r bpf.Reason) (uint64, error) {
	c, err := z.maps.Counters()
	if err != nil {
		return 0, err
	}
	return c[v][r].Packets, nil
}

func (z *liveZtgate) Close() error {
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

// livePairs are the first n (MAC, IPv4) pairs of the fleet: the allow-list the netfilter
// variants enforce. The frames they receive come from liveUnknownHost, in none.
func livePairs(f *liveFleet, n int) []frames.Host {
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

// liveNftSet is a netdev ingress chain on ifname that drops IPv4 frames whose
// (source MAC, source IPv4) is not in a set.
func liveNftSet(ifname string, pairs []frames.Host) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "table netdev ztbench {\n\tset allowed {\n\t\ttype ether_addr . ipv4_addr\n\t\tsize %d\n", 2*len(pairs))
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

// liveNftLinear is the same policy as 1,000 rules, one per pair, evaluated in order.
func liveNftLinear(ifname string, pairs []frames.Host) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "table netdev ztbench {\n\tchain ingress {\n\t\ttype filter hook ingress device %q priority 0; policy accept;\n", ifname)
	for _, h := range pairs {
		fmt.Fprintf(&b, "\t\tether type ip ether saddr %s ip saddr %s accept\n", h.MAC, h.IP)
	}
	b.WriteString("\t\tether type ip drop\n\t}\n}\n")
	return []byte(b.String())
}

// liveIptables is the same policy for iptables-restore: raw PREROUTING, one rule per pair
// (source address, then the MAC match), then DROP.
func liveIptables(pairs []frames.Host) []byte {
	var b strings.Builder
	b.WriteString("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, h := range pairs {
		fmt.Fprintf(&b, "-A PREROUTING -s %s/32 -m mac --mac-source %s -j ACCEPT\n", h.IP, h.MAC)
	}
	b.WriteString("-A PREROUTING -j DROP\nCOMMIT\n")
	return []byte(b.String())
}
