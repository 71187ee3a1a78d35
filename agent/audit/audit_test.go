package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ztgate/ztgate/api"
)

func rec(i int) api.AuditRecord {
	return api.AuditRecord{
		Action: api.ActionApply, UID: 0, GID: 0, PID: int64(1000 + i),
		OldRevision: uint64(i), NewRevision: uint64(i + 1),
		PolicyHash: "sha256:abc", Result: api.ResultAccepted,
	}
}

func openT(t *testing.T, path string) *Log {
	t.Helper()
	l, err := Open(path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func appendT(t *testing.T, l *Log, r api.AuditRecord) api.AuditRecord {
	t.Helper()
	got, err := l.Append(r)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return got
}

func verifyFile(t *testing.T, path string) (int, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Verify(f)
}

// writeLog builds a log of n records and returns its path and lines (with newlines).
func writeLog(t *testing.T, n int) (string, []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openT(t, path)
	for i := range n {
		appendT(t, l, rec(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, strings.SplitAfter(string(b), "\n")[:n]
}

func TestAppendReopenVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openT(t, path)
	fixed := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 2*3600))
	var want []api.AuditRecord
	for i := range 3 {
		r := rec(i)
		if i == 1 {
			r.Time = fixed
			r.Seq, r.Prev, r.Hash = 99, "bogus", "bogus" // ignored
		}
		before := time.Now()
		got := appendT(t, l, r)
		if got.Seq != uint64(i+1) {
			t.Errorf("record %d: seq %d", i, got.Seq)
		}
		if i == 1 {
			if !got.Time.Equal(fixed) || got.Time.Location() != time.UTC || got.Time.Nanosecond() != 123456789 {
				t.Errorf("time %v, want %v in UTC", got.Time, fixed)
			}
		} else if got.Time.Location() != time.UTC || got.Time.Before(before.Add(-time.Second)) {
			t.Errorf("time %v not set to now (UTC)", got.Time)
		}
		if i == 0 && got.Prev != "" || i > 0 && got.Prev != want[i-1].Hash {
			t.Errorf("record %d: prev %q", i, got.Prev)
		}
		if got.Hash != HashRecord(got) || len(got.Hash) != 64 {
			t.Errorf("record %d: hash %q, recomputed %q", i, got.Hash, HashRecord(got))
		}
		want = append(want, got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := l.Append(rec(9)); err == nil {
		t.Error("append after close succeeded")
	}

	l = openT(t, path)
	got := appendT(t, l, rec(3))
	if got.Seq != 4 || got.Prev != want[2].Hash {
		t.Errorf("after reopen: seq %d prev %q, want 4 %q", got.Seq, got.Prev, want[2].Hash)
	}
	want = append(want, got)
	recs, err := l.Records()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i := range recs {
		if !recs[i].Time.Equal(want[i].Time) {
			t.Errorf("record %d: time %v, want %v", i, recs[i].Time, want[i].Time)
		}
		recs[i].Time, want[i].Time = time.Time{}, time.Time{}
		if recs[i] != want[i] {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, recs[i], want[i])
		}
	}
	if n, err := verifyFile(t, path); n != 4 || err != nil {
		t.Errorf("Verify = %d, %v, want 4, nil", n, err)
	}
	if n, err := Verify(strings.NewReader("")); n != 0 || err != nil {
		t.Errorf("Verify(empty) = %d, %v", n, err)
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openT(t, path)
	appendT(t, l, rec(0))
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o600 {
		t.Errorf("mode %o, want 600", m)
	}
}

func TestSecondOpenRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	openT(t, path)
	if l, err := Open(path); err == nil {
		l.Close()
		t.Fatal("a second Open of the same log succeeded")
	}
}

func TestTamper(t *testing.T) {
	cases := []struct {
		name   string
		edit   func(lines []string) []string
		line   int
		substr string
	}{
		{name: "edit field", edit: func(ls []string) []string {
			ls[2] = strings.Replace(ls[2], `"pid":1002`, `"pid":1`, 1)
			return ls
		}, line: 3, substr: "hash"},
		{name: "edit time", edit: func(ls []string) []string {
			ls[1] = strings.Replace(ls[1], `"time":"20`, `"time":"19`, 1)
			return ls
		}, line: 2, substr: "hash"},
		{name: "delete line", edit: func(ls []string) []string {
			return append(ls[:1:1], ls[2:]...)
		}, line: 2, substr: "seq 3, want 2"},
		{name: "delete first", edit: func(ls []string) []string { return ls[1:] }, line: 1, substr: "seq 2, want 1"},
		{name: "reorder", edit: func(ls []string) []string {
			ls[2], ls[3] = ls[3], ls[2]
			return ls
		}, line: 3, substr: "seq 4, want 3"},
		{name: "change hash", edit: func(ls []string) []string {
			i := strings.Index(ls[1], `"hash":"`) + len(`"hash":"`)
			c := byte('0')
			if ls[1][i] == '0' {
				c = '1'
			}
			ls[1] = ls[1][:i] + string(c) + ls[1][i+1:]
			return ls
		}, line: 2, substr: "hash"},
		{name: "rewrite hash and seq", edit: func(ls []string) []string {
			// Delete record 2 and renumber record 3: its prev no longer matches.
			ls[2] = strings.Replace(ls[2], `"seq":3`, `"seq":2`, 1)
			return append(ls[:1:1], ls[2:]...)
		}, line: 2, substr: "prev"},
		{name: "unknown field", edit: func(ls []string) []string {
			ls[4] = strings.Replace(ls[4], `{`, `{"extra":1,`, 1)
			return ls
		}, line: 5, substr: "canonical"},
		{name: "garbage line", edit: func(ls []string) []string {
			return append(ls[:3:3], append([]string{"{not json\n"}, ls[3:]...)...)
		}, line: 4, substr: "not a record"},
		{name: "empty line", edit: func(ls []string) []string {
			return append(ls[:1:1], append([]string{"\n"}, ls[1:]...)...)
		}, line: 2, substr: "empty"},
		{name: "partial line in the middle", edit: func(ls []string) []string {
			ls[1] = ls[1][:20] + "\n"
			return ls
		}, line: 2, substr: "not a record"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, lines := writeLog(t, 5)
			edited := strings.Join(c.edit(lines), "")
			if err := os.WriteFile(path, []byte(edited), 0o600); err != nil {
				t.Fatal(err)
			}
			check := func(what string, err error) {
				t.Helper()
				var le *LineError
				if !errors.As(err, &le) || le.Line != c.line || !strings.Contains(err.Error(), c.substr) {
					t.Errorf("%s: %v, want line %d: ...%s...", what, err, c.line, c.substr)
				}
			}
			_, err := Verify(strings.NewReader(edited))
			check("Verify", err)
			l, err := Open(path)
			if err == nil {
				l.Close()
			}
			check("Open", err)
			if b, _ := os.ReadFile(path); string(b) != edited {
				t.Error("Open modified a tampered log")
			}
		})
	}
}

func TestTruncatedLastLine(t *testing.T) {
	path, lines := writeLog(t, 3)
	full := strings.Join(lines, "")
	partial := full + lines[2][:30] // a crash in the middle of writing record 4
	if err := os.WriteFile(path, []byte(partial), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := Verify(strings.NewReader(partial))
	var le *LineError
	if n != 3 || !errors.As(err, &le) || le.Line != 4 || !errors.Is(err, ErrIncomplete) {
		t.Errorf("Verify = %d, %v, want 3, line 4: incomplete", n, err)
	}

	l := openT(t, path)
	if b, _ := os.ReadFile(path); string(b) != full {
		t.Errorf("Open did not truncate the incomplete line:\n%s", b)
	}
	got := appendT(t, l, rec(3))
	if got.Seq != 4 {
		t.Errorf("seq %d, want 4", got.Seq)
	}
	if n, err := verifyFile(t, path); n != 4 || err != nil {
		t.Errorf("Verify = %d, %v", n, err)
	}
}

func TestTruncatedLineNotAlone(t *testing.T) {
	// An incomplete final line after a broken record: not recovered, the file is untouched.
	path, lines := writeLog(t, 3)
	lines[1] = strings.Replace(lines[1], `"pid":1001`, `"pid":7`, 1)
	content := strings.Join(lines, "") + lines[2][:30]
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path)
	if err == nil {
		l.Close()
	}
	var le *LineError
	if !errors.As(err, &le) || le.Line != 2 {
		t.Errorf("Open: %v, want line 2", err)
	}
	if b, _ := os.ReadFile(path); string(b) != content {
		t.Error("Open modified the file")
	}
}

func TestCompleteRecordWithoutNewline(t *testing.T) {
	// A record missing only its newline was never acknowledged (Append writes the newline in
	// the same write): Open drops it too.
	path, lines := writeLog(t, 2)
	content := lines[0] + strings.TrimSuffix(lines[1], "\n")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	l := openT(t, path)
	recs, err := l.Records()
	if err != nil || len(recs) != 1 {
		t.Fatalf("Records = %d, %v, want 1 record", len(recs), err)
	}
	if got := appendT(t, l, rec(5)); got.Seq != 2 || got.Prev != recs[0].Hash {
		t.Errorf("continued with seq %d prev %q", got.Seq, got.Prev)
	}
}

func TestConcurrentAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openT(t, path)
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := rec(w*each + i)
				r.Action, r.Result = api.ActionConnect, api.ResultRefused
				r.Error = "uid not allowed"
				if _, err := l.Append(r); err != nil {
					errs <- err
				}
			}
		}()
	}
	// Read concurrently with the writers.
	for range 5 {
		if _, err := l.Records(); err != nil {
			t.Errorf("records during appends: %v", err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, err := verifyFile(t, path); n != workers*each || err != nil {
		t.Errorf("Verify = %d, %v, want %d, nil", n, err, workers*each)
	}
	recs, err := l.Records()
	if err != nil || len(recs) != workers*each {
		t.Fatalf("Records = %d, %v", len(recs), err)
	}
	pids := map[int64]bool{}
	for _, r := range recs {
		pids[r.PID] = true
	}
	if len(pids) != workers*each {
		t.Errorf("%d distinct records, want %d", len(pids), workers*each)
	}
}

func TestHashRecordCanonical(t *testing.T) {
	r := rec(1)
	r.Time = time.Date(2024, 1, 2, 3, 4, 5, 6, time.FixedZone("x", -5*3600))
	u := r
	u.Time = r.Time.UTC()
	u.Hash = "ignored"
	if HashRecord(r) != HashRecord(u) {
		t.Error("hash depends on the time zone or on Hash")
	}
	v := r
	v.Time = r.Time.Add(time.Nanosecond)
	if HashRecord(r) == HashRecord(v) {
		t.Error("hash ignores nanoseconds")
	}
}

func TestOpenNotRegular(t *testing.T) {
	if l, err := Open(t.TempDir()); err == nil {
		l.Close()
		t.Error("opened a directory")
	}
	var buf bytes.Buffer
	if n, err := Verify(&buf); n != 0 || err != nil {
		t.Errorf("Verify(empty) = %d, %v", n, err)
	}
}
