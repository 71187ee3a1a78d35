package bpf

import "testing"

// Every reason of the C enum has a distinct, non-empty label, and no label is left over.
func TestReasonNamesCoverEnum(t *testing.T) {
	if len(reasonNames) != NumReasons {
		t.Fatalf("reasonNames has %d labels, enum zt_reason has %d reasons", len(reasonNames), NumReasons)
	}
	seen := map[string]bool{}
	for i, n := range reasonNames {
		if n == "" || seen[n] {
			t.Fatalf("reason %d: empty or duplicate label %q", i, n)
		}
		seen[n] = true
		if r, ok := ParseReason(n); !ok || int(r) != i {
			t.Fatalf("ParseReason(%q) = %d, %v", n, r, ok)
		}
	}
	if len(verdictNames) != NumVerdicts {
		t.Fatalf("verdictNames has %d labels, enum zt_verdict has %d", len(verdictNames), NumVerdicts)
	}
}
