package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/testenv"
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
	checkEnforced(t, tp, "after the second agent")
}

// TestAgentAuditFull: with the audit log on a full file system a policy change is refused with
// a clear error and changes nothing (revision, hash and traffic stay); once there is space the
// same change is accepted and recorded. A revision restored at start that the audit log does
// not end with (an agent killed between making a change and recording it, as older agents
// did) gets a restore record.
func TestAgentAuditFull(t *testing.T) {
	l := newLab(t, nil)
	tp := l.tp
	small := testenv.SmallFS(t, 64<<10)
	target := filepath.Join(small, "audit.log")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(l.cfg.StateDir, "audit.log")); err != nil {
		t.Fatal(err)
	}
	v1, _ := binaries(t)
	l.start(v1)
	allow := basePolicy(t, tp) // cam may send udp 7000 upstream
	deny := basePolicy(t, tp)
	deny.Spec.Devices[0].Allow = nil
	docs := []string{l.writePolicy("allow.yaml", allow), l.writePolicy("deny.yaml", deny)}
	l.must("policy", "apply", docs[0])
	free := testenv.FillFS(t, filepath.Join(small, "filler"))

	// The records fill what is left of the log's last page: alternate the two policies until
	// a change is refused.
	refused, last := -1, 0
	for i := 1; i < 60; i++ {
		before := l.status()
		_, stderr, code := l.ztgate("policy", "apply", docs[i%2])
		if code == 0 {
			last = i % 2
			continue
		}
		if !strings.Contains(stderr, "cannot be recorded in the audit log") ||
			!strings.Contains(stderr, "no space left on device") {
			t.Fatalf("apply refused with exit %d: %s", code, stderr)
		}
		after := l.status()
		if after.Policy.Revision != before.Policy.Revision || after.Policy.Hash != before.Policy.Hash {
			t.Fatalf("a refused apply changed the policy: revision %d (%s), was %d (%s)",
				after.Policy.Revision, after.Policy.Hash, before.Policy.Revision, before.Policy.Hash)
		}
		refused = i % 2
		break
	}
	if refused < 0 {
		t.Fatal("no apply was refused on the full file system")
	}
	echo, err := tp.Upstream.NS.EchoUDP(":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	if got, want := sendOnce(t, tp.Device("cam"), tp.Upstream.IPv4, 7000), last == 0; got != want {
		t.Fatalf("cam's flow passes: %v, want %v (the last accepted policy, %s)", got, want, docs[last])
	}

	free()
	var ar api.ApplyResult
	l.mustJSON(&ar, "policy", "apply", docs[refused])
	if got, want := sendOnce(t, tp.Device("cam"), tp.Upstream.IPv4, 7000), refused == 0; got != want {
		t.Fatalf("after the apply with space: cam's flow passes: %v, want %v", got, want)
	}
	recs := auditRecords(t, l)
	end := recs[len(recs)-1]
	if end.Action != api.ActionApply || end.Result != api.ResultAccepted || end.NewRevision != ar.NewRevision {
		t.Fatalf("last audit record %+v, want the accepted apply of revision %d", end, ar.NewRevision)
	}

	// Drop the last record, as if the agent had been killed before writing it.
	l.agent.kill()
	data, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	cut := bytes.LastIndexByte(data[:len(data)-1], '\n') + 1
	if err := os.WriteFile(target, data[:cut], 0o600); err != nil {
		t.Fatal(err)
	}
	l.start(v1)
	recs = auditRecords(t, l)
	end = recs[len(recs)-1]
	if end.Action != api.ActionRestore || end.Result != api.ResultAccepted || end.NewRevision != ar.NewRevision ||
		end.OldRevision != ar.OldRevision || end.PolicyHash != ar.Hash {
		t.Fatalf("last audit record after the restart %+v, want the restore of revision %d", end, ar.NewRevision)
	}
	l.agent.stop()
	l.start(v1) // the log ends with the revision in force now: nothing more is recorded
	if n := len(auditRecords(t, l)); n != len(recs) {
		t.Fatalf("%d audit records after a second restart, want %d", n, len(recs))
	}
}

// TestAgentDamagedState: a damaged state file, journal line or audit record does not keep the
// agent from starting. It starts fail-closed (after a reboot, with no pins: every frame is
// dropped as no_policy; with the pins of the previous agent: their policy stays in force),
// reports the damage (status, /readyz, ztgate_state_damaged, the log), and an apply repairs it.
func TestAgentDamagedState(t *testing.T) {
	for _, tc := range []struct {
		part   string
		reboot bool // the pins are gone: nothing is enforced but no_policy
		damage func(t *testing.T, l *lab)
	}{
		{part: "state", reboot: true, damage: func(t *testing.T, l *lab) {
			path := filepath.Join(l.cfg.StateDir, "state.json")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, data[:len(data)/2], 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{part: "journal", reboot: false, damage: func(t *testing.T, l *lab) {
			appendFile(t, filepath.Join(l.cfg.StateDir, "changes.jsonl"), "{\"revision\": 3, \"op\": put\n")
		}},
		{part: "audit", reboot: true, damage: func(t *testing.T, l *lab) {
			path := filepath.Join(l.cfg.StateDir, "audit.log")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			data = bytes.Replace(data, []byte(`"old_revision":0`), []byte(`"old_revision":7`), 1)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.part, func(t *testing.T) {
			l := newLab(t, nil)
			tp := l.tp
			p := basePolicy(t, tp)
			v1 := l.run(p)
			attacker := tp.Device("attacker")
			doc := "name: attacker\nmac: \"" + attacker.MAC.String() + "\"\nipv4: [" + attacker.IPv4[0].String() + "]\n"
			file := filepath.Join(l.dir, "attacker.yaml")
			if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			l.must("policy", "set-device", file) // a journal record
			before := l.status()
			l.agent.kill()
			if tc.reboot {
				l.must("uninstall", "--bpffs-dir", l.pinDir)
			}
			tc.damage(t, l)

			l.start(v1)
			st := l.status()
			if len(st.Damage) != 1 || !strings.HasPrefix(st.Damage[0], tc.part+": ") {
				t.Fatalf("status damage %q, want one %s entry", st.Damage, tc.part)
			}
			if !strings.Contains(l.agent.log.String(), "damaged") {
				t.Errorf("the agent did not log the damage:\n%s", l.agent.log.String())
			}
			if code, body := l.scrape("/readyz"); code != 503 {
				t.Errorf("/readyz: %d %s, want 503", code, body)
			}
			if _, expo := l.scrape("/metrics"); metricValue(t, expo, `ztgate_state_damaged{part="`+tc.part+`"}`) != 1 {
				t.Errorf("ztgate_state_damaged{part=%q} is not 1", tc.part)
			}
			checkAttached(t, st, len(tp.Devices))

			echo, err := tp.Upstream.NS.EchoUDP(":7000")
			if err != nil {
				t.Fatal(err)
			}
			defer echo.Close()
			noPolicy := `ztgate_datapath_packets_total{` + fromDev + `reason="no_policy",verdict="drop"}`
			_, expo := l.scrape("/metrics")
			dropped := metricValue(t, expo, noPolicy)
			passes := sendOnce(t, tp.Device("cam"), tp.Upstream.IPv4, 7000)
			switch {
			case tc.part == "audit":
				// The state is whole: its policy is restored as usual.
				if st.Policy.Revision != before.Policy.Revision || !passes {
					t.Errorf("revision %d (was %d), cam passes %v: want the restored policy", st.Policy.Revision,
						before.Policy.Revision, passes)
				}
			case tc.reboot:
				_, expo := l.scrape("/metrics")
				if st.Policy.Revision != 0 || passes || metricValue(t, expo, noPolicy) <= dropped {
					t.Errorf("revision %d, cam passes %v, no_policy drops %v -> %v: want everything dropped",
						st.Policy.Revision, passes, dropped, metricValue(t, expo, noPolicy))
				}
			default:
				// The pins hold the previous agent's policy: it stays in force.
				if st.Policy.Revision != before.Policy.Revision || !passes {
					t.Errorf("revision %d (was %d), cam passes %v: want the pinned policy", st.Policy.Revision,
						before.Policy.Revision, passes)
				}
			}

			// The repair: an apply, which clears the report.
			p.Spec.Devices[0].Allow = nil // cam may no longer send
			var ar api.ApplyResult
			l.mustJSON(&ar, "policy", "apply", l.writePolicy("repair.yaml", p))
			st = l.status()
			if len(st.Damage) != 0 || st.Policy.Revision != ar.NewRevision {
				t.Fatalf("after the repair: damage %q, revision %d, want none and %d", st.Damage, st.Policy.Revision,
					ar.NewRevision)
			}
			if code, body := l.scrape("/readyz"); code != 200 {
				t.Errorf("/readyz after the repair: %d %s", code, body)
			}
			if _, expo := l.scrape("/metrics"); metricValue(t, expo, `ztgate_state_damaged{part="`+tc.part+`"}`) != 0 {
				t.Errorf("ztgate_state_damaged{part=%q} is not 0 after the repair", tc.part)
			}
			if sendOnce(t, tp.Device("cam"), tp.Upstream.IPv4, 7000) {
				t.Error("cam passes after the repair, which denies it")
			}
			auditRecords(t, l) // the log verifies
			// A restart finds the state whole.
			l.agent.stop()
			l.start(v1)
			if st := l.status(); len(st.Damage) != 0 || st.Policy.Revision != ar.NewRevision {
				t.Fatalf("after a restart: damage %q, revision %d, want none and %d", st.Damage, st.Policy.Revision,
					ar.NewRevision)
			}
		})
	}
}

// appendFile appends s to the file at path.
func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}
