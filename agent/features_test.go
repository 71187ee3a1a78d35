package agent

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/testenv"
)

// TestStartMissingFeature: a kernel that lacks a feature the datapath
// needs (the prober reports the ring buffer map type missing) makes the agent fail with an
// error naming the feature, before anything is pinned or attached.
func TestStartMissingFeature(t *testing.T) {
	testenv.RequirePriv(t)
	tp := testenv.New(t, testenv.Config{Devices: []testenv.DeviceSpec{{}}})
	port := tp.Devices[0].Port

	orig := kernelFeatures
	t.Cleanup(func() { kernelFeatures = orig })
	replaced := false
	kernelFeatures = func() ([]loader.Feature, error) {
		fs, err := orig()
		for i := range fs {
			if fs[i].Name == "map type RingBuf" {
				fs[i].Probe = func() error { return ebpf.ErrNotSupported }
				replaced = true
			}
		}
		return fs, err
	}

	cfg := testConfig(t, port.Name)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // should it start after all, it stops at once
	var runErr error
	if err := tp.Gateway.Do(func() error {
		runErr = Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !replaced {
		t.Fatal("the features list has no \"map type RingBuf\"")
	}
	if runErr == nil || !strings.Contains(runErr.Error(), "map type RingBuf: not supported by this kernel") ||
		!strings.Contains(runErr.Error(), "refusing to run unenforced") {
		t.Fatalf("Run: %v, want an error naming the missing feature", runErr)
	}
	if _, err := os.Stat(cfg.BPFFSDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pin dir %s: %v, want none", cfg.BPFFSDir, err)
	}
	l, err := tp.Gateway.Netlink().LinkByIndex(port.Index)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Errorf("an XDP program is attached to %s: %+v", port.Name, x)
	}
	t.Logf("Run: %v", runErr)
}
