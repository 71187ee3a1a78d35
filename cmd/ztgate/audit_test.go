package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/api"
)

// chain links records the way the brief specifies, independently of the agent's code: seq from
// 1, prev the hash before, hash = sha256 hex of encoding/json of the record with Hash "".
func chain(t *testing.T, rs []api.AuditRecord) []api.AuditRecord {
	t.Helper()
	prev := ""
	for i := range rs {
		rs[i].Seq = uint64(i) + 1
		rs[i].Prev = prev
		rs[i].Hash = ""
		b, err := json.Marshal(rs[i])
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		rs[i].Hash = hex.EncodeToString(sum[:])
		prev = rs[i].Hash
	}
	return rs
}

func testAudit(t *testing.T) []api.AuditRecord {
	at := time.Date(2025, 3, 14, 12, 0, 0, 5000, time.UTC)
	return chain(t, []api.AuditRecord{
		{Time: at, Action: api.ActionApply, UID: 0, GID: 0, PID: 100, OldRevision: 0, NewRevision: 1, PolicyHash: "aaaa",
			Result: api.ResultAccepted},
		{Time: at.Add(time.Hour), Action: api.ActionApply, UID: 1000, GID: 1000, PID: 200, OldRevision: 1, NewRevision: 1,
			Result: api.ResultRejected, Error: "invalid policy"},
		{Time: at.Add(2 * time.Hour), Action: api.ActionConnect, UID: 1001, GID: 1001, PID: -1, Result: api.ResultRefused},
		{Time: at.Add(3 * time.Hour), Action: api.ActionApply, UID: 0, GID: 0, PID: 300, OldRevision: 1, NewRevision: 2,
			PolicyHash: "bbbb", Result: api.ResultAccepted},
		{Time: at.Add(4 * time.Hour), Action: api.ActionDevice, Change: "put device cam-07", UID: 0, GID: 0, PID: 400,
			OldRevision: 2, NewRevision: 3, PolicyHash: "cccc", Result: api.ResultAccepted},
	})
}

func TestAuditList(t *testing.T) {
	rs := testAudit(t)
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathAudit: reply(rs)})
	r := fa.run(t, "audit")
	wantCode(t, r, exitOK)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 1+len(rs) {
		t.Fatalf("%s", r)
	}
	if f := strings.Fields(lines[0]); f[0] != "SEQ" || f[len(f)-1] != "ERROR" {
		t.Errorf("header %q", lines[0])
	}
	if f := strings.Fields(lines[2]); f[0] != "2" || f[2] != "apply" || f[3] != "rejected" || f[4] != "1000" ||
		!strings.HasSuffix(lines[2], "invalid policy") {
		t.Errorf("row 2 %q", lines[2])
	}
	if f := strings.Fields(lines[3]); f[6] != "-" {
		t.Errorf("unknown pid is not '-': %q", lines[3])
	}
	if f := strings.Fields(lines[5]); f[2] != "device" || !strings.Contains(lines[5], "put device cam-07") {
		t.Errorf("a device change's row %q", lines[5])
	}

	r = fa.run(t, "audit", "-o", "json")
	wantCode(t, r, exitOK)
	var got []api.AuditRecord
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !reflect.DeepEqual(got, rs) {
		t.Errorf("audit -o json: %v\n%s", err, r.stdout)
	}
}

func TestAuditVerify(t *testing.T) {
	good := testAudit(t)
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathAudit: reply(good)})
	r := fa.run(t, "audit", "--verify")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stderr, "audit chain verified: 5 records") {
		t.Errorf("%s", r)
	}
	r = fa.run(t, "audit", "--verify", "-o", "json")
	wantCode(t, r, exitOK)

	for _, tc := range []struct {
		name   string
		tamper func([]api.AuditRecord) []api.AuditRecord
		want   string
	}{
		{
			name:   "edited",
			tamper: func(rs []api.AuditRecord) []api.AuditRecord { rs[1].Result = api.ResultAccepted; return rs },
			want:   "seq 2",
		},
		{
			name:   "edited-time",
			tamper: func(rs []api.AuditRecord) []api.AuditRecord { rs[2].Time = rs[2].Time.Add(time.Second); return rs },
			want:   "seq 3",
		},
		{
			name:   "deleted",
			tamper: func(rs []api.AuditRecord) []api.AuditRecord { return append(rs[:1:1], rs[2:]...) },
			want:   "seq 3",
		},
		{
			name:   "reordered",
			tamper: func(rs []api.AuditRecord) []api.AuditRecord { rs[2], rs[3] = rs[3], rs[2]; return rs },
			want:   "seq 4",
		},
		{
			name: "rehashed",
			tamper: func(rs []api.AuditRecord) []api.AuditRecord {
				// Edited and its own hash recomputed: the next record's prev no longer matches.
				rs[0].PolicyHash = "evil"
				fixed := chain(t, append([]api.AuditRecord(nil), rs[0]))
				rs[0].Hash = fixed[0].Hash
				return rs
			},
			want: "seq 2",
		},
		{
			name:   "not-from-1",
			tamper: func(rs []api.AuditRecord) []api.AuditRecord { return rs[1:] },
			want:   "seq 2",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.tamper(testAudit(t))
			fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathAudit: reply(bad)})
			r := fa.run(t, "audit", "--verify")
			wantCode(t, r, exitError)
			if !strings.Contains(r.stderr, "audit chain broken at "+tc.want+":") {
				t.Errorf("stderr does not name %s: %s", tc.want, r)
			}
			// Without --verify the same log lists fine.
			wantCode(t, fa.run(t, "audit"), exitOK)
		})
	}
}
