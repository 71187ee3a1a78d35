package loader

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestLockPinDir: the owner lock is exclusive (a second holder, here another open file, is
// refused and told the holder's pid), Open works under it, and it is free again once released.
func TestLockPinDir(t *testing.T) {
	requirePriv(t)
	cfg := testConfig(t)
	unlock, err := LockPinDir(cfg.PinDir)
	if err != nil {
		t.Fatal(err)
	}
	openDatapath(t, cfg) // the loader's own short locks are another file's
	_, err = LockPinDir(cfg.PinDir)
	want := fmt.Sprintf("pin dir %s is in use by another agent (pid %d)", cfg.PinDir, os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second lock: %v, want %q", err, want)
	}
	unlock()
	unlock, err = LockPinDir(cfg.PinDir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock()
	if _, err := LockPinDir("relative"); err == nil {
		t.Fatal("a relative pin dir was accepted")
	}
}
