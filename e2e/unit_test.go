package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitFile: the systemd unit waits for the agent's READY=1 (Type=notify) and passes
// `systemd-analyze verify` (with ExecStart pointing at a built binary, since the unit names the
// installed one), where systemd-analyze is installed.
func TestUnitFile(t *testing.T) {
	data, err := os.ReadFile("../deploy/systemd/ztgate-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, want := range []string{"\nType=notify\n", "\nNotifyAccess=main\n", "\nBefore=network-pre.target"} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q", strings.TrimSpace(want))
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd)")
	}
	bin, _ := binaries(t)
	const installed = "/usr/local/bin/ztgate"
	if !strings.Contains(unit, "ExecStart="+installed+" ") {
		t.Fatalf("ExecStart does not run %s", installed)
	}
	path := filepath.Join(t.TempDir(), "ztgate-agent.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, installed, bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
