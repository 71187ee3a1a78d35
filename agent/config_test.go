package agent

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// validConfig is DefaultConfig completed with the one key it cannot default.
func validConfig() Config {
	c := DefaultConfig()
	c.Interfaces = []string{"eth1"}
	return c
}

func TestDefaultConfig(t *testing.T) {
	d := DefaultConfig()
	if len(d.Interfaces) != 0 {
		t.Errorf("default interfaces: got %v, want none", d.Interfaces)
	}
	err := d.Validate()
	if err == nil || !strings.HasPrefix(err.Error(), "interfaces:") || strings.Contains(err.Error(), "\n") {
		t.Errorf("DefaultConfig().Validate(): got %v, want only the interfaces error", err)
	}
	if err := validConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig with an interface: %v", err)
	}
	if d.XDPMode != "auto" || !d.Events || d.LogLevel != "info" || d.LogFormat != "text" {
		t.Errorf("defaults: got %+v", d)
	}
}

func TestValidateGoodValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{name: "xdp_mode native", mod: func(c *Config) { c.XDPMode = "native" }},
		{name: "xdp_mode generic", mod: func(c *Config) { c.XDPMode = "generic" }},
		{name: "event_ring_bytes 4096", mod: func(c *Config) { c.EventRingBytes = 4096 }},
		{name: "event_ring_bytes 1<<24", mod: func(c *Config) { c.EventRingBytes = 1 << 24 }},
		{name: "event_burst 1", mod: func(c *Config) { c.EventBurst = 1 }},
		{name: "event_window 1ns", mod: func(c *Config) { c.EventWindow = 1 }},
		{name: "max_devices 1", mod: func(c *Config) { c.MaxDevices = 1 }},
		{name: "log_level debug", mod: func(c *Config) { c.LogLevel = "debug" }},
		{name: "log_level warn", mod: func(c *Config) { c.LogLevel = "warn" }},
		{name: "log_level error", mod: func(c *Config) { c.LogLevel = "error" }},
		{name: "log_format json", mod: func(c *Config) { c.LogFormat = "json" }},
		{name: "events off", mod: func(c *Config) { c.Events = false }},
		{name: "no metrics", mod: func(c *Config) { c.MetricsAddress = "" }},
		{name: "interface pattern", mod: func(c *Config) { c.Interfaces = []string{"gw-p*", "wlan[0-9]"} }},
		{name: "bridges only", mod: func(c *Config) { c.Interfaces, c.Bridges = nil, []string{"br0"} }},
		{name: "interfaces and bridges", mod: func(c *Config) { c.Bridges = []string{"br0", "br-iot"} }},
	} {
		c := validConfig()
		tc.mod(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestValidateBadValues(t *testing.T) {
	for _, tc := range []struct {
		key string
		mod func(*Config)
	}{
		{key: "interfaces", mod: func(c *Config) { c.Interfaces = nil }},
		{key: "interfaces", mod: func(c *Config) { c.Interfaces = []string{} }},
		{key: "interfaces[0]", mod: func(c *Config) { c.Interfaces = []string{"gw-p["} }},
		{key: "interfaces[1]", mod: func(c *Config) { c.Interfaces = []string{"eth1", "a/b"} }},
		{key: "interfaces[0]", mod: func(c *Config) { c.Interfaces = []string{"averyveryverylongname"} }},
		{key: "bridges[0]", mod: func(c *Config) { c.Bridges = []string{"br*"} }},
		{key: "bridges[1]", mod: func(c *Config) { c.Bridges = []string{"br0", ""} }},
		{key: "state_dir", mod: func(c *Config) { c.StateDir = "" }},
		{key: "bpffs_dir", mod: func(c *Config) { c.BPFFSDir = "" }},
		{key: "socket", mod: func(c *Config) { c.Socket = "" }},
		{key: "xdp_mode", mod: func(c *Config) { c.XDPMode = "turbo" }},
		{key: "event_ring_bytes", mod: func(c *Config) { c.EventRingBytes = 6000 }},  // not a power of two
		{key: "event_ring_bytes", mod: func(c *Config) { c.EventRingBytes = 12288 }}, // page multiple, not a power of two
		{key: "event_ring_bytes", mod: func(c *Config) { c.EventRingBytes = 2048 }},  // power of two < 4096
		{key: "event_ring_bytes", mod: func(c *Config) { c.EventRingBytes = 0 }},
		{key: "event_ring_bytes", mod: func(c *Config) { c.EventRingBytes = -4096 }},
		{key: "event_burst", mod: func(c *Config) { c.EventBurst = 0 }},
		{key: "event_window", mod: func(c *Config) { c.EventWindow = 0 }},
		{key: "event_window", mod: func(c *Config) { c.EventWindow = -time.Second }},
		{key: "event_history", mod: func(c *Config) { c.EventHistory = 0 }},
		{key: "max_devices", mod: func(c *Config) { c.MaxDevices = 0 }},
		{key: "max_addresses", mod: func(c *Config) { c.MaxAddrs = 0 }},
		{key: "max_rules", mod: func(c *Config) { c.MaxRules = -1 }},
		{key: "max_prefixes", mod: func(c *Config) { c.MaxPrefixes = 0 }},
		{key: "frag_sweep", mod: func(c *Config) { c.FragSweep = 0 }},
		{key: "tc_mode", mod: func(c *Config) { c.TCMode = "ingress" }},
		{key: "flow_entries", mod: func(c *Config) { c.FlowEntries = 0 }},
		{key: "flow_quota", mod: func(c *Config) { c.FlowQuota = -1 }},
		{key: "flow_tcp", mod: func(c *Config) { c.FlowTCP = 0 }},
		{key: "flow_udp", mod: func(c *Config) { c.FlowUDP = -time.Second }},
		{key: "flow_other", mod: func(c *Config) { c.FlowOther = 0 }},
		{key: "log_level", mod: func(c *Config) { c.LogLevel = "trace" }},
		{key: "log_level", mod: func(c *Config) { c.LogLevel = "" }},
		{key: "log_level", mod: func(c *Config) { c.LogLevel = "INFO" }},
		{key: "log_format", mod: func(c *Config) { c.LogFormat = "xml" }},
		{key: "log_format", mod: func(c *Config) { c.LogFormat = "" }},
	} {
		c := validConfig()
		tc.mod(&c)
		err := c.Validate()
		// Exactly one problem, named by its yaml key.
		if err == nil || !strings.HasPrefix(err.Error(), tc.key+":") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s (%+v): got %v, want one error naming %s", tc.key, c, err, tc.key)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{XDPMode: "turbo", TCMode: "ingress", EventWindow: -1, FragSweep: -1}
	err := c.Validate()
	if err == nil {
		t.Fatal("zero config validates")
	}
	for _, key := range []string{"interfaces", "state_dir", "bpffs_dir", "socket", "xdp_mode", "max_devices",
		"max_addresses", "max_rules", "max_prefixes", "event_history", "event_ring_bytes", "event_burst",
		"event_window", "frag_sweep", "log_level", "log_format", "tc_mode", "flow_entries", "flow_quota", "flow_tcp",
		"flow_udp", "flow_other"} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("error does not name %s:\n%v", key, err)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The sample configuration documents the defaults: it must equal them (but for interfaces).
func TestLoadSampleConfig(t *testing.T) {
	cfg, err := LoadConfig("../deploy/agent.yaml", false)
	if err != nil {
		t.Fatalf("LoadConfig(deploy/agent.yaml): %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("sample does not validate: %v", err)
	}
	if want := []string{"eth1"}; !reflect.DeepEqual(cfg.Interfaces, want) {
		t.Errorf("sample interfaces: got %v, want %v", cfg.Interfaces, want)
	}
	want := DefaultConfig()
	want.Interfaces = cfg.Interfaces
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("deploy/agent.yaml differs from DefaultConfig:\n got %+v\nwant %+v", cfg, want)
	}
}

func TestLoadConfigValues(t *testing.T) {
	path := writeFile(t, "agent.yaml", `
interfaces: [eth1, eth2]
socket_group: "1234"
allow_uids: [1000, 1001]
metrics_address: ""
xdp_mode: generic
events: false
event_ring_bytes: 65536
event_burst: 3
event_window: 250ms
frag_sweep: 1m30s
max_rules: 7
log_level: debug
`)
	cfg, err := LoadConfig(path, false)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Interfaces = []string{"eth1", "eth2"}
	want.SocketGroup = "1234"
	want.AllowUIDs = []uint32{1000, 1001}
	want.MetricsAddress = ""
	want.XDPMode = "generic"
	want.Events = false
	want.EventRingBytes = 65536
	want.EventBurst = 3
	want.EventWindow = 250 * time.Millisecond
	want.FragSweep = 90 * time.Second
	want.MaxRules = 7
	want.LogLevel = "debug"
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestLoadConfigUnknownKey(t *testing.T) {
	path := writeFile(t, "agent.yaml", "interfaces: [eth1]\n\nmax_device: 10\n")
	_, err := LoadConfig(path, false)
	if err == nil {
		t.Fatal("unknown key accepted")
	}
	for _, s := range []string{path, "line 3", "max_device"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
}

func TestLoadConfigBadValues(t *testing.T) {
	for _, doc := range []string{
		"event_window: fast\n",
		"event_window: 1\n", // a bare number is not a duration (it would be one nanosecond)
		"frag_sweep: [1s]\n",
		"max_devices: many\n",
		"allow_uids: [-1]\n",
		"interfaces: eth1: eth2\n",
	} {
		path := writeFile(t, "agent.yaml", doc)
		if cfg, err := LoadConfig(path, false); err == nil {
			t.Errorf("%q: accepted as %+v", doc, cfg)
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("%q: error %q does not name the file", doc, err)
		}
	}
}

func TestLoadConfigMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	if _, err := LoadConfig(path, false); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file, not optional: got %v, want a not-exist error", err)
	}
	cfg, err := LoadConfig(path, true)
	if err != nil {
		t.Fatalf("missing file, optional: %v", err)
	}
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Errorf("missing optional file: got %+v, want the defaults", cfg)
	}
	// Optional covers a missing file only, not one that cannot be read.
	if _, err := LoadConfig(t.TempDir(), true); err == nil {
		t.Error("a directory as the optional config file: no error")
	}
}

func TestLoadConfigEmpty(t *testing.T) {
	for _, doc := range []string{"", "\n", "# only comments\n# here\n", "---\n"} {
		cfg, err := LoadConfig(writeFile(t, "agent.yaml", doc), false)
		if err != nil {
			t.Errorf("%q: %v", doc, err)
			continue
		}
		if !reflect.DeepEqual(cfg, DefaultConfig()) {
			t.Errorf("%q: got %+v, want the defaults", doc, cfg)
		}
	}
}

func TestLoaderConfig(t *testing.T) {
	c := validConfig()
	c.BPFFSDir = "/sys/fs/bpf/other"
	c.XDPMode = "generic"
	c.Events = false
	c.MaxDevices, c.MaxAddrs, c.MaxRules, c.MaxPrefixes = 1, 2, 3, 4
	c.EventRingBytes, c.EventBurst, c.EventWindow = 8192, 5, 3*time.Second
	lc := c.loaderConfig()
	if lc.PinDir != c.BPFFSDir || lc.Mode.String() != "generic" || lc.EventsEnabled ||
		lc.MaxDevices != 1 || lc.MaxAddrs != 2 || lc.MaxRules != 3 || lc.MaxPrefixes != 4 ||
		lc.RingBytes != 8192 || lc.EventBurst != 5 || lc.EventWindow != 3*time.Second {
		t.Errorf("loaderConfig: got %+v from %+v", lc, c)
	}
}

// TestPortIndex: a policy's port that is absent resolves to absentPort (its devices are dropped
// until it appears) when the configuration protects it, and stays an error otherwise.
func TestPortIndex(t *testing.T) {
	a := &Agent{cfg: Config{Interfaces: []string{"ztabsent0", "ztpat-*"}}}
	for _, name := range []string{"ztabsent0", "ztpat-9"} {
		if idx, err := a.portIndex(name); err != nil || idx != absentPort {
			t.Errorf("portIndex(%q) = %d, %v; want absentPort", name, idx, err)
		}
	}
	if idx, err := a.portIndex("ztother0"); err == nil {
		t.Errorf("portIndex of an unprotected absent port = %d, want an error", idx)
	}
	if idx, err := a.portIndex("lo"); err != nil || idx == 0 || idx == absentPort {
		t.Errorf("portIndex(lo) = %d, %v", idx, err)
	}
}
