package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TCMode is how Attach puts the program toward devices (zt_tc) at TC egress.
type TCMode int

const (
	// TCModeAuto uses tcx when the kernel has it (Linux 6.6 and later), else clsact.
	TCModeAuto TCMode = iota
	// TCModeTCX is a tcx bpf_link at egress, pinned next to the XDP link.
	TCModeTCX
	// TCModeClsact is a direct-action BPF filter on the egress parent of a clsact qdisc.
	TCModeClsact
)

func (m TCMode) String() string {
	switch m {
	case TCModeAuto:
		return "auto"
	case TCModeTCX:
		return "tcx"
	case TCModeClsact:
		return "clsact"
	}
	return fmt.Sprintf("tcmode(%d)", int(m))
}

// ParseTCMode parses auto (or empty), tcx and clsact.
func ParseTCMode(s string) (TCMode, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return TCModeAuto, nil
	case "tcx":
		return TCModeTCX, nil
	case "clsact":
		return TCModeClsact, nil
	}
	return TCModeAuto, fmt.Errorf("tc mode %q: must be auto, tcx or clsact", s)
}

// The kinds of TC attachment Interface.TC reports.
const (
	TCKindTCX    = "tcx"
	TCKindClsact = "clsact"
)

// tcPinPrefix names the pin of the tcx link of an interface: <dir>/tc-<ifname>.
const tcPinPrefix = "tc-"

// The clsact fallback's filter: priority 1 (the first filter on the egress parent, so that no
// other filter's verdict comes before ours), handle 0x7a74 and the name tcFilterName. The three
// together identify ztgate's filter; Detach and Uninstall remove only that one.
const (
	tcFilterName     = "ztgate"
	tcFilterPriority = 1
	tcFilterHandle   = 0x7a74
)

func (d *Datapath) tcPath(ifname string) string {
	return filepath.Join(d.dir, tcPinPrefix+ifname)
}

// isLinkPin tells whether a pin name is one of a link (XDP or tcx), not of a map.
func isLinkPin(name string) bool {
	return strings.HasPrefix(name, linkPinPrefix) || strings.HasPrefix(name, tcPinPrefix)
}

// findTCPin is where ifname's tcx link is pinned: the current layout's path, else the newest
// older layout that pins one, with its layout version; the current path when none exists.
func (d *Datapath) findTCPin(ifname string) (string, int) {
	path := d.tcPath(ifname)
	if _, err := os.Lstat(path); err == nil {
		return path, LayoutVersion
	}
	for v := LayoutVersion - 1; v >= 1; v-- {
		old := filepath.Join(layoutDir(d.cfg.PinDir, v), tcPinPrefix+ifname)
		if _, err := os.Lstat(old); err == nil {
			return old, v
		}
	}
	return path, LayoutVersion
}

// attachTC puts zt_tc at TC egress of ifname and returns the kind of attachment and, for an
// attachment made by this call, undo, which removes it again (nil when one was adopted).
//
// A tcx link pinned for ifname (also by an older layout, whose pin moves here) is switched to
// our program with link.Update; else ztgate's clsact filter, when present, is replaced in place
// (netlink replace: the old program runs until the new one does). Either way there is no
// instant without a program, and the adopted attachment keeps its kind whatever Config.TCMode
// says. Otherwise a new attachment is made in Config.TCMode (auto: tcx, else clsact).
func (d *Datapath) attachTC(ifname string, ifindex int) (string, func(), error) {
	l, err := d.adoptTCX(ifname, ifindex)
	if err != nil {
		return "", nil, err
	}
	if l != nil {
		if d.tcLinks[ifname] != l {
			if old, ok := d.tcLinks[ifname]; ok {
				old.Close()
			}
			d.tcLinks[ifname] = l
		}
		// A filter left by an earlier clsact attachment would run a stale program after ours.
		if f, err := findTCFilter(here, ifindex); err == nil && f != nil {
			_ = netlink.FilterDel(f)
		}
		return TCKindTCX, nil, nil
	}
	f, err := findTCFilter(here, ifindex)
	if err != nil {
		return "", nil, err
	}
	if f != nil {
		if err := netlink.FilterReplace(d.tcFilter(ifindex)); err != nil {
			return "", nil, fmt.Errorf("replace clsact filter: %w", err)
		}
		return TCKindClsact, nil, nil
	}

	mode := d.cfg.TCMode
	if mode == TCModeAuto || mode == TCModeTCX {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: d.objs.ZtTc,
			Attach: ebpf.AttachTCXEgress, Anchor: link.Head()})
		switch {
		case err == nil:
			path := d.tcPath(ifname)
			if err := l.Pin(path); err != nil {
				l.Close() // the only reference: this detaches the program again
				return "", nil, fmt.Errorf("pin tcx link: %w", err)
			}
			d.tcLinks[ifname] = l
			undo := func() {
				delete(d.tcLinks, ifname)
				_ = l.Unpin()
				l.Close()
			}
			return TCKindTCX, undo, nil
		case mode == TCModeTCX || !errors.Is(err, ebpf.ErrNotSupported):
			return "", nil, fmt.Errorf("tcx: %w", err)
		}
	}
	undo, err := d.addTCFilter(ifindex)
	if err != nil {
		return "", nil, err
	}
	return TCKindClsact, undo, nil
}

// adoptTCX takes over the tcx link pinned for ifname (in the current layout, else in an older
// one, whose pin then moves here) and switches it to our program. It returns nil when none is
// pinned; a pin whose interface is gone is removed.
func (d *Datapath) adoptTCX(ifname string, ifindex int) (link.Link, error) {
	l, held := d.tcLinks[ifname]
	path, version := d.tcPath(ifname), LayoutVersion
	if !held {
		path, version = d.findTCPin(ifname)
		var err error
		l, err = link.LoadPinnedLink(path, nil)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("load pinned tcx link %s: %w", path, err)
		}
	}
	release := func() {
		if !held {
			l.Close()
		}
	}
	linkIfindex, err := tcxLinkIfindex(l)
	if err != nil {
		release()
		return nil, err
	}
	switch {
	case linkIfindex == 0:
		l.Close()
		delete(d.tcLinks, ifname)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("remove stale tcx link pin: %w", err)
		}
		if version != LayoutVersion {
			_ = removeOldLayout(filepath.Dir(path))
		}
		return nil, nil
	case linkIfindex != ifindex:
		release()
		return nil, fmt.Errorf("pinned tcx link %s is attached to ifindex %d, not to %s (ifindex %d): "+
			"detach it first", path, linkIfindex, ifname, ifindex)
	}
	if err := l.Update(d.objs.ZtTc); err != nil {
		release()
		return nil, fmt.Errorf("update pinned tcx link %s to the new program: %w", path, err)
	}
	if version != LayoutVersion {
		if err := l.Pin(d.tcPath(ifname)); err != nil {
			// Our program runs already; the pin stays where it was and the next Attach moves it.
			l.Close()
			return nil, fmt.Errorf("migrate tcx link from layout v%d: pin: %w", version, err)
		}
		_ = os.Remove(path)
		_ = removeOldLayout(filepath.Dir(path))
	}
	return l, nil
}

func tcxLinkIfindex(l link.Link) (int, error) {
	info, err := l.Info()
	if err != nil {
		return 0, fmt.Errorf("tcx link info: %w", err)
	}
	ti := info.TCX()
	if ti == nil {
		return 0, fmt.Errorf("link %d is a %v link, not tcx", info.ID, info.Type)
	}
	return int(ti.Ifindex), nil
}

// tcFilter is ztgate's clsact filter on ifindex, running our program.
func (d *Datapath) tcFilter(ifindex int) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    netlink.HANDLE_MIN_EGRESS,
			Handle:    tcFilterHandle,
			Priority:  tcFilterPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           d.objs.ZtTc.FD(),
		Name:         tcFilterName,
		DirectAction: true,
	}
}

// addTCFilter adds ztgate's filter at the egress parent of ifindex, creating the clsact qdisc
// when the interface has none. undo removes the filter and, when this call created it, the qdisc.
func (d *Datapath) addTCFilter(ifindex int) (func(), error) {
	created, err := ensureClsact(ifindex)
	if err != nil {
		return nil, err
	}
	f := d.tcFilter(ifindex)
	if err := netlink.FilterReplace(f); err != nil {
		if created {
			_ = netlink.QdiscDel(clsactQdisc(ifindex))
		}
		return nil, fmt.Errorf("add clsact filter: %w", err)
	}
	undo := func() {
		_ = netlink.FilterDel(f)
		if created {
			_ = netlink.QdiscDel(clsactQdisc(ifindex))
		}
	}
	return undo, nil
}

func clsactQdisc(ifindex int) *netlink.Clsact {
	return &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_CLSACT,
	}}
}

// here is a netlink handle on the network namespace of the calling thread.
var here = &netlink.Handle{}

// hasClsact tells whether ifindex has a clsact qdisc (h: in the namespace of h).
func hasClsact(h *netlink.Handle, ifindex int) (bool, error) {
	nl, err := h.LinkByIndex(ifindex)
	if err != nil {
		return false, fmt.Errorf("look up ifindex %d: %w", ifindex, err)
	}
	qs, err := h.QdiscList(nl)
	if err != nil {
		return false, fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return true, nil
		}
	}
	return false, nil
}

// ensureClsact adds a clsact qdisc to ifindex unless it has one, and reports whether it added it.
func ensureClsact(ifindex int) (bool, error) {
	ok, err := hasClsact(here, ifindex)
	if err != nil || ok {
		return false, err
	}
	err = netlink.QdiscAdd(clsactQdisc(ifindex))
	if errors.Is(err, unix.EEXIST) {
		return false, nil // added meanwhile by someone else: theirs
	}
	if err != nil {
		return false, fmt.Errorf("add clsact qdisc: %w", err)
	}
	return true, nil
}

// findTCFilter returns ztgate's filter on the egress parent of ifindex in the namespace of h, or
// nil: none, or no clsact qdisc.
func findTCFilter(h *netlink.Handle, ifindex int) (*netlink.BpfFilter, error) {
	ok, err := hasClsact(h, ifindex)
	if err != nil || !ok {
		return nil, err
	}
	nl, err := h.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("look up ifindex %d: %w", ifindex, err)
	}
	list, err := h.FilterList(nl, netlink.HANDLE_MIN_EGRESS)
	if err != nil {
		return nil, fmt.Errorf("list egress filters: %w", err)
	}
	for _, f := range list {
		bf, ok := f.(*netlink.BpfFilter)
		if ok && bf.Name == tcFilterName && bf.Priority == tcFilterPriority && bf.Handle == tcFilterHandle {
			return bf, nil
		}
	}
	return nil, nil
}

// delTCFilter removes ztgate's filter from the egress parent of ifindex in the namespace of h, if
// it is there. The clsact qdisc stays: another program may use it, and without filters it does
// nothing.
func delTCFilter(h *netlink.Handle, ifindex int) (bool, error) {
	f, err := findTCFilter(h, ifindex)
	if err != nil || f == nil {
		return false, err
	}
	if err := h.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, fmt.Errorf("delete clsact filter: %w", err)
	}
	return true, nil
}

// detachTC removes ifname's TC attachment: the tcx link (held, or pinned in any layout) and
// ztgate's clsact filter on the interface of that name in the namespace where this Datapath
// attached it (else in the calling thread's). It reports whether there was one.
func (d *Datapath) detachTC(ifname string) (bool, error) {
	found := false
	path, version := d.tcPath(ifname), LayoutVersion
	l, ok := d.tcLinks[ifname]
	if !ok {
		path, version = d.findTCPin(ifname)
		var err error
		l, err = link.LoadPinnedLink(path, nil)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			l = nil
		case err != nil:
			return false, fmt.Errorf("load pinned tcx link %s: %w", path, err)
		}
	}
	if l != nil {
		found = true
		delete(d.tcLinks, ifname)
		err := l.Detach()
		l.Close()
		if err != nil && !errors.Is(err, unix.ENOLINK) {
			return found, fmt.Errorf("detach tcx link: %w", err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return found, fmt.Errorf("unpin tcx link: %w", err)
		}
		if version != LayoutVersion {
			_ = removeOldLayout(filepath.Dir(path))
		}
	}
	h := here
	if ns, ok := d.attachNS[ifname]; ok {
		delete(d.attachNS, ifname)
		defer ns.Close()
		nh, err := netlink.NewHandleAt(ns)
		if err != nil {
			return found, fmt.Errorf("netlink handle in the namespace of the attachment: %w", err)
		}
		defer nh.Close()
		h = nh
	}
	nl, err := h.LinkByName(ifname)
	if err != nil {
		return found, nil // gone: its filters went with it
	}
	removed, err := delTCFilter(h, nl.Attrs().Index)
	return found || removed, err
}

// rememberNS records the network namespace of the calling thread as the one ifname was attached
// in, for Detach to remove a clsact filter from there whatever thread calls it.
func (d *Datapath) rememberNS(ifname string) {
	ns, err := netns.Get()
	if err != nil {
		return // Detach then looks in the namespace of its caller
	}
	if old, ok := d.attachNS[ifname]; ok {
		old.Close()
	}
	d.attachNS[ifname] = ns
}

// tcStatus fills in st's TC attachment: the tcx link pinned as tcPin (when it exists), else
// ztgate's clsact filter on st.Ifindex.
func tcStatus(st *Interface, tcPin string, ourTC ebpf.ProgramID) {
	if l, err := link.LoadPinnedLink(tcPin, nil); err == nil {
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			st.Err = err.Error()
			return
		}
		if ti := info.TCX(); ti != nil && ti.Ifindex != 0 {
			st.TC, st.TCLinkID, st.TCProgramID = TCKindTCX, info.ID, info.Program
			if st.Ifindex == 0 {
				st.Ifindex = int(ti.Ifindex)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		st.Err = err.Error()
		return
	}
	if st.TC == "" && st.Ifindex != 0 {
		f, err := findTCFilter(here, st.Ifindex)
		if err != nil {
			st.Err = err.Error()
			return
		}
		if f != nil {
			st.TC, st.TCProgramID = TCKindClsact, ebpf.ProgramID(f.Id)
		}
	}
	st.TCCurrent = ourTC != 0 && st.TCProgramID == ourTC
}

// TCProgramID is the kernel's id of this Datapath's TC program (zt_tc), the program the TC
// attachment of an interface runs once adopted.
func (d *Datapath) TCProgramID() (ebpf.ProgramID, error) {
	if d.tcID != 0 {
		return d.tcID, nil
	}
	info, err := d.objs.ZtTc.Info()
	if err != nil {
		return 0, fmt.Errorf("tc program info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("tc program info: no id")
	}
	return id, nil
}

// TCRunning reports whether interface ifname (ifindex, in the namespace of the calling thread)
// runs this Datapath's TC program at egress: through its pinned tcx link or ztgate's clsact filter.
func (d *Datapath) TCRunning(ifname string, ifindex int) bool {
	ours, err := d.TCProgramID()
	if err != nil || checkIfname(ifname) != nil {
		return false
	}
	st := Interface{Ifindex: ifindex}
	tcStatus(&st, d.tcPath(ifname), ours)
	return st.TCCurrent && st.Ifindex == ifindex
}
