package loader

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bpf"
)

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("no program id")
	}
	return id
}

func mapID(t *testing.T, m *ebpf.Map) ebpf.MapID {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("no map id")
	}
	return id
}

func statusOf(t *testing.T, dp *Datapath, ns netns.NsHandle) map[string]Interface {
	t.Helper()
	var st []Interface
	if err := inNetns(t, ns, func() (err error) { st, err = dp.Status(); return err }); err != nil {
		t.Fatalf("status: %v", err)
	}
	out := map[string]Interface{}
	for _, s := range st {
		if s.Err != "" {
			t.Errorf("status of %s: %s", s.Name, s.Err)
		}
		out[s.Name] = s
	}
	return out
}

// sendFrame writes a raw Ethernet frame out of ifname in ns (it arrives on the veth peer).
func sendFrame(t *testing.T, ns netns.NsHandle, ifname string, frame []byte) {
	t.Helper()
	err := inNetns(t, ns, func() error {
		l, err := netlink.LinkByName(ifname)
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
	if err != nil {
		t.Fatalf("send frame on %s: %v", ifname, err)
	}
}

func counter(t *testing.T, dp *Datapath, v bpf.Verdict, r bpf.Reason) uint64 {
	t.Helper()
	var per []bpf.Counter
	if err := dp.Objects().ZtCounters.Lookup(bpf.CounterIndex(bpf.DirFromDevice, v, r), &per); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range per {
		n += c.Packets
	}
	return n
}

// TestLifecycle: open, attach native and generic, close (enforcement stays), re-open from a second
// Datapath (a restart) that reuses the pinned maps and adopts the links with link.Update, detach,
// uninstall.
func TestLifecycle(t *testing.T) {
	requirePriv(t)
	cfg := testConfig(t)
	ns := newNetns(t)
	addVeth(t, ns, "ztn0", "ztn1") // native: ztn0
	addVeth(t, ns, "ztg0", "ztg1") // forced generic: ztg0

	dp1 := openDatapath(t, cfg)
	dir := LayoutDir(cfg.PinDir)
	if dp1.Dir() != dir || !strings.HasSuffix(dir, "/v5") {
		t.Fatalf("Dir() = %q, want %q ending in /v5", dp1.Dir(), dir)
	}
	for _, name := range []string{bpf.ZtgateMapZtActive, bpf.ZtgateMapZtCfg, bpf.ZtgateMapZtDevices,
		bpf.ZtgateMapZtAddrs, bpf.ZtgateMapZtPrefixes, bpf.ZtgateMapZtRules, bpf.ZtgateMapZtBarrier,
		bpf.ZtgateMapZtFrags, bpf.ZtgateMapZtCounters, bpf.ZtgateMapZtDevstats, bpf.ZtgateMapZtEvstats,
		bpf.ZtgateMapZtEventLimit, bpf.ZtgateMapZtEvents} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("map %s not pinned: %v", name, err)
		}
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	if got := dp1.Objects().ZtDevstats.MaxEntries(); got != uint32(ncpu*(cfg.MaxDevices+1)) {
		t.Errorf("zt_devstats max_entries = %d, want a row of %d per CPU (%d CPUs)", got, cfg.MaxDevices+1, ncpu)
	}
	if got := dp1.Objects().ZtEvents.MaxEntries(); got != uint32(cfg.RingBytes) {
		t.Errorf("zt_events max_entries = %d, want %d", got, cfg.RingBytes)
	}

	var mode Mode
	attach := func(dp *Datapath, ifname string, want Mode) Mode {
		t.Helper()
		var m Mode
		err := inNetns(t, ns, func() (err error) { m, err = dp.AttachMode(ifname, want); return err })
		if err != nil {
			t.Fatalf("attach %s (%v): %v", ifname, want, err)
		}
		return m
	}
	if mode = attach(dp1, "ztn0", ModeAuto); mode != ModeNative {
		t.Errorf("ztn0: mode %v, want native", mode)
	}
	if mode = attach(dp1, "ztg0", ModeGeneric); mode != ModeGeneric {
		t.Errorf("ztg0: mode %v, want generic", mode)
	}
	id1 := progID(t, dp1.Program())
	st := statusOf(t, dp1, ns)
	if len(st) != 2 || st["ztn0"].Mode != ModeNative || st["ztg0"].Mode != ModeGeneric ||
		!st["ztn0"].Current || !st["ztg0"].Current || st["ztn0"].ProgramID != id1 {
		t.Fatalf("status after attach: %+v", st)
	}
	var names []string
	if err := inNetns(t, ns, func() (err error) { names, err = dp1.Interfaces(); return err }); err != nil ||
		strings.Join(names, ",") != "ztg0,ztn0" {
		t.Errorf("Interfaces() = %v, %v", names, err)
	}
	if x := xdpState(t, ns, "ztn0"); !x.Attached || x.ProgId != uint32(id1) {
		t.Fatalf("ztn0 xdp: %+v, want program %d", x, id1)
	}
	linkN, linkG := st["ztn0"].LinkID, st["ztg0"].LinkID

	// The program really runs on the interface: with no policy installed, a frame is dropped
	// with reason no_policy (fail closed).
	frame := make([]byte, 60)
	copy(frame, []byte{0x02, 0, 0, 0, 0, 0xaa, 0x02, 0, 0, 0, 0, 0x01})
	binary.BigEndian.PutUint16(frame[12:], 0x0800)
	before := counter(t, dp1, bpf.VerdictDrop, bpf.ReasonNoPolicy)
	sendFrame(t, ns, "ztn1", frame)
	// Native XDP on veth runs in the peer's NAPI poll: wait for it.
	deadline := time.Now().Add(5 * time.Second)
	after := counter(t, dp1, bpf.VerdictDrop, bpf.ReasonNoPolicy)
	for after == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		after = counter(t, dp1, bpf.VerdictDrop, bpf.ReasonNoPolicy)
	}
	if after <= before { // the peer's own IPv6 chatter counts too
		t.Errorf("drop/no_policy counter: %d -> %d, want it to grow", before, after)
	}

	maps1 := map[string]ebpf.MapID{
		"zt_devices": mapID(t, dp1.Objects().ZtDevices), "zt_counters": mapID(t, dp1.Objects().ZtCounters),
	}
	// Close: the process goes away, the pins keep enforcement in place.
	if err := dp1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dp1.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if x := xdpState(t, ns, "ztn0"); !x.Attached || x.ProgId != uint32(id1) {
		t.Fatalf("after close ztn0 xdp: %+v, want still program %d", x, id1)
	}

	// Restart: a second Datapath reuses the pinned maps and adopts the links.
	dp2 := openDatapath(t, cfg)
	if got := mapID(t, dp2.Objects().ZtDevices); got != maps1["zt_devices"] {
		t.Errorf("zt_devices: map id %d after re-open, want the pinned %d", got, maps1["zt_devices"])
	}
	if got := mapID(t, dp2.Objects().ZtCounters); got != maps1["zt_counters"] {
		t.Errorf("zt_counters: map id %d after re-open, want the pinned %d", got, maps1["zt_counters"])
	}
	id2 := progID(t, dp2.Program())
	if id2 == id1 {
		t.Fatal("re-open loaded the same program id")
	}
	if st := statusOf(t, dp2, ns); st["ztn0"].Current || st["ztn0"].ProgramID != id1 {
		t.Errorf("before adoption: %+v, want program %d, not current", st["ztn0"], id1)
	}
	// Config.Mode is auto: the adopted generic link stays generic (no detach-then-attach).
	if mode = attach(dp2, "ztn0", ModeAuto); mode != ModeNative {
		t.Errorf("adopted ztn0: mode %v, want native", mode)
	}
	if mode = attach(dp2, "ztg0", ModeAuto); mode != ModeGeneric {
		t.Errorf("adopted ztg0: mode %v, want generic", mode)
	}
	st = statusOf(t, dp2, ns)
	if st["ztn0"].LinkID != linkN || st["ztg0"].LinkID != linkG {
		t.Errorf("links re-created instead of adopted: %+v (want link ids %d, %d)", st, linkN, linkG)
	}
	if !st["ztn0"].Current || st["ztn0"].ProgramID != id2 {
		t.Errorf("adopted ztn0 runs program %d, want %d", st["ztn0"].ProgramID, id2)
	}
	if x := xdpState(t, ns, "ztn0"); x.ProgId != uint32(id2) || x.AttachMode != 1 {
		t.Errorf("ztn0 xdp after update: %+v, want native program %d", x, id2)
	}
	// Counters survived the restart (same pinned map).
	if n := counter(t, dp2, bpf.VerdictDrop, bpf.ReasonNoPolicy); n < after {
		t.Errorf("counter after restart = %d, want at least %d", n, after)
	}
	// Attach again in the same process: an update of the link it holds.
	if mode = attach(dp2, "ztn0", ModeAuto); mode != ModeNative {
		t.Errorf("re-attach ztn0: mode %v", mode)
	}

	// Detach ztg0: program gone, pin gone; a second detach says not attached.
	if err := dp2.Detach("ztg0"); err != nil {
		t.Fatal(err)
	}
	if x := xdpState(t, ns, "ztg0"); x.Attached {
		t.Errorf("ztg0 still has xdp after detach: %+v", x)
	}
	if _, err := os.Stat(filepath.Join(dir, "link-ztg0")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("link pin of ztg0 after detach: %v", err)
	}
	if err := dp2.Detach("ztg0"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second detach: %v, want ErrNotExist", err)
	}

	// Uninstall: enforcement stops even though dp2 still holds the link fd; everything is gone.
	if err := Uninstall(cfg.PinDir); err != nil {
		t.Fatal(err)
	}
	if x := xdpState(t, ns, "ztn0"); x.Attached {
		t.Errorf("ztn0 still has xdp after uninstall: %+v", x)
	}
	if _, err := os.Stat(cfg.PinDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pin dir after uninstall: %v", err)
	}
	if err := Uninstall(cfg.PinDir); err != nil {
		t.Errorf("second uninstall: %v", err)
	}
	if err := dp2.Close(); err != nil {
		t.Errorf("close after uninstall: %v", err)
	}
}

// genericLab returns a test configuration in generic mode and a namespace with the veth pair a-b.
func genericLab(t *testing.T, a, b string) (Config, netns.NsHandle) {
	t.Helper()
	requirePriv(t)
	cfg := testConfig(t)
	cfg.Mode = ModeGeneric
	ns := newNetns(t)
	addVeth(t, ns, a, b)
	return cfg, ns
}

// TestAttachStaleLink: the interface of a pinned link is deleted and re-created; Attach replaces
// the defunct link instead of failing.
func TestAttachStaleLink(t *testing.T) {
	cfg, ns := genericLab(t, "zts0", "zts1")
	dp := openDatapath(t, cfg)
	if err := inNetns(t, ns, func() error { _, err := dp.Attach("zts0"); return err }); err != nil {
		t.Fatal(err)
	}
	delLink(t, ns, "zts0")
	addVeth(t, ns, "zts0", "zts1")
	attachGenericOurs(t, dp, ns, "zts0", "after re-creating the interface")
}

// attachGenericOurs attaches dp to ifname in ns and checks that the interface runs dp's program
// in generic mode.
func attachGenericOurs(t *testing.T, dp *Datapath, ns netns.NsHandle, ifname, what string) {
	t.Helper()
	var mode Mode
	if err := inNetns(t, ns, func() (err error) { mode, err = dp.Attach(ifname); return err }); err != nil {
		t.Fatalf("attach %s: %v", what, err)
	}
	if mode != ModeGeneric {
		t.Errorf("attach %s: mode %v, want generic", what, mode)
	}
	if x := xdpState(t, ns, ifname); !x.Attached || x.ProgId != uint32(progID(t, dp.Program())) {
		t.Errorf("attach %s: %s xdp %+v, want our program %d", what, ifname, x, progID(t, dp.Program()))
	}
}

// pinOldLayoutMap makes pinDir/v1 with a map pinned as name in it, as a v1 agent leaves it, and
// returns the directory.
func pinOldLayoutMap(t *testing.T, pinDir, name string) string {
	t.Helper()
	v1 := filepath.Join(pinDir, "v1")
	if err := os.MkdirAll(v1, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(v1, name)); err == nil {
		return v1 // pinned by an earlier call
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close() // the pin keeps it
	if err := m.Pin(filepath.Join(v1, name)); err != nil {
		t.Fatal(err)
	}
	return v1
}

// pinOldLayoutLink attaches an XDP_DROP program to ifname (generic mode) through a link pinned
// in pinDir/v1 next to a v1 map, as a v1 agent leaves it, and returns the directory and the
// link's id.
func pinOldLayoutLink(t *testing.T, cfg Config, ns netns.NsHandle, ifname string) (string, link.ID) {
	t.Helper()
	old, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}}) // XDP_DROP
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close() // the link keeps it
	v1 := pinOldLayoutMap(t, cfg.PinDir, bpf.ZtgateMapZtEventLimit)
	var linkID link.ID
	err = inNetns(t, ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: old, Interface: ifc.Index, Flags: link.XDPGenericMode})
		if err != nil {
			return err
		}
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			return err
		}
		linkID = info.ID
		return l.Pin(filepath.Join(v1, linkPinPrefix+ifname))
	})
	if err != nil {
		t.Fatal(err)
	}
	return v1, linkID
}

// TestLayoutMigration: a link pinned by an older layout (v1) is taken over with link.Update (the
// same link, so the interface never runs without a program), its pin moves to the current
// layout, and the old layout's directory, left without links, is removed with its map pins.
func TestLayoutMigration(t *testing.T) {
	cfg, ns := genericLab(t, "ztm0", "ztm1")
	v1, linkID := pinOldLayoutLink(t, cfg, ns, "ztm0")

	dp := openDatapath(t, cfg)
	attachGenericOurs(t, dp, ns, "ztm0", "over a v1 link (generic: the adopted link's mode)")
	l, err := link.LoadPinnedLink(filepath.Join(dp.Dir(), "link-ztm0"), nil)
	if err != nil {
		t.Fatalf("link not pinned in the current layout: %v", err)
	}
	defer l.Close()
	if info, err := l.Info(); err != nil || info.ID != linkID {
		t.Errorf("pinned link %+v (%v), want the v1 link %d updated in place", info, err, linkID)
	}
	if _, err := os.Stat(v1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("v1 directory left behind: %v", err)
	}
}

// TestOldLayoutLinkStatusDetach: links an older layout pinned and no Attach migrated show in
// Status (with their layout, not ours) and Detach removes them; the old layout's directory goes
// with its last link.
func TestOldLayoutLinkStatusDetach(t *testing.T) {
	cfg, ns := genericLab(t, "ztm0", "ztm1")
	v1, linkID := pinOldLayoutLink(t, cfg, ns, "ztm0")
	pinOldLayoutLink(t, cfg, ns, "ztm1")
	dp := openDatapath(t, cfg)
	var st []Interface
	err := inNetns(t, ns, func() error {
		var err error
		st, err = dp.Status()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Name != "ztm0" || st[0].Layout != 1 || st[0].Current || st[0].LinkID != linkID ||
		st[0].Ifindex == 0 || st[0].Mode != ModeGeneric || st[1].Name != "ztm1" || st[1].Layout != 1 {
		t.Fatalf("Status() = %+v, want ztm0's v1 link %d, generic, not ours, and ztm1's", st, linkID)
	}
	if err := dp.Detach("ztm0"); err != nil {
		t.Fatalf("detach a v1 link: %v", err)
	}
	if x := xdpState(t, ns, "ztm0"); x.Attached {
		t.Errorf("ztm0 still runs program %d after Detach", x.ProgId)
	}
	if x := xdpState(t, ns, "ztm1"); !x.Attached {
		t.Error("detaching ztm0 detached ztm1")
	}
	if _, err := os.Stat(filepath.Join(v1, linkPinPrefix+"ztm1")); err != nil {
		t.Fatalf("v1 lost ztm1's link pin when ztm0's was detached: %v", err)
	}
	if err := dp.Detach("ztm1"); err != nil {
		t.Fatalf("detach the last v1 link: %v", err)
	}
	if _, err := os.Stat(v1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("v1 directory left after its last link was detached: %v", err)
	}
	if st, err := dp.Status(); err != nil || len(st) != 0 {
		t.Errorf("Status() after Detach = %+v, %v, want nothing", st, err)
	}
	if err := dp.Detach("ztm0"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second Detach: %v, want not attached", err)
	}
}

// TestOldLayoutWithoutLinks: Open removes an older layout's directory that holds no link (its
// maps serve no program of the current layout), and only that.
func TestOldLayoutWithoutLinks(t *testing.T) {
	requirePriv(t)
	cfg := testConfig(t)
	v1 := pinOldLayoutMap(t, cfg.PinDir, bpf.ZtgateMapZtEvents)
	dp := openDatapath(t, cfg)
	if _, err := os.Stat(v1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("link-less v1 directory left: %v", err)
	}
	if _, err := os.Stat(dp.Dir()); err != nil {
		t.Errorf("current layout: %v", err)
	}
}

// TestIncompatiblePinnedMap: a pinned map with another capacity is not silently replaced.
func TestIncompatiblePinnedMap(t *testing.T) {
	requirePriv(t)
	cfg := testConfig(t)
	dp := openDatapath(t, cfg)
	dp.Close()
	cfg.FragEntries *= 2
	_, err := Open(cfg)
	if err == nil {
		t.Fatal("open with a different frag capacity succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"load datapath", "does not match the configuration", "zt_frags", "MaxEntries"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if !errors.Is(err, ebpf.ErrMapIncompatible) {
		t.Errorf("error does not wrap ErrMapIncompatible: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{name: "ring not power of two", mod: func(c *Config) { c.RingBytes = 3 << 12 }, want: "ring bytes"},
		{name: "ring below page", mod: func(c *Config) { c.RingBytes = 1024 }, want: "ring bytes"},
		{name: "relative pin dir", mod: func(c *Config) { c.PinDir = "ztgate" }, want: "absolute"},
		{name: "negative devices", mod: func(c *Config) { c.MaxDevices = -1 }, want: "max devices"},
		{name: "bad mode", mod: func(c *Config) { c.Mode = ModeNone }, want: "attach mode"},
		{name: "event limit not power of two", mod: func(c *Config) { c.EventLimitEntries = 1000 },
			want: "event limit entries"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.mod(&cfg)
			_, err := Open(cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "load datapath: ") {
				t.Errorf("Open: %v, want an error about %q", err, c.want)
			}
		})
	}
	if d := (Config{}).withDefaults(); d.PinDir != DefaultPinDir || d.MaxDevices != 4096 || d.RingBytes != 1<<20 ||
		d.EventsEnabled {
		t.Errorf("defaults: %+v", d)
	}
}

func TestUninstallRefuses(t *testing.T) {
	if err := Uninstall("relative/dir"); err == nil {
		t.Error("uninstall of a relative path succeeded")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(dir); err == nil || !strings.Contains(err.Error(), "not on a bpf filesystem") {
		t.Errorf("uninstall of a non-bpffs dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "keep")); err != nil {
		t.Errorf("uninstall touched a non-bpffs dir: %v", err)
	}
	if err := Uninstall(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("uninstall of a missing dir: %v", err)
	}
}

func TestModeString(t *testing.T) {
	for m, s := range map[Mode]string{ModeAuto: "auto", ModeNative: "native", ModeGeneric: "generic", ModeNone: "none"} {
		if m.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(m), m.String(), s)
		}
		if s != "none" {
			if p, err := ParseMode(s); err != nil || p != m {
				t.Errorf("ParseMode(%q) = %v, %v", s, p, err)
			}
		}
	}
}

// TestVerifierErrorIncludesLog: a program the verifier rejects is reported with its log.
func TestVerifierErrorIncludesLog(t *testing.T) {
	requirePriv(t)
	_, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R0, asm.R3), // R3 is not initialised
			asm.Return(),
		},
	})
	if err == nil {
		t.Fatal("verifier accepted a read of an uninitialised register")
	}
	msg := describeLoadError(err, "/x").Error()
	if !strings.Contains(msg, "verifier rejected the program") || !strings.Contains(msg, "verifier log:") ||
		!strings.Contains(msg, "R3 !read_ok") {
		t.Errorf("error without the verifier log: %s", msg)
	}
}

// TestVerifierBudget keeps the program well inside the verifier's 1M-instruction limit: what the
// verifier walks grows with every path a change adds (inlining the rule matcher into the entry
// function, for one, more than quadrupled it).
func TestVerifierBudget(t *testing.T) {
	requirePriv(t)
	dp := openDatapath(t, testConfig(t))
	for _, p := range []struct {
		name   string
		prog   *ebpf.Program
		budget uint32
	}{{"zt_xdp", dp.Program(), 220000}, {"zt_tc", dp.Objects().ZtTc, 220000}} {
		info, err := p.prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		n, ok := info.VerifiedInstructions()
		if !ok {
			t.Fatal("kernel reports no verified instruction count (Linux >= 5.16 does)")
		}
		if n > p.budget {
			t.Errorf("%s: the verifier walked %d instructions, budget %d", p.name, n, p.budget)
		}
		t.Logf("%s: verified instructions: %d", p.name, n)
	}
}
