package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/ztgate/ztgate/agent/audit"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/internal/fsutil"
)

// The parts of the state directory whose damage the agent reports (status, /readyz, the
// ztgate_state_damaged metric) instead of refusing to start.
const (
	partState   = "state"   // state.json
	partJournal = "journal" // the device change journal
	partAudit   = "audit"   // the audit log
)

// damageParts are every part, in the order they are reported.
var damageParts = []string{partState, partJournal, partAudit}

// damage is what the agent found damaged at start; a successful apply repairs it.
type damage struct {
	mu    sync.Mutex
	parts map[string]string // part -> what is wrong and where the damaged file was kept
}

func (d *damage) set(part, msg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.parts == nil {
		d.parts = map[string]string{}
	}
	d.parts[part] = msg
}

// clear forgets every damage (a whole policy was applied: the state directory is whole again).
func (d *damage) clear() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.parts = nil
}

func (d *damage) has(part string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.parts[part]
	return ok
}

func (d *damage) any() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.parts) > 0
}

// report lists the damage, one "part: message" line each, sorted.
func (d *damage) report() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for p, msg := range d.parts {
		out = append(out, p+": "+msg)
	}
	sort.Strings(out)
	return out
}

// keepDamaged copies a damaged file of the state directory to NAME.damaged-TIME beside it, so
// that repairing the state (which replaces the file) keeps the evidence, and returns the copy's
// name ("" when it could not be made).
func (a *Agent) keepDamaged(name string) string {
	src := filepath.Join(a.store.dir, name)
	data, err := os.ReadFile(src)
	if err != nil {
		a.log.Warn("keep a copy of the damaged file", "file", src, "err", err)
		return ""
	}
	dst := src + ".damaged-" + time.Now().UTC().Format("20060102T150405Z")
	if err := fsutil.WriteAtomic(dst, data); err != nil {
		a.log.Warn("keep a copy of the damaged file", "file", src, "err", err)
		return ""
	}
	return dst
}

// startDamaged starts the agent fail-closed over a damaged state file or journal (part): the
// policy pinned in the maps (revision pinned) stays in force when there is one, else no policy
// is (every frame is dropped as no_policy). The damage is reported until a policy is applied.
func (a *Agent) startDamaged(part string, err error, pinned uint64) error {
	file := stateFile
	if part == partJournal {
		file = journalFile
	}
	msg := err.Error()
	if kept := a.keepDamaged(file); kept != "" {
		msg += " (a copy is kept as " + kept + ")"
	}
	if pinned > 0 {
		msg += fmt.Sprintf("; the pinned policy revision %d stays in force until a policy is applied", pinned)
	} else {
		msg += "; no policy is in force (every frame is dropped) until a policy is applied"
	}
	a.damage.set(part, msg)
	a.log.Error("the state directory is damaged: starting fail-closed; apply a policy to repair it",
		"part", part, "err", msg)
	a.cur.Store(&current{meta: api.PolicyMeta{Revision: pinned}, snap: a.readPinned(pinned)})
	return nil
}

// openAudit opens the audit log. A log whose records are damaged is moved aside (kept as
// audit.log.damaged-TIME) and a new log begun, and the damage is reported until a policy is
// applied: the agent starts, and later changes are recorded.
func (a *Agent) openAudit() error {
	path := filepath.Join(a.cfg.StateDir, auditFile)
	l, err := audit.Open(path)
	var le *audit.LineError
	if err == nil || !errors.As(err, &le) {
		a.audit = l
		if err != nil {
			return fmt.Errorf("open audit log: %w", err)
		}
		return nil
	}
	kept := path + ".damaged-" + time.Now().UTC().Format("20060102T150405Z")
	if rerr := os.Rename(path, kept); rerr != nil {
		return fmt.Errorf("open audit log: %w (and moving it aside failed: %w)", err, rerr)
	}
	if a.audit, err = audit.Open(path); err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	msg := fmt.Sprintf("%v; moved to %s, a new log was begun", le, kept)
	a.damage.set(partAudit, msg)
	a.log.Error("the audit log is damaged: a new one was begun; apply a policy to clear this report", "err", msg)
	return nil
}
