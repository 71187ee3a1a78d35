package agent

import (
	"testing"

	"github.com/ztgate/ztgate/api"
)

// TestAuditRestored: at start the audit log is made to end with the revision restored: a
// change recorded but never made (the agent was killed in between) and a change made but not
// recorded both get a restore record; a log that ends with it gets nothing.
func TestAuditRestored(t *testing.T) {
	accepted := func(action string, from, to uint64) api.AuditRecord {
		return api.AuditRecord{Action: action, OldRevision: from, NewRevision: to, Result: api.ResultAccepted}
	}
	rejected := func(rev uint64) api.AuditRecord {
		return api.AuditRecord{Action: api.ActionApply, OldRevision: rev, NewRevision: rev, Result: api.ResultRejected}
	}
	refused := api.AuditRecord{Action: api.ActionConnect, OldRevision: 9, NewRevision: 9, Result: api.ResultRefused}
	for _, tc := range []struct {
		name     string
		log      []api.AuditRecord
		restored uint64
		record   bool   // a restore record is wanted
		from     uint64 // its old revision
	}{
		{name: "ends with it",
			log:      []api.AuditRecord{accepted(api.ActionApply, 0, 1), accepted(api.ActionDevice, 1, 2), refused},
			restored: 2, record: false, from: 0},
		{name: "failed after its record",
			log:      []api.AuditRecord{accepted(api.ActionApply, 0, 1), accepted(api.ActionApply, 1, 2), rejected(1)},
			restored: 1, record: false, from: 0},
		{name: "recorded, never made",
			log:      []api.AuditRecord{accepted(api.ActionApply, 0, 1), accepted(api.ActionDevice, 1, 2)},
			restored: 1, record: true, from: 2},
		{name: "made, not recorded", log: []api.AuditRecord{accepted(api.ActionApply, 0, 1)},
			restored: 2, record: true, from: 1},
		{name: "empty log", log: nil, restored: 3, record: true, from: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := testAgent(t, access{})
			for _, r := range tc.log {
				if _, err := a.audit.Append(r); err != nil {
					t.Fatal(err)
				}
			}
			a.auditRestored(tc.restored, "h")
			rs, err := a.audit.Records()
			if err != nil {
				t.Fatal(err)
			}
			added := rs[len(tc.log):]
			switch {
			case !tc.record:
				if len(added) != 0 {
					t.Fatalf("records added: %+v", added)
				}
			case len(added) != 1:
				t.Fatalf("records added: %+v, want one restore record", added)
			default:
				r := added[0]
				if r.Action != api.ActionRestore || r.Result != api.ResultAccepted || r.OldRevision != tc.from ||
					r.NewRevision != tc.restored || r.PolicyHash != "h" {
					t.Fatalf("restore record %+v, want %d -> %d", r, tc.from, tc.restored)
				}
			}
		})
	}
}
