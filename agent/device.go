package agent

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/internal/fsutil"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
)

// journalFile holds the device changes made since the state file was written, one JSON record
// a line, each fsynced before the maps change. A restart replays them over the state file's
// policy and folds them into a new state file; so does a change that finds the journal past
// maxJournal or maxJournalBytes, and disown. A whole apply writes its own state file and
// empties the journal.
const journalFile = "changes.jsonl"

// maxJournal and maxJournalBytes bound the journal: past either, a change folds the journal
// into the state file (one whole write of the policy, as an apply does).
const (
	maxJournal      = 10000
	maxJournalBytes = 64 << 20
)

// rejectedFile names the revision of a journal record whose change failed but which could not
// be removed (nor the journal folded away): replay stops before it.
const rejectedFile = "changes.rejected"

// change is one journal record.
type change struct {
	Revision uint64    `json:"revision"`
	Op       string    `json:"op"` // put, delete
	Name     string    `json:"name"`
	Doc      string    `json:"doc,omitempty"`    // put: the device document as sent
	DevID    uint32    `json:"dev_id,omitempty"` // put: the id the device got (checked on replay)
	Hash     string    `json:"hash"`             // the policy hash after the change (see chainHash)
	At       time.Time `json:"at"`
}

// chainHash is the hash of the policy after a device change: sha256 over the previous hash
// and the change's document (the device YAML, or "delete NAME").
func chainHash(prev string, doc []byte) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write([]byte{0})
	h.Write(doc)
	return hex.EncodeToString(h.Sum(nil))
}

// journal is the open journal file.
type journal struct {
	f    *os.File
	size int64
	n    int // records
}

func (s *store) journalPath() string { return filepath.Join(s.dir, journalFile) }

// openJournal opens (creating) the journal for appending.
func (s *store) openJournal() (*journal, error) {
	f, err := os.OpenFile(s.journalPath(), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open journal: %w", err)
	}
	// A record cut short by a crash is not a change (readJournal drops it): cut it off, so
	// that the next record starts a line of its own.
	whole := bytes.LastIndexByte(data, '\n') + 1
	if whole < len(data) {
		if err := f.Truncate(int64(whole)); err != nil {
			f.Close()
			return nil, fmt.Errorf("open journal: cut a torn record: %w", err)
		}
	}
	// The file may be new: its directory entry must survive a power loss with its records.
	if err := fsutil.SyncDir(s.dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("open journal: %w", err)
	}
	return &journal{f: f, size: int64(whole), n: bytes.Count(data, []byte("\n"))}, nil
}

// errJournalDamaged: a record that failed may still be in the journal.
var errJournalDamaged = errors.New("the journal may hold the record of a failed change")

// append writes rec and syncs it.
func (j *journal) append(rec *change) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode journal record: %w", err)
	}
	b = append(b, '\n')
	if _, err := j.f.Write(b); err != nil {
		return j.cutBack(fmt.Errorf("write journal: %w", err))
	}
	if err := j.f.Sync(); err != nil {
		return j.cutBack(fmt.Errorf("sync journal: %w", err))
	}
	j.size += int64(len(b))
	j.n++
	return nil
}

// cutBack removes what a failed append may have written; when it cannot, err is wrapped with
// errJournalDamaged.
func (j *journal) cutBack(err error) error {
	if terr := j.f.Truncate(j.size); terr != nil {
		return fmt.Errorf("%w: %w (and cutting it back failed: %w)", errJournalDamaged, err, terr)
	}
	if serr := j.f.Sync(); serr != nil {
		return fmt.Errorf("%w: %w (and syncing the cut failed: %w)", errJournalDamaged, err, serr)
	}
	return err
}

// undo removes the last record (its change did not reach the maps).
func (j *journal) undo(size int64) error {
	if err := j.f.Truncate(size); err != nil {
		return err
	}
	j.size = size
	j.n--
	return j.f.Sync()
}

// reset empties the journal (its records are in the state file now).
func (j *journal) reset() error {
	if err := j.f.Truncate(0); err != nil {
		return fmt.Errorf("empty journal: %w", err)
	}
	j.size, j.n = 0, 0
	return j.f.Sync()
}

// readJournal returns the journal's records. A last line cut short (a crash while writing it,
// before its change reached the maps) is dropped.
func (s *store) readJournal() ([]change, error) {
	f, err := os.Open(s.journalPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	defer f.Close()
	var out []change
	r := bufio.NewReader(f)
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return out, nil // a torn last line (no newline) is dropped
		}
		if err != nil {
			return nil, fmt.Errorf("read journal: %w", err)
		}
		var c change
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("read journal %s:%d: %w", s.journalPath(), line, err)
		}
		out = append(out, c)
	}
}

// replay applies the journal's records that follow revision rev (the state file's), whose
// policy hash is hash, to ed (no maps are written), up to the record of revision rejected
// (0: none; see rejectedFile), and returns the last one applied (nil when none). A record
// whose hash or device id differs from what replaying it gives is reported to warn.
func replay(ed *policy.Editor, recs []change, rev uint64, hash string, rejected uint64,
	warn func(msg string, args ...any)) (*change, error) {
	var last *change
	base := rev
	for i := range recs {
		c := &recs[i]
		if c.Revision <= base {
			continue // folded into the state file already
		}
		if rejected != 0 && c.Revision >= rejected {
			warn("journal: not replaying the record of a change that failed", "revision", c.Revision)
			break
		}
		if c.Revision != rev+1 {
			return last, fmt.Errorf("journal: revision %d follows revision %d", c.Revision, rev)
		}
		var d *policy.Delta
		var err error
		doc := []byte("delete " + c.Name)
		switch c.Op {
		case "put":
			doc = []byte(c.Doc)
			var nd *policy.Device
			var locate func(string) (int, int)
			if nd, locate, err = policy.ParseDevice(journalFile, doc); err == nil {
				d, err = ed.PreparePut(journalFile, "", nd, locate)
			}
		case "delete":
			d, err = ed.PrepareDelete(c.Name)
		default:
			err = fmt.Errorf("unknown operation %q", c.Op)
		}
		if err != nil {
			return last, fmt.Errorf("journal: revision %d: %w", c.Revision, err)
		}
		if hash = chainHash(hash, doc); hash != c.Hash {
			warn("journal: the policy hash differs from the record's", "revision", c.Revision, "hash", hash, "recorded", c.Hash)
		}
		if c.Op == "put" && len(d.Devices.Keys) > 0 && d.Devices.Vals[0].DevId != c.DevID {
			warn("journal: the device id differs from the record's", "revision", c.Revision, "device", c.Name,
				"id", d.Devices.Vals[0].DevId, "recorded", c.DevID)
		}
		ed.Commit(d)
		rev, last = c.Revision, c
	}
	return last, nil
}

func (a *Agent) handlePutDevice(w http.ResponseWriter, r *http.Request) {
	name, doc, ok := a.readPolicy(w, r)
	if !ok {
		return
	}
	res, err := a.changeDevice(r.PathValue("name"), name, doc, callerOf(r))
	a.answerChange(w, res, err)
}

func (a *Agent) handleDeleteDevice(w http.ResponseWriter, r *http.Request) {
	res, err := a.changeDevice(r.PathValue("name"), "", nil, callerOf(r))
	a.answerChange(w, res, err)
}

func (a *Agent) answerChange(w http.ResponseWriter, res *api.ApplyResult, err error) {
	switch {
	case errors.Is(err, policy.ErrNotFound):
		writeError(w, &api.Error{Status: http.StatusNotFound, Kind: api.KindNotFound, Message: err.Error()})
	case err != nil:
		writeError(w, errorFor(err))
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// changeDevice puts (doc != nil) or deletes device name, as the next revision, all or
// nothing, and audits the outcome. Its cost follows the change, not the policy: the Editor
// checks and compiles the one device, the journal gets one record, the maps one delta.
func (a *Agent) changeDevice(name, filename string, doc []byte, who caller) (*api.ApplyResult, error) {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	t0 := time.Now()
	old := a.cur.Load()
	summary := "delete device " + name
	if doc != nil {
		summary = "put device " + name
	}
	var ph changePhases
	rec := who.record(api.ActionDevice, old.meta.Revision)
	rec.Change = summary
	res, err := a.changeLocked(old, name, filename, doc, &ph, &rec)
	return a.finishChange(changeLog{rejected: "device change rejected", applied: "device changed",
		subject: []any{"change", summary, "uid", who.uid}}, rec, t0, res, err,
		slog.Group("phases", "prepare", ph.prepare, "journal", ph.journal, "maps", ph.maps, "commit", ph.commit),
		slog.Group("maps", "build", ph.swap.Build, "slot", ph.swap.Slot, "flip", ph.swap.Flip,
			"barrier", ph.swap.Barrier))
}

// changePhases is where the time of a device change goes (logged with "device changed").
type changePhases struct {
	prepare time.Duration // parse, check and compile the device
	journal time.Duration // the journal record written and synced
	maps    time.Duration // maps.ApplyDelta (barrier: the one the previous change left running)
	commit  time.Duration // the Editor's policy and snapshot updated
	swap    maps.ApplyStats
}

func (a *Agent) changeLocked(old *current, name, filename string, doc []byte, ph *changePhases,
	audit *api.AuditRecord) (*api.ApplyResult, error) {
	t := time.Now()
	if old.ed == nil {
		return nil, &rejectError{kind: api.KindRejected,
			err: errors.New("no policy document in force to change: apply a whole policy first")}
	}
	ed := old.ed
	var d *policy.Delta
	var err error
	var before, after *policy.Device
	if od, ok := ed.Device(name); ok {
		c := *od
		before = &c
	}
	rec := &change{Revision: old.meta.Revision + 1, Name: name, At: time.Now().UTC()}
	if doc != nil {
		if len(doc) > a.maxPolicyBytes() {
			msg := fmt.Sprintf("the device document is larger than the agent's max_policy_bytes (%d)", a.maxPolicyBytes())
			return nil, &rejectError{kind: api.KindInvalidPolicy, err: fmt.Errorf("%s: %s", filename, msg),
				fields: []api.FieldError{{File: filename, Message: msg}}}
		}
		nd, locate, perr := policy.ParseDevice(filename, doc)
		if perr != nil {
			return nil, &rejectError{kind: api.KindInvalidPolicy, fields: api.FieldErrors(perr),
				err: fmt.Errorf("invalid device %s: %w", filename, perr)}
		}
		if nd.Name != name {
			msg := fmt.Sprintf("the document names device %q, the request %q", nd.Name, name)
			return nil, &rejectError{kind: api.KindInvalidPolicy, err: fmt.Errorf("%s: %s", filename, msg),
				fields: []api.FieldError{{File: filename, Field: "name", Message: msg}}}
		}
		c := *nd
		after = &c
		rec.Op, rec.Doc = "put", string(doc)
		d, err = ed.PreparePut(filename, "", nd, locate)
	} else {
		rec.Op = "delete"
		d, err = ed.PrepareDelete(name)
		doc = []byte("delete " + name)
	}
	hash := chainHash(old.meta.Hash, doc)
	rec.Hash = hash
	audit.PolicyHash = hash
	if err != nil {
		if errors.Is(err, policy.ErrNotFound) {
			return nil, err
		}
		if fields := api.FieldErrors(err); len(fields) > 0 {
			return nil, &rejectError{kind: api.KindInvalidPolicy, fields: fields,
				err: fmt.Errorf("invalid device: %w", err)}
		}
		return nil, &rejectError{kind: api.KindRejected, err: fmt.Errorf("cannot enforce the change: %w", err)}
	}
	if err := a.maps.CheckDelta(d, a.lim); err != nil {
		var ce *maps.CapacityError
		if errors.As(err, &ce) {
			return nil, capacityReject(filename, ce)
		}
		return nil, err
	}
	if len(d.Devices.Keys) > 0 {
		rec.DevID = d.Devices.Vals[0].DevId
	}

	ph.prepare = since(&t)
	// Journal first: after a crash at any point the agent restores every change it confirmed
	// (and the one it was making, if its record was complete).
	if a.journalBroken {
		return nil, errors.New("the device change journal could not be repaired after a failed change: " +
			"apply a whole policy to continue")
	}
	if a.journal == nil {
		if a.journal, err = a.store.openJournal(); err != nil {
			return nil, err
		}
	}
	if err := a.auditAccepted(audit, rec.Revision); err != nil {
		return nil, err
	}
	size := a.journal.size
	if err := a.journal.append(rec); err != nil {
		if errors.Is(err, errJournalDamaged) {
			a.disown(rec.Revision)
		}
		return nil, err
	}
	ph.journal = since(&t)
	if err := a.maps.ApplyDelta(d, ed.Snapshot(), a.lim); err != nil {
		if uerr := a.journal.undo(size); uerr != nil {
			a.log.Error("remove the journal record of a failed change", "err", uerr)
			a.disown(rec.Revision)
		}
		return nil, err
	}
	ph.maps = since(&t)
	ph.swap = a.maps.LastApply()
	// What the state file holds has not changed, but a.saved formats its device ids from the
	// snapshot, which the change modifies: read it from the file if it is needed again.
	a.saved = nil
	m := old.meta
	m.Revision, m.Hash, m.AppliedAt, m.Devices = d.Revision, hash, rec.At, d.Counts[0]
	// Readers load cur under the read lock: they see the change and its metadata together.
	a.polMu.Lock()
	ed.Commit(d)
	a.cur.Store(&current{meta: m, filename: old.filename, pol: old.pol, snap: old.snap, ed: ed})
	a.polMu.Unlock()
	ph.commit = since(&t)
	if a.journal.n >= maxJournal || a.journal.size >= maxJournalBytes {
		if err := a.fold(); err != nil {
			a.log.Warn("fold the journal into the state file (retried at the next change)", "err", err)
		} else {
			hash = a.cur.Load().meta.Hash // the written-out document's, as status reports it
		}
	}
	var o, n []policy.Device
	if before != nil {
		o = []policy.Device{*before}
	}
	if after != nil {
		n = []policy.Device{*after}
	}
	diff := policy.Compare(&policy.Policy{Spec: policy.Spec{Devices: o}}, &policy.Policy{Spec: policy.Spec{Devices: n}})
	return &api.ApplyResult{OldRevision: old.meta.Revision, NewRevision: d.Revision, Hash: hash, Changes: diff}, nil
}

// disown makes sure the journal record of revision rev, whose change failed, is never
// replayed although it could not be removed: the journal is folded away (the state file takes
// the policy in force), else a marker tells replay to stop before it, and device changes are
// refused until a whole apply.
func (a *Agent) disown(rev uint64) {
	ferr := a.fold()
	if ferr == nil {
		return
	}
	a.journalBroken = true
	merr := fsutil.WriteAtomic(filepath.Join(a.store.dir, rejectedFile), []byte(strconv.FormatUint(rev, 10)+"\n"))
	a.log.Error("a failed change's journal record could not be removed; "+
		"device changes are refused until a whole policy is applied", "revision", rev, "fold_err", ferr, "marker_err", merr)
}

// readRejected returns the revision rejectedFile names (0: none).
func (s *store) readRejected() (uint64, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, rejectedFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", rejectedFile, err)
	}
	rev, err := strconv.ParseUint(string(bytes.TrimSpace(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", rejectedFile, err)
	}
	return rev, nil
}

// clearJournal removes the journal and the rejected-record marker: the state file holds the
// policy in force (after a whole apply, or a restore).
func (a *Agent) clearJournal() error {
	var errs []error
	if a.journal != nil {
		errs = append(errs, a.journal.reset())
	} else if err := os.Remove(a.store.journalPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := os.Remove(filepath.Join(a.store.dir, rejectedFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	a.journalBroken = false
	return nil
}

// fold writes the policy in force, with its device changes, as the state file and empties
// the journal (under applyMu).
func (a *Agent) fold() error {
	cur := a.cur.Load()
	a.polMu.RLock()
	doc, err := policy.Marshal(cur.pol)
	a.polMu.RUnlock()
	if err != nil {
		return err
	}
	st := &persisted{Revision: cur.meta.Revision, Name: cur.meta.Name, Hash: policy.Hash(doc),
		AppliedAt: cur.meta.AppliedAt, Filename: cur.filename, YAML: string(doc), devs: cur.snap.Devices,
		SnapshotHash: cur.snap.Hash()}
	if err := a.store.save(st); err != nil {
		return err
	}
	a.saved = st
	// The policy hash is the document's from now on, as after a restart.
	m := cur.meta
	m.Hash = st.Hash
	a.polMu.Lock()
	a.cur.Store(&current{meta: m, yaml: doc, filename: cur.filename, pol: cur.pol, snap: cur.snap, ed: cur.ed})
	a.polMu.Unlock()
	return a.clearJournal()
}
