// Package xdpfilter is the suite's peer xdp-filter: its packaged object, loaded directly
// (libxdp's dispatcher is refused on this kernel, so xdp-filter runs as a single program here
// as it would behind it).
package xdpfilter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/testenv"
)

// Bits of the values of xdp-filter's maps (xdp-filter/common_kern_user.h).
const (
	FlagSrc = 1 << 0
	FlagDst = 1 << 1
)

// object finds xdpfilt_alw_all.o: in the files of the Debian packages that ship it,
// else where Debian puts it.
func object() (string, error) {
	const name = "xdpfilt_alw_all.o"
	for _, pkg := range []string{"xdp-tools", "libxdp1"} {
		out, err := exec.Command("dpkg", "-L", pkg).Output()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if filepath.Base(line) == name {
				if _, err := os.Stat(line); err == nil {
					return line, nil
				}
			}
		}
	}
	if m, _ := filepath.Glob("/usr/lib/*/bpf/" + name); len(m) > 0 {
		return m[0], nil
	}
	if m, _ := filepath.Glob("/usr/lib/bpf/" + name); len(m) > 0 {
		return m[0], nil
	}
	return "", errors.New("xdp-filter's " + name + " not found (apt-get install xdp-tools)")
}

// Filter is xdp-filter's "allow" policy program (xdpfilt_alw_all: every feature compiled
// in, default pass): a frame passes unless its destination or source MAC, IPv4/IPv6 address or
// TCP/UDP port is listed. Entries are a deny list; a frame that matches none traverses the full
// lookup path (MAC dst, src; IP dst, src; port dst, src), which is the path measured.
type Filter struct {
	coll *ebpf.Collection
	Prog *ebpf.Program
	lnk  link.Link // when attached to an interface
}

// Open loads the object (no pinning) and fills its MAC and IPv4 maps to their
// capacity with entries none of the benchmark frames carry, each with the flags (FlagSrc,
// FlagDst). deny, when valid, replaces one IPv4 entry: frames from it walk the whole lookup
// path and are dropped.
func Open(flags uint64, deny netip.Addr) (*Filter, error) {
	path, err := object()
	if err != nil {
		return nil, err
	}
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		return nil, fmt.Errorf("xdp-filter: %w", err)
	}
	for _, ms := range spec.Maps {
		ms.Pinning = ebpf.PinNone
	}
	eth, ip4 := spec.Maps["filter_ethernet"], spec.Maps["filter_ipv4"]
	if eth == nil || ip4 == nil || eth.KeySize != 6 || ip4.KeySize != 4 || eth.ValueSize != 8 || ip4.ValueSize != 8 ||
		eth.Type != ebpf.PerCPUHash || ip4.Type != ebpf.PerCPUHash {
		return nil, fmt.Errorf("xdp-filter %s: unexpected map layout (filter_ethernet, filter_ipv4)", path)
	}
	if len(spec.Programs) != 1 {
		return nil, fmt.Errorf("xdp-filter %s: %d programs, want 1", path, len(spec.Programs))
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("xdp-filter: %w", err)
	}
	x := &Filter{coll: coll}
	for _, p := range coll.Programs {
		x.Prog = p
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		x.Close()
		return nil, err
	}
	n := int(min(eth.MaxEntries, ip4.MaxEntries))
	macs := make([][6]byte, n)
	ips := make([][4]byte, n)
	vals := make([]uint64, n*ncpu)
	for i := range n {
		macs[i] = [6]byte{0x02, 0x77, 0, 0, byte(i >> 8), byte(i)}
		binary.BigEndian.PutUint32(ips[i][:], 0xac100000+uint32(i)) // 172.16.0.0 + i
	}
	if deny.Is4() {
		ips[n/2] = deny.As4()
	}
	for i := range vals {
		vals[i] = flags
	}
	if _, err := coll.Maps["filter_ethernet"].BatchUpdate(macs, vals, nil); err != nil {
		x.Close()
		return nil, fmt.Errorf("xdp-filter: fill filter_ethernet: %w", err)
	}
	if _, err := coll.Maps["filter_ipv4"].BatchUpdate(ips, vals, nil); err != nil {
		x.Close()
		return nil, fmt.Errorf("xdp-filter: fill filter_ipv4: %w", err)
	}
	// One more entry must not fit: the maps are full.
	extra := [6]byte{0x02, 0x77, 1, 0, 0, 0}
	if err := coll.Maps["filter_ethernet"].Update(extra, vals[:ncpu], ebpf.UpdateNoExist); err == nil {
		x.Close()
		return nil, fmt.Errorf("xdp-filter: filter_ethernet accepted entry %d", n+1)
	}
	return x, nil
}

// Check proves the semantics the benchmark relies on: frame passes, and the same frame from a
// listed source MAC is dropped.
func (x *Filter) Check(frame []byte) error {
	ret, err := x.Prog.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		return fmt.Errorf("xdp-filter: %w", err)
	}
	if ret != core.XDPPass {
		return fmt.Errorf("xdp-filter: benchmark frame got action %d, want XDP_PASS", ret)
	}
	listed := slices.Clone(frame)
	copy(listed[6:12], []byte{0x02, 0x77, 0, 0, 0, 5})
	if ret, err = x.Prog.Run(&ebpf.RunOptions{Data: listed}); err != nil {
		return fmt.Errorf("xdp-filter: %w", err)
	}
	if ret != core.XDPDrop {
		return fmt.Errorf("xdp-filter: frame from a listed MAC got action %d, want XDP_DROP", ret)
	}
	return nil
}

// Attach attaches the program natively to ifindex inside ns.
func (x *Filter) Attach(ns *testenv.Namespace, ifindex int) error {
	return ns.Do(func() error {
		l, err := link.AttachXDP(link.XDPOptions{Program: x.Prog, Interface: ifindex, Flags: link.XDPDriverMode})
		if err != nil {
			return fmt.Errorf("attach xdp-filter: %w", err)
		}
		x.lnk = l
		return nil
	})
}

// Close detaches and releases the program and its maps.
func (x *Filter) Close() {
	if x.lnk != nil {
		x.lnk.Close()
	}
	if x.coll != nil {
		x.coll.Close()
	}
}
