package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/policy"
)

func newTestStore(t *testing.T) *store {
	t.Helper()
	s, err := openStore(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func testState(rev uint64, doc string) *persisted {
	return &persisted{
		Revision:     rev,
		Name:         "site-a",
		Hash:         policy.Hash([]byte(doc)),
		AppliedAt:    time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC),
		Filename:     "/etc/ztgate/policy.yaml",
		YAML:         doc,
		DevIDs:       map[string]uint32{"02:00:00:00:00:01": 1, "02:00:00:00:00:02": 7},
		SnapshotHash: "abc123",
	}
}

func TestOpenStoreMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "state")
	if _, err := openStore(dir); err != nil {
		t.Fatal(err)
	}
	// An existing directory is made private too.
	old := filepath.Join(t.TempDir(), "old")
	if err := os.Mkdir(old, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := openStore(old); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, old} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o700 {
			t.Errorf("%s: mode %v, want 0700", d, got)
		}
	}
}

func TestStoreLoadNone(t *testing.T) {
	p, err := newTestStore(t).load()
	if p != nil || err != nil {
		t.Errorf("load of an empty state dir: got %+v, %v; want nil, nil", p, err)
	}
}

func TestStoreRoundTrip(t *testing.T) {
	s := newTestStore(t)
	want := testState(3, "apiVersion: ztgate/v1\nkind: Policy\n")
	if err := s.save(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	fi, err := os.Stat(filepath.Join(s.dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("state file mode %v, want 0600", perm)
	}

	// A second save replaces the first, leaving no temporary file behind.
	want2 := testState(4, "apiVersion: ztgate/v1\nkind: Policy\nmetadata: {name: b}\n")
	want2.DevIDs, want2.Filename = nil, ""
	if err := s.save(want2); err != nil {
		t.Fatal(err)
	}
	if got, err := s.load(); err != nil || !reflect.DeepEqual(got, want2) {
		t.Errorf("after the second save: got %+v, %v; want %+v", got, err, want2)
	}
	if names := dirNames(t, s.dir); !reflect.DeepEqual(names, []string{stateFile}) {
		t.Errorf("state dir holds %v, want only %s", names, stateFile)
	}
}

func TestStoreLoadHashMismatch(t *testing.T) {
	s := newTestStore(t)
	p := testState(1, "kind: Policy\n")
	p.YAML = "kind: Policy\n# edited\n" // Hash is still that of the original document
	if err := s.save(p); err != nil {
		t.Fatal(err)
	}
	got, err := s.load()
	if err == nil || got != nil {
		t.Fatalf("load of a state whose hash does not match: got %+v, %v", got, err)
	}
	for _, sub := range []string{"does not match", p.Hash, filepath.Join(s.dir, stateFile)} {
		if !strings.Contains(err.Error(), sub) {
			t.Errorf("error %q does not contain %q", err, sub)
		}
	}
}

func TestStoreLoadCorrupt(t *testing.T) {
	s := newTestStore(t)
	if err := os.WriteFile(filepath.Join(s.dir, stateFile), []byte(`{"revision": 1, "yaml": `), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := s.load(); err == nil || got != nil || !strings.Contains(err.Error(), stateFile) {
		t.Errorf("load of truncated JSON: got %+v, %v", got, err)
	}
}

func TestStoreLock(t *testing.T) {
	s := newTestStore(t)
	unlock, err := s.lock()
	if err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(os.Getpid())
	// flock locks belong to the open file: a second open in this process conflicts like another
	// agent would.
	other := &store{dir: s.dir}
	if u, err := other.lock(); err == nil {
		u()
		unlock()
		t.Fatal("second lock of the same state dir succeeded")
	} else if !strings.Contains(err.Error(), "another agent") || !strings.Contains(err.Error(), "(pid "+pid+")") {
		t.Errorf("second lock: error %q does not name the holder pid %s", err, pid)
	}
	// The failed attempt leaves the holder's pid in place.
	if b, err := os.ReadFile(filepath.Join(s.dir, lockFile)); err != nil || string(b) != pid {
		t.Errorf("lock file holds %q (%v), want %q", b, err, pid)
	}
	unlock()
	unlock2, err := other.lock()
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock2()
}
