package audit

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/testenv"
)

// TestAppendFullFileSystem: on a full file system Append fails with ENOSPC and leaves no
// partial record behind; once space is free again the next Append succeeds and continues the
// chain.
func TestAppendFullFileSystem(t *testing.T) {
	dir := testenv.SmallFS(t, 64<<10)
	path := filepath.Join(dir, "audit.log")
	l := openT(t, path)
	if _, err := l.Append(rec(0)); err != nil {
		t.Fatal(err)
	}
	free := testenv.FillFS(t, filepath.Join(dir, "filler"))
	// The records fill what is left of the log's last page, then one does not fit.
	var err error
	n := 1
	for ; n < 1000 && err == nil; n++ {
		_, err = l.Append(rec(n))
	}
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("append %d on a full file system: %v, want ENOSPC", n, err)
	}
	stored := n - 1 // records in the log: 0..n-2
	if _, err := l.Append(rec(n)); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("append while still full: %v, want ENOSPC", err)
	}
	checkFile(t, path, stored)

	free()
	r, err := l.Append(rec(n))
	if err != nil {
		t.Fatalf("append after freeing space: %v", err)
	}
	if r.Seq != uint64(stored+1) {
		t.Fatalf("seq %d after the failures, want %d", r.Seq, stored+1)
	}
	checkFile(t, path, stored+1)
}

// checkFile verifies the log file holds exactly n records and nothing else.
func checkFile(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := Verify(f)
	if err != nil || got != n {
		t.Fatalf("verify: %d records, %v; want %d records", got, err, n)
	}
}
