package agent

import (
	"fmt"
	"net"
	"os"
)

// sdNotify sends state to the service manager over $NOTIFY_SOCKET (the sd_notify protocol:
// one datagram of newline-separated assignments). Without NOTIFY_SOCKET it does nothing.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	// A leading '@' names an abstract socket: the net package maps it.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify %s: %w", addr, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %s: %w", addr, err)
	}
	return nil
}

func (a *Agent) notify(state string) {
	if err := sdNotify(state); err != nil {
		a.log.Warn("service manager", "err", err)
	}
}

// notifyReady tells the service manager READY=1 the first time the agent is ready: the policy
// is in the maps and every present protected interface runs the program. Until then, and after,
// STATUS= says what is enforced.
func (a *Agent) notifyReady() {
	if !a.ready.Load() {
		return
	}
	n := a.ifaceCounts()
	rev := a.cur.Load().meta.Revision
	status := fmt.Sprintf("STATUS=policy revision %d; interfaces: %d attached, %d absent, %d failed",
		rev, n[ifAttached], n[ifAbsent], n[ifFailed])
	if a.isReady() && a.notified.CompareAndSwap(false, true) {
		a.notify("READY=1\n" + status)
		return
	}
	a.notify(status)
}
