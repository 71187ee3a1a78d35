package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/agent"
)

// fakeRun replaces the agent with a function recording its configuration.
func fakeRun(t *testing.T, ret error) *agent.Config {
	t.Helper()
	var got agent.Config
	old := runAgent
	runAgent = func(ctx context.Context, cfg agent.Config, log *slog.Logger) error {
		got = cfg
		log.Info("agent started", "interfaces", len(cfg.Interfaces))
		log.Debug("debug detail")
		return ret
	}
	t.Cleanup(func() { runAgent = old })
	return &got
}

func TestAgentConfigFileAndFlags(t *testing.T) {
	cfgFile := writeFile(t, "agent.yaml",
		"state_dir: /srv/ztgate\nmetrics_address: \"\"\nxdp_mode: native\nlog_format: json\n")
	got := fakeRun(t, nil)
	sock := filepath.Join(t.TempDir(), "api.sock")
	r := ztgate(t, context.Background(), "", "--socket", sock, "agent", "--config", cfgFile,
		"-i", "eth1", "--interface", "gw-p*", "--bridge", "br0", "--no-events", "--log-level", "debug",
		"--xdp-mode", "generic")
	wantCode(t, r, exitOK)

	want := agent.DefaultConfig()
	want.Interfaces = []string{"eth1", "gw-p*"}
	want.Bridges = []string{"br0"}
	want.StateDir = "/srv/ztgate" // file
	want.MetricsAddress = ""      // file
	want.XDPMode = "generic"      // flag over file
	want.LogFormat = "json"       // file
	want.LogLevel = "debug"       // flag
	want.Events = false           // flag
	want.Socket = sock            // global flag
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("config\n got %+v\nwant %+v", *got, want)
	}
	if !strings.Contains(r.stderr, `"msg":"agent started"`) || !strings.Contains(r.stderr, "debug detail") {
		t.Errorf("want json logs at debug level on stderr: %s", r)
	}
}

func TestAgentConfigFlagsOnly(t *testing.T) {
	if _, err := os.Stat(agent.DefaultConfigFile); err == nil {
		t.Skipf("%s exists", agent.DefaultConfigFile)
	}
	got := fakeRun(t, nil)
	r := ztgate(t, context.Background(), "", "agent", "-i", "eth1", "--state-dir", "/tmp/zt", "--log-level", "warn")
	wantCode(t, r, exitOK)
	want := agent.DefaultConfig()
	want.Interfaces = []string{"eth1"}
	want.StateDir = "/tmp/zt"
	want.LogLevel = "warn"
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("config\n got %+v\nwant %+v", *got, want)
	}
	if strings.Contains(r.stderr, "agent started") {
		t.Errorf("info logged at level warn: %s", r)
	}
	if r.stdout != "" {
		t.Errorf("the agent wrote to stdout: %q", r.stdout)
	}
}

func TestAgentConfigErrors(t *testing.T) {
	got := fakeRun(t, nil)

	// A named config file must exist.
	r := ztgate(t, context.Background(), "", "agent", "--config", filepath.Join(t.TempDir(), "missing.yaml"), "-i", "eth1")
	wantCode(t, r, exitError)
	// A broken one is an error even if flags would complete it.
	bad := writeFile(t, "bad.yaml", "interfaces: [eth1]\nno_such_key: 1\n")
	r = ztgate(t, context.Background(), "", "agent", "--config", bad, "-i", "eth1")
	wantCode(t, r, exitError)
	if !strings.Contains(r.stderr, "no_such_key") {
		t.Errorf("%s", r)
	}
	// No interface anywhere.
	empty := writeFile(t, "empty.yaml", "state_dir: /srv/zt\n")
	r = ztgate(t, context.Background(), "", "agent", "--config", empty)
	wantCode(t, r, exitUsage)
	if !strings.Contains(r.stderr, "interfaces: at least one interface") {
		t.Errorf("%s", r)
	}
	if got.Interfaces != nil {
		t.Errorf("the agent ran with a bad configuration: %+v", *got)
	}

	// The agent's own error.
	fakeRun(t, errors.New("attach eth1: operation not permitted"))
	r = ztgate(t, context.Background(), "", "agent", "--config", empty, "-i", "eth1")
	wantCode(t, r, exitError)
	if !strings.Contains(r.stderr, "ztgate: attach eth1: operation not permitted") {
		t.Errorf("%s", r)
	}
	// A kernel feature missing: a non-zero exit naming it.
	fakeRun(t, errors.New("refusing to run unenforced: kernel features missing: "+
		"map type RingBuf: not supported by this kernel"))
	r = ztgate(t, context.Background(), "", "agent", "--config", empty, "-i", "eth1")
	wantCode(t, r, exitError)
	if !strings.Contains(r.stderr, "map type RingBuf: not supported by this kernel") {
		t.Errorf("%s", r)
	}
	// A bad pattern.
	r = ztgate(t, context.Background(), "", "agent", "--config", empty, "-i", "gw-p[")
	wantCode(t, r, exitUsage)
	if !strings.Contains(r.stderr, "interfaces[0]: pattern") {
		t.Errorf("%s", r)
	}
}

func TestUninstall(t *testing.T) {
	// Nothing pinned: fine.
	r := ztgate(t, context.Background(), "", "uninstall", "--bpffs-dir", filepath.Join(t.TempDir(), "none"))
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stderr, "nothing pinned") || r.stdout != "" {
		t.Errorf("%s", r)
	}
	// Not on bpffs: refused, and left alone.
	keep := writeFile(t, "keep", "x")
	r = ztgate(t, context.Background(), "", "uninstall", "--bpffs-dir", filepath.Dir(keep))
	wantCode(t, r, exitError)
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("uninstall removed a directory that is not on bpffs: %v", err)
	}
}
