package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"gopkg.in/yaml.v3"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
)

// DefaultConfigFile is read when it exists and no other file is named.
const DefaultConfigFile = "/etc/ztgate/agent.yaml"

// Config is the agent's configuration: a YAML file (every key optional) overridden by flags.
type Config struct {
	// Interfaces are the gateway's device-facing interfaces to protect: exact names or glob
	// patterns (path.Match: gw-p*). One that is absent is protected as soon as it appears.
	Interfaces []string `yaml:"interfaces"`
	// Bridges protect every port of these bridges, including ports added later.
	Bridges []string `yaml:"bridges"`
	// Policy is a policy file applied at start when the state directory holds none.
	Policy string `yaml:"policy"`
	// StateDir holds the applied policy, its revision and the audit log.
	StateDir string `yaml:"state_dir"`
	// BPFFSDir is the bpffs directory of the pins.
	BPFFSDir string `yaml:"bpffs_dir"`
	// Socket is the path of the local API's unix socket (its directory is made root-only).
	Socket string `yaml:"socket"`
	// SocketGroup (name or gid), when set, makes the socket 0660 to that group and lets its
	// members (primary or supplementary group) use the API. Root always may.
	SocketGroup string `yaml:"socket_group"`
	// AllowUIDs may use the API besides root and SocketGroup.
	AllowUIDs []uint32 `yaml:"allow_uids"`
	// MetricsAddress serves /metrics, /healthz and /readyz over TCP; "" disables it.
	MetricsAddress string `yaml:"metrics_address"`
	// Pprof serves Go's profiler (net/http/pprof, /debug/pprof/) on MetricsAddress. For
	// profiling only: it exposes the agent's internals to whoever can reach that address.
	Pprof bool `yaml:"pprof"`
	// XDPMode is auto (native, else generic), native or generic.
	XDPMode string `yaml:"xdp_mode"`
	// TCMode is how the program toward devices attaches at egress: auto (tcx, else a clsact
	// filter), tcx or clsact.
	TCMode string `yaml:"tc_mode"`
	// Events turns the drop/audit event ring buffer on.
	Events bool `yaml:"events"`
	// EventHistory is how many recent events the agent keeps for `ztgate events`.
	EventHistory int `yaml:"event_history"`
	// EventRingBytes sizes the ring buffer (a power of two, a multiple of the page size).
	EventRingBytes int `yaml:"event_ring_bytes"`
	// EventBurst events per (device, reason) per EventWindow at most reach the ring buffer.
	EventBurst  uint64        `yaml:"event_burst"`
	EventWindow time.Duration `yaml:"event_window"`
	// Capacities of the datapath (the largest policy it accepts).
	MaxDevices  int `yaml:"max_devices"`
	MaxAddrs    int `yaml:"max_addresses"`
	MaxRules    int `yaml:"max_rules"`
	MaxPrefixes int `yaml:"max_prefixes"`
	// MaxPolicyBytes is the largest policy document the agent accepts (default
	// policy.MaxDocumentSize, 16 MiB: about 100,000 devices). Raise it for larger fleets.
	MaxPolicyBytes int `yaml:"max_policy_bytes"`
	// FragSweep is how often stale fragment records are removed.
	FragSweep time.Duration `yaml:"frag_sweep"`
	// FlowEntries is the capacity of the flow table, FlowQuota how many flows one device may
	// hold; FlowTCP, FlowUDP and FlowOther the idle lifetimes of TCP, UDP and ICMP echo flows.
	FlowEntries int           `yaml:"flow_entries"`
	FlowQuota   int           `yaml:"flow_quota"`
	FlowTCP     time.Duration `yaml:"flow_tcp"`
	FlowUDP     time.Duration `yaml:"flow_udp"`
	FlowOther   time.Duration `yaml:"flow_other"`
	// LogLevel is debug, info, warn or error; LogFormat text or json.
	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`
}

// DefaultConfig is the configuration of an agent started without a file or flags.
func DefaultConfig() Config {
	lc := loader.DefaultConfig()
	return Config{
		StateDir:       "/var/lib/ztgate",
		BPFFSDir:       loader.DefaultPinDir,
		Socket:         api.DefaultSocket,
		MetricsAddress: "127.0.0.1:9431",
		XDPMode:        "auto",
		TCMode:         "auto",
		Events:         true,
		EventHistory:   4096,
		EventRingBytes: lc.RingBytes,
		EventBurst:     lc.EventBurst,
		EventWindow:    lc.EventWindow,
		MaxDevices:     lc.MaxDevices,
		MaxAddrs:       lc.MaxAddrs,
		MaxRules:       lc.MaxRules,
		MaxPrefixes:    lc.MaxPrefixes,
		MaxPolicyBytes: policy.MaxDocumentSize,
		FragSweep:      10 * time.Second,
		FlowEntries:    lc.FlowEntries,
		FlowQuota:      lc.FlowQuota,
		FlowTCP:        lc.FlowTCP,
		FlowUDP:        lc.FlowUDP,
		FlowOther:      lc.FlowOther,
		LogLevel:       "info",
		LogFormat:      "text",
	}
}

// LoadConfig reads a configuration file over DefaultConfig. Unknown keys are errors. A missing
// file is an error unless optional is set (then the defaults are returned). The result is not
// validated (flags may still complete it): Run validates what it is given.
func LoadConfig(path string, optional bool) (Config, error) {
	cfg := DefaultConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		if optional && errors.Is(err, fs.ErrNotExist) {
			return cfg, nil
		}
		return cfg, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if len(c.Interfaces) == 0 && len(c.Bridges) == 0 {
		errs = append(errs, errors.New("interfaces: at least one interface (or bridges: one bridge) to protect is required"))
	}
	for i, name := range c.Interfaces {
		if err := checkIfaceName(name, true); err != nil {
			errs = append(errs, fmt.Errorf("interfaces[%d]: %w", i, err))
		}
	}
	for i, name := range c.Bridges {
		if err := checkIfaceName(name, false); err != nil {
			errs = append(errs, fmt.Errorf("bridges[%d]: %w", i, err))
		}
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir: required"))
	}
	if c.BPFFSDir == "" {
		errs = append(errs, errors.New("bpffs_dir: required"))
	}
	if c.Socket == "" {
		errs = append(errs, errors.New("socket: required"))
	}
	if _, err := loader.ParseMode(c.XDPMode); err != nil {
		errs = append(errs, fmt.Errorf("xdp_mode: %w", err))
	}
	if _, err := loader.ParseTCMode(c.TCMode); err != nil {
		errs = append(errs, fmt.Errorf("tc_mode: %w", err))
	}
	for _, v := range []struct {
		name string
		n    int
	}{
		{name: "max_devices", n: c.MaxDevices},
		{name: "max_addresses", n: c.MaxAddrs},
		{name: "max_rules", n: c.MaxRules},
		{name: "max_prefixes", n: c.MaxPrefixes},
		{name: "event_history", n: c.EventHistory},
		{name: "max_policy_bytes", n: c.MaxPolicyBytes},
		{name: "flow_entries", n: c.FlowEntries},
		{name: "flow_quota", n: c.FlowQuota},
	} {
		if v.n <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %d", v.name, v.n))
		}
	}
	if page := max(4096, os.Getpagesize()); c.EventRingBytes < page || c.EventRingBytes&(c.EventRingBytes-1) != 0 {
		errs = append(errs, fmt.Errorf("event_ring_bytes: must be a power of two of at least the page size (%d), got %d",
			page, c.EventRingBytes))
	}
	if c.EventBurst == 0 {
		errs = append(errs, errors.New("event_burst: must be positive"))
	}
	if c.EventWindow <= 0 {
		errs = append(errs, fmt.Errorf("event_window: must be positive, got %s", c.EventWindow))
	}
	if c.FragSweep <= 0 {
		errs = append(errs, fmt.Errorf("frag_sweep: must be positive, got %s", c.FragSweep))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"flow_tcp", c.FlowTCP}, {"flow_udp", c.FlowUDP}, {"flow_other", c.FlowOther}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %s", d.name, d.v))
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level: %q is not debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log_format: %q is not text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

// checkIfaceName accepts an interface name or, when patterns is set, a glob pattern.
func checkIfaceName(name string, patterns bool) error {
	if name == "" || len(name) >= unix.IFNAMSIZ || strings.ContainsAny(name, "/ \x00") || name == "." || name == ".." {
		return fmt.Errorf("invalid interface name %q", name)
	}
	if isPattern(name) {
		if !patterns {
			return fmt.Errorf("%q: a pattern is not allowed here", name)
		}
		if _, err := path.Match(name, ""); err != nil {
			return fmt.Errorf("pattern %q: %w", name, err)
		}
	}
	return nil
}

// loaderConfig is the datapath configuration the agent opens.
func (c Config) loaderConfig() loader.Config {
	lc := loader.DefaultConfig()
	lc.PinDir = c.BPFFSDir
	lc.MaxDevices, lc.MaxAddrs, lc.MaxRules, lc.MaxPrefixes = c.MaxDevices, c.MaxAddrs, c.MaxRules, c.MaxPrefixes
	lc.EventsEnabled = c.Events
	lc.RingBytes, lc.EventBurst, lc.EventWindow = c.EventRingBytes, c.EventBurst, c.EventWindow
	lc.Mode, _ = loader.ParseMode(c.XDPMode)
	lc.TCMode, _ = loader.ParseTCMode(c.TCMode)
	lc.FlowEntries, lc.FlowQuota = c.FlowEntries, c.FlowQuota
	lc.FlowTCP, lc.FlowUDP, lc.FlowOther = c.FlowTCP, c.FlowUDP, c.FlowOther
	return lc
}
