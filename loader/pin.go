package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// bpffsRoot is where Open mounts bpffs when the pin directory lies under it and nothing is mounted.
const bpffsRoot = "/sys/fs/bpf"

var mountMu sync.Mutex

func isBPFFS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return uint32(st.Type) == unix.BPF_FS_MAGIC, nil
}

// existingAncestor returns path or its nearest ancestor that exists.
func existingAncestor(path string) string {
	for {
		if _, err := os.Stat(path); err == nil || path == "/" {
			return path
		}
		path = filepath.Dir(path)
	}
}

func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// ensureBPFFS makes sure pinDir is on a bpf filesystem, mounting one at /sys/fs/bpf when pinDir
// is below it and it is not mounted yet. pinDir must be below the mount, not the mount itself,
// so that Uninstall can remove it as a whole.
func ensureBPFFS(pinDir string) error {
	mountMu.Lock()
	defer mountMu.Unlock()
	ok, err := isBPFFS(existingAncestor(pinDir))
	if err != nil {
		return err
	}
	if !ok && within(pinDir, bpffsRoot) {
		if ok, err = isBPFFS(bpffsRoot); err != nil {
			return err
		}
		if !ok {
			if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
				return fmt.Errorf("mount bpffs at %s: %w", bpffsRoot, err)
			}
		}
		ok, err = isBPFFS(existingAncestor(pinDir))
		if err != nil {
			return err
		}
	}
	if !ok {
		return fmt.Errorf("pin dir %s is not on a bpf filesystem (mount one: mount -t bpf bpf DIR)", pinDir)
	}
	if err := notMountRoot(pinDir); err != nil {
		return err
	}
	return nil
}

// notMountRoot rejects a directory that is itself a mount point (e.g. /sys/fs/bpf): the datapath
// owns its pin directory, and Uninstall removes it.
func notMountRoot(dir string) error {
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return fmt.Errorf("stat %s: %w", filepath.Dir(dir), err)
	}
	if st.Dev != parent.Dev || dir == "/" {
		return fmt.Errorf("pin dir %s is a mount point: use a directory below it", dir)
	}
	return nil
}

func mkdirPins(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir: %w", err)
	}
	return nil
}

// lockDir takes an exclusive flock on dir, serialising Open, Attach, Detach and Uninstall of
// processes (and Datapaths) that share the pin directory.
func lockDir(dir string) (func(), error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { unix.Close(fd) }, nil
}

// ownerDir is the directory below the pin directory whose flock an agent holds for its
// lifetime (bpffs holds no regular files, so the lock is a directory's).
const ownerDir = "owner"

// LockPinDir takes the owner lock of pinDir without waiting, creating the directory when
// needed: one agent per datapath, released by the kernel when the process ends however it
// ends. When another process holds it, the error names its pid. unlock releases the lock.
func LockPinDir(pinDir string) (unlock func(), err error) {
	if pinDir == "" || !filepath.IsAbs(pinDir) {
		return nil, fmt.Errorf("lock pin dir %q: must be an absolute path", pinDir)
	}
	pinDir = filepath.Clean(pinDir)
	if err := ensureBPFFS(pinDir); err != nil {
		return nil, fmt.Errorf("lock pin dir: %w", err)
	}
	dir := filepath.Join(pinDir, ownerDir)
	if err := mkdirPins(dir); err != nil {
		return nil, fmt.Errorf("lock pin dir: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock pin dir: %w", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			if pid := flockHolder(fd); pid > 0 {
				return nil, fmt.Errorf("pin dir %s is in use by another agent (pid %d)", pinDir, pid)
			}
			return nil, fmt.Errorf("pin dir %s is in use by another agent", pinDir)
		}
		return nil, fmt.Errorf("lock pin dir %s: %w", pinDir, err)
	}
	return func() { unix.Close(fd) }, nil
}

// flockHolder returns the pid /proc/locks gives for the flock on the file of fd, or 0.
func flockHolder(fd int) int {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0
	}
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	for _, line := range strings.Split(string(data), "\n") {
		// "1: FLOCK  ADVISORY  WRITE 1234 00:27:44055 0 EOF"; waiters are marked "->".
		f := strings.Fields(line)
		if len(f) >= 6 && f[1] == "FLOCK" && f[5] == want {
			var pid int
			if _, err := fmt.Sscan(f[4], &pid); err == nil {
				return pid
			}
		}
	}
	return 0
}

// Uninstall removes the datapath pinned under pinDir (the PinDir of Config, e.g.
// /sys/fs/bpf/ztgate): it detaches and unpins every XDP and tcx link and removes ztgate's clsact
// filter from the interfaces of the XDP links, in the calling thread's network namespace
// (enforcement stops), unpins every
// map (the kernel frees each one when its last user is gone) and removes the directory, for
// every layout version. It is idempotent: a missing pinDir is not an error. It refuses a
// directory that is not on bpffs or is a mount point, and never touches anything outside pinDir.
func Uninstall(pinDir string) error {
	if pinDir == "" || !filepath.IsAbs(pinDir) {
		return fmt.Errorf("uninstall: pin dir %q: must be an absolute path", pinDir)
	}
	pinDir = filepath.Clean(pinDir)
	if _, err := os.Lstat(pinDir); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	ok, err := isBPFFS(pinDir)
	if err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	if !ok {
		return fmt.Errorf("uninstall: %s is not on a bpf filesystem: refusing to remove it", pinDir)
	}
	if err := notMountRoot(pinDir); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	unlock, err := lockDir(pinDir)
	if err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	defer unlock()

	// Detach the links first (BPF_LINK_DETACH), so that enforcement stops even if another
	// process still holds a link fd; then remove every pin.
	var errs []error
	err = filepath.WalkDir(pinDir, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() || !isLinkPin(de.Name()) {
			return nil
		}
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("load pinned link %s: %w", path, err))
			return nil
		}
		defer l.Close()
		if ifindex := xdpLinkHere(l); ifindex != 0 {
			if _, err := delTCFilter(here, ifindex); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path, err))
			}
		}
		if err := l.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) {
			errs = append(errs, fmt.Errorf("detach %s: %w", path, err))
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(pinDir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uninstall %s: %w", pinDir, err)
	}
	return nil
}

// xdpLinkHere returns the ifindex of XDP link l when the interface of that index in the calling
// thread's network namespace runs l's program (the link is attached in this namespace), else 0.
func xdpLinkHere(l link.Link) int {
	info, err := l.Info()
	if err != nil || info.XDP() == nil || info.XDP().Ifindex == 0 {
		return 0
	}
	ifindex := int(info.XDP().Ifindex)
	if _, id, err := xdpMode(ifindex); err != nil || id != info.Program {
		return 0
	}
	return ifindex
}
