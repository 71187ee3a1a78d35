package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/maps/gwmacs"
)

// Mode is an XDP attach mode.
type Mode int

const (
	// ModeAuto asks for native mode and falls back to generic mode (a request, never reported).
	ModeAuto Mode = iota
	// ModeNative is driver mode (XDP_FLAGS_DRV_MODE): the program runs in the driver's receive path.
	ModeNative
	// ModeGeneric is skb mode (XDP_FLAGS_SKB_MODE): the program runs after the skb is built.
	ModeGeneric
	// ModeNone: no XDP program is attached (a pinned link whose interface is gone, for instance).
	ModeNone
	// ModeUnknown: attached in a mode ztgate does not use (offload, several programs).
	ModeUnknown
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	case ModeNone:
		return "none"
	case ModeUnknown:
		return "unknown"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// ParseMode parses auto, native (or driver) and generic (or skb).
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return ModeAuto, nil
	case "native", "driver", "drv":
		return ModeNative, nil
	case "generic", "skb":
		return ModeGeneric, nil
	}
	return ModeAuto, fmt.Errorf("xdp mode %q: must be auto, native or generic", s)
}

// linkPinPrefix names the pin of the XDP link of an interface: <dir>/link-<ifname>.
const linkPinPrefix = "link-"

func (d *Datapath) linkPath(ifname string) string {
	return filepath.Join(d.dir, linkPinPrefix+ifname)
}

// findLinkPin is where ifname's link is pinned: the current layout's path, else the newest
// older layout that pins one (a link not migrated yet), with its layout version. When no pin
// exists it returns the current path.
func (d *Datapath) findLinkPin(ifname string) (string, int) {
	path := d.linkPath(ifname)
	if _, err := os.Lstat(path); err == nil {
		return path, LayoutVersion
	}
	for v := LayoutVersion - 1; v >= 1; v-- {
		old := filepath.Join(layoutDir(d.cfg.PinDir, v), linkPinPrefix+ifname)
		if _, err := os.Lstat(old); err == nil {
			return old, v
		}
	}
	return path, LayoutVersion
}

func checkIfname(ifname string) error {
	if ifname == "" || len(ifname) >= unix.IFNAMSIZ || strings.ContainsAny(ifname, "/ \x00") ||
		ifname == "." || ifname == ".." {
		return fmt.Errorf("invalid interface name %q", ifname)
	}
	return nil
}

// Attach runs the programs on ifname, XDP in the mode of Config.Mode. See AttachMode.
func (d *Datapath) Attach(ifname string) (Mode, error) {
	return d.AttachMode(ifname, d.cfg.Mode)
}

// AttachMode runs the programs on ifname (looked up in the network namespace of the calling
// thread): zt_tc at TC egress for the frames leaving toward devices (see attachTC), then zt_xdp
// for the frames arriving from them. It returns the XDP mode in force, read back from the kernel.
//
// If an XDP link is pinned for ifname (a previous process, or an earlier Attach), it is adopted
// and switched to this Datapath's program with link.Update: there is no instant without a
// program. An adopted link keeps its mode whatever want says; Detach first to change the mode.
// Otherwise a new link is created in mode want (ModeAuto: native, else generic) and pinned. The
// TC attachment is adopted the same way, and keeps its kind (tcx or clsact) whatever
// Config.TCMode says.
func (d *Datapath) AttachMode(ifname string, want Mode) (Mode, error) {
	mode, err := d.attach(ifname, want)
	if err != nil {
		return ModeNone, fmt.Errorf("attach %s: %w", ifname, err)
	}
	return mode, nil
}

func (d *Datapath) attach(ifname string, want Mode) (Mode, error) {
	if err := checkIfname(ifname); err != nil {
		return ModeNone, err
	}
	if want != ModeAuto && want != ModeNative && want != ModeGeneric {
		return ModeNone, fmt.Errorf("cannot attach in mode %v", want)
	}
	nlink, err := netlink.LinkByName(ifname)
	if err != nil {
		return ModeNone, fmt.Errorf("look up interface: %w", err)
	}
	ifindex := nlink.Attrs().Index

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ModeNone, errors.New("datapath closed")
	}
	unlock, err := lockDir(d.cfg.PinDir)
	if err != nil {
		return ModeNone, err
	}
	defer unlock()

	// The interface's MACs first: frames to them are the gateway's, also under this program.
	if err := gwmacs.AddInterface(d.objs.ZtGwmacs, nlink); err != nil {
		return ModeNone, err
	}
	// TC egress before XDP: between the two, the interface errs on the closed side. With the
	// new TC program and no (or the previous) XDP program, every frame toward a device is
	// checked, and only replies to flows that no XDP program of this layout opened yet are
	// dropped; the other order would let frames toward devices through unchecked, which a
	// policy with from: rules must never do. On an adoption both are switched in place, so
	// neither direction is ever without a program.
	_, undoTC, err := d.attachTC(ifname, ifindex)
	if err != nil {
		return ModeNone, fmt.Errorf("tc egress: %w", err)
	}
	d.rememberNS(ifname)
	// An XDP failure takes back a TC attachment this call made (an adopted one stays): a failed
	// Attach leaves nothing new behind.
	failed := func(err error) (Mode, error) {
		if undoTC != nil {
			undoTC()
		}
		return ModeNone, err
	}
	path := d.linkPath(ifname)
	l, adopted, err := d.adopt(ifname, ifindex, path)
	if err != nil {
		return failed(err)
	}
	if !adopted {
		if l, adopted, err = d.migrate(ifname, ifindex, path); err != nil {
			return failed(err)
		}
	}
	requested := ModeNone
	if !adopted {
		if l, requested, err = d.attachNew(ifindex, want); err != nil {
			return failed(err)
		}
		if err := l.Pin(path); err != nil {
			l.Close() // the only reference: this detaches the program again
			return failed(fmt.Errorf("pin link: %w", err))
		}
	}
	if old, ok := d.links[ifname]; ok && old != l {
		old.Close()
	}
	d.links[ifname] = l

	mode, _, err := xdpMode(ifindex)
	if err != nil || mode == ModeNone {
		// The link is in place; only the read-back failed. A new link is in the mode asked for.
		if requested != ModeNone {
			return requested, nil
		}
		if err == nil {
			err = errors.New("no xdp program reported on the interface")
		}
		return ModeNone, fmt.Errorf("read back xdp mode: %w", err)
	}
	return mode, nil
}

// adopt takes over the link pinned for ifname, if any, and switches it to our program.
// A pinned link whose interface is gone (the kernel detached it) is unpinned and not adopted.
func (d *Datapath) adopt(ifname string, ifindex int, path string) (link.Link, bool, error) {
	l, ok := d.links[ifname]
	if !ok {
		var err error
		l, err = link.LoadPinnedLink(path, nil)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("load pinned link %s: %w", path, err)
		}
	}
	release := func() {
		if !ok {
			l.Close()
		}
	}
	linkIfindex, err := xdpLinkIfindex(l)
	if err != nil {
		release()
		return nil, false, err
	}
	switch {
	case linkIfindex == 0:
		// Defunct: the interface was removed (and maybe re-created) since the link was made.
		l.Close()
		delete(d.links, ifname)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, false, fmt.Errorf("remove stale link pin: %w", err)
		}
		return nil, false, nil
	case linkIfindex != ifindex:
		release()
		return nil, false, fmt.Errorf("pinned link %s is attached to ifindex %d, not to %s (ifindex %d): "+
			"detach it first", path, linkIfindex, ifname, ifindex)
	}
	if err := l.Update(d.objs.ZtXdp); err != nil {
		release()
		return nil, false, fmt.Errorf("update pinned link %s to the new program: %w", path, err)
	}
	return l, true, nil
}

// migrate adopts the link an older layout pinned for ifname, if any: adopt switches it to our
// program, then its pin moves to path (the current layout). An older layout directory left
// without links is removed (best effort: Open sweeps them again).
func (d *Datapath) migrate(ifname string, ifindex int, path string) (link.Link, bool, error) {
	for v := LayoutVersion - 1; v >= 1; v-- {
		dir := layoutDir(d.cfg.PinDir, v)
		old := filepath.Join(dir, linkPinPrefix+ifname)
		l, adopted, err := d.adopt(ifname, ifindex, old)
		if err != nil {
			return nil, false, fmt.Errorf("migrate from layout v%d: %w", v, err)
		}
		if !adopted {
			_ = removeOldLayout(dir) // a defunct link pin may have been its last
			continue
		}
		if err := l.Pin(path); err != nil {
			// The interface runs our program already; the link stays pinned where it was and
			// the next Attach moves it.
			l.Close()
			return nil, false, fmt.Errorf("migrate from layout v%d: pin link: %w", v, err)
		}
		_ = os.Remove(old) // Pin renamed it; nothing to do if it is gone
		_ = removeOldLayout(dir)
		return l, true, nil
	}
	return nil, false, nil
}

// removeOldLayout removes an older layout's pin directory once no link (XDP or tcx) is pinned in it: what is
// left are map pins, which no program of the current layout uses. A missing directory is fine.
func removeOldLayout(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if isLinkPin(e.Name()) {
			return nil
		}
	}
	return os.RemoveAll(dir)
}

// attachNew creates an XDP link in mode want (ModeAuto: native, else generic).
func (d *Datapath) attachNew(ifindex int, want Mode) (link.Link, Mode, error) {
	try := func(m Mode) (link.Link, error) {
		flags := link.XDPDriverMode
		if m == ModeGeneric {
			flags = link.XDPGenericMode
		}
		return link.AttachXDP(link.XDPOptions{Program: d.objs.ZtXdp, Interface: ifindex, Flags: flags})
	}
	if want != ModeAuto {
		l, err := try(want)
		if err != nil {
			return nil, ModeNone, fmt.Errorf("%v mode: %w", want, err)
		}
		return l, want, nil
	}
	l, nerr := try(ModeNative)
	if nerr == nil {
		return l, ModeNative, nil
	}
	l, gerr := try(ModeGeneric)
	if gerr != nil {
		return nil, ModeNone, fmt.Errorf("native mode: %v; generic mode: %w", nerr, gerr)
	}
	return l, ModeGeneric, nil
}

func xdpLinkIfindex(l link.Link) (int, error) {
	info, err := l.Info()
	if err != nil {
		return 0, fmt.Errorf("link info: %w", err)
	}
	xi := info.XDP()
	if xi == nil {
		return 0, fmt.Errorf("link %d is a %v link, not xdp", info.ID, info.Type)
	}
	return int(xi.Ifindex), nil
}

// xdpMode reads the XDP attach mode and program id of ifindex from rtnetlink.
func xdpMode(ifindex int) (Mode, ebpf.ProgramID, error) {
	nlink, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return ModeNone, 0, err
	}
	x := nlink.Attrs().Xdp
	if x == nil || !x.Attached {
		return ModeNone, 0, nil
	}
	id := ebpf.ProgramID(x.ProgId)
	switch x.AttachMode {
	case nl.XDP_ATTACHED_DRV:
		return ModeNative, id, nil
	case nl.XDP_ATTACHED_SKB:
		return ModeGeneric, id, nil
	}
	return ModeUnknown, id, nil
}

// Detach detaches both programs from ifname and removes the links' pins: enforcement on ifname
// stops. It acts on the pins (and on ztgate's clsact filter), so it also detaches what another
// process attached. It returns an error wrapping fs.ErrNotExist when nothing is attached to
// ifname through this pin dir.
func (d *Datapath) Detach(ifname string) error {
	if err := d.detach(ifname); err != nil {
		return fmt.Errorf("detach %s: %w", ifname, err)
	}
	return nil
}

func (d *Datapath) detach(ifname string) error {
	if err := checkIfname(ifname); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("datapath closed")
	}
	unlock, err := lockDir(d.cfg.PinDir)
	if err != nil {
		return err
	}
	defer unlock()

	// XDP first, the reverse of Attach: in between, frames toward devices are still checked.
	xdp, err := d.detachXDP(ifname)
	if err != nil {
		return err
	}
	tc, err := d.detachTC(ifname)
	if err != nil {
		return fmt.Errorf("tc egress: %w", err)
	}
	if !xdp && !tc {
		return fmt.Errorf("not attached: %w", fs.ErrNotExist)
	}
	return nil
}

// detachXDP detaches and unpins ifname's XDP link and reports whether there was one.
func (d *Datapath) detachXDP(ifname string) (bool, error) {
	path, version := d.linkPath(ifname), LayoutVersion
	l, ok := d.links[ifname]
	if !ok {
		// Not adopted by this process: pinned by a previous one, maybe under an older layout.
		path, version = d.findLinkPin(ifname)
		var err error
		l, err = link.LoadPinnedLink(path, nil)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("load pinned link %s: %w", path, err)
		}
	}
	delete(d.links, ifname)
	defer l.Close()
	if err := l.Detach(); err != nil {
		return true, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return true, fmt.Errorf("unpin link: %w", err)
	}
	if version != LayoutVersion {
		_ = removeOldLayout(filepath.Dir(path)) // its maps go with its last link
	}
	return true, nil
}

// Interface is the state of one interface the datapath is attached to (a pinned XDP link, and
// its TC egress attachment: a pinned tcx link or ztgate's clsact filter).
type Interface struct {
	Name      string         // from the pin name link-<Name>
	Ifindex   int            // 0 when the interface is gone (the kernel detached the link)
	Mode      Mode           // read back from rtnetlink: native, generic, none or unknown
	LinkID    link.ID        // the pinned XDP link
	ProgramID ebpf.ProgramID // program the link runs
	Current   bool           // the link runs this Datapath's program (false: not adopted yet)
	Layout    int            // the layout version whose directory pins the link (older: not migrated yet)
	Err       string         // why the state could not be read, if it could not

	// The program toward devices at TC egress.
	TC          string         // TCKindTCX, TCKindClsact, or "" when none is attached
	TCLinkID    link.ID        // the pinned tcx link (0 for clsact)
	TCProgramID ebpf.ProgramID // program the tcx link or ztgate's clsact filter runs
	TCCurrent   bool           // it is this Datapath's TC program (false: not adopted yet)
}

// Status lists the interfaces with a pinned link (XDP or tcx) in this Datapath's pin directory,
// sorted by name, including links pinned by a previous process and not adopted yet, also under
// an older layout (a previous version's links that no Attach has migrated), with their TC egress
// attachment. Modes and clsact filters are read in the network namespace of the calling thread.
func (d *Datapath) Status() ([]Interface, error) {
	var ourID, ourTC ebpf.ProgramID
	if info, err := d.objs.ZtXdp.Info(); err == nil {
		ourID, _ = info.ID()
	}
	if info, err := d.objs.ZtTc.Info(); err == nil {
		ourTC, _ = info.ID()
	}
	var out []Interface
	seen := map[string]bool{}
	for v := LayoutVersion; v >= 1; v-- {
		dir := layoutDir(d.cfg.PinDir, v)
		entries, err := os.ReadDir(dir)
		if v != LayoutVersion && err != nil {
			continue // none pinned there (or unreadable): the current layout's links still count
		}
		if err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		for _, e := range entries {
			name, ok := strings.CutPrefix(e.Name(), linkPinPrefix)
			if !ok {
				name, ok = strings.CutPrefix(e.Name(), tcPinPrefix)
			}
			if !ok || e.IsDir() || seen[name] {
				continue
			}
			seen[name] = true
			st := Interface{Name: name, Mode: ModeNone}
			if _, err := os.Lstat(filepath.Join(dir, linkPinPrefix+name)); err == nil {
				st = d.linkStatus(name, filepath.Join(dir, linkPinPrefix+name), ourID)
			}
			tcStatus(&st, filepath.Join(dir, tcPinPrefix+name), ourTC)
			st.Layout = v
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (d *Datapath) linkStatus(name, path string, ourID ebpf.ProgramID) Interface {
	st := Interface{Name: name, Mode: ModeNone}
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		st.Err = err.Error()
		return st
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		st.Err = err.Error()
		return st
	}
	st.LinkID, st.ProgramID = info.ID, info.Program
	st.Current = ourID != 0 && info.Program == ourID
	if xi := info.XDP(); xi != nil {
		st.Ifindex = int(xi.Ifindex)
	}
	if st.Ifindex == 0 {
		return st
	}
	mode, _, err := xdpMode(st.Ifindex)
	if err != nil {
		st.Err = err.Error()
		return st
	}
	st.Mode = mode
	return st
}

// Interfaces returns the names of the interfaces with a pinned link (XDP or tcx), sorted.
func (d *Datapath) Interfaces() ([]string, error) {
	st, err := d.Status()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(st))
	for _, s := range st {
		names = append(names, s.Name)
	}
	return names, nil
}

// ProgramID is the kernel's id of this Datapath's XDP program (what rtnetlink reports for an
// interface that runs it).
func (d *Datapath) ProgramID() (ebpf.ProgramID, error) {
	info, err := d.objs.ZtXdp.Info()
	if err != nil {
		return 0, fmt.Errorf("program info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("program info: no id")
	}
	return id, nil
}

// PruneGatewayMACs removes the gateway MACs of interfaces that are gone or changed their address
// (gwmacs.Prune), in the caller's network namespace: for an agent that attaches in one namespace.
func (d *Datapath) PruneGatewayMACs() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("datapath closed")
	}
	return gwmacs.Prune(d.objs.ZtGwmacs)
}
