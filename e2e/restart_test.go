package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"

	"github.com/vishvananda/netns"
)

// TestMain lets this test binary act as a separate loading process (see child).
func TestMain(m *testing.M) {
	if mode := os.Getenv("ZTGATE_E2E_CHILD"); mode != "" {
		if err := child(mode); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir) // the binaries built by binaries()
	}
	os.Exit(code)
}

// child is one process's life: "load" opens the datapath in ZTGATE_PIN_DIR, applies the policy
// file ZTGATE_POLICY, attaches to the ports ZTGATE_PORTS of netns ZTGATE_NETNS and exits
// leaving the pins; "adopt" reopens the pins, reports the revision, re-attaches (adopting the
// links with an update) and uninstalls.
func child(mode string) error {
	dir, nsName := os.Getenv("ZTGATE_PIN_DIR"), os.Getenv("ZTGATE_NETNS")
	ports := strings.Split(os.Getenv("ZTGATE_PORTS"), ",")
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		return err
	}
	defer ns.Close()
	cfg := loader.DefaultConfig()
	cfg.PinDir = dir
	dp, err := loader.Open(cfg)
	if err != nil {
		return err
	}
	defer dp.Close()
	m, err := maps.New(dp.Objects(), dp.MapSpecs())
	if err != nil {
		return err
	}
	switch mode {
	case "load":
		p, err := policy.ParseFile(os.Getenv("ZTGATE_POLICY"))
		if err != nil {
			return err
		}
		var s *policy.Snapshot
		if err := testenv.Do(ns, func() error {
			s, err = policy.Compile(p, policy.CompileOptions{Revision: 1, Ifindex: func(name string) (uint32, error) {
				l, err := net.InterfaceByName(name)
				if err != nil {
					return 0, err
				}
				return uint32(l.Index), nil
			}})
			return err
		}); err != nil {
			return err
		}
		lim := maps.Limits{Devices: cfg.MaxDevices, Addrs: cfg.MaxAddrs, Rules: cfg.MaxRules, Prefixes: cfg.MaxPrefixes}
		if err := m.Apply(s, lim); err != nil {
			return err
		}
	case "adopt":
		rev, err := m.ActiveRevision()
		if err != nil {
			return err
		}
		fmt.Printf("revision %d\n", rev)
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	if err := testenv.Do(ns, func() error {
		for _, p := range ports {
			if _, err := dp.Attach(p); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if mode == "adopt" {
		dp.Close()
		return loader.Uninstall(dir)
	}
	return nil
}

// runChild runs this test binary as a child process in mode (with env added) and returns its
// output.
func runChild(t *testing.T, mode string, env ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, "ZTGATE_E2E_CHILD="+mode)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s process: %v\n%s", mode, err, out)
	}
	return string(out)
}

// xdpAttached reports whether a program is attached to the gateway port.
func xdpAttached(t *testing.T, tp *testenv.Topology, port string) bool {
	l, err := tp.Gateway.Netlink().LinkByName(port)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
}

// TestPinsSurviveTheLoader: a process loads, applies and attaches, then exits; enforcement stays
// in force; a new process adopts the pins (same revision, links updated in place) and uninstalls,
// after which nothing is attached or pinned.
func TestPinsSurviveTheLoader(t *testing.T) {
	tp := topology(t)
	dir := pinDir()
	t.Cleanup(func() { _ = loader.Uninstall(dir) })
	data, err := policy.Marshal(basePolicy(t, tp))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, d := range tp.Devices {
		ports = append(ports, d.Port.Name)
	}
	env := []string{"ZTGATE_PIN_DIR=" + dir, "ZTGATE_NETNS=" + tp.Gateway.Name(), "ZTGATE_POLICY=" + file,
		"ZTGATE_PORTS=" + strings.Join(ports, ",")}
	runChild(t, "load", env...)

	cam, up := tp.Device("cam"), tp.Upstream
	echo, err := up.NS.EchoTCP(":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	for _, p := range ports {
		if !xdpAttached(t, tp, p) {
			t.Fatalf("no program on %s after the loader exited", p)
		}
	}
	c, err := cam.NS.Dial("tcp", addrPort(up.IPv4, 7000), 3*time.Second)
	if err != nil {
		t.Fatalf("allowed flow after the loader exited: %v", err)
	}
	c.Close()
	if _, err := cam.NS.Dial("tcp", addrPort(up.IPv4, 7002), time.Second); !isTimeout(err) {
		t.Fatalf("forbidden flow after the loader exited: %v (want a timeout: the SYN dropped)", err)
	}

	if out := runChild(t, "adopt", env...); !strings.Contains(out, "revision 1") {
		t.Fatalf("adopting process saw %q, want revision 1", out)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin directory still there after uninstall: %v", err)
	}
	for _, p := range ports {
		if xdpAttached(t, tp, p) {
			t.Fatalf("program still attached to %s after uninstall", p)
		}
	}
	// Without the datapath the gateway forwards anything: the forbidden SYN now reaches the
	// upstream, which refuses it.
	if _, err := cam.NS.Dial("tcp", addrPort(up.IPv4, 7002), 3*time.Second); err == nil || isTimeout(err) {
		t.Fatalf("after uninstall: %v, want connection refused", err)
	}
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
