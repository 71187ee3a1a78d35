package loader

import (
	"fmt"
	"slices"
	"strings"

	"github.com/safchain/ethtool"
)

// VLANOffloads are the receive offloads that strip VLAN tags into packet metadata, where the
// XDP program does not see them: its VLAN checks need the tags in the frame.
var VLANOffloads = []string{"rx-vlan-hw-parse", "rx-vlan-stag-hw-parse"}

// DisableVLANOffload turns the VLANOffloads of ifname off (in the network namespace of the
// calling process) and checks that they are off. It returns an error naming those that stay on.
// A feature the interface does not have is not an error.
func DisableVLANOffload(ifname string) error {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return fmt.Errorf("vlan offload: %w", err)
	}
	defer e.Close()
	on, err := vlanOffloadsOn(e, ifname)
	if err != nil || len(on) == 0 {
		return err
	}
	off := map[string]bool{}
	for _, f := range on {
		off[f] = false
	}
	if err := e.Change(ifname, off); err != nil {
		return fmt.Errorf("vlan offload: turn %s off on %s: %w", strings.Join(on, ", "), ifname, err)
	}
	if on, err = vlanOffloadsOn(e, ifname); err != nil {
		return err
	}
	if len(on) > 0 {
		return fmt.Errorf("vlan offload: %s stays on on %s (fixed by the driver): VLAN tags are stripped "+
			"before the program sees them", strings.Join(on, ", "), ifname)
	}
	return nil
}

// VLANOffloadsOn lists the VLANOffloads that are on for ifname (in the network namespace of the
// calling process).
func VLANOffloadsOn(ifname string) ([]string, error) {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return nil, fmt.Errorf("vlan offload: %w", err)
	}
	defer e.Close()
	return vlanOffloadsOn(e, ifname)
}

func vlanOffloadsOn(e *ethtool.Ethtool, ifname string) ([]string, error) {
	fs, err := e.Features(ifname)
	if err != nil {
		return nil, fmt.Errorf("vlan offload: read features of %s: %w", ifname, err)
	}
	var on []string
	for name, enabled := range fs {
		if enabled && slices.Contains(VLANOffloads, name) {
			on = append(on, name)
		}
	}
	slices.Sort(on)
	return on, nil
}
