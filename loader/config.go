package loader

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"time"
)

// DefaultPinDir is the bpffs directory that holds every pin of the datapath.
const DefaultPinDir = "/sys/fs/bpf/ztgate"

// Config sizes the datapath. Capacities are load-time constants: a map's max_entries sizes its
// memory, and changing one later means a new map (see Open about pinned maps).
type Config struct {
	// PinDir is the bpffs directory of this datapath; pins live in PinDir/v<LayoutVersion>.
	PinDir string

	// Policy capacities: the largest snapshot Apply accepts. MaxDevices also sizes zt_devstats
	// (dev_id 1..MaxDevices, a row per possible CPU). The policy maps themselves are sized to
	// each snapshot.
	MaxDevices, MaxAddrs, MaxRules, MaxPrefixes int

	// FragEntries is the capacity of zt_frags (first fragments in flight; full = fail closed).
	FragEntries int
	// FlowEntries is the capacity of zt_flows, the flow table (full = new flows fail closed);
	// FlowQuota is how many of them one device may hold.
	FlowEntries, FlowQuota int
	// FlowTCP, FlowUDP and FlowOther are the idle lifetimes of TCP, UDP and ICMP echo flows.
	FlowTCP, FlowUDP, FlowOther time.Duration
	// EventLimitSeed seeds the hash that places (device, reason) keys in zt_event_limit's
	// slots; 0 (the default) draws a random seed at every load, so that which keys share slots
	// cannot be known from outside. Tests fix it to be deterministic.
	EventLimitSeed uint32
	// EventLimitEntries is the capacity of zt_event_limit, the table of (device, reason) event
	// budgets: a power of two, 2 or more (a key may use its slot or the neighbouring one).
	EventLimitEntries int
	// RingBytes is the size of the zt_events ring buffer: a power of two, a multiple of the page size.
	RingBytes int

	// FragTimeout is how long a first-fragment verdict is followed by later fragments.
	FragTimeout time.Duration
	// EventWindow and EventBurst: at most EventBurst events per (device, reason) per window
	// (fewer when keys share a budget slot, see EventLimitSeed).
	EventWindow time.Duration
	EventBurst  uint64
	// EventsEnabled turns the event ring buffer on. Zero value false: start from DefaultConfig.
	EventsEnabled bool

	// Mode is the XDP attach mode Attach asks for: ModeAuto (native, else generic), ModeNative
	// or ModeGeneric.
	Mode Mode
	// TCMode is how Attach puts the program toward devices at TC egress: TCModeAuto (the zero
	// value: tcx when the kernel has it, else clsact), TCModeTCX or TCModeClsact.
	TCMode TCMode
}

// DefaultConfig returns the configuration used for every zero field by Open.
func DefaultConfig() Config {
	return Config{
		PinDir:            DefaultPinDir,
		MaxDevices:        4096,
		MaxAddrs:          16384,
		MaxRules:          16384,
		MaxPrefixes:       4096,
		FragEntries:       4096,
		FlowEntries:       65536,
		FlowQuota:         1024,
		FlowTCP:           2 * time.Hour,
		FlowUDP:           2 * time.Minute,
		FlowOther:         30 * time.Second,
		EventLimitEntries: 4096,
		RingBytes:         1 << 20,
		FragTimeout:       30 * time.Second,
		EventWindow:       time.Second,
		EventBurst:        10,
		EventsEnabled:     true,
		Mode:              ModeAuto,
		TCMode:            TCModeAuto,
	}
}

// withDefaults fills every zero numeric field from DefaultConfig. EventsEnabled is taken as is.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.PinDir == "" {
		c.PinDir = d.PinDir
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setInt(&c.MaxDevices, d.MaxDevices)
	setInt(&c.MaxAddrs, d.MaxAddrs)
	setInt(&c.MaxRules, d.MaxRules)
	setInt(&c.MaxPrefixes, d.MaxPrefixes)
	setInt(&c.FragEntries, d.FragEntries)
	setInt(&c.FlowEntries, d.FlowEntries)
	setInt(&c.FlowQuota, d.FlowQuota)
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&c.FragTimeout, d.FragTimeout}, {&c.FlowTCP, d.FlowTCP}, {&c.FlowUDP, d.FlowUDP}, {&c.FlowOther, d.FlowOther},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	setInt(&c.EventLimitEntries, d.EventLimitEntries)
	setInt(&c.RingBytes, d.RingBytes)
	if c.EventWindow == 0 {
		c.EventWindow = d.EventWindow
	}
	if c.EventBurst == 0 {
		c.EventBurst = d.EventBurst
	}
	c.PinDir = filepath.Clean(c.PinDir)
	return c
}

// maxEntries bounds every capacity: max_entries is a u32 (zt_devstats needs (MaxDevices+1) *
// possible CPUs: SizeDevstats checks that).
const maxEntries = 1 << 30

func (c Config) validate() error {
	var errs []error
	if !filepath.IsAbs(c.PinDir) {
		errs = append(errs, fmt.Errorf("pin dir %q: must be an absolute path", c.PinDir))
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{name: "max devices", v: c.MaxDevices}, {name: "max addrs", v: c.MaxAddrs}, {name: "max rules", v: c.MaxRules},
		{name: "max prefixes", v: c.MaxPrefixes}, {name: "frag entries", v: c.FragEntries},
		{name: "flow entries", v: c.FlowEntries}, {name: "flow quota", v: c.FlowQuota},
		{name: "event limit entries", v: c.EventLimitEntries},
	} {
		if f.v < 1 || f.v > maxEntries {
			errs = append(errs, fmt.Errorf("%s %d: must be between 1 and %d", f.name, f.v, maxEntries))
		}
	}
	if c.EventLimitEntries < 2 || bits.OnesCount(uint(c.EventLimitEntries)) != 1 {
		errs = append(errs, fmt.Errorf("event limit entries %d: must be a power of two, 2 or more", c.EventLimitEntries))
	}
	page := os.Getpagesize()
	if c.RingBytes < page || c.RingBytes > maxEntries || bits.OnesCount(uint(c.RingBytes)) != 1 {
		errs = append(errs, fmt.Errorf("ring bytes %d: must be a power of two between the page size (%d) and %d",
			c.RingBytes, page, maxEntries))
	}
	if c.FragTimeout < 0 || c.EventWindow < 0 || c.FlowTCP < 0 || c.FlowUDP < 0 || c.FlowOther < 0 {
		errs = append(errs, errors.New("frag timeout, event window and flow lifetimes must not be negative"))
	}
	if c.Mode != ModeAuto && c.Mode != ModeNative && c.Mode != ModeGeneric {
		errs = append(errs, fmt.Errorf("attach mode %v: must be auto, native or generic", c.Mode))
	}
	if c.TCMode != TCModeAuto && c.TCMode != TCModeTCX && c.TCMode != TCModeClsact {
		errs = append(errs, fmt.Errorf("tc mode %v: must be auto, tcx or clsact", c.TCMode))
	}
	return errors.Join(errs...)
}
