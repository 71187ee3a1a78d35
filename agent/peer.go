package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peer is the credentials of the process at the other end of an API connection, read from the
// kernel (SO_PEERCRED, SO_PEERGROUPS) when it connected: they cannot be forged by the client.
type peer struct {
	uid, gid uint32
	pid      int32
	groups   []uint32 // supplementary groups
	err      error    // why the credentials could not be read (the peer is refused)
}

type peerKey struct{}

// withPeer is the http.Server ConnContext: it reads the peer's credentials once per connection.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, readPeer(c))
}

// callerOf is who sent r (an allowed peer: see checkPeer), for the audit log.
func callerOf(r *http.Request) caller {
	p := peerFrom(r.Context())
	return caller{uid: int64(p.uid), gid: int64(p.gid), pid: int64(p.pid)}
}

func peerFrom(ctx context.Context) *peer {
	p, _ := ctx.Value(peerKey{}).(*peer)
	if p == nil {
		return &peer{err: errors.New("no peer credentials")}
	}
	return p
}

func readPeer(c net.Conn) *peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return &peer{err: fmt.Errorf("not a unix socket connection (%T)", c)}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return &peer{err: err}
	}
	p := &peer{}
	cerr := raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			p.err = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p.uid, p.gid, p.pid = cred.Uid, cred.Gid, cred.Pid
		p.groups, p.err = peerGroups(int(fd))
	})
	if cerr != nil {
		p.err = cerr
	}
	return p
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13+), growing the buffer when the kernel asks to.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 32)
	for range 4 {
		n := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch e {
		case 0:
			return buf[:n/4], nil
		case unix.ERANGE:
			buf = make([]uint32, n/4+1)
		default:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", e)
		}
	}
	return nil, errors.New("SO_PEERGROUPS: group list keeps growing")
}

// access decides who may use the API: root, the agent's own uid, AllowUIDs, and members
// (primary or supplementary) of SocketGroup.
type access struct {
	uids  []uint32
	gid   uint32
	group bool
}

func newAccess(cfg Config) (access, error) {
	ac := access{uids: append([]uint32{0, uint32(os.Getuid())}, cfg.AllowUIDs...)}
	if cfg.SocketGroup != "" {
		gid, err := lookupGroup(cfg.SocketGroup)
		if err != nil {
			return ac, fmt.Errorf("socket_group: %w", err)
		}
		ac.gid, ac.group = gid, true
	}
	return ac, nil
}

func lookupGroup(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %s: gid %q: %w", name, g.Gid, err)
	}
	return uint32(n), nil
}

func (ac access) allowed(p *peer) error {
	if p.err != nil {
		return p.err
	}
	if slices.Contains(ac.uids, p.uid) {
		return nil
	}
	if ac.group && (p.gid == ac.gid || slices.Contains(p.groups, ac.gid)) {
		return nil
	}
	return fmt.Errorf("uid %d (gid %d) is not allowed to use the agent", p.uid, p.gid)
}

// listenSocket creates the API socket: a root-only directory (0700, or 0750 to SocketGroup),
// a socket of mode 0600 (0660 to SocketGroup). A stale socket of a dead agent is replaced; a
// live one is an error.
func (a *Agent) listenSocket() (net.Listener, error) {
	ac, err := newAccess(a.cfg)
	if err != nil {
		return nil, err
	}
	path := a.cfg.Socket
	dir := filepath.Dir(path)
	dirMode, sockMode := os.FileMode(0o700), os.FileMode(0o600)
	if ac.group {
		dirMode, sockMode = 0o750, 0o660
	}
	// The directory is made root-only only when the agent creates it: an existing directory
	// (say /run) is the operator's and is not changed, only checked.
	created := false
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, dirMode); err != nil {
			return nil, fmt.Errorf("socket dir: %w", err)
		}
		created = true
	} else if err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("socket %s exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: another agent is listening", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Create the socket with no access at all, then open it up: no window with a wider mode.
	old := unix.Umask(0o777)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	gid := -1
	if ac.group {
		gid = int(ac.gid)
	}
	type perm struct {
		path string
		mode os.FileMode
	}
	perms := []perm{{path, sockMode}}
	if created {
		perms = append(perms, perm{dir, dirMode})
	} else if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o007 != 0 {
		a.log.Warn("the socket directory is open to other users; the socket's mode and the peer check still apply",
			"dir", dir, "mode", fi.Mode().Perm().String())
	}
	for _, f := range perms {
		if err := os.Chown(f.path, 0, gid); err != nil && os.Getuid() == 0 {
			ln.Close()
			return nil, fmt.Errorf("socket: %w", err)
		}
		if err := os.Chmod(f.path, f.mode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("socket: %w", err)
		}
	}
	a.access = ac
	return ln, nil
}
