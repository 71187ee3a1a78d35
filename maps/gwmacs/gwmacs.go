// Package gwmacs fills zt_gwmacs, the datapath's set of the gateway's own MACs (a package of
// its own so that the loader can fill it at attach without importing maps).
package gwmacs

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/ztgate/ztgate/bpf"
)

// Add writes mac into zt_gwmacs (gwmacs): frames to it are for the gateway and go on to the IP
// decision. ifindex is the interface that owns it, or 0 for a MAC added by hand, which Prune keeps.
func Add(gwmacs *ebpf.Map, mac net.HardwareAddr, ifindex uint32) error {
	if len(mac) != 6 || mac[0]&1 != 0 {
		return fmt.Errorf("gateway mac %q: not a unicast Ethernet address", mac)
	}
	var k bpf.DevKey
	copy(k.Mac[:], mac)
	if err := gwmacs.Update(&k, &ifindex, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("add gateway mac %s: %w", mac, err)
	}
	return nil
}

// Prune removes the entries of zt_gwmacs whose owner is gone or no longer has that MAC (a
// removed or re-created interface, a changed address), so that churn does not fill the map.
// Owners are looked up in the caller's network namespace: only a user of the datapath that
// attaches in one namespace (the agent) may prune. Entries added by hand (owner 0) stay.
func Prune(gwmacs *ebpf.Map) error {
	var (
		k     bpf.DevKey
		owner uint32
		stale []bpf.DevKey
	)
	it := gwmacs.Iterate()
	for it.Next(&k, &owner) {
		if owner == 0 {
			continue
		}
		l, err := netlink.LinkByIndex(int(owner))
		if err == nil && bytes.Equal(l.Attrs().HardwareAddr, k.Mac[:]) {
			continue
		}
		var nf netlink.LinkNotFoundError
		if err != nil && !errors.As(err, &nf) {
			return fmt.Errorf("prune gateway macs: look up interface %d: %w", owner, err)
		}
		stale = append(stale, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("prune gateway macs: %w", err)
	}
	for i := range stale {
		if err := gwmacs.Delete(&stale[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("prune gateway mac %s: %w", net.HardwareAddr(stale[i].Mac[:]), err)
		}
	}
	return nil
}

// AddInterface writes the MACs of the protected interface l and of its master (a bridge
// the interface is a port of) into zt_gwmacs, before the program is attached to l: on a routed
// gateway devices send to the interface's own MAC, on a bridged one the bridge's MAC reaches
// the gateway. Interfaces without an Ethernet address (loopback, tun) add nothing.
func AddInterface(gwmacs *ebpf.Map, l netlink.Link) error {
	add := func(a *netlink.LinkAttrs) error {
		mac := a.HardwareAddr
		if len(mac) != 6 || mac[0]&1 != 0 || (mac[0]|mac[1]|mac[2]|mac[3]|mac[4]|mac[5]) == 0 {
			return nil
		}
		return Add(gwmacs, mac, uint32(a.Index))
	}
	if err := add(l.Attrs()); err != nil {
		return err
	}
	if m := l.Attrs().MasterIndex; m != 0 {
		master, err := netlink.LinkByIndex(m)
		if err != nil {
			return fmt.Errorf("look up master of %s: %w", l.Attrs().Name, err)
		}
		return add(master.Attrs())
	}
	return nil
}
