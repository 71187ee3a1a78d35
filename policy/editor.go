package policy

import (
	"container/heap"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/ztgate/ztgate/bpf"
)

// Editor changes one device of a compiled policy at a time, in time proportional to the
// change, keeping the compiler's state and indexes that a whole Compile rebuilds.
//
// A change is prepared (nothing modified), its Delta written to the datapath, and only then
// committed; Commit modifies the policy and snapshot in place, so readers are kept out meanwhile.
// The snapshot always decides every frame as Compile(Policy()) does and holds no more entries.
type Editor struct {
	c     *compiler
	p     *Policy
	snap  *Snapshot
	segs  map[string]*Segment
	quarR uint32 // the quarantine rule set, never removed

	devIdx map[string]int     // device name -> index in p.Spec.Devices
	val    *validator         // its macs and owners map to device indexes
	refs   map[string]int     // device name -> rules (device, segment, quarantine) naming it
	rsUse  map[uint32]int     // rule set -> uses by devices (their Ruleset and InRuleset)
	rsKeys map[uint32]*rsKeys // rule set -> its entries and the keys that find it
	ids    idHeap             // free dev_ids below next
	next   uint32             // every dev_id >= next is free

	indexMu sync.Mutex // Index may run in the background, before the first change
	indexed bool       // segs and the fields above from devIdx on are built (Index)
	pending *Delta     // the latest Delta prepared (the only one Commit takes)
}

// rsKeys is what removing a rule set removes.
type rsKeys struct {
	rules    []bpf.RuleKey
	prefixes []bpf.PrefixKey
	canon    string   // its key in compiler.rulesets
	lists    []string // its keys in compiler.listCache
}

// Delta is what one change writes to the policy maps: per map, the keys removed and the
// entries added or changed (removals first). Counts are the maps' entry counts afterwards.
type Delta struct {
	Revision  uint64
	Config    bpf.Config // the new revision's config (only its revision changes)
	MaxDevID  uint32     // no dev_id is larger afterwards (an upper bound, checked against zt_devstats)
	Fresh     []uint32   // dev_ids the change gives that the policy in force does not use (see Snapshot.Fresh)
	Devices   Changes[bpf.DevKey, bpf.DevRec]
	Addrs     Changes[bpf.AddrKey, bpf.AddrVal]
	Prefixes  Changes[bpf.PrefixKey, bpf.PrefixVal]
	Rules     Changes[bpf.RuleKey, bpf.RuleVal]
	Counts    [4]int // entries afterwards: devices, addrs, prefixes, rules
	Summary   string // "put device x" / "delete device x"
	committed bool
	commit    func()
}

// Changes are the writes of one map: Del first, then Keys[i] = Vals[i].
type Changes[K comparable, V any] struct {
	Del  []K
	Keys []K
	Vals []V
}

func (ch *Changes[K, V]) put(k K, v V) { ch.Keys = append(ch.Keys, k); ch.Vals = append(ch.Vals, v) }

// Empty reports whether the change writes nothing.
func (ch *Changes[K, V]) Empty() bool { return len(ch.Del) == 0 && len(ch.Keys) == 0 }

// ApplyTo makes m what it is after the change.
func (ch *Changes[K, V]) ApplyTo(m map[K]V) {
	for _, k := range ch.Del {
		delete(m, k)
	}
	for i, k := range ch.Keys {
		m[k] = ch.Vals[i]
	}
}

// NewEditor compiles p as Compile does and returns an Editor holding the result. The policy
// must have passed Validate; the Editor owns it (and the snapshot) from now on. The indexes a
// change needs are built by Index, or by the first change.
func NewEditor(p *Policy, opt CompileOptions) (*Editor, error) {
	s, c, err := compile(p, opt)
	if err != nil {
		return nil, err
	}
	return &Editor{c: c, p: p, snap: s, quarR: s.Config.QuarantineRuleset}, nil
}

// Index builds what a change needs besides the compiler's state: indexes of names, MACs,
// addresses, references, rule set users and free device ids. It costs about as much as the
// compile; the agent runs it in the background of a whole apply. It reads the policy and the
// snapshot and writes only the Editor's own fields.
func (e *Editor) Index() {
	e.indexMu.Lock()
	defer e.indexMu.Unlock()
	if e.indexed {
		return
	}
	e.indexed = true
	p, s, c := e.p, e.snap, e.c
	e.devIdx = make(map[string]int, len(p.Spec.Devices))
	e.refs, e.rsUse, e.rsKeys = map[string]int{}, map[uint32]int{}, map[uint32]*rsKeys{}
	spec := &p.Spec
	e.segs = make(map[string]*Segment, len(spec.Segments))
	for i := range spec.Segments {
		e.segs[spec.Segments[i].Name] = &spec.Segments[i]
	}
	v := &validator{spec: spec, single: true, devices: e.devIdx,
		segments: firstIndex(len(spec.Segments), func(i int) string { return spec.Segments[i].Name }),
		gateway:  map[netip.Addr]bool{}, macs: make(map[string]int, len(spec.Devices)),
		owners: make(map[netip.Addr]int, len(s.Addrs))}
	for _, l := range [2][]string{spec.Gateway.IPv4, spec.Gateway.IPv6} {
		for _, a := range l {
			v.gateway[netip.MustParseAddr(a)] = true
		}
	}
	e.val = v
	for i := range spec.Devices {
		d := &spec.Devices[i]
		e.devIdx[d.Name] = i
		e.index(i, d, 1)
	}
	used := make([]bool, 0, len(spec.Devices)+1)
	for _, rec := range s.Devices {
		for int(rec.DevId) >= len(used) {
			used = append(used, false)
		}
		used[rec.DevId] = true
		e.rsUse[rec.Ruleset]++
		e.rsUse[rec.InRuleset]++
	}
	e.next = uint32(max(len(used), 1))
	for id := 1; id < len(used); id++ {
		if !used[id] {
			e.ids = append(e.ids, uint32(id))
		}
	}
	heap.Init(&e.ids)
	for i := range spec.Segments {
		e.countRefs(spec.Segments[i].Allow, 1)
	}
	e.countRefs(spec.Quarantine.Allow, 1)
	keys := func(rs uint32) *rsKeys {
		k := e.rsKeys[rs]
		if k == nil {
			k = &rsKeys{}
			e.rsKeys[rs] = k
		}
		return k
	}
	for k := range s.Rules {
		keys(k.Ruleset).rules = append(keys(k.Ruleset).rules, k)
	}
	for k := range s.Prefixes {
		keys(k.Ruleset).prefixes = append(keys(k.Ruleset).prefixes, k)
	}
	for canon, rs := range c.rulesets {
		keys(rs).canon = canon
	}
	for l, rs := range c.listCache {
		keys(rs).lists = append(keys(rs).lists, l)
	}
}

// index adds (n = 1) or removes (n = -1) device i's MAC, addresses and rule references.
func (e *Editor) index(i int, d *Device, n int) {
	mac := mustMAC(d.MAC).String()
	if n > 0 {
		e.val.macs[mac] = i
	} else if e.val.macs[mac] == i {
		delete(e.val.macs, mac)
	}
	for _, l := range [2][]string{d.IPv4, d.IPv6} {
		for _, s := range l {
			a := netip.MustParseAddr(s)
			if n > 0 {
				e.val.owners[a] = i
			} else if e.val.owners[a] == i {
				delete(e.val.owners, a)
			}
		}
	}
	e.countRefs(d.Allow, n)
}

// countRefs adds n to the reference count of every device that rules name (as a destination
// or a source).
func (e *Editor) countRefs(rules []Rule, n int) {
	for i := range rules {
		if name := rules[i].Peer().Device; name != "" {
			e.refs[name] += n
			if e.refs[name] == 0 {
				delete(e.refs, name)
			}
		}
	}
}

// Policy is the policy as changed so far (owned by the Editor: read it only when no Commit can
// run).
func (e *Editor) Policy() *Policy { return e.p }

// Snapshot is the compiled policy as changed so far (same rule as Policy).
func (e *Editor) Snapshot() *Snapshot { return e.snap }

// Device returns the device named name.
func (e *Editor) Device(name string) (*Device, bool) {
	e.Index()
	i, ok := e.devIdx[name]
	if !ok {
		return nil, false
	}
	return &e.p.Spec.Devices[i], true
}

// ErrNotFound reports that the device to delete is not in the policy.
var ErrNotFound = errors.New("no such device")

// ErrReferenced reports that the device to delete is the destination or source of rules.
var ErrReferenced = errors.New("device in use")

// PrepareDelete prepares the removal of device name. It is refused while a rule names the
// device as its destination or source.
func (e *Editor) PrepareDelete(name string) (*Delta, error) {
	e.Index()
	e.pending = nil
	i, ok := e.devIdx[name]
	if !ok {
		return nil, fmt.Errorf("device %s: %w", quote(name), ErrNotFound)
	}
	od := &e.p.Spec.Devices[i]
	if n := e.namedByOthers(od); n > 0 {
		return nil, fmt.Errorf("device %s is the destination of %d rule(s) of other devices, segments or the "+
			"quarantine (or, in a from: rule, the source): remove them first: %w", quote(name), n, ErrReferenced)
	}
	okey := devKey(mustMAC(od.MAC))
	orec := e.snap.Devices[okey]
	d := e.delta("delete device " + name)
	d.Devices.Del = append(d.Devices.Del, okey)
	d.Counts[0]--
	for _, a := range deviceAddrs(od) {
		d.Addrs.Del = append(d.Addrs.Del, bpf.AddrKey{Addr: in6(a)})
		d.Counts[1]--
	}
	uses := ruleUses(nil, &orec, -1)
	gone := e.release(uses, d)
	d.commit = func() {
		e.index(i, od, -1)
		last := len(e.p.Spec.Devices) - 1
		if i != last {
			// The last device takes the removed one's place: O(1) instead of shifting the rest.
			moved := &e.p.Spec.Devices[last]
			e.index(last, moved, -1)
			e.p.Spec.Devices[i] = *moved
			e.devIdx[moved.Name] = i
			e.index(i, &e.p.Spec.Devices[i], 1)
		}
		e.p.Spec.Devices[last] = Device{}
		e.p.Spec.Devices = e.p.Spec.Devices[:last]
		delete(e.devIdx, name)
		delete(e.c.devIDs, name)
		delete(e.snap.DeviceNames, orec.DevId)
		heap.Push(&e.ids, orec.DevId)
		e.use(uses)
		for _, k := range gone {
			e.forget(k)
		}
	}
	e.pending = d
	return d, nil
}

// PreparePut prepares device nd (checked as a document at path in file) replacing the device
// of the same name, or joining the policy when there is none. nd is owned by the Editor from
// now on. The error is an Errors naming the fields and their place in the document, including
// what only compiling finds (a gateway port that does not exist, say).
func (e *Editor) PreparePut(file, path string, nd *Device, locate func(string) (int, int)) (*Delta, error) {
	e.Index()
	e.pending = nil
	i, replace := e.devIdx[nd.Name]
	if !replace {
		i = len(e.p.Spec.Devices)
	}
	if err := e.validatePut(file, path, nd, i, replace, locate); err != nil {
		return nil, err
	}
	p := &devicePut{nd: nd, i: i, replace: replace, nkey: devKey(mustMAC(nd.MAC))}
	if replace {
		p.od = &e.p.Spec.Devices[i]
		p.okey = devKey(mustMAC(p.od.MAC))
		p.orec = e.snap.Devices[p.okey]
	}
	d := e.delta("put device " + nd.Name)

	// The device id follows the MAC, as in Compile: a new MAC is a new identity.
	p.id = p.orec.DevId
	p.newID = !replace || p.okey != p.nkey
	if p.newID {
		if replace && e.namedByOthers(p.od) > 0 {
			return nil, fieldError(file, joinPath(path, "mac"), locate, fmt.Sprintf(
				"changing the MAC address of device %s gives it a new identity, and rules of other devices, "+
					"segments or the quarantine name it: apply the whole policy instead", quote(nd.Name)))
		}
		p.id = e.peekID()
		d.Fresh = []uint32{p.id}
	}

	var err error
	p.scratchRecord, err = e.compileScratch(path, nd, p.id, p.newID)
	if err != nil {
		var pe *PathError
		if errors.As(err, &pe) {
			return nil, fieldError(file, pe.Path, locate, pe.Err.Error())
		}
		return nil, err
	}
	e.putEntries(d, p)
	d.commit = func() { e.commitPut(p) }
	e.pending = d
	return d, nil
}

// devicePut is a put being prepared: the new device, the one it replaces (if any), and what
// the steps of PreparePut find for Commit.
type devicePut struct {
	nd, od     *Device
	i          int  // nd's index in the policy's devices
	replace    bool // od is the device of nd's name, at index i
	okey, nkey bpf.DevKey
	orec       bpf.DevRec
	id         uint32 // nd's dev_id
	newID      bool   // id is not od's: a new device, or a new MAC
	scratchRecord
	added []*rsKeys      // the new rule sets' entries (scratchRecord.added)
	uses  map[uint32]int // the change of each rule set's uses
	gone  []*rsKeys      // the old rule sets' entries, of those no device uses afterwards
}

// scratchRecord is a device's record compiled into a scratch snapshot, and the changes to the
// compiler's state that Commit redoes.
type scratchRecord struct {
	rec     bpf.DevRec
	added   []string  // keys in compiler.rulesets of the new rule sets: nRS, nRS+1, entries in scratch
	rsFlags []uint16  // the new rule sets' flags
	gAfter  uint32    // compiler.groups after compiling them
	lists   [2]string // the device's keys in compiler.listCache: outbound, inbound
	cached  [2]bool   // list was in compiler.listCache
	stale   [2]bool   // and its rule set names the device's old id
	scratch *Snapshot
	nRS     int
}

// validatePut checks nd as the device document at path in file, as device i of the policy
// (replacing the one there, or joining it).
func (e *Editor) validatePut(file, path string, nd *Device, i int, replace bool,
	locate func(string) (int, int)) error {
	errs := &errorList{}
	v := e.val
	v.file, v.errs, v.locate, v.singlePath, v.singleIdx, v.singleName = file, errs, locate, path, i, nd.Name
	if !replace {
		// A new device may name itself as a destination.
		e.devIdx[nd.Name] = i
	}
	v.device(i, nd)
	if !replace {
		delete(e.devIdx, nd.Name)
	}
	v.file, v.errs, v.locate = "", nil, nil
	return errs.err()
}

// compileScratch compiles nd's record with dev_id id; a rule list no device uses yet becomes a
// new rule set, compiled into a scratch snapshot. Then the compiler is put back as it was:
// Commit redoes what the change needs.
func (e *Editor) compileScratch(path string, nd *Device, id uint32, newID bool) (scratchRecord, error) {
	var sr scratchRecord
	var cachedRS [2]uint32
	for dir, inbound := range [2]bool{false, true} {
		sr.lists[dir] = string(listKey(nil, nd.Segment, nd.Allow, inbound))
		cachedRS[dir], sr.cached[dir] = e.c.listCache[sr.lists[dir]]
		// A device that names itself and gets a new id needs its list compiled again: the
		// cached rule set names its old id.
		sr.stale[dir] = sr.cached[dir] && newID && namesSelf(nd, inbound)
		if sr.stale[dir] {
			delete(e.c.listCache, sr.lists[dir])
		}
	}
	scratch := &Snapshot{Rules: map[bpf.RuleKey]bpf.RuleVal{}, Prefixes: map[bpf.PrefixKey]bpf.PrefixVal{}}
	real := e.c.snap
	e.c.snap = scratch
	nRS, g0 := len(e.c.rsFlags), e.c.groups
	prevID, hadID := e.c.devIDs[nd.Name]
	e.c.devIDs[nd.Name] = id
	e.c.added = e.c.added[:0]
	rec, err := e.c.record(path, nd, e.segs)
	e.c.snap = real
	if hadID {
		e.c.devIDs[nd.Name] = prevID
	} else {
		delete(e.c.devIDs, nd.Name)
	}
	sr.added = slices.Clone(e.c.added)
	sr.rsFlags = slices.Clone(e.c.rsFlags[nRS:])
	e.c.rsFlags = e.c.rsFlags[:nRS]
	for _, canon := range sr.added {
		delete(e.c.rulesets, canon)
	}
	e.c.added = e.c.added[:0]
	for dir := range sr.lists {
		if !sr.cached[dir] || sr.stale[dir] {
			delete(e.c.listCache, sr.lists[dir])
		}
		if sr.stale[dir] {
			e.c.listCache[sr.lists[dir]] = cachedRS[dir]
		}
	}
	sr.gAfter = e.c.groups
	e.c.groups = g0
	if err != nil {
		return scratchRecord{}, err
	}
	sr.rec, sr.scratch, sr.nRS = rec, scratch, nRS
	return sr, nil
}

// putEntries records in d the map entries p changes: the device map, the address index and
// the rule sets.
func (e *Editor) putEntries(d *Delta, p *devicePut) {
	// The device map.
	if p.replace && p.okey != p.nkey {
		d.Devices.Del = append(d.Devices.Del, p.okey)
		d.Counts[0]--
	}
	if !p.replace || p.okey != p.nkey {
		d.Counts[0]++
	}
	if !p.replace || p.orec != p.rec {
		d.Devices.put(p.nkey, p.rec)
	}
	// The address index.
	nval := addrVal(&p.rec)
	naddrs := deviceAddrs(p.nd)
	if p.replace {
		for _, a := range deviceAddrs(p.od) {
			if !slices.Contains(naddrs, a) {
				d.Addrs.Del = append(d.Addrs.Del, bpf.AddrKey{Addr: in6(a)})
				d.Counts[1]--
			}
		}
	}
	for _, a := range naddrs {
		k := bpf.AddrKey{Addr: in6(a)}
		old, had := e.snap.Addrs[k]
		if !had {
			d.Counts[1]++
		}
		if !had || old != nval {
			d.Addrs.put(k, nval)
		}
	}
	// The rule sets: the new ones' entries; the old ones' if no device uses them afterwards.
	p.added = make([]*rsKeys, len(p.scratchRecord.added))
	for i, canon := range p.scratchRecord.added {
		p.added[i] = &rsKeys{canon: canon}
	}
	for k, v := range p.scratch.Rules {
		d.Rules.put(k, v)
		a := p.added[int(k.Ruleset)-p.nRS]
		a.rules = append(a.rules, k)
	}
	for k, v := range p.scratch.Prefixes {
		d.Prefixes.put(k, v)
		a := p.added[int(k.Ruleset)-p.nRS]
		a.prefixes = append(a.prefixes, k)
	}
	d.Counts[3] += len(p.scratch.Rules)
	d.Counts[2] += len(p.scratch.Prefixes)
	p.uses = ruleUses(nil, &p.rec, 1)
	if p.replace {
		p.uses = ruleUses(p.uses, &p.orec, -1)
	}
	p.gone = e.release(p.uses, d)
	if p.id >= e.next {
		d.MaxDevID = max(d.MaxDevID, p.id)
	}
}

// commitPut makes p part of the policy, the snapshot's names, the compiler's state and the
// indexes (the commit of its Delta).
func (e *Editor) commitPut(p *devicePut) {
	// The old rule sets first (they may take the lists' cache entries with them), then the new.
	e.use(p.uses)
	for _, k := range p.gone {
		e.forget(k)
	}
	for i, canon := range p.scratchRecord.added {
		id := uint32(p.nRS + i)
		e.c.rsFlags = append(e.c.rsFlags, p.rsFlags[i])
		e.c.rulesets[canon] = id
		e.rsKeys[id] = p.added[i]
	}
	e.c.groups = p.gAfter
	for dir, rs := range [2]uint32{p.rec.Ruleset, p.rec.InRuleset} {
		if !p.cached[dir] || p.stale[dir] {
			e.c.listCache[p.lists[dir]] = rs
			e.rsKeys[rs].lists = append(e.rsKeys[rs].lists, p.lists[dir])
		}
	}
	if p.newID {
		e.takeID(p.id) // before the old id is freed: it is not reused in this revision
	}
	if p.replace {
		e.index(p.i, p.od, -1)
		if p.okey != p.nkey {
			delete(e.snap.DeviceNames, p.orec.DevId)
			heap.Push(&e.ids, p.orec.DevId)
		}
	}
	if p.replace {
		e.p.Spec.Devices[p.i] = *p.nd
	} else {
		e.p.Spec.Devices = append(e.p.Spec.Devices, *p.nd)
		e.devIdx[p.nd.Name] = p.i
	}
	e.index(p.i, &e.p.Spec.Devices[p.i], 1)
	e.c.devIDs[p.nd.Name] = p.id
	e.snap.DeviceNames[p.id] = p.nd.Name
}

// fieldError is one problem of a device document, located when locate is given.
func fieldError(file, path string, locate func(string) (int, int), msg string) error {
	fe := &FieldError{File: file, Path: path, Msg: msg}
	if locate != nil {
		fe.Line, fe.Col = locate(path)
	}
	errs := &errorList{}
	errs.add(fe)
	return errs.err()
}

// delta starts the Delta of a change to the next revision.
func (e *Editor) delta(summary string) *Delta {
	d := &Delta{Revision: e.snap.Revision + 1, Config: e.snap.Config, Summary: summary,
		Counts: [4]int{len(e.snap.Devices), len(e.snap.Addrs), len(e.snap.Prefixes), len(e.snap.Rules)}}
	d.Config.Revision = d.Revision
	d.MaxDevID = e.next - 1
	return d
}

// ruleUses adds n to uses (allocated when nil) for each rule set of rec: its outbound and its
// inbound one (twice when they are the same).
func ruleUses(uses map[uint32]int, rec *bpf.DevRec, n int) map[uint32]int {
	if uses == nil {
		uses = make(map[uint32]int, 4)
	}
	uses[rec.Ruleset] += n
	uses[rec.InRuleset] += n
	return uses
}

// use applies a change of the rule sets' uses (Commit).
func (e *Editor) use(uses map[uint32]int) {
	for rs, n := range uses {
		e.rsUse[rs] += n
	}
}

// release records in d the removal of the entries of the rule sets that the change of uses
// leaves unused (never the quarantine's), returning them for Commit to forget.
func (e *Editor) release(uses map[uint32]int, d *Delta) []*rsKeys {
	var gone []*rsKeys
	for rs, n := range uses {
		if n >= 0 || rs == e.quarR || e.rsUse[rs]+n > 0 {
			continue
		}
		k := e.rsKeys[rs]
		if k == nil {
			continue
		}
		d.Rules.Del = append(d.Rules.Del, k.rules...)
		d.Prefixes.Del = append(d.Prefixes.Del, k.prefixes...)
		d.Counts[3] -= len(k.rules)
		d.Counts[2] -= len(k.prefixes)
		gone = append(gone, k)
	}
	return gone
}

// forget drops a removed rule set from the compiler and the indexes (Commit).
func (e *Editor) forget(k *rsKeys) {
	if k == nil {
		return
	}
	rs := e.c.rulesets[k.canon]
	delete(e.c.rulesets, k.canon)
	for _, l := range k.lists {
		delete(e.c.listCache, l)
	}
	delete(e.rsKeys, rs)
	delete(e.rsUse, rs)
}

// Commit makes the prepared change part of the Editor's policy and snapshot: call it once the
// datapath holds the change. Only the latest Delta prepared can be committed (a Delta is
// prepared against the Editor as it is), once; Commit panics on any other.
func (e *Editor) Commit(d *Delta) {
	if d != e.pending || d.committed {
		panic("policy: Commit of a Delta that is not the latest one prepared")
	}
	d.committed = true
	d.commit()
	d.Devices.ApplyTo(e.snap.Devices)
	d.Addrs.ApplyTo(e.snap.Addrs)
	d.Prefixes.ApplyTo(e.snap.Prefixes)
	d.Rules.ApplyTo(e.snap.Rules)
	e.snap.Revision = d.Revision
	e.snap.Config = d.Config
	e.snap.Fresh = nil // the snapshot is no longer the step from CompileOptions.Prev
}

// peekID is the id a new device gets: the lowest free one.
func (e *Editor) peekID() uint32 {
	if len(e.ids) > 0 {
		return e.ids[0]
	}
	return e.next
}

// takeID marks id, the peekID of the same revision, used.
func (e *Editor) takeID(id uint32) {
	if id == e.next {
		e.next++
		return
	}
	heap.Pop(&e.ids)
}

// namedByOthers counts the rules of other devices, segments and the quarantine that name
// device d (of the policy) as their destination or source.
func (e *Editor) namedByOthers(d *Device) int { return e.refs[d.Name] - selfRefs(d) }

// selfRefs counts the rules of d that name d itself.
func selfRefs(d *Device) int {
	n := 0
	for i := range d.Allow {
		if d.Allow[i].Peer().Device == d.Name {
			n++
		}
	}
	return n
}

// namesSelf reports whether a rule of d of one direction (from: rules when inbound) names d.
func namesSelf(d *Device, inbound bool) bool {
	for i := range d.Allow {
		if d.Allow[i].Inbound() == inbound && d.Allow[i].Peer().Device == d.Name {
			return true
		}
	}
	return false
}

// deviceAddrs are d's bound addresses (d is valid).
func deviceAddrs(d *Device) []netip.Addr {
	out := make([]netip.Addr, 0, len(d.IPv4)+len(d.IPv6))
	for _, l := range [2][]string{d.IPv4, d.IPv6} {
		for _, s := range l {
			out = append(out, netip.MustParseAddr(s))
		}
	}
	return out
}

// idHeap is a min-heap of free device ids.
type idHeap []uint32

func (h idHeap) Len() int           { return len(h) }
func (h idHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h idHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *idHeap) Push(x any)        { *h = append(*h, x.(uint32)) }
func (h *idHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Renumber makes the snapshot carry revision rev (an agent restoring a policy whose maps
// carry a later revision keeps revisions increasing).
func (e *Editor) Renumber(rev uint64) {
	e.snap.Revision = rev
	e.snap.Config.Revision = rev
}
