package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/testenv"
)

// TestDemo runs the whole demo (make demo) against the real agent and CLI, built by the
// demo itself, and checks that it succeeds, tells every step of the story and leaves nothing
// behind.
func TestDemo(t *testing.T) {
	testenv.RequirePriv(t)
	pinDir := testPinDir()
	pcap := filepath.Join(t.TempDir(), "events.pcap")
	var out bytes.Buffer
	defer func() {
		if t.Failed() {
			t.Logf("demo output:\n%s", out.String())
		}
	}()
	err := run(t.Context(), &out, Options{PinDir: pinDir, Pcap: pcap})
	text := out.String()
	checkLeftovers(t, text, pinDir)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	for i := 1; i <= totalSteps; i++ {
		if !strings.Contains(text, fmt.Sprintf("\n[%d/%d] ", i, totalSteps)) {
			t.Errorf("the output has no step %d/%d", i, totalSteps)
		}
	}
	for _, want := range []string{
		"$ nsenter --net=/run/netns/ztgw-",
		"Policy:  none (every frame is dropped as no_policy)",
		"fail closed: thermostat",
		"$ ztgate policy validate policy.yaml\n    policy.yaml: valid: policy \"demo-site\", 3 devices in 3 segments",
		"$ ztgate policy diff policy.yaml\n    changes against revision 0:",
		"$ ztgate policy apply policy.yaml\n    applied revision 0 -> 1 ",
		"Verdict:   pass (allow)",
		"Verdict:   drop (no_rule)",
		"$ ztgate events --limit 10\n    TIME ",
		"$ ztgate policy set-device camera.yaml\n    applied revision 1 -> 2 ",
		"Policy:     revision 2, \"demo-site\"",
		"the agent exited cleanly",
		"ztgate: agent unreachable at ",
		"still dropped without the agent",
		"$ ztgate uninstall --bpffs-dir " + pinDir + "\n    ztgate: detached the XDP programs",
		"nothing left behind",
		"All expectations held.",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the output does not say %q", want)
		}
	}
	for _, r := range attackReasons {
		if !strings.Contains(text, "blocked: drop/"+r+" on ") {
			t.Errorf("the output shows no attack dropped with reason %s", r)
		}
	}
	if strings.Contains(text, "[FAIL]") {
		t.Error("the output reports a failed expectation")
	}

	// The devices table lists the policy's devices (and not the intruder).
	_, table, _ := strings.Cut(text, "$ ztgate devices\n")
	table, _, _ = strings.Cut(table, "\n  [")
	for _, name := range []string{"thermostat", "camera", "hvac-ctl"} {
		if !regexp.MustCompile(`(?m)^    ` + regexp.QuoteMeta(name) + ` +\S+ +enforce `).MatchString(table) {
			t.Errorf("the devices table has no row for %s:\n%s", name, table)
		}
	}
	if strings.Contains(table, "intruder") {
		t.Errorf("the devices table lists the intruder:\n%s", table)
	}

	// The pcap: the count the demo printed, re-read here (-pcap keeps the file).
	m := regexp.MustCompile(`\[ok\] +(\d+) frames written to (\S+)\n`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("the output has no \"N frames written to FILE\" line")
	}
	n, _ := strconv.Atoi(m[1])
	if n == 0 || m[2] != pcap {
		t.Errorf("frames written: %q", m[0])
	}
	if got, err := countPcap(pcap); err != nil || got != n {
		t.Errorf("%s holds %d frames (err %v), the demo said %d", pcap, got, err, n)
	}
}

// TestDemoInterrupted cancels the demo (as Ctrl-C does) while the agent runs and enforces a
// policy: the demo must stop with an error and still remove everything it created.
func TestDemoInterrupted(t *testing.T) {
	testenv.RequirePriv(t)
	pinDir := testPinDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := &cancelAt{marker: "[4/8]", cancel: cancel}
	defer func() {
		if t.Failed() {
			t.Logf("demo output:\n%s", w.buf.String())
		}
	}()
	err := run(ctx, w, Options{PinDir: pinDir})
	text := w.buf.String()
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("run: %v, want an interruption", err)
	}
	if !strings.Contains(text, "applied revision 0 -> 1") || strings.Contains(text, "[5/8]") {
		t.Errorf("the demo was not interrupted in step 4")
	}
	for _, want := range []string{"stopped the agent (pid ", "uninstalled the datapath", "removed the lab network",
		"removed the demo directory"} {
		if !strings.Contains(text, want) {
			t.Errorf("the teardown does not say %q", want)
		}
	}
	checkLeftovers(t, text, pinDir)
}

// cancelAt is the demo's output; it cancels once marker was written.
type cancelAt struct {
	buf    bytes.Buffer
	marker string
	cancel context.CancelFunc
}

func (c *cancelAt) Write(p []byte) (int, error) {
	n, err := c.buf.Write(p)
	if strings.Contains(c.buf.String(), c.marker) {
		c.cancel()
	}
	return n, err
}

func testPinDir() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "/sys/fs/bpf/ztgate-demo-test-" + hex.EncodeToString(b[:])
}

// checkLeftovers checks that the run whose output is text left nothing behind: no pin
// directory, no namespace of its topology, no agent process, no demo directory.
func checkLeftovers(t *testing.T, text, pinDir string) {
	t.Helper()
	if _, err := os.Lstat(pinDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pin directory %s left behind (%v)", pinDir, err)
	}
	if m := regexp.MustCompile(`\$ cd (\S+) && export`).FindStringSubmatch(text); m == nil {
		t.Error("the output does not name the demo directory")
	} else if _, err := os.Lstat(m[1]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("demo directory %s left behind (%v)", m[1], err)
	}
	if m := regexp.MustCompile(`netns ztgw-(\w+)`).FindStringSubmatch(text); m == nil {
		t.Error("the output does not name the gateway namespace")
	} else {
		entries, err := os.ReadDir(testenv.NetnsDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.Contains(e.Name(), "-"+m[1]) {
				t.Errorf("namespace %s left behind", e.Name())
			}
		}
	}
	if m := regexp.MustCompile(`agent pid (\d+) ready`).FindStringSubmatch(text); m == nil {
		t.Error("the output does not name the agent's pid")
	} else if cmdline, err := os.ReadFile("/proc/" + m[1] + "/cmdline"); err == nil &&
		strings.Contains(string(cmdline), "agent.yaml") {
		t.Errorf("agent process %s left behind: %q", m[1], cmdline)
	}
}

// TestDecodeFrame: the one-line decoding of captured headers (no privileges needed).
func TestDecodeFrame(t *testing.T) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	dev, gw := mac("02:7a:64:00:00:02"), mac("02:7a:67:00:00:02")
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	host := func(m net.HardwareAddr, ip string) frames.Host { return frames.Host{MAC: m, IP: a(ip)} }
	for _, c := range []struct {
		frame []byte
		want  string
	}{
		{
			frame: frames.UDP(host(dev, "10.99.0.12"), host(gw, "192.0.2.2"), 40000, 7000, []byte("x")),
			want:  "IPv4 10.99.0.12 → 192.0.2.2 UDP 40000 → 7000",
		},
		{
			frame: frames.TCP(host(dev, "fd00:99::12"), host(gw, "2001:db8:99::2"), 40001, 22, true, nil),
			want:  "IPv6 fd00:99::12 → 2001:db8:99::2 TCP 40001 → 22 [SYN]",
		},
		{
			frame: frames.ARP(frames.Host{MAC: dev}, 2, dev, a("10.99.0.10"), a("10.99.0.1")),
			want:  "ARP reply 10.99.0.10 is-at 02:7a:64:00:00:02",
		},
		{
			frame: frames.ARP(frames.Host{MAC: dev}, 1, dev, a("10.99.0.13"), a("10.99.0.1")),
			want:  "ARP request who-has 10.99.0.1 tell 10.99.0.13",
		},
		{
			frame: frames.Echo(host(dev, "10.99.0.12"), host(gw, "10.99.0.1")),
			want:  "IPv4 10.99.0.12 → 10.99.0.1 ICMPv4 EchoRequest",
		},
	} {
		fi := decodeFrame(c.frame)
		if fi.Text != c.want {
			t.Errorf("decoded %q, want %q", fi.Text, c.want)
		}
		if !bytes.Equal(fi.SrcMAC, dev) {
			t.Errorf("%s: source MAC %s, want %s", c.want, fi.SrcMAC, dev)
		}
	}
	// Events capture at most 128 bytes: a cut frame still decodes its headers.
	long := frames.UDP(frames.Host{MAC: dev, IP: a("10.99.0.12")}, frames.Host{MAC: gw, IP: a("192.0.2.2")}, 1, 2,
		make([]byte, 500))
	if fi := decodeFrame(long[:128]); fi.DPort != 2 ||
		!strings.HasPrefix(fi.Text, "IPv4 10.99.0.12 → 192.0.2.2 UDP 1 → 2") {
		t.Errorf("cut frame decoded as %q", fi.Text)
	}
}
