package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
)

// current is the policy in force. Immutable once published.
type current struct {
	meta     api.PolicyMeta
	yaml     []byte
	filename string
	pol      *policy.Policy   // nil when no policy (or its document was lost)
	snap     *policy.Snapshot // nil when no policy
	// ed owns pol and snap when they came from a document (nil otherwise): device changes
	// modify them in place, under Agent.polMu. yaml is nil once a device changed.
	ed *policy.Editor
}

// caller identifies who asked for a change (for the audit log).
type caller struct {
	uid, gid, pid int64
}

var self = caller{uid: int64(os.Getuid()), gid: int64(os.Getgid()), pid: int64(os.Getpid())}

// rejectError is a policy that cannot be applied; Fields locate the problems in the document.
type rejectError struct {
	kind   string // api.KindInvalidPolicy or api.KindRejected
	err    error
	fields []api.FieldError
}

func (e *rejectError) Error() string { return e.err.Error() }
func (e *rejectError) Unwrap() error { return e.err }

func ifindex(name string) (uint32, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return 0, fmt.Errorf("gateway port %q: %w", name, err)
	}
	return uint32(ifc.Index), nil
}

// parse parses and validates a policy document of at most the configured size.
func (a *Agent) parse(filename string, doc []byte) (*policy.Policy, error) {
	return parseLimit(filename, doc, a.maxPolicyBytes())
}

// maxPolicyBytes is the configured document size limit (policy.MaxDocumentSize when unset).
func (a *Agent) maxPolicyBytes() int {
	if a.cfg.MaxPolicyBytes > 0 {
		return a.cfg.MaxPolicyBytes
	}
	return policy.MaxDocumentSize
}

func parseLimit(filename string, doc []byte, limit int) (*policy.Policy, error) {
	if filename == "" {
		filename = "<policy>"
	}
	p, err := policy.ParseLimit(filename, doc, limit)
	if err != nil {
		fields := api.FieldErrors(err)
		return nil, &rejectError{kind: api.KindInvalidPolicy, fields: fields,
			err: fmt.Errorf("invalid policy %s: %d problem(s): %w", filename, len(fields), err)}
	}
	return p, nil
}

// capacityFields names the configuration key behind each capacity.
var capacityFields = map[string][2]string{
	"zt_devices":  {"spec.devices", "max_devices"},
	"zt_devstats": {"spec.devices", "max_devices"},
	"zt_addrs":    {"spec.devices[*].ipv4/ipv6", "max_addresses"},
	"zt_rules":    {"allow", "max_rules"},
	"zt_prefixes": {"allow[*].to.cidr", "max_prefixes"},
}

// capacityReject turns a capacity error of the maps into a rejection naming the file.
func capacityReject(filename string, ce *maps.CapacityError) *rejectError {
	return capacityRejectN(filename, ce.Map, strconv.Itoa(ce.Count), ce.Capacity)
}

// capacityRejectN is capacityReject with the count needed (n) in words.
func capacityRejectN(filename, mapName, n string, capacity int) *rejectError {
	f := capacityFields[mapName]
	msg := fmt.Sprintf("the policy needs %s entries in %s, the agent's capacity is %d (agent setting %s)",
		n, mapName, capacity, f[1])
	return &rejectError{kind: api.KindRejected, err: fmt.Errorf("%s: %s", filename, msg),
		fields: []api.FieldError{{File: filename, Field: f[0], Message: msg}}}
}

// compileHook, when set (by tests), runs after each compile of a validate or an apply.
var compileHook func(filename string)

// limits are the datapath's capacities, for Compile to stop as soon as a policy exceeds them.
func (a *Agent) limits() policy.Limits {
	return policy.Limits{Devices: a.lim.Devices, Addrs: a.lim.Addrs, Rules: a.lim.Rules, Prefixes: a.lim.Prefixes}
}

// checkCounts rejects a policy with more devices or addresses than the maps hold (each is one
// entry) before it is compiled; rules and prefixes are counted as the compile goes.
func (a *Agent) checkCounts(filename string, p *policy.Policy) error {
	addrs := 0
	for i := range p.Spec.Devices {
		addrs += len(p.Spec.Devices[i].IPv4) + len(p.Spec.Devices[i].IPv6)
	}
	for _, c := range []struct {
		name     string
		n, limit int
	}{
		{name: bpf.ZtgateMapZtDevices, n: len(p.Spec.Devices), limit: a.lim.Devices},
		{name: bpf.ZtgateMapZtAddrs, n: addrs, limit: a.lim.Addrs},
	} {
		if c.limit > 0 && c.n > c.limit {
			return capacityReject(filename, &maps.CapacityError{Map: c.name, Count: c.n, Capacity: c.limit})
		}
	}
	return nil
}

// compile compiles p as revision rev over the policy whose device ids are prev's, within the
// datapath's capacities.
func (a *Agent) compile(filename string, doc []byte, p *policy.Policy, rev uint64,
	prev *policy.Snapshot) (*policy.Snapshot, error) {
	if err := a.checkCounts(filename, p); err != nil {
		return nil, err
	}
	s, err := policy.Compile(p, policy.CompileOptions{Revision: rev, Ifindex: a.portIndex, Prev: prev, Limits: a.limits()})
	if compileHook != nil {
		compileHook(filename)
	}
	if err != nil {
		return nil, compileReject(filename, doc, err)
	}
	return s, nil
}

// edit is compile keeping the compiler's state, for device changes (the Editor owns p). lim
// is zero for a policy accepted before (restored at start), which is never refused for its size.
func (a *Agent) edit(filename string, doc []byte, p *policy.Policy, rev uint64, prev *policy.Snapshot,
	lim policy.Limits) (*policy.Editor, error) {
	if lim != (policy.Limits{}) {
		if err := a.checkCounts(filename, p); err != nil {
			return nil, err
		}
	}
	ed, err := policy.NewEditor(p, policy.CompileOptions{Revision: rev, Ifindex: a.portIndex, Prev: prev, Limits: lim})
	if compileHook != nil {
		compileHook(filename)
	}
	if err != nil {
		return nil, compileReject(filename, doc, err)
	}
	return ed, nil
}

// compileReject is the rejection of a policy the compile refused: over capacity, or a field it
// cannot enforce, located in doc (the document as sent; nil for a policy restored at start).
func compileReject(filename string, doc []byte, err error) error {
	var ce *policy.CapacityError
	if errors.As(err, &ce) {
		n := strconv.Itoa(ce.Count)
		if ce.AtLeast {
			n = "more than " + strconv.Itoa(ce.Capacity)
		}
		return capacityRejectN(filename, ce.Map, n, ce.Capacity)
	}
	if doc != nil {
		err = policy.Locate(filename, doc, err)
	}
	fields := api.FieldErrors(err)
	if len(fields) == 0 {
		fields = []api.FieldError{{File: filename, Message: err.Error()}}
	}
	return &rejectError{kind: api.KindRejected, err: fmt.Errorf("cannot enforce the policy: %w", err), fields: fields}
}

func meta(p *policy.Policy, rev uint64, hash string, at time.Time) api.PolicyMeta {
	m := api.PolicyMeta{Revision: rev, Hash: hash, AppliedAt: at}
	if p != nil {
		m.Name = p.Metadata.Name
		m.Devices = len(p.Spec.Devices)
		m.Segments = len(p.Spec.Segments)
	}
	return m
}

// restore makes the maps hold the persisted policy (or the configured policy file on first
// start) before any program is attached. The maps are pinned: when they already hold the
// persisted revision (an agent restart), nothing is written. The persisted device ids make the
// recompiled snapshot identical to the pinned one, and its hash proves it.
func (a *Agent) restore() error {
	pinned, err := a.maps.ActiveRevision()
	if errors.Is(err, maps.ErrNoPolicy) {
		pinned, err = 0, nil
	}
	if err != nil {
		return err
	}
	st, err := a.store.load()
	if err != nil {
		return a.startDamaged(partState, err, pinned)
	}
	switch {
	case st != nil:
		// A persisted document was accepted once: its size never rejects it (the limit may have
		// been lowered since).
		p, err := parseLimit(st.Filename, []byte(st.YAML), max(len(st.YAML), a.maxPolicyBytes()))
		if err != nil {
			return fmt.Errorf("persisted policy revision %d: %w", st.Revision, err)
		}
		prev, err := policy.PrevFromDevIDs(st.DevIDs)
		if err != nil {
			return fmt.Errorf("persisted policy revision %d: %w", st.Revision, err)
		}
		ed, err := a.edit(st.Filename, nil, p, st.Revision, prev, policy.Limits{})
		if err != nil {
			return fmt.Errorf("persisted policy revision %d: %w", st.Revision, err)
		}
		// The device changes made since the state file was written.
		recs, err := a.store.readJournal()
		if err != nil {
			return a.startDamaged(partJournal, err, pinned)
		}
		rejected, err := a.store.readRejected()
		if err != nil {
			return a.startDamaged(partJournal, err, pinned)
		}
		last, err := replay(ed, recs, st.Revision, st.Hash, rejected, a.log.Warn)
		if err != nil {
			return a.startDamaged(partJournal, fmt.Errorf("persisted policy revision %d: %w", st.Revision, err), pinned)
		}
		if last == nil && (len(recs) > 0 || rejected != 0) {
			// Nothing to replay: what the journal holds is in the state file or failed.
			if err := a.clearJournal(); err != nil {
				return fmt.Errorf("empty the journal: %w", err)
			}
		}
		rev := st.Revision
		if last != nil {
			rev = last.Revision
		}
		if pinned > rev {
			// The maps carry a later revision than the state (only possible if the state
			// directory was restored from a backup): keep revisions increasing.
			rev = pinned + 1
		}
		ed.Renumber(rev)
		snap := ed.Snapshot()
		if last != nil {
			// Fold the changes into a new state file; the maps are written again below
			// (the state file cannot prove what ApplyDelta left in them).
			doc, err := policy.Marshal(ed.Policy())
			if err != nil {
				return fmt.Errorf("persisted policy revision %d: %w", st.Revision, err)
			}
			a.log.Info("replayed device changes", "changes", last.Revision-st.Revision, "revision", rev)
			st = &persisted{Revision: rev, Name: p.Metadata.Name, Hash: policy.Hash(doc), AppliedAt: last.At,
				Filename: st.Filename, YAML: string(doc), SnapshotHash: "-"}
		}
		hash := snap.Hash()
		if pinned == rev && hash == st.SnapshotHash {
			a.log.Info("adopted the pinned policy", "revision", rev, "name", p.Metadata.Name)
		} else {
			if rev != st.Revision || hash != st.SnapshotHash {
				st.Revision, st.DevIDs, st.SnapshotHash = rev, snap.DevIDs(), hash
				if err := a.store.save(st); err != nil {
					return err
				}
			}
			// The state file may be ahead of the maps (a crash between persisting a change and
			// writing it): which ids are new is what the maps enforce, not what the state says.
			if fresh, err := a.maps.FreshOverActive(snap); err != nil {
				a.log.Warn("cannot read the pinned policy back; "+
					"counters of device ids reused since the last state may carry over", "err", err)
			} else {
				snap.Fresh = fresh
			}
			if err := a.maps.Apply(snap, a.lim); err != nil && !errors.Is(err, maps.ErrCommitted) {
				return fmt.Errorf("restore policy: %w", err)
			}
			if last != nil || rejected != 0 {
				if err := a.clearJournal(); err != nil {
					return fmt.Errorf("empty the journal: %w", err)
				}
			}
			a.log.Info("restored the persisted policy", "revision", rev, "name", p.Metadata.Name, "pinned_revision", pinned)
		}
		a.cur.Store(&current{meta: meta(p, rev, st.Hash, st.AppliedAt), yaml: []byte(st.YAML), filename: st.Filename,
			pol: p, snap: snap, ed: ed})
		go a.index(ed)
		a.saved = st
		a.auditRestored(rev, st.Hash)
		return nil
	case a.cfg.Policy != "":
		a.cur.Store(&current{meta: api.PolicyMeta{Revision: pinned}, snap: a.readPinned(pinned)})
		doc, err := os.ReadFile(a.cfg.Policy)
		if err != nil {
			return fmt.Errorf("policy file: %w", err)
		}
		if _, err := a.apply(a.cfg.Policy, doc, self); err != nil {
			return fmt.Errorf("initial policy: %w", err)
		}
		return nil
	default:
		a.cur.Store(&current{meta: api.PolicyMeta{Revision: pinned}, snap: a.readPinned(pinned)})
		if pinned > 0 {
			a.log.Warn("the pinned policy stays in force but its document is not in the state directory; "+
				"apply a policy", "revision", pinned)
		} else {
			a.log.Warn("no policy: every frame is dropped (no_policy) until one is applied")
		}
		return nil
	}
}

// auditRestored records revision rev (policy hash hash), restored at start, unless the audit
// log already ends with it in force: the agent may have stopped after recording a change and
// before making it, or an older agent may have made a change it had not recorded yet.
func (a *Agent) auditRestored(rev uint64, hash string) {
	rs, err := a.audit.Records()
	if err != nil {
		a.log.Error("audit log: cannot record the restored revision", "revision", rev, "err", err)
		return
	}
	// The revision in force after each change record: its new one if accepted, else its old.
	var recorded uint64
	for _, r := range rs {
		switch {
		case r.Action != api.ActionApply && r.Action != api.ActionDevice && r.Action != api.ActionRestore:
		case r.Result == api.ResultAccepted:
			recorded = r.NewRevision
		case r.Result == api.ResultRejected:
			recorded = r.OldRevision
		}
	}
	if recorded == rev {
		return
	}
	rec := api.AuditRecord{Action: api.ActionRestore, UID: self.uid, GID: self.gid, PID: self.pid,
		OldRevision: recorded, NewRevision: rev, PolicyHash: hash, Result: api.ResultAccepted}
	if _, err := a.audit.Append(rec); err != nil {
		a.log.Error("audit log: cannot record the restored revision", "revision", rev, "err", err)
		return
	}
	a.log.Warn("audit log: recorded the restored revision, which the log did not end with",
		"revision", rev, "recorded_revision", recorded)
}

// readPinned reads back a pinned policy the state directory does not describe, so that the
// next apply keeps its device ids. Best effort: it needs CAP_SYS_ADMIN.
func (a *Agent) readPinned(rev uint64) *policy.Snapshot {
	if rev == 0 {
		return nil
	}
	s, err := a.maps.ReadActive()
	if err != nil {
		a.log.Warn("cannot read the pinned policy back; device ids (and counters) may change at the next apply", "err", err)
		return nil
	}
	return s
}

// apply makes doc the policy in force, all or nothing, and audits the outcome.
func (a *Agent) apply(filename string, doc []byte, who caller) (*api.ApplyResult, error) {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	return a.applyHeld(filename, doc, who)
}

// applyHeld is apply for a caller that holds applyMu.
func (a *Agent) applyHeld(filename string, doc []byte, who caller) (*api.ApplyResult, error) {
	t0 := time.Now()
	old := a.cur.Load()
	var ph applyPhases
	hash := policy.Hash(doc)
	ph.hash = time.Since(t0)
	rec := who.record(api.ActionApply, old.meta.Revision)
	rec.PolicyHash = hash
	res, err := a.applyLocked(old, filename, doc, hash, &ph, &rec)
	return a.finishChange(changeLog{rejected: "policy rejected", applied: "policy applied",
		subject: []any{"file", filename, "uid", who.uid}}, rec, t0, res, err,
		"hash", hash, "bytes", len(doc),
		slog.Group("phases", "hash", ph.hash, "parse", ph.parse, "compile", ph.compile, "persist", ph.persist,
			"maps", ph.maps, "compare", ph.compare, "compare_wait", ph.wait),
		slog.Group("maps", "build", ph.swap.Build, "slot", ph.swap.Slot, "flip", ph.swap.Flip,
			"barrier", ph.swap.Barrier, "release", ph.swap.Release))
}

// record is the audit record of a change by c of the given action to the policy at revision old.
func (c caller) record(action string, old uint64) api.AuditRecord {
	return api.AuditRecord{Action: action, UID: c.uid, GID: c.gid, PID: c.pid, OldRevision: old}
}

// changeLog is how the agent logs one kind of change: its two messages and the attributes that
// say what changed and who asked.
type changeLog struct {
	rejected, applied string
	subject           []any
}

// finishChange audits and counts a change that started at t0 and ended with res or err (see
// recordChange), logs it as l says (details: more attributes of an applied change) and returns
// res, its Duration set, or err.
func (a *Agent) finishChange(l changeLog, rec api.AuditRecord, t0 time.Time, res *api.ApplyResult, err error,
	details ...any) (*api.ApplyResult, error) {
	d := time.Since(t0)
	a.recordChange(rec, err, d)
	if err != nil {
		a.log.Warn(l.rejected, append(l.subject, "revision", rec.OldRevision, "err", err)...)
		return nil, err
	}
	res.Duration = d
	attrs := append(l.subject, "old_revision", res.OldRevision, "new_revision", res.NewRevision, "duration", d)
	a.log.Info(l.applied, append(attrs, details...)...)
	return res, nil
}

// recordChange audits a policy change that failed with err (rec: who, what, the old revision;
// the accepted record of a change, failed or not, was written by auditAccepted before anything
// changed) and counts the change in the metrics.
func (a *Agent) recordChange(rec api.AuditRecord, err error, d time.Duration) {
	if err != nil {
		rec.Result, rec.NewRevision, rec.Error = api.ResultRejected, rec.OldRevision, err.Error()
		if _, aerr := a.audit.Append(rec); aerr != nil {
			a.log.Error("audit log", "err", aerr)
		}
	}
	if a.metrics != nil {
		a.metrics.ObserveApply(err == nil, d)
	}
}

// auditAccepted writes the accepted record of a change to revision rev (rec: who, what, the old
// revision) before the change is made: a change that cannot be recorded is refused, and changes
// nothing. Should the change fail after all, recordChange records that too.
func (a *Agent) auditAccepted(rec *api.AuditRecord, rev uint64) error {
	r := *rec
	r.Result, r.NewRevision = api.ResultAccepted, rev
	if _, err := a.audit.Append(r); err != nil {
		return fmt.Errorf("the change cannot be recorded in the audit log, nothing was changed: %w", err)
	}
	return nil
}

// applyPhases is where the time of an apply goes (logged with "policy applied").
type applyPhases struct {
	hash    time.Duration // digest of the document
	parse   time.Duration // YAML decode and validation
	compile time.Duration // compile to a snapshot and capacity check
	persist time.Duration // state file written (and synced)
	maps    time.Duration // maps.Apply: inner maps written, flip, barrier, old slot released
	compare time.Duration // what changed (the reply's changes), computed while the rest runs
	wait    time.Duration // waiting for compare once the rest was done
	swap    maps.ApplyStats
}

// since returns the time since *t and moves *t to now.
func since(t *time.Time) time.Duration {
	now := time.Now()
	d := now.Sub(*t)
	*t = now
	return d
}

func (a *Agent) applyLocked(old *current, filename string, doc []byte, hash string, ph *applyPhases,
	rec *api.AuditRecord) (*api.ApplyResult, error) {
	t := time.Now()
	p, err := a.parse(filename, doc)
	if err != nil {
		return nil, err
	}
	ph.parse = since(&t)
	rev := old.meta.Revision + 1
	ed, err := a.edit(filename, doc, p, rev, old.snap, a.limits())
	if err != nil {
		return nil, err
	}
	snap := ed.Snapshot()
	if err := a.checkCapacity(filename, snap); err != nil {
		return nil, err
	}
	ph.compile = since(&t)
	// What changed is only for the reply: work it out on another CPU while this one persists
	// and writes the maps. Nothing writes either policy meanwhile (device changes wait for
	// applyMu), and every return from here waits for it.
	var changes policy.Diff
	compared := make(chan time.Duration, 1)
	go func() {
		t0 := time.Now()
		defer func() {
			if r := recover(); r != nil {
				a.log.Error("listing the changes of an apply failed", "panic", r)
			}
			compared <- time.Since(t0)
		}()
		changes = policy.Compare(old.pol, p).Limit(policy.ListedDevices)
	}()
	defer func() {
		if compared != nil {
			<-compared
		}
	}()
	now := time.Now().UTC()
	st := &persisted{Revision: rev, Name: p.Metadata.Name, Hash: hash, AppliedAt: now, Filename: filename,
		YAML: string(doc), devs: snap.Devices, SnapshotHash: snap.Hash()}
	prevState := a.saved
	if prevState == nil {
		var err error
		// A state file found damaged at start is replaced (a copy of it was kept).
		if prevState, err = a.store.load(); err != nil && !a.damage.has(partState) {
			return nil, err
		}
	}
	// Audit, then persist: after a crash at any point the agent restores a policy that was
	// accepted and recorded.
	if err := a.auditAccepted(rec, rev); err != nil {
		return nil, err
	}
	if err := a.store.save(st); err != nil {
		return nil, err
	}
	a.saved = st
	ph.persist = since(&t)
	if err := a.maps.Apply(snap, a.lim); err != nil {
		if errors.Is(err, maps.ErrCommitted) {
			a.log.Warn("policy committed; releasing the old revision failed (retried on the next apply)", "err", err)
		} else {
			// Nothing changed in the kernel: put the state back as it was.
			if prevState != nil {
				if rerr := a.store.save(prevState); rerr != nil {
					a.log.Error("restore the state file after a failed apply", "err", rerr)
				} else {
					a.saved = prevState
				}
			} else if rerr := os.Remove(a.store.dir + "/" + stateFile); rerr != nil {
				a.log.Error("remove the state file after a failed apply", "err", rerr)
			} else {
				a.saved = nil
			}
			var ce *maps.CapacityError
			if errors.As(err, &ce) {
				return nil, capacityReject(filename, ce)
			}
			return nil, err
		}
	}
	ph.maps = since(&t)
	ph.swap = a.maps.LastApply()
	// The state file holds every device change now.
	if err := a.clearJournal(); err != nil {
		a.log.Warn("empty the device change journal (its records are older than the state file)", "err", err)
	}
	a.cur.Store(&current{meta: meta(p, rev, hash, now), yaml: doc, filename: filename, pol: p, snap: snap, ed: ed})
	go a.index(ed)
	if a.damage.any() {
		a.damage.clear()
		a.log.Info("the state directory is repaired: the applied policy replaced what was damaged", "revision", rev)
	}
	t = time.Now()
	ph.compare = <-compared // its own duration, on the other CPU
	compared = nil
	ph.wait = since(&t)
	return &api.ApplyResult{OldRevision: old.meta.Revision, NewRevision: rev, Hash: hash, Changes: changes}, nil
}

// index builds the indexes of ed, the policy in force, for the device changes to come, in the
// background of the apply that made it (a change that comes first waits for them).
func (a *Agent) index(ed *policy.Editor) {
	if a.cur.Load().ed == ed {
		ed.Index() // under the Editor's own lock: a change waits for it, a whole apply does not
	}
}

// validate parses, validates and compiles doc without applying it.
func (a *Agent) validate(filename string, doc []byte) (*api.ValidateResult, *policy.Policy, error) {
	p, err := a.parse(filename, doc)
	if err != nil {
		return nil, nil, err
	}
	// The ids to keep, copied: a device change modifies cur.snap in place, and the compile
	// must not hold polMu (a change waiting for it would hold up every reader).
	a.polMu.RLock()
	cur := a.cur.Load()
	var prev *policy.Snapshot
	if cur.snap != nil {
		devs := make(map[bpf.DevKey]bpf.DevRec, len(cur.snap.Devices))
		for k, v := range cur.snap.Devices {
			devs[k] = v
		}
		prev = &policy.Snapshot{Devices: devs}
	}
	a.polMu.RUnlock()
	snap, err := a.compile(filename, doc, p, cur.meta.Revision+1, prev)
	if err != nil {
		return nil, nil, err
	}
	if err := a.checkCapacity(filename, snap); err != nil {
		return nil, nil, err
	}
	res := &api.ValidateResult{Name: p.Metadata.Name, Hash: policy.Hash(doc), Devices: len(p.Spec.Devices),
		Segments: len(p.Spec.Segments)}
	return res, p, nil
}

// checkCapacity rejects a snapshot that does not fit the datapath's maps.
func (a *Agent) checkCapacity(filename string, snap *policy.Snapshot) error {
	err := a.maps.Check(snap, a.lim)
	var ce *maps.CapacityError
	if errors.As(err, &ce) {
		return capacityReject(filename, ce)
	}
	return err
}
