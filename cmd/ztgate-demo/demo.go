package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/testenv"
)

// Options tune the demo.
type Options struct {
	// Mode is the agent's XDP attach mode (loader.ModeAuto: native, else generic).
	Mode loader.Mode
	// PinDir is the bpffs directory of the agent's pins; empty: a fresh
	// /sys/fs/bpf/ztgate-demo-<random>. It is removed at the end.
	PinDir string
	// Ztgate is the ztgate binary (CLI and agent); empty: the demo builds it with `go build`
	// into its temporary directory.
	Ztgate string
	// Pcap is where `ztgate events --pcap` writes; empty: events.pcap in the temporary
	// directory (removed at the end).
	Pcap string
}

const totalSteps = 8

// Timeouts: generous for what must work, short for what must not (the demo waits that long
// to be sure that nothing came through).
const (
	okTimeout    = 3 * time.Second
	blockTimeout = time.Second
	quietPeriod  = 500 * time.Millisecond
	eventTimeout = 3 * time.Second
	cliTimeout   = 20 * time.Second // one ztgate command
	readyTimeout = 20 * time.Second // the agent's start-up
	stopTimeout  = 5 * time.Second  // SIGTERM before SIGKILL
	buildTimeout = 5 * time.Minute  // go build of ztgate
)

// Ports of the demo's services.
const (
	portMQTT   = 8883 // thermostat -> cloud, TCP
	portCoAPS  = 5684 // thermostat -> cloud, UDP
	portCoAP   = 5683 // sensors <-> controllers, UDP
	portHTTPS  = 443  // camera -> cloud, TCP
	portSSH    = 22   // camera -> cloud, not allowed
	portTelnet = 23   // cloud -> camera, not allowed (no from: rule)
	portDNS    = 53   // gateway service
	spoofSPort = 40000
)

// demo is the state of one run.
type demo struct {
	ctx      context.Context
	out      io.Writer
	opts     Options
	step     int
	failures []string
	cleanups []cleanup

	dir    string // temporary directory: agent.yaml, policy.yaml, state, socket, logs
	bin    string // absolute path of the ztgate binary
	pinDir string
	socket string
	pcap   string

	tp                          *testenv.Topology
	thermo, cam, hvac, intruder *testenv.Device
	cloud                       *testenv.Upstream
	linkLocal                   map[string]netip.Addr // device name -> its IPv6 link-local address

	agent *agentProc
}

// cleanup is one undo action; it returns what it did ("" for nothing to do).
type cleanup struct {
	what string
	fn   func() (string, error)
}

// run is the whole demo: it writes the walkthrough to out and returns nil only if every
// expectation held. Whatever happens (error, panic, ctx cancelled), everything it created is
// removed before it returns (except the pcap when Options.Pcap names a file).
func run(ctx context.Context, out io.Writer, opts Options) (err error) {
	d := &demo{ctx: ctx, out: out, opts: opts, linkLocal: map[string]netip.Addr{}}
	fmt.Fprintln(out, "ztgate demo: zero-trust enforcement for IoT devices, through the real `ztgate agent` and CLI.")
	fmt.Fprintln(out, "Every frame a device sends meets an XDP program that checks who sent it (MAC bound to a port,")
	fmt.Fprintln(out, "address bound to the MAC) and whether the policy allows where it goes; the rest is dropped.")
	defer func() {
		if r := recover(); r != nil {
			err = errors.Join(err, fmt.Errorf("panic: %v\n%s", r, debug.Stack()))
		}
		if err != nil {
			fmt.Fprintf(out, "\n  !! stopping early: %v\n", err)
			if ctx.Err() == nil {
				d.agentLogTail()
			}
		}
		err = errors.Join(err, d.teardown())
		if err == nil && len(d.failures) > 0 {
			err = fmt.Errorf("%d expectation(s) did not hold:\n  - %s", len(d.failures), strings.Join(d.failures, "\n  - "))
		}
		if err == nil {
			fmt.Fprintln(out, "\nAll expectations held.")
		}
	}()
	if err := d.setup(); err != nil {
		return err
	}
	for _, step := range []func() error{d.buildLab, d.startAgent, d.applyPolicy, d.allowedTraffic, d.attacks, d.observe,
		d.changeDevice, d.stopAndUninstall} {
		if err := d.interrupted(); err != nil {
			return err
		}
		if err := step(); err != nil {
			return err
		}
	}
	return d.interrupted()
}

// interrupted returns an error once ctx is cancelled (Ctrl-C).
func (d *demo) interrupted() error {
	if d.ctx.Err() != nil {
		return fmt.Errorf("interrupted (%w)", context.Cause(d.ctx))
	}
	return nil
}

// sleep waits for dt or until ctx is cancelled.
func (d *demo) sleep(dt time.Duration) error {
	select {
	case <-d.ctx.Done():
		return d.interrupted()
	case <-time.After(dt):
		return nil
	}
}

func (d *demo) heading(title string) {
	d.step++
	line := fmt.Sprintf("[%d/%d] %s", d.step, totalSteps, title)
	fmt.Fprintf(d.out, "\n%s\n%s\n", line, strings.Repeat("=", len([]rune(line))))
}

func (d *demo) printf(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

// expect reports one expectation: "[ok] what" or "[FAIL] what: why".
func (d *demo) expect(what string, err error) bool {
	if err == nil {
		d.printf("  [ok]   %s\n", what)
		return true
	}
	d.printf("  [FAIL] %s: %v\n", what, err)
	d.failures = append(d.failures, what+": "+err.Error())
	return false
}

// verify is expect that prints only a failure (for checks of output already shown).
func (d *demo) verify(what string, err error) {
	if err != nil {
		d.expect(what, err)
	}
}

// onCleanup registers fn to run at teardown (last registered, first run).
func (d *demo) onCleanup(what string, fn func() (string, error)) {
	d.cleanups = append(d.cleanups, cleanup{what, fn})
}

// setup makes the temporary directory, picks the pin directory and finds (or builds) ztgate.
func (d *demo) setup() error {
	dir, err := os.MkdirTemp("", "ztgate-demo-")
	if err != nil {
		return err
	}
	d.dir = dir
	d.onCleanup("remove the demo directory", func() (string, error) {
		if err := os.RemoveAll(dir); err != nil {
			return "", err
		}
		return "removed the demo directory " + dir, nil
	})
	d.socket = filepath.Join(dir, "run", "ztgate.sock")
	d.pcap = filepath.Join(dir, "events.pcap")
	if d.opts.Pcap != "" {
		if d.pcap, err = filepath.Abs(d.opts.Pcap); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(d.pcap), 0o755); err != nil {
			return err
		}
	}
	pinDir := d.opts.PinDir
	if pinDir == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		pinDir = "/sys/fs/bpf/ztgate-demo-" + hex.EncodeToString(b[:])
	}
	if !filepath.IsAbs(pinDir) {
		return fmt.Errorf("pin directory %q: must be an absolute path", pinDir)
	}
	if _, err := os.Lstat(pinDir); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pin directory %s already exists: not ours, refusing to use it", pinDir)
	}
	d.pinDir = filepath.Clean(pinDir)
	if d.opts.Ztgate != "" {
		if d.bin, err = filepath.Abs(d.opts.Ztgate); err != nil {
			return err
		}
		if _, err := os.Stat(d.bin); err != nil {
			return fmt.Errorf("ztgate binary: %w", err)
		}
		return nil
	}
	return d.build()
}

// ---------------------------------------------------------------------------------------------
// Step 1: the lab network.

func (d *demo) buildLab() error {
	d.heading("Topology up: four devices plugged into a gateway, a cloud behind it")
	d.printf("Namespaces and veth pairs (testenv); devices route everything, even to each other, via the gateway.\n")
	start := time.Now()
	tp, err := testenv.Build(testenv.Config{
		Devices:  []testenv.DeviceSpec{{Name: "thermostat"}, {Name: "camera"}, {Name: "hvac-ctl"}, {Name: "intruder"}},
		Upstream: true,
	})
	if err != nil {
		return err
	}
	d.tp = tp
	d.onCleanup("remove the lab network", func() (string, error) {
		if err := tp.Close(); err != nil {
			return "", err
		}
		return "removed the lab network (namespaces " + d.nsPattern() + ", veths)", nil
	})
	d.thermo, d.cam, d.hvac, d.intruder = tp.Device("thermostat"), tp.Device("camera"), tp.Device("hvac-ctl"),
		tp.Device("intruder")
	d.cloud = tp.Upstream
	for _, dev := range tp.Devices {
		ll, err := linkLocal(dev)
		if err != nil {
			return err
		}
		d.linkLocal[dev.Name] = ll
	}
	d.drawLab()

	// The services the devices use: echo servers, closed by tp.Close.
	cloud, gw := d.cloud.NS, d.tp.Gateway
	for _, srv := range []struct {
		ns    *testenv.Namespace
		proto string
		port  int
	}{{cloud, "tcp", portMQTT}, {cloud, "udp", portCoAPS}, {cloud, "tcp", portHTTPS}, {gw, "udp", portDNS}} {
		var err error
		if srv.proto == "tcp" {
			_, err = srv.ns.EchoTCP(fmt.Sprintf(":%d", srv.port))
		} else {
			_, err = srv.ns.EchoUDP(fmt.Sprintf(":%d", srv.port))
		}
		if err != nil {
			return err
		}
	}
	d.printf("  (built in %v, echo servers on the cloud and the gateway). The policy will not know the\n",
		time.Since(start).Round(time.Millisecond))
	d.printf("  intruder, a rogue box on a free port; the camera will play a compromised device.\n")
	return nil
}

// nsPattern is the glob of the lab's namespace names.
func (d *demo) nsPattern() string { return "zt*-" + d.tp.ID + "*" }

// linkLocal is the IPv6 link-local address of a device (its kernel sends neighbour discovery
// from it, so the policy binds it too).
func linkLocal(dev *testenv.Device) (netip.Addr, error) {
	l, err := dev.NS.Netlink().LinkByIndex(dev.Ifindex)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: %w", dev.Name, err)
	}
	as, err := dev.NS.Netlink().AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: %w", dev.Name, err)
	}
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no IPv6 link-local address", dev.Name)
}

// drawLab prints the topology.
func (d *demo) drawLab() {
	cfg := d.tp.Config()
	for _, dev := range d.tp.Devices {
		d.printf("  %-10s  %s  %-10s  %-11s  on gateway port %s\n", dev.Name, dev.MAC, dev.IPv4[0], dev.IPv6[0],
			dev.Port.Name)
	}
	d.printf("  %-10s  netns %s, %s and %s on every device port: the agent runs here\n",
		"gateway", d.tp.Gateway.Name(), cfg.GatewayIPv4, cfg.GatewayIPv6)
	d.printf("  %-10s  netns %s, %s and %s, behind the uplink %s (not filtered)\n",
		"cloud", d.cloud.NS.Name(), d.cloud.IPv4, d.cloud.IPv6, d.cloud.Uplink.Name)
}

// ---------------------------------------------------------------------------------------------
// Step 3: the policy.

func (d *demo) applyPolicy() error {
	d.heading("Policy applied: validate, diff, apply")
	cfg := d.tp.Config()
	s := site{
		GatewayIPv4: cfg.GatewayIPv4.String(), GatewayIPv6: cfg.GatewayIPv6.String(),
		CloudIPv4: d.cloud.IPv4.String(), CloudIPv6: d.cloud.IPv6.String(),
	}
	for _, dev := range []*testenv.Device{d.thermo, d.cam, d.hvac} { // not the intruder
		sd := siteDevice{Name: dev.Name, MAC: dev.MAC.String(), Port: dev.Port.Name}
		for _, a := range dev.IPv4 {
			sd.IPv4 = append(sd.IPv4, a.String())
		}
		for _, a := range append(slices.Clone(dev.IPv6), d.linkLocal[dev.Name]) {
			sd.IPv6 = append(sd.IPv6, a.String())
		}
		s.Devices = append(s.Devices, sd)
	}
	doc, err := renderPolicy(s)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d.dir, "policy.yaml"), doc, 0o644); err != nil {
		return err
	}
	d.printf("The demo site's policy, rendered for the lab into policy.yaml (%d lines): thermostat (sensors),\n",
		strings.Count(string(doc), "\n"))
	d.printf("camera (cameras), hvac-ctl (controllers), no intruder. Nothing changes until the agent accepts it.\n")
	if _, err := d.show(0, nil, "policy", "validate", "policy.yaml"); err != nil {
		return err
	}
	if _, err := d.show(0, nil, "policy", "diff", "policy.yaml"); err != nil {
		return err
	}
	r, err := d.show(0, headLines(1, "the changes diff listed"), "policy", "apply", "policy.yaml")
	if err != nil {
		return err
	}
	var applyErr error
	if !strings.HasPrefix(r.stdout, "applied revision 0 -> 1 ") {
		applyErr = fmt.Errorf("apply said %q", firstLine(r.stdout))
	}
	d.expect("revision 1 is in force on every port (compiled, written to the maps, flipped at once)", applyErr)
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// ---------------------------------------------------------------------------------------------
// Step 8: stop the agent, uninstall, tear down.

func (d *demo) stopAndUninstall() error {
	d.heading("Agent stopped, enforcement stays; uninstall; teardown")
	brief := keepPrefixes("hash, devices, interfaces, map fill levels", "Agent:", "Policy:", "Applied:", "Events:")
	if _, err := d.show(0, brief, "status"); err != nil {
		return err
	}
	d.printf("  $ kill -TERM %d\n", d.agent.pid())
	start := time.Now()
	if err := d.agent.stop(stopTimeout); err != nil {
		return fmt.Errorf("stop the agent: %w", err)
	}
	d.expect(fmt.Sprintf("the agent exited cleanly after %v", time.Since(start).Round(time.Millisecond)), nil)
	if _, err := d.show(3, nil, "status"); err != nil { // 3: agent unreachable
		return err
	}
	d.expect("still allowed without the agent: thermostat → cloud "+hostPort(d.cloud.IPv4, portMQTT)+" TCP echo",
		d.echo(d.thermo, "tcp", hostPort(d.cloud.IPv4, portMQTT), "temp=21.4C"))
	d.expect("still dropped without the agent: camera → cloud "+hostPort(d.cloud.IPv4, portSSH)+" (SSH)",
		d.blockedTCP(d.cam, hostPort(d.cloud.IPv4, portSSH)))
	if _, err := d.show(0, nil, "uninstall", "--bpffs-dir", d.pinDir); err != nil {
		return err
	}
	return nil
}

// teardown undoes everything, in reverse order, and checks that nothing is left. It always
// runs (deferred by run).
func (d *demo) teardown() error {
	if d.step < totalSteps {
		d.step = totalSteps - 1
		d.heading("Tear down")
	} else {
		d.printf("\n")
	}
	var errs []error
	for i := len(d.cleanups) - 1; i >= 0; i-- {
		c := d.cleanups[i]
		did, err := c.fn()
		if err != nil {
			d.printf("  [FAIL] %s: %v\n", c.what, err)
			errs = append(errs, fmt.Errorf("%s: %w", c.what, err))
			continue
		}
		if did != "" {
			d.printf("  %s\n", did)
		}
	}
	d.cleanups = nil

	check := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
		d.expect(what, err)
	}
	var left []string
	if d.agent != nil {
		if !d.agent.exited() {
			left = append(left, fmt.Sprintf("agent process %d", d.agent.pid()))
		}
	}
	if d.tp != nil {
		entries, err := os.ReadDir(testenv.NetnsDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		for _, e := range entries {
			if strings.Contains(e.Name(), "-"+d.tp.ID) {
				left = append(left, filepath.Join(testenv.NetnsDir, e.Name()))
			}
		}
	}
	for _, p := range []string{d.pinDir, d.dir} {
		if p == "" {
			continue
		}
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			left = append(left, p)
		}
	}
	var leftErr error
	if len(left) > 0 {
		leftErr = fmt.Errorf("left behind: %s", strings.Join(left, ", "))
	}
	check("nothing left behind: no agent process, namespace, pin or temporary directory", leftErr)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	return nil
}
