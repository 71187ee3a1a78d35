package agent

import (
	"os"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/policy"
)

// TestReadJournal: records of any size are read back; a last line cut short (a crash while
// it was written) is dropped; a damaged line before the last is an error naming the line.
func TestReadJournal(t *testing.T) {
	s, err := openStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	j, err := s.openJournal()
	if err != nil {
		t.Fatal(err)
	}
	big := "name: x\nmac: \"02:00:00:00:00:01\"\nallow:\n" + strings.Repeat("  - {to: {device: x}}\n", 300000) // 6.6 MB
	for i, rec := range []change{{Revision: 2, Op: "put", Name: "x", Doc: big}, {Revision: 3, Op: "delete", Name: "x"}} {
		if err := j.append(&rec); err != nil {
			t.Fatal(err)
		}
		if j.n != i+1 {
			t.Fatalf("%d records counted after %d appends", j.n, i+1)
		}
	}
	if _, err := j.f.WriteString(`{"revision": 4, "op": "del`); err != nil {
		t.Fatal(err)
	}
	recs, err := s.readJournal()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Doc != big || recs[1].Op != "delete" {
		t.Fatalf("read back %d records", len(recs))
	}
	j.f.Close()
	// Reopened, the journal counts what it holds and cuts the torn record off.
	if j, err = s.openJournal(); err != nil || j.n != 2 {
		t.Fatalf("reopened journal: %d records, %v", j.n, err)
	}
	if err := j.append(&change{Revision: 4, Op: "delete", Name: "y"}); err != nil {
		t.Fatal(err)
	}
	j.f.Close()
	if recs, err = s.readJournal(); err != nil || len(recs) != 3 || recs[2].Name != "y" {
		t.Fatalf("after a torn record and an append: %d records, %v", len(recs), err)
	}
	if err := os.WriteFile(s.journalPath(), []byte("{\"revision\": 2}\nnot json\n{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.readJournal(); err == nil || !strings.Contains(err.Error(), journalFile+":2:") {
		t.Fatalf("a damaged record: %v", err)
	}
}

// TestReplay: records after the state file's revision are replayed in order, up to a record
// marked rejected; a revision out of sequence is an error.
func TestReplay(t *testing.T) {
	p := &policy.Policy{APIVersion: policy.APIVersion, Kind: policy.Kind, Metadata: policy.Metadata{Name: "r"}}
	p.Spec.Devices = []policy.Device{{Name: "a", MAC: "02:00:00:00:00:01", IPv4: []string{"10.0.0.1"}}}
	put := func(rev uint64, name, mac string) change {
		return change{Revision: rev, Op: "put", Name: name, Doc: "name: " + name + "\nmac: \"" + mac + "\"\n"}
	}
	recs := []change{put(4, "old", "02:00:00:00:00:09"), put(6, "b", "02:00:00:00:00:02"),
		put(7, "c", "02:00:00:00:00:03"), {Revision: 8, Op: "delete", Name: "b"}}
	noWarn := func(msg string, args ...any) {}
	for _, tc := range []struct {
		rejected uint64
		last     uint64
		devices  string
	}{
		{rejected: 0, last: 8, devices: "a,c"},
		{rejected: 8, last: 7, devices: "a,b,c"},
		{rejected: 7, last: 6, devices: "a,b"},
	} {
		ed, err := policy.NewEditor(clonePolicy(p), policy.CompileOptions{Revision: 5})
		if err != nil {
			t.Fatal(err)
		}
		last, err := replay(ed, recs, 5, "h", tc.rejected, noWarn)
		if err != nil || last == nil || last.Revision != tc.last {
			t.Fatalf("rejected %d: last %+v, %v", tc.rejected, last, err)
		}
		var names []string
		for _, d := range ed.Policy().Spec.Devices {
			names = append(names, d.Name)
		}
		if got := strings.Join(names, ","); got != tc.devices || ed.Snapshot().Revision != tc.last {
			t.Fatalf("rejected %d: devices %s at revision %d", tc.rejected, got, ed.Snapshot().Revision)
		}
	}
	ed, _ := policy.NewEditor(clonePolicy(p), policy.CompileOptions{Revision: 5})
	if _, err := replay(ed, append(recs[:2:2], put(6, "c", "02:00:00:00:00:03")), 5, "h", 0, noWarn); err == nil ||
		!strings.Contains(err.Error(), "revision 6 follows revision 6") {
		t.Fatalf("a repeated revision: %v", err)
	}
}

func clonePolicy(p *policy.Policy) *policy.Policy {
	c := *p
	c.Spec.Devices = append([]policy.Device(nil), p.Spec.Devices...)
	return &c
}
