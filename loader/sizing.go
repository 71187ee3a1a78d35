package loader

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/ztgate/ztgate/bpf"
)

// SizeSpec sizes the maps of spec, a datapath collection spec, and sets its runtime constants
// from cfg as Open does, without pinning anything. Zero sizes and durations take DefaultConfig
// values; EventsEnabled is taken as given; a zero EventLimitSeed keeps the object's (Open picks a
// random one).
func SizeSpec(spec *ebpf.CollectionSpec, cfg Config) error {
	cfg = cfg.withDefaults()
	sizes := map[string]int{
		bpf.ZtgateMapZtFrags:      cfg.FragEntries,
		bpf.ZtgateMapZtFlows:      cfg.FlowEntries,
		bpf.ZtgateMapZtEventLimit: cfg.EventLimitEntries,
		bpf.ZtgateMapZtEvents:     cfg.RingBytes,
	}
	for name, n := range sizes {
		ms, ok := spec.Maps[name]
		if !ok {
			return fmt.Errorf("map %s missing from the object", name)
		}
		ms.MaxEntries = uint32(n)
	}
	if err := SizeDevstats(spec, cfg.MaxDevices); err != nil {
		return err
	}
	enabled := uint8(0)
	if cfg.EventsEnabled {
		enabled = 1
	}
	vars := map[string]any{
		bpf.ZtgateVarZtFragTimeoutNs:  uint64(cfg.FragTimeout.Nanoseconds()),
		bpf.ZtgateVarZtEventWindowNs:  uint64(cfg.EventWindow.Nanoseconds()),
		bpf.ZtgateVarZtEventBurst:     cfg.EventBurst,
		bpf.ZtgateVarZtEventsEnabled:  enabled,
		bpf.ZtgateVarZtEventLimitMask: uint32(cfg.EventLimitEntries - 1),
		bpf.ZtgateVarZtFlowQuota:      uint32(cfg.FlowQuota),
		bpf.ZtgateVarZtFlowTcpNs:      uint64(cfg.FlowTCP.Nanoseconds()),
		bpf.ZtgateVarZtFlowUdpNs:      uint64(cfg.FlowUDP.Nanoseconds()),
		bpf.ZtgateVarZtFlowOtherNs:    uint64(cfg.FlowOther.Nanoseconds()),
	}
	if cfg.EventLimitSeed != 0 {
		vars[bpf.ZtgateVarZtEventLimitSeed] = cfg.EventLimitSeed
	}
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("variable %s missing from the object", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}
