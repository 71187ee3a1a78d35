package loader

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
)

// tcModes runs fn for tcx and for the forced clsact fallback.
func tcModes(t *testing.T, fn func(t *testing.T, mode TCMode)) {
	for _, m := range []TCMode{TCModeTCX, TCModeClsact} {
		t.Run(m.String(), func(t *testing.T) { fn(t, m) })
	}
}

// tcLab returns a test configuration in generic XDP mode with TC mode tc, and a namespace with
// the veth pair a-b.
func tcLab(t *testing.T, tc TCMode, a, b string) (Config, netns.NsHandle) {
	t.Helper()
	cfg, ns := genericLab(t, a, b)
	cfg.TCMode = tc
	return cfg, ns
}

// egress is what runs at TC egress of an interface, read back from the kernel.
type egress struct {
	tcx    []ebpf.ProgramID // tcx programs, first to last
	clsact ebpf.ProgramID   // ztgate's clsact filter's program, 0 when there is none
	qdisc  bool             // the interface has a clsact qdisc
}

func (e egress) kind() string {
	switch {
	case len(e.tcx) > 0 && e.clsact != 0:
		return "both"
	case len(e.tcx) > 0:
		return TCKindTCX
	case e.clsact != 0:
		return TCKindClsact
	}
	return ""
}

// readEgress reads the TC egress programs of ifname; the caller's thread is in its namespace.
func readEgress(ifname string) (egress, error) {
	var e egress
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return e, err
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		return e, err
	}
	for _, p := range res.Programs {
		e.tcx = append(e.tcx, p.ID)
	}
	qs, err := netlink.QdiscList(l)
	if err != nil {
		return e, err
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			e.qdisc = true
		}
	}
	if !e.qdisc {
		return e, nil
	}
	fl, err := netlink.FilterList(l, netlink.HANDLE_MIN_EGRESS)
	if err != nil {
		return e, err
	}
	for _, f := range fl {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == tcFilterName {
			if !bf.DirectAction || bf.Priority != tcFilterPriority || bf.Handle != tcFilterHandle {
				return e, errors.New("ztgate's filter is not in direct-action mode at its priority and handle")
			}
			e.clsact = ebpf.ProgramID(bf.Id)
		}
	}
	return e, nil
}

func egressOf(t *testing.T, ns netns.NsHandle, ifname string) egress {
	t.Helper()
	var e egress
	if err := inNetns(t, ns, func() (err error) { e, err = readEgress(ifname); return err }); err != nil {
		t.Fatalf("read tc egress of %s: %v", ifname, err)
	}
	return e
}

// watchEgress samples the TC egress of ifname in ns until stop is called, which returns the
// program ids seen in order (0: a sample with no ztgate program) and the first error.
func watchEgress(t *testing.T, ns netns.NsHandle, ifname string) (stop func() ([]ebpf.ProgramID, error)) {
	t.Helper()
	done := make(chan struct{})
	var (
		wg   sync.WaitGroup
		seen []ebpf.ProgramID
		werr error
	)
	started := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		werr = inNetns(t, ns, func() error {
			for i := 0; ; i++ {
				e, err := readEgress(ifname)
				if err != nil {
					return err
				}
				id := e.clsact
				if len(e.tcx) > 0 {
					id = e.tcx[0]
				}
				if len(seen) == 0 || seen[len(seen)-1] != id {
					seen = append(seen, id)
				}
				if i == 0 {
					close(started)
				}
				select {
				case <-done:
					return nil
				default:
				}
			}
		})
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
	}
	return func() ([]ebpf.ProgramID, error) {
		close(done)
		wg.Wait()
		return seen, werr
	}
}

func tcProgID(t *testing.T, dp *Datapath) ebpf.ProgramID {
	t.Helper()
	id, err := dp.TCProgramID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func attachIn(t *testing.T, dp *Datapath, ns netns.NsHandle, ifname string) {
	t.Helper()
	if err := inNetns(t, ns, func() error { _, err := dp.Attach(ifname); return err }); err != nil {
		t.Fatalf("attach %s: %v", ifname, err)
	}
}

// TestTCAttach: Attach puts the TC program at egress (tcx, or the forced clsact fallback) next to
// XDP and Status reports it; a restart's Attach switches it to the new program with no sample
// in between that lacks a program; Detach removes both; Uninstall leaves nothing.
func TestTCAttach(t *testing.T) {
	tcModes(t, func(t *testing.T, mode TCMode) {
		cfg, ns := tcLab(t, mode, "ztc0", "ztc1")
		dp1 := openDatapath(t, cfg)
		attachIn(t, dp1, ns, "ztc0")
		id1 := tcProgID(t, dp1)
		e := egressOf(t, ns, "ztc0")
		if e.kind() != mode.String() || (mode == TCModeTCX && e.tcx[0] != id1) || (mode == TCModeClsact && e.clsact != id1) {
			t.Fatalf("egress after attach: %+v, want our program %d by %v", e, id1, mode)
		}
		if x := xdpState(t, ns, "ztc0"); !x.Attached || x.ProgId != uint32(progID(t, dp1.Program())) {
			t.Fatalf("xdp after attach: %+v", x)
		}
		st := statusOf(t, dp1, ns)["ztc0"]
		if st.TC != mode.String() || st.TCProgramID != id1 || !st.TCCurrent || !st.Current ||
			(mode == TCModeTCX) != (st.TCLinkID != 0) {
			t.Fatalf("status after attach: %+v", st)
		}
		_, pinErr := os.Lstat(filepath.Join(dp1.Dir(), tcPinPrefix+"ztc0"))
		if (mode == TCModeTCX) != (pinErr == nil) {
			t.Errorf("tcx link pin in %v mode: %v", mode, pinErr)
		}

		// An agent restart: the next process adopts the attachment, never leaving egress bare.
		if err := dp1.Close(); err != nil {
			t.Fatal(err)
		}
		if e := egressOf(t, ns, "ztc0"); e.kind() != mode.String() {
			t.Fatalf("egress after close: %+v, want it kept", e)
		}
		// The next process asks for the other kind: an adopted attachment keeps its own.
		other := TCModeClsact
		if mode == TCModeClsact {
			other = TCModeTCX
		}
		cfg2 := cfg
		cfg2.TCMode = other
		dp2 := openDatapath(t, cfg2)
		id2 := tcProgID(t, dp2)
		stop := watchEgress(t, ns, "ztc0")
		attachIn(t, dp2, ns, "ztc0")
		seen, err := stop()
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) == 0 || slices.Contains(seen, 0) || seen[0] != id1 || seen[len(seen)-1] != id2 {
			t.Errorf("egress program ids during the restart's attach: %v, want %d then %d, never none", seen, id1, id2)
		}
		e = egressOf(t, ns, "ztc0")
		if e.kind() != mode.String() {
			t.Errorf("egress after adoption: %+v, want %v only", e, mode)
		}
		st2 := statusOf(t, dp2, ns)["ztc0"]
		if st2.TC != mode.String() || st2.TCProgramID != id2 || !st2.TCCurrent || st2.TCLinkID != st.TCLinkID {
			t.Errorf("status after adoption: %+v, want program %d on the same attachment as %+v", st2, id2, st)
		}

		// Detach removes both programs; a clsact qdisc ztgate made stays, empty.
		if err := dp2.Detach("ztc0"); err != nil {
			t.Fatal(err)
		}
		if e := egressOf(t, ns, "ztc0"); e.kind() != "" {
			t.Errorf("egress after detach: %+v", e)
		}
		if x := xdpState(t, ns, "ztc0"); x.Attached {
			t.Errorf("xdp after detach: %+v", x)
		}
		if _, err := os.Lstat(filepath.Join(dp2.Dir(), tcPinPrefix+"ztc0")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("tcx pin after detach: %v", err)
		}
		if err := dp2.Detach("ztc0"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("second detach: %v, want not attached", err)
		}

		// A new attachment is of the kind asked for. Uninstall (from the interface's namespace,
		// as the CLI runs it) leaves nothing.
		attachIn(t, dp2, ns, "ztc0")
		if e := egressOf(t, ns, "ztc0"); e.kind() != other.String() {
			t.Fatalf("egress after attaching again: %+v", e)
		}
		if err := inNetns(t, ns, func() error { return Uninstall(cfg.PinDir) }); err != nil {
			t.Fatal(err)
		}
		if e := egressOf(t, ns, "ztc0"); e.kind() != "" {
			t.Errorf("egress after uninstall: %+v", e)
		}
		if x := xdpState(t, ns, "ztc0"); x.Attached {
			t.Errorf("xdp after uninstall: %+v", x)
		}
		if _, err := os.Stat(cfg.PinDir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("pin dir after uninstall: %v", err)
		}
	})
}

// TestTCKeepsForeignQdisc: the clsact fallback uses a clsact qdisc the interface already has, puts
// its filter next to another one, and Detach removes only its own filter.
func TestTCKeepsForeignQdisc(t *testing.T) {
	cfg, ns := tcLab(t, TCModeClsact, "ztq0", "ztq1")
	var other *netlink.BpfFilter
	err := inNetns(t, ns, func() error {
		l, err := netlink.LinkByName("ztq0")
		if err != nil {
			return err
		}
		if err := netlink.QdiscAdd(clsactQdisc(l.Attrs().Index)); err != nil {
			return err
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}}) // TC_ACT_UNSPEC
		if err != nil {
			return err
		}
		defer prog.Close() // the filter keeps it
		other = &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: l.Attrs().Index,
			Parent: netlink.HANDLE_MIN_EGRESS, Handle: 1, Priority: 200, Protocol: unix.ETH_P_ALL},
			Fd: prog.FD(), Name: "other", DirectAction: true}
		return netlink.FilterAdd(other)
	})
	if err != nil {
		t.Fatal(err)
	}
	dp := openDatapath(t, cfg)
	attachIn(t, dp, ns, "ztq0")
	if e := egressOf(t, ns, "ztq0"); e.clsact != tcProgID(t, dp) {
		t.Fatalf("egress: %+v, want our filter", e)
	}
	if err := dp.Detach("ztq0"); err != nil {
		t.Fatal(err)
	}
	err = inNetns(t, ns, func() error {
		l, err := netlink.LinkByName("ztq0")
		if err != nil {
			return err
		}
		fl, err := netlink.FilterList(l, netlink.HANDLE_MIN_EGRESS)
		if err != nil {
			return err
		}
		var names []string
		for _, f := range fl {
			if bf, ok := f.(*netlink.BpfFilter); ok {
				names = append(names, bf.Name)
			}
		}
		if strings.Join(names, ",") != "other" {
			return errors.New("egress filters after detach: " + strings.Join(names, ",") + ", want other")
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// TestTCAfterLayoutMigration: an interface attached by an older agent (only an XDP link, pinned
// in an older layout) ends with both programs once Attach has migrated it.
func TestTCAfterLayoutMigration(t *testing.T) {
	tcModes(t, func(t *testing.T, mode TCMode) {
		cfg, ns := tcLab(t, mode, "ztm0", "ztm1")
		pinOldLayoutLink(t, cfg, ns, "ztm0")
		dp := openDatapath(t, cfg)
		if st := statusOf(t, dp, ns)["ztm0"]; st.TC != "" || st.Layout != 1 {
			t.Fatalf("status before migration: %+v, want an old layout's link without tc", st)
		}
		attachGenericOurs(t, dp, ns, "ztm0", "over a v1 link")
		st := statusOf(t, dp, ns)["ztm0"]
		if st.Layout != LayoutVersion || !st.Current || st.TC != mode.String() || !st.TCCurrent {
			t.Errorf("status after migration: %+v, want both programs ours, tc by %v", st, mode)
		}
		if e := egressOf(t, ns, "ztm0"); e.kind() != mode.String() {
			t.Errorf("egress after migration: %+v", e)
		}
	})
}

// TestTCRepin: a removed tcx link pin is pinned again by the process that holds the link.
func TestTCRepin(t *testing.T) {
	cfg, ns := tcLab(t, TCModeTCX, "ztr0", "ztr1")
	dp := openDatapath(t, cfg)
	attachIn(t, dp, ns, "ztr0")
	pin := filepath.Join(dp.Dir(), tcPinPrefix+"ztr0")
	if ok, err := dp.Repin("ztr0"); ok || err != nil {
		t.Fatalf("repin with both pins in place: %v, %v", ok, err)
	}
	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	if ok, err := dp.Repin("ztr0"); !ok || err != nil {
		t.Fatalf("repin: %v, %v, want pinned again", ok, err)
	}
	if _, err := os.Lstat(pin); err != nil {
		t.Errorf("tcx pin after repin: %v", err)
	}
	if st := statusOf(t, dp, ns)["ztr0"]; st.TC != TCKindTCX || !st.TCCurrent {
		t.Errorf("status after repin: %+v", st)
	}
}

const towardDevicesPolicy = `apiVersion: ztgate/v1
kind: Policy
metadata:
  name: tc-test
spec:
  mode: enforce
  gateway:
    ipv4: [192.168.77.1]
  segments:
    - name: devices
      allow:
        - to: {cidr: 0.0.0.0/0}
          proto: udp
  devices:
    - name: sensor
      mac: "02:00:00:00:77:10"
      ipv4: [192.168.77.10]
      segment: devices
`

// TestTCDropsTowardUnknownDevice: with a policy applied, a real frame sent out of the protected
// interface to a MAC that is no known device is dropped at TC egress (unknown_device, counted in
// the direction toward devices).
func TestTCDropsTowardUnknownDevice(t *testing.T) {
	tcModes(t, func(t *testing.T, mode TCMode) {
		cfg, ns := tcLab(t, mode, "ztd0", "ztd1")
		dp := openDatapath(t, cfg)
		p, err := policy.Parse("tc-test.yaml", []byte(towardDevicesPolicy))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		s, err := policy.Compile(p, policy.CompileOptions{Revision: 1})
		if err != nil {
			t.Fatal(err)
		}
		m, err := maps.New(dp.Objects(), dp.MapSpecs())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		c := dp.Config()
		lim := maps.Limits{Devices: c.MaxDevices, Addrs: c.MaxAddrs, Rules: c.MaxRules, Prefixes: c.MaxPrefixes}
		if err := m.Apply(s, lim); err != nil {
			t.Fatal(err)
		}
		attachIn(t, dp, ns, "ztd0")

		dropped := func() uint64 {
			t.Helper()
			all, err := m.DirCounters()
			if err != nil {
				t.Fatal(err)
			}
			return all[bpf.DirToDevice][bpf.VerdictDrop][bpf.ReasonUnknownDevice].Packets
		}
		var gwMAC net.HardwareAddr
		if err := inNetns(t, ns, func() error {
			ifc, err := net.InterfaceByName("ztd0")
			if err == nil {
				gwMAC = ifc.HardwareAddr
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		gw := frames.Host{MAC: gwMAC, IP: netip.MustParseAddr("192.168.77.1")}
		stranger := frames.Host{MAC: net.HardwareAddr{0x02, 0, 0, 0, 0x77, 0x99}, IP: netip.MustParseAddr("192.168.77.99")}
		payload := []byte("ztgate tc egress test " + randHex(t, 8))
		frame := frames.UDP(gw, stranger, 40000, 9999, payload)

		before := dropped()
		// A frame dropped at egress fails the send with ENOBUFS (NET_XMIT_DROP).
		err = inNetns(t, ns, func() error {
			l, err := netlink.LinkByName("ztd0")
			if err != nil {
				return err
			}
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index, Halen: 6})
		})
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			t.Fatalf("send: %v", err)
		}
		if after := dropped(); after != before+1 {
			t.Errorf("to_device drop/unknown_device: %d -> %d, want one more", before, after)
		}
	})
}

func TestTCModeConfig(t *testing.T) {
	for m, s := range map[TCMode]string{TCModeAuto: "auto", TCModeTCX: "tcx", TCModeClsact: "clsact"} {
		if m.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(m), m.String(), s)
		}
		if p, err := ParseTCMode(s); err != nil || p != m {
			t.Errorf("ParseTCMode(%q) = %v, %v", s, p, err)
		}
	}
	if p, err := ParseTCMode(""); err != nil || p != TCModeAuto {
		t.Errorf("ParseTCMode(\"\") = %v, %v, want auto", p, err)
	}
	if _, err := ParseTCMode("ingress"); err == nil || !strings.Contains(err.Error(), "auto, tcx or clsact") {
		t.Errorf("ParseTCMode(ingress): %v", err)
	}
	cfg := DefaultConfig()
	cfg.TCMode = TCMode(7)
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "tc mode tcmode(7)") {
		t.Errorf("Open with tc mode 7: %v, want an error about the tc mode", err)
	}
	if d := (Config{}).withDefaults(); d.TCMode != TCModeAuto {
		t.Errorf("default tc mode %v, want auto", d.TCMode)
	}
}

// TestTCXFeature: tcx links are an optional feature (a kernel without them gets the clsact
// fallback, not a refusal), and this kernel has them.
func TestTCXFeature(t *testing.T) {
	requirePriv(t)
	fs, err := Features()
	if err != nil {
		t.Fatal(err)
	}
	var tcx *Feature
	for i := range fs {
		if strings.HasPrefix(fs[i].Name, "tcx bpf_link") {
			tcx = &fs[i]
		}
	}
	if tcx == nil || !tcx.Optional {
		t.Fatalf("features: tcx bpf_link missing or not optional: %+v", tcx)
	}
	if err := tcx.Probe(); err != nil {
		t.Errorf("tcx probe: %v", err)
	}
	missing := []Feature{{Name: "tcx bpf_link", Optional: true, Probe: func() error { return ebpf.ErrNotSupported }}}
	if err := CheckFeatures(missing); err != nil {
		t.Errorf("a missing optional feature fails the check: %v", err)
	}
	missing[0].Probe = func() error { return errors.New("boom") }
	if err := CheckFeatures(missing); err != nil {
		t.Errorf("an optional feature that cannot be probed fails the check: %v", err)
	}
	missing[0].Optional = false
	if err := CheckFeatures(missing); err == nil {
		t.Error("a missing required feature passes the check")
	}
}

// TestTCUndoneWhenXDPFails: when XDP cannot be attached, the TC attachment the same Attach made
// is taken back: a failed Attach leaves nothing new behind.
func TestTCUndoneWhenXDPFails(t *testing.T) {
	tcModes(t, func(t *testing.T, mode TCMode) {
		requirePriv(t)
		cfg := testConfig(t)
		cfg.Mode, cfg.TCMode = ModeNative, mode
		ns := newNetns(t) // its loopback interface has no native XDP
		dp := openDatapath(t, cfg)
		err := inNetns(t, ns, func() error { _, err := dp.Attach("lo"); return err })
		if err == nil || !strings.Contains(err.Error(), "native mode") {
			t.Fatalf("native attach on a dummy interface: %v, want it refused", err)
		}
		if e := egressOf(t, ns, "lo"); e.kind() != "" || e.qdisc {
			t.Errorf("egress after the failed attach: %+v, want nothing (not even the clsact qdisc it made)", e)
		}
		if _, err := os.Lstat(filepath.Join(dp.Dir(), tcPinPrefix+"lo")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("tcx pin after the failed attach: %v", err)
		}
		if st := statusOf(t, dp, ns); len(st) != 0 {
			t.Errorf("status after the failed attach: %+v", st)
		}
	})
}
