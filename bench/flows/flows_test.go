package flows

import (
	"context"
	"io"
	"testing"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/testenv"
)

// TestFlowsQuick runs the flows section in quick mode and checks the report's shape: the memory
// figures positive, both exhaustion facts established (they are behaviour, not timing).
func TestFlowsQuick(t *testing.T) {
	testenv.RequirePriv(t)
	r := core.Run(context.Background(), &core.Config{Quick: true, Log: io.Discard}, []core.Section{Section}, nil)
	if len(r.Errors) > 0 {
		t.Fatalf("errors: %v", r.Errors)
	}
	if len(r.Results) != 4 {
		t.Errorf("%d results, want 4", len(r.Results))
	}
	for _, res := range r.Results {
		if res.Value <= 0 {
			t.Errorf("%s: value %v, want > 0", res.Name, res.Value)
		}
	}
	if len(r.Targets) != 3 {
		t.Fatalf("%d targets, want 3", len(r.Targets))
	}
	for _, tg := range r.Targets[1:] {
		if !tg.Met {
			t.Errorf("%s: not met: %s", tg.Desc, tg.Note)
		}
	}
}
