package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted (the `ip netns` convention;
// /var/run is a symlink to /run).
const NetnsDir = "/run/netns"

// Namespace is a named network namespace created by this package. It stays valid until the
// topology that made it is closed (or the device it belongs to is removed).
type Namespace struct {
	name   string
	handle netns.NsHandle
	nl     *netlink.Handle
	tp     *Topology // owner: sockets made by the helpers are registered there
}

// Name is the namespace's name, as listed by `ip netns list`.
func (ns *Namespace) Name() string { return ns.name }

// Path is the namespace's bind mount, /run/netns/<name>.
func (ns *Namespace) Path() string { return filepath.Join(NetnsDir, ns.name) }

// Handle is an open handle (file descriptor) to the namespace, owned by the namespace: do not
// close it.
func (ns *Namespace) Handle() netns.NsHandle { return ns.handle }

// Netlink is a netlink handle operating inside the namespace (links, addresses, routes,
// neighbours), owned by the namespace: do not close it.
func (ns *Namespace) Netlink() *netlink.Handle { return ns.nl }

// ReadProcNet returns the file /proc/thread-self/net/name as the namespace sees it ("snmp",
// "igmp6", ...).
func (ns *Namespace) ReadProcNet(name string) ([]byte, error) {
	return inside(ns, func() ([]byte, error) { return os.ReadFile("/proc/thread-self/net/" + name) })
}

// Do runs fn on a locked OS thread inside the namespace; see the package-level [Do].
func (ns *Namespace) Do(fn func() error) error { return Do(ns.handle, fn) }

// LinkIndex returns the ifindex of the interface called ifname inside the namespace.
func (ns *Namespace) LinkIndex(ifname string) (int, error) {
	if ns.nl == nil {
		return 0, fmt.Errorf("testenv: namespace %s is closed", ns.name)
	}
	l, err := ns.nl.LinkByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("testenv: link %q in %s: %w", ifname, ns.name, err)
	}
	return l.Attrs().Index, nil
}

func (ns *Namespace) String() string { return ns.name }

// close releases the handles; the namespace itself lives on while it is mounted.
func (ns *Namespace) close() {
	if ns.nl != nil {
		ns.nl.Close()
		ns.nl = nil
	}
	if ns.handle.IsOpen() {
		_ = ns.handle.Close()
		ns.handle = netns.None()
	}
}

// Do runs fn inside the network namespace target, on an OS thread locked for the purpose,
// and returns fn's error. The calling goroutine never changes namespace: fn runs on a fresh
// goroutine whose thread is switched into target and back. If switching back fails, the
// thread is left locked so that the Go runtime discards it when the goroutine ends, instead
// of reusing a thread stuck in the wrong namespace. A panic in fn is re-raised in the caller.
//
// Only the network namespace changes (the mount namespace, and so bpffs, stay as they are).
// Sockets, netlink handles and BPF links created inside fn stay in target after fn returns;
// goroutines started by fn do not run in target. fn must not call t.FailNow/t.Fatal (it is
// not on the test goroutine): return an error instead.
func Do(target netns.NsHandle, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		panicVal any
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var res result
		defer func() { ch <- res }()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("testenv: get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("testenv: enter netns: %w", err)
			return
		}
		defer func() {
			if r := recover(); r != nil {
				res.panicked, res.panicVal = true, r
			}
			if err := netns.Set(orig); err != nil {
				// Stay locked: the runtime terminates the thread when this goroutine exits.
				res.err = errors.Join(res.err, fmt.Errorf("testenv: restore netns: %w", err))
				return
			}
			runtime.UnlockOSThread()
		}()
		res.err = fn()
	}()
	res := <-ch
	if res.panicked {
		panic(res.panicVal)
	}
	return res.err
}

// createNamedNetns creates a new network namespace and bind-mounts it at /run/netns/name
// (failing with an error wrapping os.ErrExist if the name is taken). The caller's thread is
// not affected. On failure nothing is left behind.
func createNamedNetns(name string) (netns.NsHandle, error) {
	if err := prepareNetnsDir(); err != nil {
		return netns.None(), fmt.Errorf("testenv: %w", err)
	}
	path := filepath.Join(NetnsDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("testenv: create netns %s: %w", name, err)
	}
	_ = f.Close()

	h := netns.None()
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("unshare: %w", err)
			return
		}
		err = unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
		if err != nil {
			err = fmt.Errorf("bind mount: %w", err)
		} else if h, err = netns.Get(); err != nil {
			err = fmt.Errorf("open: %w", err)
		}
		if rerr := netns.Set(orig); rerr != nil {
			// Stay locked: the runtime terminates the thread when this goroutine exits.
			ch <- errors.Join(err, fmt.Errorf("restore netns: %w", rerr))
			return
		}
		runtime.UnlockOSThread()
		ch <- err
	}()
	if err := <-ch; err != nil {
		if h.IsOpen() {
			_ = h.Close()
		}
		_ = deleteNamedNetns(name)
		return netns.None(), fmt.Errorf("testenv: create netns %s: %w", name, err)
	}
	return h, nil
}

var (
	netnsDirOnce sync.Once
	netnsDirErr  error
)

// prepareNetnsDir makes /run/netns a shared mount point, as iproute2 does before its first
// namespace. Otherwise a later `ip netns add` (by anyone) bind-mounts /run/netns over itself,
// hiding the namespaces mounted there before: they could no longer be unmounted or deleted.
func prepareNetnsDir() error {
	netnsDirOnce.Do(func() {
		if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
			netnsDirErr = err
			return
		}
		err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if errors.Is(err, unix.EINVAL) { // not a mount point yet
			if err = unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
				err = unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
			}
		}
		if err != nil {
			netnsDirErr = fmt.Errorf("make %s a shared mount point: %w", NetnsDir, err)
		}
	})
	return netnsDirErr
}

// deleteNamedNetns unmounts (every stacked mount of) /run/netns/name and removes the file.
// The namespace is destroyed once nothing else refers to it.
func deleteNamedNetns(name string) error {
	path := filepath.Join(NetnsDir, name)
	for range 16 {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // not (or no longer) a mount point
		}
		return fmt.Errorf("testenv: unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("testenv: %w", err)
	}
	return nil
}

// setSysctls writes /proc/sys/net values ({"ipv4/ip_forward", "1"}, ...), in order, inside
// the namespace.
func (ns *Namespace) setSysctls(kv ...[2]string) error {
	return ns.Do(func() error {
		for _, e := range kv {
			k, v := e[0], e[1]
			p := filepath.Join("/proc/sys/net", k)
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				return fmt.Errorf("testenv: sysctl net.%s=%s in %s: %w", strings.ReplaceAll(k, "/", "."), v, ns.name, err)
			}
		}
		return nil
	})
}
