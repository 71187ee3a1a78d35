package bench

import (
	"context"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/testenv"
)

// liveTestLog sends the suite's progress lines to the test log.
type liveTestLog struct{ t *testing.T }

func (l liveTestLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestLiveQuick runs the live section in quick mode: it must produce positive figures and
// target verdicts without errors, and leave no namespace or pin behind. No timing is asserted.
func TestLiveQuick(t *testing.T) {
	testenv.RequirePriv(t)
	liveTrace.Lock()
	liveTrace.namespaces, liveTrace.pinDirs = nil, nil
	liveTrace.Unlock()

	r := Run(context.Background(), &Config{Quick: true, Log: liveTestLog{t}}, []string{"live"})
	for _, e := range r.Errors {
		t.Errorf("section error: %s", e)
	}
	n := 0
	for _, res := range r.Results {
		if res.Section != "live" {
			continue
		}
		n++
		if math.IsNaN(res.Value) || math.IsInf(res.Value, 0) || res.Value <= 0 {
			t.Errorf("%s: value %v %s, want a positive figure", res.Name, res.Value, res.Unit)
		}
		if res.Base != "" && !(res.Ratio > 0) {
			t.Errorf("%s: ratio %v to %s, want a positive ratio", res.Name, res.Ratio, res.Base)
		}
	}
	if n == 0 {
		t.Error("no live results")
	}
	targets := 0
	for _, tg := range r.Targets {
		if tg.Section == "live" {
			targets++
			if math.IsNaN(tg.Measured) {
				t.Errorf("target %q: not measured (%s)", tg.Desc, tg.Note)
			}
		}
	}
	if targets == 0 {
		t.Error("no live targets checked")
	}

	liveTrace.Lock()
	nss, pins := liveTrace.namespaces, liveTrace.pinDirs
	liveTrace.Unlock()
	if len(nss) == 0 || len(pins) == 0 {
		t.Fatalf("the section recorded %d namespaces and %d pin directories, want some of each", len(nss), len(pins))
	}
	for _, ns := range nss {
		if _, err := os.Stat(filepath.Join(testenv.NetnsDir, ns)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("namespace %s left behind (stat: %v)", ns, err)
		}
	}
	for _, p := range pins {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("pin directory %s left behind (stat: %v)", p, err)
		}
	}
}
