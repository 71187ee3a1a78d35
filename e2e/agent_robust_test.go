package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/ztgate/ztgate/agent"
)

// second writes the configuration of another agent on the lab's pin directory, with its own
// state directory, socket and metrics address, and the initial policy file policyFile; it
// points the lab's startFails at it until the test ends.
func (l *lab) second(policyFile string) agent.Config {
	l.t.Helper()
	cfg := l.cfg
	cfg.StateDir = filepath.Join(l.dir, "state2")
	cfg.Socket = filepath.Join(l.dir, "run2", "ztgate.sock")
	cfg.MetricsAddress = "127.0.0.1:9432"
	cfg.Policy = policyFile
	data, err := yaml.Marshal(cfg)
	if err != nil {
		l.t.Fatal(err)
	}
	path := filepath.Join(l.dir, "agent2.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		l.t.Fatal(err)
	}
	first := l.cfgPath
	l.cfgPath = path
	l.t.Cleanup(func() { l.cfgPath = first })
	return cfg
}

// TestAgentPinDirLock: a second agent on the pin directory of a running one (with its own state
// directory and a policy of its own to apply) exits non-zero naming the running agent's pid,
// and changes nothing: the first agent's policy stays in force and it still reports it.
func TestAgentPinDirLock(t *testing.T) {
	l := newLab(t, nil)
	tp := l.tp
	v1, _ := binaries(t)
	first := l.start(v1)
	l.must("policy", "apply", l.writePolicy("p.yaml", basePolicy(t, tp)))
	before := l.status()

	// The second agent's policy allows nothing for cam.
	p2 := basePolicy(t, tp)
	p2.Metadata.Name = "intruder"
	p2.Spec.Devices[0].Allow = nil
	cfg2 := l.second(l.writePolicy("p2.yaml", p2))
	out := l.startFails(v1)
	want := fmt.Sprintf("pin dir %s is in use by another agent (pid %d)", l.pinDir, first.cmd.Process.Pid)
	if !strings.Contains(out, want) {
		t.Fatalf("second agent's output lacks %q:\n%s", want, out)
	}
	if _, err := os.Stat(filepath.Join(cfg2.StateDir, "state.json")); !os.IsNotExist(err) {
		t.Errorf("the second agent persisted a policy (%v)", err)
	}

	after := l.status()
	if after.Policy.Revision != before.Policy.Revision || after.Policy.Hash != before.Policy.Hash || !after.Ready {
		t.Fatalf("first agent: revision %d (%s) ready %v, was %d (%s)", after.Policy.Revision, after.Policy.Hash,
			after.Ready, before.Policy.Revision, before.Policy.Hash)
	}
	checkAttached(t, after, len(tp.Devices))
	echo, err := tp.Upstream.NS.EchoUDP(":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	if !sendOnce(t, tp.Device("cam"), tp.Upstream.IPv4, 7000) {
		t.Error("cam's allowed flow no longer passes: the second agent changed the policy")
	}
	if sendOnce(t, tp.Device("attacker"), tp.Upstream.IPv4, 7000) {
		t.Error("attacker's forbidden flow passes")
	}
}
