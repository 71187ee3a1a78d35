package e2e

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/api"
)

// notifications listens on a NOTIFY_SOCKET and collects the datagrams the agent sends.
// notifications are the messages the agent sends to a NOTIFY_SOCKET.
type notifications struct {
	conn *net.UnixConn
	ch   chan string
}

// listenNotify listens on a fresh notify socket and returns it with its path.
func listenNotify(t *testing.T) (*notifications, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifications{conn: c, ch: make(chan string, 64)}
	go func() {
		defer close(n.ch)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.ch <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { c.Close() })
	return n, path
}

// next returns the next notification holding want, failing the test at the deadline; others
// are passed to seen.
func (n *notifications) next(t *testing.T, want string, seen func(string)) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case msg, ok := <-n.ch:
			if !ok {
				t.Fatalf("notify socket closed before %q", want)
			}
			if containsLine(msg, want) {
				return msg
			}
			if seen != nil {
				seen(msg)
			}
		case <-deadline:
			t.Fatalf("no %q notification", want)
		}
	}
}

// containsLine reports whether one of msg's lines is line.
func containsLine(msg, line string) bool {
	for _, l := range strings.Split(msg, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// passProgram is a foreign XDP program (it passes everything).
func passProgram(t *testing.T) *ebpf.Program {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestAgentNotifyReady: with a configured interface absent and another one held by a foreign XDP
// program, the agent starts, enforces on the others and serves status (that interface failed,
// with the reason; not ready; /readyz 503), and tells systemd nothing but STATUS=. Once the
// foreign program is gone the agent attaches, and only then READY=1 arrives: at that moment every
// present port runs the agent's program and the configured policy is in force. SIGTERM sends
// STOPPING=1.
func TestAgentNotifyReady(t *testing.T) {
	tp := topology(t)
	absent := "zt" + tp.ID + "gx"
	l := newLabOn(t, tp, func(c *agent.Config) { c.Interfaces = append(c.Interfaces, absent) })
	cfg := l.cfg
	cfg.Policy = l.writePolicy("p.yaml", basePolicy(t, tp))
	l.writeConfig(cfg)
	notify, sock := listenNotify(t)
	l.env = []string{"NOTIFY_SOCKET=" + sock}

	cam := tp.Device("cam")
	gw := tp.Gateway.Netlink()
	camPort, err := gw.LinkByIndex(cam.Port.Index)
	if err != nil {
		t.Fatal(err)
	}
	foreign := passProgram(t)
	setXDP := func(fd int) error {
		return tp.Gateway.Do(func() error { return netlink.LinkSetXdpFdWithFlags(camPort, fd, 2 /* XDP_FLAGS_SKB_MODE */) })
	}
	if err := setXDP(foreign.FD()); err != nil {
		t.Fatal(err)
	}

	v1, _ := binaries(t)
	l.startUntil(v1, "serving with the held port failed", func(st api.Status) bool {
		for _, ifc := range st.Interfaces {
			if ifc.Name == cam.Port.Name && ifc.State == "failed" {
				return true
			}
		}
		return false
	})
	st := l.status()
	if st.Ready {
		t.Errorf("ready with a present interface not attached: %+v", st.Interfaces)
	}
	for _, ifc := range st.Interfaces {
		switch {
		case ifc.Name == absent:
			if ifc.State != "absent" || ifc.Attached {
				t.Errorf("absent interface: %+v", ifc)
			}
		case ifc.Name == cam.Port.Name:
			if ifc.Attached || ifc.Error == "" {
				t.Errorf("held interface: %+v", ifc)
			}
		case !ifc.Attached || ifc.State != "attached":
			t.Errorf("interface %+v not attached", ifc)
		}
	}
	if code, body := l.scrape("/readyz"); code != 503 {
		t.Errorf("/readyz with a failed interface: %d %s", code, body)
	}
	out := l.must("status")
	if !strings.Contains(out, "failed") || !strings.Contains(out, "absent") {
		t.Errorf("status does not show the failed and absent interfaces:\n%s", out)
	}
	// Nothing but STATUS= so far.
	drain := func() {
		for {
			select {
			case msg := <-notify.ch:
				if containsLine(msg, "READY=1") {
					t.Fatalf("READY=1 before every present interface was attached: %q", msg)
				}
			default:
				return
			}
		}
	}
	drain()

	if err := setXDP(-1); err != nil {
		t.Fatal(err)
	}
	msg := notify.next(t, "READY=1", nil)
	// READY=1 is here: every present port runs the agent's program now.
	var progID uint32
	for _, d := range tp.Devices {
		lk, err := gw.LinkByIndex(d.Port.Index)
		if err != nil {
			t.Fatal(err)
		}
		x := lk.Attrs().Xdp
		if x == nil || !x.Attached || x.ProgId == 0 || (progID != 0 && x.ProgId != progID) {
			t.Fatalf("READY=1 (%q) but port %s runs %+v", msg, d.Port.Name, x)
		}
		progID = x.ProgId
	}
	if info, err := foreign.Info(); err == nil {
		if id, _ := info.ID(); uint32(id) == progID {
			t.Fatal("the ports run the foreign program")
		}
	}
	st = l.status()
	if !st.Ready || st.Policy.Revision != 1 {
		t.Errorf("after READY=1: ready %v, revision %d", st.Ready, st.Policy.Revision)
	}
	if code, _ := l.scrape("/readyz"); code != 200 {
		t.Errorf("/readyz after READY=1: %d", code)
	}
	l.agent.signal(syscall.SIGTERM)
	notify.next(t, "STOPPING=1", nil)
	<-l.agent.done
}
