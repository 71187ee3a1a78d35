package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Repin pins the link of ifname this Datapath holds again when its pin was removed: without the
// pin the link, and so the program on ifname, would go when this process exits. It reports
// whether it pinned the link; a link it does not hold is left alone.
func (d *Datapath) Repin(ifname string) (bool, error) {
	if err := checkIfname(ifname); err != nil {
		return false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.links[ifname]
	if d.closed || !ok {
		return false, nil
	}
	path := d.linkPath(ifname)
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	unlock, err := lockDir(d.cfg.PinDir)
	if err != nil {
		return false, fmt.Errorf("pin %s again: %w", ifname, err)
	}
	defer unlock()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		return false, nil // pinned meanwhile (Detach, another Attach)
	}
	if err := l.Unpin(); err != nil { // forget the removed path
		return false, fmt.Errorf("pin %s again: %w", ifname, err)
	}
	if err := l.Pin(path); err != nil {
		return false, fmt.Errorf("pin %s again: %w", ifname, err)
	}
	return true, nil
}
