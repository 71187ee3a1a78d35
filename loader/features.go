package loader

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bpf"
)

// Feature is a kernel feature the datapath needs, with the probe that checks for it.
type Feature struct {
	Name  string       // e.g. "map type RingBuf", "helper bpf_xdp_load_bytes"
	Probe func() error // nil error: the kernel has it
	// Optional: without it the datapath uses a fallback (CheckFeatures does not require it).
	Optional bool
}

// Features lists what the datapath needs from the kernel: the XDP and TC program types, every map
// type and helper its object file uses (read from the ELF, so the list follows the programs),
// XDP bpf_links and, optional, tcx bpf_links (without them Attach uses a clsact filter).
func Features() ([]Feature, error) {
	spec, err := bpf.LoadZtgate()
	if err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	out := []Feature{
		{Name: "program type XDP", Probe: func() error { return features.HaveProgramType(ebpf.XDP) }},
		{Name: "program type SchedCLS", Probe: func() error { return features.HaveProgramType(ebpf.SchedCLS) }},
	}

	mapTypes := map[ebpf.MapType]bool{}
	for _, m := range spec.Maps {
		mapTypes[m.Type] = true
		if m.InnerMap != nil {
			mapTypes[m.InnerMap.Type] = true
		}
	}
	types := make([]ebpf.MapType, 0, len(mapTypes))
	for t := range mapTypes {
		types = append(types, t)
	}
	sort.Slice(types, func(i, j int) bool { return types[i] < types[j] })
	for _, t := range types {
		out = append(out, Feature{Name: "map type " + t.String(), Probe: func() error { return features.HaveMapType(t) }})
	}

	// Helpers by the program type that calls them: the TC program's skb helpers exist for XDP
	// programs on no kernel.
	type use struct {
		pt ebpf.ProgramType
		fn asm.BuiltinFunc
	}
	helpers := map[use]bool{}
	for _, p := range spec.Programs {
		for _, ins := range p.Instructions {
			if ins.IsBuiltinCall() {
				helpers[use{p.Type, asm.BuiltinFunc(ins.Constant)}] = true
			}
		}
	}
	uses := make([]use, 0, len(helpers))
	for u := range helpers {
		uses = append(uses, u)
	}
	sort.Slice(uses, func(i, j int) bool {
		if uses[i].pt != uses[j].pt {
			return uses[i].pt < uses[j].pt
		}
		return uses[i].fn < uses[j].fn
	})
	for _, u := range uses {
		name := "helper " + helperName(u.fn)
		if u.pt != ebpf.XDP {
			name += " (" + u.pt.String() + ")"
		}
		out = append(out, Feature{Name: name, Probe: func() error { return features.HaveProgramHelper(u.pt, u.fn) }})
	}
	out = append(out, Feature{Name: "XDP bpf_link", Probe: probeXDPLink},
		Feature{Name: "tcx bpf_link (else a clsact filter)", Probe: probeTCX, Optional: true})
	return out, nil
}

// helperName is the kernel's name of fn (bpf_map_lookup_elem for FnMapLookupElem).
func helperName(fn asm.BuiltinFunc) string {
	s := fn.String()
	if len(s) > 2 && s[:2] == "Fn" {
		b := []byte{}
		for i, r := range s[2:] {
			if r >= 'A' && r <= 'Z' {
				if i > 0 {
					b = append(b, '_')
				}
				r += 'a' - 'A'
			}
			b = append(b, byte(r))
		}
		return "bpf_" + string(b)
	}
	return s
}

// CheckFeatures probes every feature and returns an error naming those the kernel lacks (and
// those that could not be probed). An optional feature is never an error: without it (or when
// it cannot be probed) the datapath takes its fallback.
func CheckFeatures(fs []Feature) error {
	var errs []error
	for _, f := range fs {
		err := f.Probe()
		switch {
		case err == nil, f.Optional:
		case errors.Is(err, ebpf.ErrNotSupported):
			errs = append(errs, fmt.Errorf("%s: not supported by this kernel", f.Name))
		default:
			errs = append(errs, fmt.Errorf("%s: cannot probe: %w", f.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kernel features missing: %w", err)
	}
	return nil
}

// probeXDPLink attaches a program that passes every frame, through an XDP bpf_link in generic
// mode, to a throwaway interface (see withProbeInterface).
func probeXDPLink() error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}, // XDP_PASS
	})
	if err != nil {
		return fmt.Errorf("load probe program: %w", err)
	}
	defer prog.Close()
	return withProbeInterface("ztprb", func(ifindex int) error {
		xl, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPGenericMode})
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("%w: %w", ebpf.ErrNotSupported, err)
		}
		if err != nil {
			return err
		}
		return xl.Close()
	})
}

// withProbeInterface runs fn on one end of a veth pair (or a dummy interface, without veth)
// named prefix and the pid, which it creates for that and removes, so that no interface it did
// not create is touched.
func withProbeInterface(prefix string, fn func(ifindex int) error) error {
	la := netlink.NewLinkAttrs()
	la.Name = prefix + strconv.Itoa(os.Getpid()%100000000)
	var created netlink.Link = &netlink.Veth{LinkAttrs: la, PeerName: la.Name + "p"}
	err := netlink.LinkAdd(created)
	if errors.Is(err, unix.EOPNOTSUPP) { // a kernel without veth: a dummy interface will do
		created = &netlink.Dummy{LinkAttrs: la}
		err = netlink.LinkAdd(created)
	}
	if err != nil {
		return fmt.Errorf("create interface %s (veth or dummy): %w", la.Name, err)
	}
	defer func() { _ = netlink.LinkDel(created) }()
	target, err := netlink.LinkByName(la.Name)
	if err != nil {
		return err
	}
	return fn(target.Attrs().Index)
}

// probeTCX attaches a program that passes every packet, through a tcx bpf_link at egress, to a
// throwaway interface (see withProbeInterface).
func probeTCX() error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}, // TC_ACT_UNSPEC
	})
	if err != nil {
		return fmt.Errorf("load probe program: %w", err)
	}
	defer prog.Close()
	return withProbeInterface("ztprt", func(ifindex int) error {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXEgress})
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("%w: %w", ebpf.ErrNotSupported, err)
		}
		if err != nil {
			return err
		}
		return l.Close()
	})
}
