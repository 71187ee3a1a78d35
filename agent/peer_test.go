package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/testenv"
)

// uids and gids no test process runs as.
const (
	strangerUID = 7777
	strangerGID = 7778
	groupGID    = 5150
)

func TestAccessAllowed(t *testing.T) {
	me := uint32(os.Getuid())
	if me == strangerUID || me == 4242 {
		t.Skipf("the test runs as uid %d", me)
	}
	plain, err := newAccess(Config{AllowUIDs: []uint32{4242}})
	if err != nil {
		t.Fatal(err)
	}
	group, err := newAccess(Config{SocketGroup: "5150"})
	if err != nil {
		t.Fatal(err)
	}
	if !group.group || group.gid != groupGID {
		t.Fatalf("newAccess with socket_group 5150: got %+v", group)
	}
	if plain.group {
		t.Fatalf("newAccess without socket_group: got %+v", plain)
	}
	for _, tc := range []struct {
		name string
		ac   access
		p    peer
		ok   bool
	}{
		{name: "root", ac: plain, p: peer{uid: 0, gid: strangerGID}, ok: true},
		{name: "root, group access", ac: group, p: peer{uid: 0, gid: strangerGID}, ok: true},
		{name: "own uid", ac: plain, p: peer{uid: me, gid: strangerGID}, ok: true},
		{name: "allow_uids", ac: plain, p: peer{uid: 4242, gid: strangerGID}, ok: true},
		{name: "allow_uids is not in the group access", ac: group, p: peer{uid: 4242, gid: strangerGID}, ok: false},
		{name: "stranger", ac: plain, p: peer{uid: strangerUID, gid: strangerGID, groups: []uint32{groupGID}}, ok: false},
		// No socket_group: gid 0 (the zero gid of access) must not let anyone in.
		{name: "gid 0 without socket_group", ac: plain, p: peer{uid: strangerUID, gid: 0, groups: []uint32{0}}, ok: false},
		{name: "group as primary gid", ac: group, p: peer{uid: strangerUID, gid: groupGID}, ok: true},
		{name: "group as supplementary group", ac: group,
			p: peer{uid: strangerUID, gid: strangerGID, groups: []uint32{1, groupGID, 9000}}, ok: true},
		{name: "other groups", ac: group,
			p: peer{uid: strangerUID, gid: strangerGID, groups: []uint32{1, groupGID + 1}}, ok: false},
	} {
		err := tc.ac.allowed(&tc.p)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case !tc.ok && err == nil:
			t.Errorf("%s: allowed", tc.name)
		case !tc.ok && !strings.Contains(err.Error(), "uid 7777") && !strings.Contains(err.Error(), "uid 4242"):
			t.Errorf("%s: error %q does not name the uid", tc.name, err)
		}
	}

	// A peer whose credentials could not be read is refused, whoever it claims to be.
	bad := errors.New("SO_PEERCRED: boom")
	if err := group.allowed(&peer{uid: 0, gid: groupGID, err: bad}); !errors.Is(err, bad) {
		t.Errorf("peer with an error: got %v, want %v", err, bad)
	}
	// So is a request without credentials.
	p := peerFrom(context.Background())
	if p.err == nil {
		t.Fatalf("peerFrom without a peer: got %+v", p)
	}
	if err := plain.allowed(p); err == nil {
		t.Error("request without peer credentials allowed")
	}
	want := &peer{uid: 1, gid: 2, pid: 3}
	if got := peerFrom(context.WithValue(context.Background(), peerKey{}, want)); got != want {
		t.Errorf("peerFrom: got %+v, want %+v", got, want)
	}
}

func TestNewAccessGroup(t *testing.T) {
	ac, err := newAccess(Config{SocketGroup: "0", AllowUIDs: []uint32{10, 11}})
	if err != nil {
		t.Fatal(err)
	}
	if !ac.group || ac.gid != 0 || !slices.Contains(ac.uids, 0) || !slices.Contains(ac.uids, uint32(os.Getuid())) ||
		!slices.Contains(ac.uids, 10) || !slices.Contains(ac.uids, 11) {
		t.Errorf("newAccess: got %+v", ac)
	}
	_, err = newAccess(Config{SocketGroup: "ztgate-no-such-group"})
	if err == nil || !strings.HasPrefix(err.Error(), "socket_group:") {
		t.Errorf("unknown socket_group: got %v", err)
	}
	if _, err := newAccess(Config{SocketGroup: "4294967296"}); err == nil {
		t.Error("socket_group beyond 32 bits accepted")
	}
	// A group name resolves to its gid (every system has a root group, gid 0).
	if gid, err := lookupGroup("root"); err == nil && gid != 0 {
		t.Errorf("lookupGroup(root): got %d", gid)
	}
}

func sortedGroups(t *testing.T) []uint32 {
	t.Helper()
	gs, err := unix.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	out := []uint32{}
	for _, g := range gs {
		out = append(out, uint32(g))
	}
	slices.Sort(out)
	return out
}

func checkSelf(t *testing.T, what string, p *peer) {
	t.Helper()
	if p.err != nil {
		t.Fatalf("%s: readPeer: %v", what, p.err)
	}
	if p.uid != uint32(os.Getuid()) || p.gid != uint32(os.Getgid()) || p.pid != int32(os.Getpid()) {
		t.Errorf("%s: got uid %d gid %d pid %d, want %d %d %d", what, p.uid, p.gid, p.pid,
			os.Getuid(), os.Getgid(), os.Getpid())
	}
	got := append([]uint32{}, p.groups...)
	slices.Sort(got)
	if want := sortedGroups(t); !slices.Equal(got, want) {
		t.Errorf("%s: groups %v, want %v", what, got, want)
	}
}

func TestReadPeerListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	checkSelf(t, "server side", readPeer(server))
	checkSelf(t, "client side", readPeer(client))
	// withPeer is what the API server runs per connection.
	checkSelf(t, "withPeer", peerFrom(withPeer(context.Background(), server)))
}

func TestReadPeerSocketpair(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		checkSelf(t, []string{"first", "second"}[i], readPeer(c))
	}
}

func TestReadPeerNotUnix(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	p := readPeer(a)
	if p.err == nil {
		t.Fatalf("readPeer of a pipe: got %+v", p)
	}
	ac, _ := newAccess(Config{})
	if err := ac.allowed(p); err == nil {
		t.Error("a pipe peer is allowed")
	}
}

// peerHelperEnv makes the test binary a client that connects to the socket it names and waits.
const peerHelperEnv = "ZTGATE_TEST_PEER_SOCKET"

// TestMain turns the test binary into that client when peerHelperEnv is set.
func TestMain(m *testing.M) {
	if path := os.Getenv(peerHelperEnv); path != "" {
		c, err := net.Dial("unix", path)
		if err != nil {
			os.Exit(2)
		}
		var b [1]byte
		_, _ = c.Read(b[:]) // until the test closes the connection
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestReadPeerManyGroups reads a peer with more supplementary groups than the first
// SO_PEERGROUPS buffer holds. It needs CAP_SETGID to start such a process.
func TestReadPeerManyGroups(t *testing.T) {
	testenv.RequirePriv(t)
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var groups []uint32
	for g := uint32(20000); g < 20000+77; g++ {
		groups = append(groups, g)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), peerHelperEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 0, Gid: 31337, Groups: groups}}
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start a process with %d groups: %v", len(groups), err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	_ = ln.(*net.UnixListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	p := readPeer(c)
	c.Close()
	if p.err != nil {
		t.Fatalf("readPeer: %v", p.err)
	}
	got := append([]uint32{}, p.groups...)
	slices.Sort(got)
	if p.uid != 0 || p.gid != 31337 || p.pid != int32(cmd.Process.Pid) || !slices.Equal(got, groups) {
		t.Errorf("got uid %d gid %d pid %d groups %v; want 0 31337 %d %v", p.uid, p.gid, p.pid, got, cmd.Process.Pid, groups)
	}
	ac, _ := newAccess(Config{SocketGroup: "20076"})
	if err := ac.allowed(&peer{uid: strangerUID, gid: p.gid, groups: p.groups}); err != nil {
		t.Errorf("the last supplementary group is not seen: %v", err)
	}
}
