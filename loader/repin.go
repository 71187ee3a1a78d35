package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/cilium/ebpf/link"
)

// Repin pins the links of ifname this Datapath holds (XDP and tcx) again when a pin was
// removed: without the pin a link, and so a program on ifname, would go when this process
// exits. It reports whether it pinned a link; a link it does not hold is left alone.
func (d *Datapath) Repin(ifname string) (bool, error) {
	if err := checkIfname(ifname); err != nil {
		return false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false, nil
	}
	type held struct {
		l    link.Link
		path string
	}
	var missing []held
	if l, ok := d.links[ifname]; ok && unpinned(d.linkPath(ifname)) {
		missing = append(missing, held{l, d.linkPath(ifname)})
	}
	if l, ok := d.tcLinks[ifname]; ok && unpinned(d.tcPath(ifname)) {
		missing = append(missing, held{l, d.tcPath(ifname)})
	}
	if len(missing) == 0 {
		return false, nil
	}
	unlock, err := lockDir(d.cfg.PinDir)
	if err != nil {
		return false, fmt.Errorf("pin %s again: %w", ifname, err)
	}
	defer unlock()
	pinned := false
	for _, h := range missing {
		if !unpinned(h.path) {
			continue // pinned meanwhile (Detach, another Attach)
		}
		if err := h.l.Unpin(); err != nil { // forget the removed path
			return pinned, fmt.Errorf("pin %s again: %w", ifname, err)
		}
		if err := h.l.Pin(h.path); err != nil {
			return pinned, fmt.Errorf("pin %s again: %w", ifname, err)
		}
		pinned = true
	}
	return pinned, nil
}

func unpinned(path string) bool {
	_, err := os.Lstat(path)
	return errors.Is(err, fs.ErrNotExist)
}
