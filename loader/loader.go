// Package loader loads the ztgate datapath, pins its maps and links in bpffs, attaches it to
// interfaces (XDP, native else generic, for frames from devices; TC egress, tcx else clsact, for
// frames toward them), adopts what a previous process left pinned, and uninstalls it.
//
// Lifecycle. Every map, every XDP link and every tcx link is pinned under <PinDir>/v<LayoutVersion>. Close (or
// the process dying) leaves the pins, so enforcement stays in place and fails closed; the next
// Open reuses the pinned maps (policy, counters and fragment state survive) and Attach adopts
// the pinned link with link.Update, never detach-then-attach. Only Uninstall removes it all.
// A change of the map layout gets a new LayoutVersion directory. Attach migrates an interface
// whose link is pinned under an older layout: it switches that link to the new program with
// link.Update (no instant without a program), moves its pin into the new directory and, once
// the old directory holds no link, removes the old layout's pins (its maps die with its program).
package loader

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netns"

	"github.com/ztgate/ztgate/bpf"
)

// LayoutVersion is the version of the map layout, and the name of the pin subdirectory (v5).
// v1: zt_event_limit was an LRU hash of (device, reason); v2: it is an array of budget slots,
// and zt_clock (the per-CPU clock cache) is new; v3: zt_devstats is a plain array, one row of
// devices per CPU, instead of a per-CPU array (device counters restart from zero on the upgrade);
// v4: zt_config carries the policy's gateway MACs, zt_counters the l2_dst_denied reason, and
// zt_gwmacs (the gateway's own MACs) is new; v5: the flow table (zt_flows, zt_flow_count) is new,
// zt_counters and zt_devstats count both directions, device records carry the from: rule set.
const LayoutVersion = 5

// LayoutDir is the directory that holds the pins of the current layout under pinDir.
func LayoutDir(pinDir string) string { return layoutDir(pinDir, LayoutVersion) }

func layoutDir(pinDir string, version int) string {
	return filepath.Join(pinDir, "v"+strconv.Itoa(version))
}

// Datapath is the loaded XDP program and its (pinned) maps.
type Datapath struct {
	cfg   Config
	dir   string // LayoutDir(cfg.PinDir)
	objs  bpf.ZtgateObjects
	specs bpf.ZtgateMapSpecs // the specs the maps were created from (inner map templates)
	tcID  ebpf.ProgramID     // the TC program's id, read once at load (0: read it when asked)

	mu      sync.Mutex
	links   map[string]link.Link // ifname -> XDP link this process holds (pinned)
	tcLinks map[string]link.Link // ifname -> tcx link this process holds (pinned)
	// attachNS: ifname -> the network namespace this process attached it in (for Detach).
	attachNS map[string]netns.NsHandle
	closed   bool
}

// Open loads the datapath: it mounts bpffs at /sys/fs/bpf when needed, creates the pin
// directory, sizes the maps and sets the runtime constants from cfg (zero fields take
// DefaultConfig values), and loads the program. Maps are pinned by name: a map already pinned by
// a previous process is reused, so Open adopts a running datapath. A pinned map whose type,
// sizes or capacity differ from cfg is not replaced (that would drop state under a running
// program): Open fails and says which map; Uninstall first to resize.
func Open(cfg Config) (*Datapath, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("load datapath: invalid config: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	if err := ensureBPFFS(cfg.PinDir); err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	dir := LayoutDir(cfg.PinDir)
	if err := mkdirPins(dir); err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	unlock, err := lockDir(cfg.PinDir)
	if err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	defer unlock()

	// Older layouts without links are left-overs of a migration (or of links the kernel
	// dropped with their interfaces): their maps serve no program of ours.
	for v := 1; v < LayoutVersion; v++ {
		if err := removeOldLayout(layoutDir(cfg.PinDir, v)); err != nil {
			return nil, fmt.Errorf("load datapath: remove layout v%d: %w", v, err)
		}
	}
	spec, err := newSpec(cfg)
	if err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	d := &Datapath{cfg: cfg, dir: dir, links: map[string]link.Link{}, tcLinks: map[string]link.Link{},
		attachNS: map[string]netns.NsHandle{}}
	// Keep a copy of the map specs: the maps package creates inner maps from the templates.
	if err := spec.Copy().Assign(&d.specs); err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}}
	if err := spec.LoadAndAssign(&d.objs, opts); err != nil {
		return nil, fmt.Errorf("load datapath: %w", describeLoadError(err, dir))
	}
	d.tcID, _ = d.TCProgramID() // the agent compares it with each interface's every second
	return d, nil
}

// newSpec returns the collection spec sized and parameterised from cfg, with every map of the
// datapath pinned by name. The internal .rodata/.bss maps are not pinned: they belong to one
// program load (the runtime constants may differ between loads).
func newSpec(cfg Config) (*ebpf.CollectionSpec, error) {
	spec, err := bpf.LoadZtgate()
	if err != nil {
		return nil, err
	}
	for cfg.EventLimitSeed == 0 {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("event budget seed: %w", err)
		}
		cfg.EventLimitSeed = binary.NativeEndian.Uint32(b[:])
	}
	if err := SizeSpec(spec, cfg); err != nil {
		return nil, err
	}
	for name, ms := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue
		}
		ms.Pinning = ebpf.PinByName
	}
	return spec, nil
}

// SizeDevstats sizes zt_devstats in spec for dev_id 1..maxDevices: a row of maxDevices+1
// entries (dev_id 0 unused) per possible CPU, and sets the datapath's row length to match.
func SizeDevstats(spec *ebpf.CollectionSpec, maxDevices int) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("size zt_devstats: %w", err)
	}
	stride := uint64(maxDevices) + 1
	if maxDevices < 1 || stride*uint64(ncpu) > math.MaxUint32 {
		return fmt.Errorf("size zt_devstats: %d devices on %d CPUs: more entries than a map holds", maxDevices, ncpu)
	}
	ms, ok := spec.Maps[bpf.ZtgateMapZtDevstats]
	if !ok {
		return fmt.Errorf("map %s missing from the object", bpf.ZtgateMapZtDevstats)
	}
	vs, ok := spec.Variables[bpf.ZtgateVarZtDevstatsStride]
	if !ok {
		return fmt.Errorf("variable %s missing from the object", bpf.ZtgateVarZtDevstatsStride)
	}
	ms.MaxEntries = uint32(stride) * uint32(ncpu)
	fc, ok := spec.Maps[bpf.ZtgateMapZtFlowCount]
	if !ok {
		return fmt.Errorf("map %s missing from the object", bpf.ZtgateMapZtFlowCount)
	}
	fc.MaxEntries = 2 * uint32(stride) // two counters per dev_id (flows out, flows in), read through the same bound
	if err := vs.Set(uint32(stride)); err != nil {
		return fmt.Errorf("set %s: %w", bpf.ZtgateVarZtDevstatsStride, err)
	}
	return nil
}

// describeLoadError turns the two load failures an operator must act on into clear errors:
// a pinned map that does not match the configuration, and a verifier rejection (with its log).
func describeLoadError(err error, dir string) error {
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("a map pinned in %s does not match the configuration (capacities are fixed "+
			"while pinned: keep the old values, or uninstall first, which drops enforcement): %w", dir, err)
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("verifier rejected the program: %w\nverifier log:\n%+v", err, ve)
	}
	return err
}

// Config returns the configuration in force (defaults filled in).
func (d *Datapath) Config() Config { return d.cfg }

// Dir returns the pin directory of the current layout (<PinDir>/v3).
func (d *Datapath) Dir() string { return d.dir }

// Objects returns the loaded program and maps. They stay owned by the Datapath: do not close them.
func (d *Datapath) Objects() *bpf.ZtgateObjects { return &d.objs }

// MapSpecs returns the specs the maps were created from; the maps package takes the inner map
// templates of the map-in-map policy maps from them.
func (d *Datapath) MapSpecs() *bpf.ZtgateMapSpecs { return &d.specs }

// Program returns the XDP program.
func (d *Datapath) Program() *ebpf.Program { return d.objs.ZtXdp }

// Close releases this process's file descriptors. The pins stay: attached interfaces keep
// enforcing the last applied policy. Close is idempotent.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	for name, l := range d.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close link of %s: %w", name, err))
		}
	}
	for name, l := range d.tcLinks {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close tcx link of %s: %w", name, err))
		}
	}
	for _, ns := range d.attachNS {
		ns.Close()
	}
	d.links, d.tcLinks, d.attachNS = nil, nil, nil
	if err := d.objs.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close datapath: %w", err)
	}
	return nil
}
