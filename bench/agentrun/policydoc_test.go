package agentrun

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ztgate/ztgate/policy"
)

// TestDocumentsAgree: the JSON and YAML documents of WritePolicy and WritePolicyJSON are one policy,
// and the JSON one is within the agent's JSON fast path.
func TestDocumentsAgree(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{1, 9, 70} {
		y, j := filepath.Join(dir, "p.yaml"), filepath.Join(dir, "p.json")
		if _, err := WritePolicy(y, n, 1000); err != nil {
			t.Fatal(err)
		}
		if _, err := WritePolicyJSON(j, n, 1000); err != nil {
			t.Fatal(err)
		}
		py, err := policy.ParseFile(y)
		if err != nil {
			t.Fatal(err)
		}
		pj, err := policy.ParseFile(j)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(j)
		if err != nil {
			t.Fatal(err)
		}
		if policy.ParseJSON(j, data) == nil {
			t.Fatalf("%d devices: the JSON document is not read by the JSON fast path", n)
		}
		if !reflect.DeepEqual(py, pj) {
			t.Fatalf("%d devices: the YAML and JSON documents differ:\n%+v\n%+v", n, py, pj)
		}
	}
}
