package core

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
)

// XDP actions the suite's programs return.
const (
	XDPDrop = 1
	XDPPass = 2
)

// WarmUp runs every variant once, untimed, so that first-touch effects stay out of round 1.
// Variants made by ProgVariant run a tenth of their repeats.
func WarmUp(vs []Variant) error {
	warming = true
	defer func() { warming = false }()
	for _, v := range vs {
		if _, err := v.Run(); err != nil {
			return fmt.Errorf("%s: %w", v.Name, err)
		}
	}
	return nil
}

// warming is set during WarmUp (sections run one at a time, on one goroutine).
var warming bool

// ProgVariant measures p on frame: Run returns the kernel's time per run in ns and fails when
// the program's action is not want.
func ProgVariant(name string, p *ebpf.Program, frame []byte, repeat int, want uint32) Variant {
	return Variant{Name: name, Run: func() (float64, error) {
		n := repeat
		if warming {
			n = max(1, repeat/10)
		}
		ret, d, err := p.Benchmark(frame, n, nil)
		if err != nil {
			return 0, err
		}
		if ret != want {
			return 0, fmt.Errorf("action %d, want %d", ret, want)
		}
		return float64(d.Nanoseconds()), nil
	}}
}

// ReturnProgram loads an XDP program named name that returns action and does nothing else:
// the floor of a per-packet cost (XDPPass) or a receiver that drops everything (XDPDrop).
func ReturnProgram(name string, action int32) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: name, Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, action), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	return p, nil
}

// Limits are the policy capacities of the datapath dp: what maps.Apply may fill.
func Limits(dp *loader.Datapath) maps.Limits {
	c := dp.Config()
	return maps.Limits{Devices: c.MaxDevices, Addrs: c.MaxAddrs, Rules: c.MaxRules, Prefixes: c.MaxPrefixes}
}
