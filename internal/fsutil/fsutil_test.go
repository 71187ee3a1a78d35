package fsutil

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// dirNames lists the names in dir, hidden ones (the temporary files) included.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range paths {
		paths[i] = filepath.Base(p)
	}
	return paths
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	for _, data := range []string{"first", "second"} {
		if err := WriteAtomic(path, []byte(data)); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != data {
			t.Errorf("after WriteAtomic(%q) the file holds %q, %v", data, got, err)
		}
		if names := dirNames(t, dir); !reflect.DeepEqual(names, []string{"f"}) {
			t.Errorf("after WriteAtomic the dir holds %v, want only f", names)
		}
	}
}

func TestWriteAtomicFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "f")
	if err := WriteAtomic(path, []byte("x")); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("WriteAtomic into a missing dir: got %v", err)
	}
	// The target is a directory: the rename fails and the temporary file is removed.
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteAtomic(target, []byte("x")); err == nil {
		t.Error("WriteAtomic over a non-empty directory: no error")
	}
	if names := dirNames(t, dir); !reflect.DeepEqual(names, []string{"target"}) {
		t.Errorf("after a failed WriteAtomic the dir holds %v, want only target", names)
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Errorf("SyncDir: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	if err := SyncDir(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("SyncDir of a missing dir: got %v", err)
	}
}
