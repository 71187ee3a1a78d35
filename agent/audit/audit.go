// Package audit is the agent's append-only, hash-chained audit log of policy changes and refused
// API connections: one api.AuditRecord per line, in canonical JSON.
//
// Every record carries its sequence number (1, 2, ...), the hash of the previous record (Prev,
// "" for the first) and its own hash (Hash: sha256 over the record's canonical JSON with Hash
// empty, hex). Editing, deleting, inserting or reordering records breaks the chain, which Verify
// and Open detect and report with the line number. The chain does not protect against truncating
// the log at a record boundary, nor against an attacker who rewrites the whole chain: keep a copy
// of the last hash elsewhere (or ship the records off the gateway) for that.
package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/internal/fsutil"
)

// ErrIncomplete is wrapped (in a *LineError) when the last line of a log has no newline: a write
// that did not finish.
var ErrIncomplete = errors.New("incomplete record (no newline at the end of the file)")

// LineError is a problem with one line of a log (1-based).
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

func (e *LineError) Unwrap() error { return e.Err }

// Log is an open audit log. It is safe for concurrent use. Only one Log may have a file open at
// a time (Open takes an exclusive lock on it), so the chain has a single writer.
type Log struct {
	mu     sync.Mutex
	path   string
	f      *os.File
	seq    uint64 // Seq of the last record (0: empty log)
	last   string // Hash of the last record ("": empty log)
	size   int64  // bytes of complete records in the file
	broken error  // a failed write not cut back yet: the file may end in a partial line
	closed bool
}

// Open opens the log at path, creating it (mode 0600) if needed, and verifies the existing chain
// to continue it: every line must be a record that Verify accepts.
//
// Crash recovery: Append writes each record with a single write that ends with the newline, and
// returns only after fsync. A last line without a newline is therefore a write that never
// completed (and was never acknowledged); if every line before it verifies, Open truncates it away
// (whatever it holds) and continues the chain from the last complete record. Any other problem,
// including a broken line that does end with a newline, is an error naming the line, and the
// file is left untouched.
func Open(path string) (*Log, error) {
	l, err := open(path)
	if err != nil {
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	return l, nil
}

func open(path string) (*Log, error) {
	const flags = os.O_RDWR | os.O_APPEND | unix.O_CLOEXEC
	f, err := os.OpenFile(path, flags|os.O_CREATE|os.O_EXCL, 0o600)
	created := err == nil
	if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, flags, 0)
	}
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errors.New("in use (locked by another open log)")
		}
		return nil, fmt.Errorf("lock: %w", err)
	}
	if created {
		// Make the new directory entry durable too.
		if err := fsutil.SyncDir(filepath.Dir(path)); err != nil {
			return nil, err
		}
	}
	l := &Log{path: path, f: f}
	sc, err := scan(io.NewSectionReader(f, 0, st.Size()), nil)
	var le *LineError
	switch {
	case err == nil:
	case errors.As(err, &le) && errors.Is(err, ErrIncomplete):
		// The only problem is an unfinished final write: drop it (see Open).
		if err := f.Truncate(sc.end); err != nil {
			return nil, fmt.Errorf("truncate the incomplete line %d: %w", le.Line, err)
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	l.seq, l.last, l.size = sc.seq, sc.last, sc.end
	ok = true
	return l, nil
}

// Append adds r to the log. It sets Seq (the previous one + 1), Time (now, if zero; always
// converted to UTC), Prev and Hash (whatever r held in them is ignored), writes the record as one
// line and fsyncs it. It returns the record as stored.
//
// A failed write or fsync is cut back off the file (the record is not in the log, and the next
// Append continues the chain after the last complete record); while that cut fails, Append
// tries it again first and refuses to append.
func (l *Log) Append(r api.AuditRecord) (api.AuditRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return api.AuditRecord{}, errors.New("audit log closed")
	}
	if l.broken != nil {
		if err := l.cutBack(); err != nil {
			return api.AuditRecord{}, fmt.Errorf("audit log %s unusable after a failed write (%w): %w",
				l.path, l.broken, err)
		}
	}
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Time = r.Time.UTC()
	r.Seq = l.seq + 1
	r.Prev = l.last
	r.Hash = ""
	h, err := hashRecord(r)
	if err != nil {
		return api.AuditRecord{}, fmt.Errorf("audit record: %w", err)
	}
	r.Hash = h
	line, err := json.Marshal(r)
	if err != nil {
		return api.AuditRecord{}, fmt.Errorf("audit record: %w", err)
	}
	line = append(line, '\n')
	if _, err := l.f.Write(line); err != nil {
		l.broken = err
		_ = l.cutBack()
		return api.AuditRecord{}, fmt.Errorf("write audit log %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		l.broken = err
		_ = l.cutBack()
		return api.AuditRecord{}, fmt.Errorf("sync audit log %s: %w", l.path, err)
	}
	l.seq, l.last = r.Seq, r.Hash
	l.size += int64(len(line))
	return r, nil
}

// cutBack removes what a failed write may have left after the last complete record, and
// makes the log usable again when it can.
func (l *Log) cutBack() error {
	if err := l.f.Truncate(l.size); err != nil {
		return fmt.Errorf("cut back the failed record: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("cut back the failed record: %w", err)
	}
	l.broken = nil
	return nil
}

// Records reads the log back, oldest first, verifying the chain again.
func (l *Log) Records() ([]api.AuditRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("audit log closed")
	}
	var out []api.AuditRecord
	_, err := scan(io.NewSectionReader(l.f, 0, l.size), func(r api.AuditRecord) { out = append(out, r) })
	if err != nil {
		return nil, fmt.Errorf("audit log %s: %w", l.path, err)
	}
	return out, nil
}

// Close closes the log (and releases its lock). Closing twice is not an error.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return l.f.Close()
}

// Verify checks every record of a log: each line is one record in canonical JSON ending with a
// newline, Seq counts up from 1, Prev is the Hash of the record before ("" for the first) and
// Hash recomputes. It returns the number of records and, for the first problem, a *LineError.
func Verify(r io.Reader) (n int, err error) {
	sc, err := scan(r, nil)
	return sc.n, err
}

// HashRecord returns the hash of r: sha256, in hex, over the canonical JSON of r (encoding/json of
// the struct, Time in UTC) with Hash set to "".
func HashRecord(r api.AuditRecord) string {
	h, err := hashRecord(r)
	if err != nil {
		// Only a Time outside the years 0-9999 fails to marshal; such a record can't be
		// stored, and no stored hash equals this.
		return "invalid: " + err.Error()
	}
	return h
}

func hashRecord(r api.AuditRecord) (string, error) {
	r.Time = r.Time.UTC()
	r.Hash = ""
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// scanState is where a scan stopped.
type scanState struct {
	n    int    // verified records
	seq  uint64 // Seq of the last verified record
	last string // Hash of the last verified record
	end  int64  // offset just after the last verified line
}

// scan verifies the records of r in order, calling fn (if not nil) with each verified one. It
// stops at the first problem, returning how far it got and a *LineError.
func scan(r io.Reader, fn func(api.AuditRecord)) (scanState, error) {
	var st scanState
	br := bufio.NewReader(r)
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			if len(line) == 0 {
				return st, nil
			}
			return st, &LineError{Line: lineNo, Err: ErrIncomplete}
		}
		if err != nil {
			return st, fmt.Errorf("line %d: read: %w", lineNo, err)
		}
		rec, err := checkLine(line[:len(line)-1], st)
		if err != nil {
			return st, &LineError{Line: lineNo, Err: err}
		}
		st.n++
		st.seq, st.last = rec.Seq, rec.Hash
		st.end += int64(len(line))
		if fn != nil {
			fn(rec)
		}
	}
}

// checkLine verifies one line (without its newline) as the record following prev.
func checkLine(line []byte, prev scanState) (api.AuditRecord, error) {
	var rec api.AuditRecord
	if len(line) == 0 {
		return rec, errors.New("empty line")
	}
	if err := json.Unmarshal(line, &rec); err != nil {
		return rec, fmt.Errorf("not a record: %w", err)
	}
	if rec.Seq != prev.seq+1 {
		return rec, fmt.Errorf("seq %d, want %d", rec.Seq, prev.seq+1)
	}
	if rec.Prev != prev.last {
		return rec, fmt.Errorf("seq %d: prev %q does not match the hash of the record before (%q)",
			rec.Seq, rec.Prev, prev.last)
	}
	if h := HashRecord(rec); rec.Hash != h {
		return rec, fmt.Errorf("seq %d: hash %q does not match the record (recomputed %q)", rec.Seq, rec.Hash, h)
	}
	// The hash covers the decoded fields only: also refuse anything it would not cover
	// (unknown fields, duplicate keys, spacing), so the line is exactly what was hashed.
	canon, err := json.Marshal(rec)
	if err != nil || !bytes.Equal(canon, line) {
		return rec, fmt.Errorf("seq %d: not in canonical form", rec.Seq)
	}
	return rec, nil
}
