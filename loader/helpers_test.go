package loader

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/ztgate/ztgate/testenv"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// requirePriv skips (or, with ZTGATE_REQUIRE_PRIV=1, fails) the test when not root.
func requirePriv(t *testing.T) { testenv.RequirePriv(t) }

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testPinDir returns a unique pin directory that is uninstalled when the test ends.
func testPinDir(t *testing.T) string {
	t.Helper()
	dir := "/sys/fs/bpf/ztgate-test-" + randHex(t, 6)
	t.Cleanup(func() {
		if err := Uninstall(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return dir
}

// testConfig is a small datapath in a unique pin directory.
func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.PinDir = testPinDir(t)
	cfg.MaxDevices = 64
	cfg.FragEntries = 128
	cfg.EventLimitEntries = 128
	cfg.RingBytes = 1 << 16
	return cfg
}

func openDatapath(t *testing.T, cfg Config) *Datapath {
	t.Helper()
	dp, err := Open(cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { dp.Close() })
	return dp
}

// newNetns creates an anonymous network namespace, closed (and with it destroyed, with its
// interfaces) when the test ends. The calling goroutine's namespace is unchanged.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // switches this thread
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(orig); err != nil {
		// This thread is stuck in the new namespace: keep it locked so that it dies with the
		// goroutine instead of running other goroutines in the wrong namespace.
		runtime.LockOSThread()
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// inNetns runs fn on a thread switched to ns.
func inNetns(t *testing.T, ns netns.NsHandle, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("restore netns: %w (after %v)", err, ferr)
			return // thread stays locked: the runtime discards it
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// addVeth creates the veth pair a<->b in ns, both up.
func addVeth(t *testing.T, ns netns.NsHandle, a, b string) {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s/%s: %v", a, b, err)
	}
	for _, n := range []string{a, b} {
		l, err := h.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}

// linkIn opens a netlink handle in ns (the caller closes it) and looks up the link name.
func linkIn(t *testing.T, ns netns.NsHandle, name string) (*netlink.Handle, netlink.Link) {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	return h, l
}

func delLink(t *testing.T, ns netns.NsHandle, name string) {
	t.Helper()
	h, l := linkIn(t, ns, name)
	defer h.Close()
	if err := h.LinkDel(l); err != nil {
		t.Fatal(err)
	}
}

// xdpState reads the XDP attachment of name in ns from rtnetlink.
func xdpState(t *testing.T, ns netns.NsHandle, name string) *netlink.LinkXdp {
	t.Helper()
	h, l := linkIn(t, ns, name)
	h.Close()
	if x := l.Attrs().Xdp; x != nil {
		return x
	}
	return &netlink.LinkXdp{}
}
