package control

import (
	"bytes"
	"context"
	"math"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bench/events"
	"github.com/ztgate/ztgate/testenv"
)

// TestControlAndEventsQuick runs the control and events sections in quick mode against a
// freshly built ztgate binary and checks that they produce figures (not what the figures are).
func TestControlAndEventsQuick(t *testing.T) {
	testenv.RequirePriv(t)
	bin := filepath.Join(t.TempDir(), "ztgate")
	build := exec.Command("go", "build", "-o", bin, "github.com/ztgate/ztgate/cmd/ztgate")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var log bytes.Buffer
	cfg := &core.Config{Quick: true, Ztgate: bin, Log: &log}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := core.Run(ctx, cfg, []core.Section{Section, events.Section}, nil)
	if testing.Verbose() {
		var out bytes.Buffer
		r.Print(&out)
		t.Logf("%s\n%s", log.String(), out.String())
	}
	if len(r.Errors) > 0 {
		t.Fatalf("errors: %v\n%s", r.Errors, log.String())
	}
	counts := map[string]int{}
	for _, res := range r.Results {
		counts[res.Section]++
		if math.IsNaN(res.Value) || math.IsInf(res.Value, 0) || res.Value < 0 {
			t.Errorf("%s: %q = %v", res.Section, res.Name, res.Value)
		}
		// Only the loss count may be zero.
		if res.Value == 0 && res.Name != "uncounted event loss" {
			t.Errorf("%s: %q = 0", res.Section, res.Name)
		}
	}
	names := map[string]bool{}
	for _, res := range r.Results {
		names[res.Name] = true
	}
	for _, want := range []string{"YAML decoding alone, 10k devices", "kernel memory floor per device, 10k devices",
		"kernel memory per device, 10k devices", "producer cost per event"} {
		if !names[want] {
			t.Errorf("missing result %q", want)
		}
	}
	for _, s := range []string{"control", "events"} {
		if counts[s] == 0 {
			t.Errorf("no results in section %s", s)
		}
	}
	targets := map[string]int{}
	for _, tg := range r.Targets {
		targets[tg.Section]++
	}
	if targets["control"] == 0 || targets["events"] == 0 {
		t.Errorf("targets by section: %v", targets)
	}
}
