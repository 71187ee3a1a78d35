package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
)

// The states of a protected interface (status, /readyz, ztgate_interface_state).
const (
	ifAttached = "attached" // the agent's program runs on it
	ifAbsent   = "absent"   // configured, but no such interface now: attached when it appears
	ifFailed   = "failed"   // present, but the program could not be attached (Error says why)
	ifDegraded = "degraded" // the program runs, but a check cannot work there (Error says which)
)

// disableVLANOffload keeps VLAN tags in the frames the program reads (replaced in tests).
var disableVLANOffload = loader.DisableVLANOffload

// absentPort is the ifindex a device bound to an absent protected port gets: no interface has
// it, so the device's frames are dropped (wrong port) until the port appears and the policy is
// compiled again with its ifindex.
const absentPort = math.MaxUint32

// resync is how often the agent lists the interfaces besides following their events: it
// retries failed attaches and catches a removed link pin, which no event reports.
var resync = 10 * time.Second

// tcCheck is how often the agent looks at the TC program of each attached interface: removing it
// (a tcx link detached, a clsact filter deleted) raises no link event.
var tcCheck = time.Second

// linkSubscribe subscribes to link events (replaced in tests).
var linkSubscribe = netlink.LinkSubscribeWithOptions

type ifaceState struct {
	index    int
	mode     loader.Mode
	state    string
	err      string
	since    time.Time // when state last changed
	attaches uint64    // attaches by this agent (the first and every re-attach)
	prev     int       // the ifindex an absent interface had
	repairs  uint64    // program found removed and attached again, or link pin restored
	mac      string    // the address it had when attached (a gateway MAC of the datapath)
}

func isPattern(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// matchName reports whether the configuration protects the interface called name (by its
// name or a pattern).
func (a *Agent) matchName(name string) bool {
	for _, n := range a.cfg.Interfaces {
		if n == name {
			return true
		}
		if ok, _ := path.Match(n, name); ok && isPattern(n) {
			return true
		}
	}
	return false
}

// protected reports whether the configuration protects l: by name, pattern or as a port of a
// protected bridge.
func (a *Agent) protected(l netlink.Link) bool {
	attrs := l.Attrs()
	if a.matchName(attrs.Name) {
		return true
	}
	if attrs.MasterIndex == 0 || len(a.cfg.Bridges) == 0 {
		return false
	}
	m, err := netlink.LinkByIndex(attrs.MasterIndex)
	if err != nil {
		return false
	}
	_, isBridge := m.(*netlink.Bridge)
	return isBridge && slices.Contains(a.cfg.Bridges, m.Attrs().Name)
}

// portIndex resolves a policy's gateway port: a protected port that is absent gets absentPort.
func (a *Agent) portIndex(name string) (uint32, error) {
	idx, err := ifindex(name)
	if err == nil {
		return idx, nil
	}
	var nf netlink.LinkNotFoundError
	_, lerr := netlink.LinkByName(name)
	// A port of a protected bridge cannot be told from others while it is absent: with bridges
	// configured, any absent port binds its devices to no interface (fail closed).
	if (a.matchName(name) || len(a.cfg.Bridges) > 0) && (errors.As(lerr, &nf) || errors.Is(lerr, unix.ENODEV)) {
		return absentPort, nil
	}
	return 0, err
}

// setIface records the state of an interface (attaches and repairs add up) and tells the
// service manager.
func (a *Agent) setIface(name string, st ifaceState) {
	a.ifMu.Lock()
	old, known := a.ifaces[name]
	if known && old.state == st.state && old.index == st.index {
		st.since = old.since
	} else {
		st.since = time.Now()
	}
	st.attaches += old.attaches
	st.repairs += old.repairs
	a.ifaces[name] = st
	a.indexIfaces()
	a.ifMu.Unlock()
	a.notifyReady()
}

// ensure attaches the programs to l if the configuration protects it and it does not run both
// already (XDP, and TC at egress): a new interface, a re-created one (new ifindex) or one whose
// program was removed.
func (a *Agent) ensure(l netlink.Link) {
	if !a.protected(l) {
		return
	}
	attrs := l.Attrs()
	name, idx := attrs.Name, attrs.Index
	ours := func(attrs *netlink.LinkAttrs) bool {
		return attrs.Xdp != nil && attrs.Xdp.Attached && a.progID != 0 && ebpf.ProgramID(attrs.Xdp.ProgId) == a.progID &&
			a.dp.TCRunning(attrs.Name, attrs.Index)
	}
	running := ours(attrs)
	if !running {
		// A message may predate the attach (events queue up) or not carry IFLA_XDP: ask the kernel.
		if fresh, err := netlink.LinkByIndex(idx); err == nil && fresh.Attrs().Name == name {
			running = ours(fresh.Attrs())
		}
	}
	a.ifMu.Lock()
	old, known := a.ifaces[name]
	a.ifMu.Unlock()
	repairs := uint64(0)
	macChanged := known && old.mac != attrs.HardwareAddr.String()
	if known && (old.state == ifAttached || old.state == ifDegraded) && old.index == idx && !macChanged {
		if running {
			a.repin(name, old)
			return
		}
		a.log.Error("alert: a program (XDP, or TC toward devices) is gone from a protected interface: attaching again",
			"interface", name, "ifindex", idx)
		repairs = 1
	}
	// Tags stay in the frame before the program sees any; MACs of removed or re-addressed
	// interfaces leave the gateway's set before this one's is added (Attach, or a MAC change).
	offloadErr := disableVLANOffload(name)
	if err := a.dp.PruneGatewayMACs(); err != nil {
		a.log.Warn("prune gateway macs", "err", err)
	}
	mode, err := a.dp.Attach(name)
	if err != nil {
		if !known || old.state != ifFailed || old.err != err.Error() {
			a.log.Error("protected interface: attach failed: its frames are not enforced", "interface", name,
				"ifindex", idx, "err", err)
		}
		a.setIface(name, ifaceState{index: idx, mode: loader.ModeNone, state: ifFailed, err: err.Error()})
		return
	}
	st := ifaceState{index: idx, mode: mode, state: ifAttached, attaches: 1, repairs: repairs,
		mac: attrs.HardwareAddr.String()}
	if offloadErr != nil {
		a.log.Error("protected interface degraded: the program runs, its VLAN checks do not", "interface", name,
			"err", offloadErr)
		st.state, st.err = ifDegraded, offloadErr.Error()
	}
	a.setIface(name, st)
	if attrs.MasterIndex != 0 && !a.namesRouters() {
		a.log.Warn("protected interface is a bridge port and the policy names no router MAC (spec.gateway.macs): "+
			"frames to a router beyond the bridge drop as l2_dst_denied", "interface", name)
	}
	switch {
	case known && old.state == ifAbsent && old.prev != 0 && old.prev != idx:
		a.log.Info("attached (re-created interface)", "interface", name, "ifindex", idx, "old_ifindex", old.prev,
			"mode", mode.String())
	case known && old.state == ifAttached:
		a.log.Info("attached again", "interface", name, "ifindex", idx, "mode", mode.String())
	default:
		a.log.Info("attached", "interface", name, "ifindex", idx, "mode", mode.String())
	}
	a.rebind(name, idx)
}

// repin pins the link of an attached interface again if someone removed its pin (the program
// would go with the agent otherwise).
func (a *Agent) repin(name string, st ifaceState) {
	ok, err := a.dp.Repin(name)
	switch {
	case err != nil:
		a.log.Error("alert: the pin of a protected interface's link is gone and cannot be restored: "+
			"its program goes when the agent stops", "interface", name, "err", err)
	case ok:
		a.log.Error("alert: the pin of a protected interface's link was removed: pinned again", "interface", name)
		st.repairs = 1
		st.attaches = 0
		a.setIface(name, st)
	}
}

// gone marks a protected interface absent once the kernel removed it.
func (a *Agent) gone(name string, idx int) {
	a.ifMu.Lock()
	old, known := a.ifaces[name]
	a.ifMu.Unlock()
	if !known || old.state == ifAbsent || (idx != 0 && old.index != idx) {
		return
	}
	if err := a.dp.PruneGatewayMACs(); err != nil {
		a.log.Warn("prune gateway macs", "err", err)
	}
	if !slices.Contains(a.cfg.Interfaces, name) {
		// Matched by a pattern or as a bridge port: forgotten, so that churn does not grow the
		// status and the metrics; it is attached again when it is back.
		a.log.Warn("protected interface removed", "interface", name, "ifindex", old.index)
		a.ifMu.Lock()
		delete(a.ifaces, name)
		a.indexIfaces()
		a.ifMu.Unlock()
		a.notifyReady()
		return
	}
	a.log.Warn("protected interface removed: attached again when it is back", "interface", name, "ifindex", old.index)
	a.setIface(name, ifaceState{state: ifAbsent, mode: loader.ModeNone, prev: old.index})
}

// reconcile lists every interface: it attaches to the protected ones that need it and marks
// absent those that are gone.
func (a *Agent) reconcile() error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	present := map[string]bool{}
	for _, l := range links {
		present[l.Attrs().Name] = true
		a.ensure(l)
	}
	a.ifMu.Lock()
	var gone []string
	for name, st := range a.ifaces {
		if !present[name] && st.state != ifAbsent {
			gone = append(gone, name)
		}
	}
	a.ifMu.Unlock()
	for _, name := range gone {
		a.gone(name, 0)
	}
	for _, name := range a.cfg.Interfaces {
		a.ifMu.Lock()
		_, known := a.ifaces[name]
		a.ifMu.Unlock()
		if !known && !isPattern(name) {
			a.log.Warn("protected interface absent: attached as soon as it appears", "interface", name)
			a.setIface(name, ifaceState{state: ifAbsent, mode: loader.ModeNone})
		}
	}
	return nil
}

// watchLinks follows the link events of the agent's network namespace until ctx ends. Each
// (re)subscription is followed by a full listing, so nothing that happened while no
// subscription was open (start-up, a receive buffer overflow) is missed.
func (a *Agent) watchLinks(ctx context.Context) {
	tick := time.NewTicker(resync)
	defer tick.Stop()
	tcTick := time.NewTicker(tcCheck)
	defer tcTick.Stop()
	for ctx.Err() == nil {
		ch := make(chan netlink.LinkUpdate, 256)
		done := make(chan struct{})
		serr := linkSubscribe(ch, done, netlink.LinkSubscribeOptions{
			ErrorCallback:     func(err error) { a.log.Warn("link events", "err", err) },
			ReceiveBufferSize: 1 << 20,
		})
		if serr != nil {
			a.log.Error("subscribe to link events: listing the interfaces periodically instead", "err", serr)
			close(done)
			ch = nil // wait for the ticker only
		} else if a.linkResubs.Load() > 0 {
			a.log.Warn("link events: subscribed again; listing every interface")
		}
		if err := a.reconcile(); err != nil {
			a.log.Error("link events", "err", err)
		}
	events:
		for {
			select {
			case <-ctx.Done():
				break events
			case <-tick.C:
				if err := a.reconcile(); err != nil {
					a.log.Error("link events", "err", err)
				}
				if ch == nil {
					break events // try to subscribe again
				}
			case <-tcTick.C:
				a.checkTC()
			case u, ok := <-ch:
				if !ok {
					break events
				}
				a.linkUpdate(u)
			}
		}
		if ch != nil {
			close(done)
			go func() { // until the subscription's reader closes ch
				for range ch {
				}
			}()
		}
		a.linkResubs.Add(1)
	}
}

// checkTC attaches again to every attached interface whose TC program is gone.
func (a *Agent) checkTC() {
	a.ifMu.Lock()
	var lost []int
	for name, st := range a.ifaces {
		if (st.state == ifAttached || st.state == ifDegraded) && !a.dp.TCRunning(name, st.index) {
			lost = append(lost, st.index)
		}
	}
	a.ifMu.Unlock()
	for _, idx := range lost {
		if l, err := netlink.LinkByIndex(idx); err == nil {
			a.ensure(l)
		}
	}
}

// linkUpdate handles one link event.
func (a *Agent) linkUpdate(u netlink.LinkUpdate) {
	if u.Family == unix.AF_BRIDGE {
		return // a bridge port's bridging state; the port's own messages follow its link
	}
	attrs := u.Link.Attrs()
	if u.Header.Type == unix.RTM_DELLINK {
		a.gone(attrs.Name, attrs.Index)
		return
	}
	a.ensure(u.Link)
}

// rebind compiles the policy in force again when it binds devices to port name with another
// ifindex than idx (a re-created or late port): until then their frames are dropped as
// arriving on the wrong port.
func (a *Agent) rebind(name string, idx int) {
	if !a.boundElsewhere(name, idx) {
		return
	}
	// Under applyMu from the check to the apply: no change may come between, or its policy
	// would be replaced by the older one read here.
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	if !a.boundElsewhere(name, idx) {
		return
	}
	a.polMu.RLock()
	cur := a.cur.Load()
	filename, doc := cur.filename, cur.yaml
	var err error
	if doc == nil {
		doc, err = policy.Marshal(cur.pol)
	}
	a.polMu.RUnlock()
	if err == nil {
		var res *api.ApplyResult
		if res, err = a.applyHeld(filename, doc, self); err == nil {
			a.log.Info("devices bound to the new port", "interface", name, "ifindex", idx, "revision", res.NewRevision)
			return
		}
	}
	a.log.Error("rebind devices to a new port: their frames stay dropped", "interface", name, "err", err)
}

// namesRouters reports whether the policy in force lists MACs of routers beyond a bridge.
func (a *Agent) namesRouters() bool {
	a.polMu.RLock()
	defer a.polMu.RUnlock()
	cur := a.cur.Load()
	return cur != nil && cur.pol != nil && len(cur.pol.Spec.Gateway.MACs) > 0
}

// boundElsewhere reports whether the policy in force binds a device to port name under another
// ifindex than idx.
func (a *Agent) boundElsewhere(name string, idx int) bool {
	a.polMu.RLock()
	defer a.polMu.RUnlock()
	cur := a.cur.Load()
	if cur == nil || cur.pol == nil || cur.snap == nil {
		return false
	}
	for _, d := range cur.pol.Spec.Devices {
		if d.Port != name {
			continue
		}
		if rec, ok := cur.snap.Devices[policy.DevKey(mustParseMAC(d.MAC))]; ok && rec.Ifindex != uint32(idx) {
			return true
		}
	}
	return false
}

// isReady: the policy is in the maps and every present protected interface runs the program.
func (a *Agent) isReady() bool {
	if !a.ready.Load() {
		return false
	}
	a.ifMu.Lock()
	defer a.ifMu.Unlock()
	for _, st := range a.ifaces {
		if st.state == ifFailed {
			return false
		}
	}
	return true
}

// ifaceCounts counts the protected interfaces by state.
func (a *Agent) ifaceCounts() map[string]int {
	a.ifMu.Lock()
	defer a.ifMu.Unlock()
	n := map[string]int{}
	for _, st := range a.ifaces {
		n[st.state]++
	}
	return n
}

// interfaces reports each protected interface (and each pattern or bridge that matches none)
// with its state, checked against the kernel for the attached ones.
func (a *Agent) interfaces() []api.Interface {
	links, err := a.dp.Status()
	if err != nil {
		a.log.Warn("status: interfaces", "err", err)
	}
	pinned := map[string]loader.Interface{}
	for _, l := range links {
		pinned[l.Name] = l
	}
	a.ifMu.Lock()
	states := make(map[string]ifaceState, len(a.ifaces))
	for name, st := range a.ifaces {
		states[name] = st
	}
	a.ifMu.Unlock()

	var names []string
	for _, n := range a.cfg.Interfaces {
		if _, ok := states[n]; ok {
			names = append(names, n)
		}
	}
	var others []string
	for n := range states {
		if !slices.Contains(names, n) {
			others = append(others, n)
		}
	}
	sort.Strings(others)
	names = append(names, others...)

	out := make([]api.Interface, 0, len(names))
	for _, name := range names {
		st := states[name]
		ifc := api.Interface{Name: name, Ifindex: st.index, Mode: st.mode.String(), State: st.state, Error: st.err,
			Since: st.since.UTC(), Attaches: st.attaches, Repairs: st.repairs}
		if st.state == ifAttached || st.state == ifDegraded {
			l, ok := pinned[name]
			switch {
			case !ok:
				ifc.Error = "no link pinned"
			case l.Err != "":
				ifc.Error = l.Err
			case !l.Current || l.Ifindex != st.index:
				ifc.Error = "the pinned link does not run the agent's program on this interface"
			case l.Layout != loader.LayoutVersion:
				ifc.Error = fmt.Sprintf("pinned by an older ztgate (layout v%d), not migrated yet", l.Layout)
			default:
				ifc.Attached, ifc.Mode = true, l.Mode.String()
			}
			if !ifc.Attached {
				ifc.State = ifFailed
			}
		}
		out = append(out, ifc)
	}
	for _, p := range a.cfg.Interfaces {
		if !isPattern(p) || slices.ContainsFunc(names, func(n string) bool { ok, _ := path.Match(p, n); return ok }) {
			continue
		}
		out = append(out, api.Interface{Name: p, Mode: loader.ModeNone.String(), State: ifAbsent,
			Error: "no interface matches the pattern"})
	}
	return out
}
