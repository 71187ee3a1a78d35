package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/policy"
)

// TestAgentDeviceChanges: one-device changes through the CLI (`policy set-device`,
// `policy delete-device`) on real traffic: a device gets a rule and its traffic passes, a bad
// device document is rejected with file:line:col and changes nothing, a deleted device is
// dropped again as unknown; the changes survive an agent restart (journal replay) and are
// audited.
func TestAgentDeviceChanges(t *testing.T) {
	l := newLab(t, nil)
	tp := l.tp
	f := listenFlows(t, tp)
	attacker := tp.Device("attacker")
	v1, _ := binaries(t)
	l.start(v1)
	l.must("policy", "apply", l.writePolicy("policy.yaml", basePolicy(t, tp)))
	f.probe(tp, 10*time.Millisecond)
	f.waitAllowed("base policy")
	if sendOnce(t, attacker, tp.Upstream.IPv4, 7000) {
		t.Fatal("attacker passes under the base policy")
	}

	// Give the attacker device a rule of its own.
	doc := "name: attacker\nmac: \"" + attacker.MAC.String() + "\"\nipv4: [" + attacker.IPv4[0].String() + "]\n" +
		"allow:\n  - {to: {cidr: " + tp.Upstream.IPv4.String() + "/32}, proto: udp, ports: [7000]}\n"
	file := filepath.Join(l.dir, "attacker.yaml")
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	out := l.must("policy", "set-device", file)
	if !strings.Contains(out, "applied revision 1 -> 2") || !strings.Contains(out, "~ device attacker") {
		t.Fatalf("set-device output:\n%s", out)
	}
	if !sendOnce(t, attacker, tp.Upstream.IPv4, 7000) {
		t.Fatal("the device's new rule is not enforced")
	}

	// A bad document: the MAC of another device. Rejected, nothing changes.
	bad := strings.Replace(doc, attacker.MAC.String(), tp.Device("cam").MAC.String(), 1)
	badFile := filepath.Join(l.dir, "bad.yaml")
	if err := os.WriteFile(badFile, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := l.ztgate("policy", "set-device", badFile)
	if code != 4 || !regexp.MustCompile(`bad\.yaml:2:6: mac: MAC address \S+ is already used by device "cam"`).MatchString(stderr) {
		t.Fatalf("bad device: exit %d:\n%s", code, stderr)
	}
	if st := l.status(); st.Policy.Revision != 2 {
		t.Fatalf("revision %d after a rejected change", st.Policy.Revision)
	}
	if !sendOnce(t, attacker, tp.Upstream.IPv4, 7000) {
		t.Fatal("a rejected change changed the policy in force")
	}
	// A device that rules name cannot be deleted.
	if _, stderr, code := l.ztgate("policy", "delete-device", "broker"); code != 4 || !strings.Contains(stderr, "destination of 1 rule") {
		t.Fatalf("delete broker: exit %d:\n%s", code, stderr)
	}

	// Delete it: unknown again.
	var ar api.ApplyResult
	l.mustJSON(&ar, "policy", "delete-device", "attacker")
	if ar.OldRevision != 2 || ar.NewRevision != 3 {
		t.Fatalf("delete-device: %+v", ar)
	}
	if sendOnce(t, attacker, tp.Upstream.IPv4, 7000) {
		t.Fatal("a deleted device still passes")
	}
	f.waitAllowed("after the deletes")
	// The probe's attacker flow passed while the device had its rule; from now on none may.
	f.forbidden.Store(0)

	// The policy in force is written out without it, and is valid input to apply.
	got := l.must("policy", "get")
	gp, err := policy.Parse("get", []byte(got))
	if err != nil {
		t.Fatalf("policy get after device changes: %v\n%s", err, got)
	}
	if len(gp.Spec.Devices) != 3 || strings.Contains(got, "attacker") {
		t.Fatalf("policy get still has the deleted device:\n%s", got)
	}

	// Restart: the journal is replayed, the revision and the enforcement stay.
	l.agent.stop()
	l.start(v1)
	if st := l.status(); st.Policy.Revision != 3 || st.Policy.Devices != 3 {
		t.Fatalf("after restart: %+v", st.Policy)
	}
	if !strings.Contains(l.agent.log.String(), "replayed device changes") {
		t.Fatalf("the restarted agent did not replay the journal:\n%s", l.agent.log.String())
	}
	if strings.Contains(l.agent.log.String(), "differs from the record") {
		t.Fatalf("replaying the journal did not give the recorded hashes and ids:\n%s", l.agent.log.String())
	}
	if sendOnce(t, attacker, tp.Upstream.IPv4, 7000) {
		t.Fatal("the deleted device passes after a restart")
	}
	f.waitAllowed("after the restart")
	f.checkNoLeak("device changes")

	var changes []string
	for _, r := range auditRecords(t, l) {
		if r.Action == api.ActionDevice {
			changes = append(changes, r.Change+" "+r.Result)
		}
	}
	want := []string{"put device attacker accepted", "put device attacker rejected", "delete device broker rejected", "delete device attacker accepted"}
	if strings.Join(changes, ",") != strings.Join(want, ",") {
		t.Fatalf("audit: %q, want %q", changes, want)
	}
}
