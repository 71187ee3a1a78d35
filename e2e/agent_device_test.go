package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

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
	attacker := tp.Device("attacker")
	v1 := l.run(basePolicy(t, tp))
	f := l.probeFlows(10*time.Millisecond, "base policy")
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
	taken := regexp.MustCompile(`bad\.yaml:2:6: mac: MAC address \S+ is already used by device "cam"`)
	if code != 4 || !taken.MatchString(stderr) {
		t.Fatalf("bad device: exit %d:\n%s", code, stderr)
	}
	if st := l.status(); st.Policy.Revision != 2 {
		t.Fatalf("revision %d after a rejected change", st.Policy.Revision)
	}
	if !sendOnce(t, attacker, tp.Upstream.IPv4, 7000) {
		t.Fatal("a rejected change changed the policy in force")
	}
	// A device that rules name cannot be deleted.
	_, stderr, code = l.ztgate("policy", "delete-device", "broker")
	if code != 4 || !strings.Contains(stderr, "destination of 1 rule") {
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
	want := []string{"put device attacker accepted", "put device attacker rejected",
		"delete device broker rejected", "delete device attacker accepted"}
	if strings.Join(changes, ",") != strings.Join(want, ",") {
		t.Fatalf("audit: %q, want %q", changes, want)
	}
}

// TestAgentDeviceChangeKill: device changes survive SIGKILL. With the probes running, the
// agent is killed right after a confirmed change, and again while a change is in flight; each
// restarted agent replays its journal and enforces every confirmed change (the one in flight
// either wholly or not at all), and no forbidden datagram is delivered meanwhile.
func TestAgentDeviceChangeKill(t *testing.T) {
	l := newLab(t, nil)
	tp := l.tp
	p := basePolicy(t, tp)
	v1 := l.run(p)
	f := l.probeFlows(5*time.Millisecond, "base policy")

	// The sensor's own rule moves from port to port: one device document per port.
	sensor := p.Spec.Devices[1]
	doc := func(port uint16) string {
		d := sensor
		d.Allow = []policy.Rule{
			{To: policy.Target{Device: "broker"}, Proto: "udp", Ports: []policy.PortRange{{Lo: port, Hi: port}}}}
		data, err := yaml.Marshal(&d)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(l.dir, fmt.Sprintf("sensor-%d.yaml", port))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	sensorPort := func() uint16 {
		got, err := policy.Parse("get", []byte(l.must("policy", "get")))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range got.Spec.Devices {
			if d.Name == "sensor" && len(d.Allow) == 1 && len(d.Allow[0].Ports) == 1 {
				return d.Allow[0].Ports[0].Lo
			}
		}
		t.Fatal("policy get: no sensor with one rule")
		return 0
	}

	// Confirmed changes, then SIGKILL: every one of them is in force after the restart.
	for port := uint16(7100); port < 7105; port++ {
		l.must("policy", "set-device", doc(port))
	}
	before := l.status()
	l.agent.kill()
	f.waitAllowed("killed after confirmed changes")
	l.start(v1)
	if st := l.status(); st.Policy.Revision != before.Policy.Revision || st.Policy.Revision != 6 {
		t.Fatalf("after SIGKILL: revision %d, was %d (want 6)", st.Policy.Revision, before.Policy.Revision)
	}
	if got := sensorPort(); got != 7104 {
		t.Fatalf("after SIGKILL the sensor's rule is to port %d, want 7104", got)
	}
	f.waitAllowed("restarted")

	// A change in flight when the agent dies: wholly in force after the restart, or not at all
	// (and then not confirmed). The kill comes a little later each time.
	rev, port := uint64(6), uint16(7104)
	for i, ms := range []int{4, 7, 10, 13} {
		delay := time.Duration(ms) * time.Millisecond
		path := doc(7200 + uint16(i))
		done := make(chan string, 1)
		go func() {
			out, _, code := l.ztgate("policy", "set-device", path)
			done <- fmt.Sprintf("%d %s", code, out)
		}()
		time.Sleep(delay)
		l.agent.kill()
		reply := <-done
		l.start(v1)
		st := l.status()
		switch got := sensorPort(); {
		case st.Policy.Revision == rev+1 && got == 7200+uint16(i):
			rev, port = rev+1, got
		case st.Policy.Revision == rev && got == port:
			if strings.HasPrefix(reply, "0 ") {
				t.Fatalf("kill after %v: a confirmed change is lost: %s", delay, reply)
			}
		default:
			t.Fatalf("kill after %v: revision %d with the sensor's rule to port %d, was %d and %d (reply %q)",
				delay, st.Policy.Revision, got, rev, port, reply)
		}
		t.Logf("kill after %v: revision %d after the restart (CLI: %q)", delay, st.Policy.Revision, strings.TrimSpace(reply))
	}
	// Changes go on from there.
	l.must("policy", "set-device", doc(7300))
	if got := sensorPort(); got != 7300 {
		t.Fatalf("a change after the restarts: port %d", got)
	}
	f.waitAllowed("after the restarts")
	f.checkNoLeak("device changes and SIGKILL")
}
