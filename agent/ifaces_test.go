package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/testenv"
)

// TestStartInterfaceStates: started with one configured interface absent, one whose VLAN
// offload cannot be turned off and a pattern that matches nothing, the agent starts, attaches
// where it can and reports each one: absent, degraded (attached, with the reason), and the
// pattern; it is ready (neither absent nor degraded holds readiness back).
func TestStartInterfaceStates(t *testing.T) {
	testenv.RequirePriv(t)
	tp := testenv.New(t, testenv.Config{Devices: []testenv.DeviceSpec{{}, {}}})
	ok, stuck := tp.Devices[0].Port, tp.Devices[1].Port
	absent, pattern := "zt"+tp.ID+"gx", "zt"+tp.ID+"q*"

	orig := disableVLANOffload
	t.Cleanup(func() { disableVLANOffload = orig })
	disableVLANOffload = func(name string) error {
		if name == stuck.Name {
			return errors.New("vlan offload: rx-vlan-hw-parse stays on")
		}
		return orig(name)
	}

	var b [6]byte
	_, _ = rand.Read(b[:])
	cfg := DefaultConfig()
	cfg.Interfaces = []string{ok.Name, stuck.Name, absent, pattern}
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.BPFFSDir = filepath.Join("/sys/fs/bpf", "zt-agent-test-"+hex.EncodeToString(b[:]))
	cfg.Socket = filepath.Join(t.TempDir(), "ztgate.sock")
	cfg.MetricsAddress = ""
	t.Cleanup(func() {
		if err := loader.Uninstall(cfg.BPFFSDir); err != nil {
			t.Error(err)
		}
	})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var ifcs []api.Interface
	var ready bool
	err := tp.Gateway.Do(func() error {
		a, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return err
		}
		defer a.close()
		a.ready.Store(true) // what serve does
		ifcs, ready = a.interfaces(), a.isReady()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		state    string
		attached bool
		err      string
	}{
		ok.Name:    {"attached", true, ""},
		stuck.Name: {"degraded", true, "vlan offload: rx-vlan-hw-parse stays on"},
		absent:     {"absent", false, ""},
		pattern:    {"absent", false, "no interface matches the pattern"},
	}
	if len(ifcs) != len(want) {
		t.Fatalf("interfaces: %+v", ifcs)
	}
	for _, ifc := range ifcs {
		w, found := want[ifc.Name]
		if !found || ifc.State != w.state || ifc.Attached != w.attached || ifc.Error != w.err {
			t.Errorf("%s: %+v, want %+v", ifc.Name, ifc, w)
		}
	}
	if !ready {
		t.Error("not ready")
	}
}
