package agent

import (
	"os"
	"strings"
	"testing"
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
