package testenv

import (
	"fmt"
	"slices"
)

// RecreatePort deletes d's veth and creates it again with the same names, MACs and addresses,
// as a USB or Wi-Fi reset or a restart of hostapd does: the gateway port gets a new ifindex
// (d.Port.Index and d.Ifindex are updated). Both ends stay down (with Config.Bridge, the port
// is already a bridge port) until beforeUp, if not nil, returns with the new port's ifindex;
// then they are brought up and RecreatePort waits until the device can reach the gateway.
func (tp *Topology) RecreatePort(d *Device, beforeUp func(portIndex int) error) error {
	if !slices.Contains(tp.Devices, d) {
		return fmt.Errorf("testenv: device %q is not part of topology %s", d.Name, tp.ID)
	}
	if err := tp.DeletePort(d); err != nil {
		return err
	}
	return tp.plug(d, beforeUp)
}

// DeletePort deletes d's veth (both ends; the device's namespace stays): the device is cut off
// until RecreatePort.
func (tp *Topology) DeletePort(d *Device) error {
	l, err := tp.Gateway.nl.LinkByName(d.Port.Name)
	if isNoDev(err) {
		return nil
	}
	if err == nil {
		err = tp.Gateway.nl.LinkDel(l)
	}
	if err != nil && !isNoDev(err) {
		return fmt.Errorf("testenv: delete %s: %w", d.Port.Name, err)
	}
	return nil
}
