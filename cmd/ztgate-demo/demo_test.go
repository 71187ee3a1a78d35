package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/internal/frames"
)

// TestDemo runs the whole demo (make demo) and checks that it succeeds, shows every attack's
// drop reason and leaves nothing behind.
func TestDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("ZTGATE_REQUIRE_PRIV") == "1" {
			t.Fatal("TestDemo needs root (network namespaces, veths, XDP); ZTGATE_REQUIRE_PRIV=1 forbids skipping")
		}
		t.Skip("TestDemo needs root (network namespaces, veths, XDP)")
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	pinDir := "/sys/fs/bpf/ztgate-demo-test-" + hex.EncodeToString(b[:])
	var out bytes.Buffer
	err := run(t.Context(), &out, Options{PinDir: pinDir})
	defer func() {
		if t.Failed() {
			t.Logf("demo output:\n%s", out.String())
		}
	}()
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	text := out.String()
	for _, r := range []bpf.Reason{bpf.ReasonNoRule, bpf.ReasonSpoofIP, bpf.ReasonARPSpoof, bpf.ReasonUnknownDevice, bpf.ReasonSpoofMACPort} {
		if !strings.Contains(text, "event: drop/"+r.String()+" ") {
			t.Errorf("the output shows no drop event with reason %s", r)
		}
	}
	for _, want := range []string{"[7/7]", "cleaned up", "All expectations held."} {
		if !strings.Contains(text, want) {
			t.Errorf("the output does not say %q", want)
		}
	}
	if strings.Contains(text, "[FAIL]") {
		t.Error("the output reports a failed expectation")
	}
	if _, err := os.Lstat(pinDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pin directory %s left behind (%v)", pinDir, err)
	}
}

// TestDecodeFrame: the one-line decoding of captured headers (no privileges needed).
func TestDecodeFrame(t *testing.T) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	dev, gw := mac("02:7a:64:00:00:02"), mac("02:7a:67:00:00:02")
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	for _, c := range []struct {
		frame []byte
		want  string
	}{
		{frames.UDP(frames.Host{MAC: dev, IP: a("10.99.0.12")}, frames.Host{MAC: gw, IP: a("192.0.2.2")}, 40000, 7000, []byte("x")),
			"IPv4 10.99.0.12 → 192.0.2.2 UDP 40000 → 7000"},
		{frames.TCP(frames.Host{MAC: dev, IP: a("fd00:99::12")}, frames.Host{MAC: gw, IP: a("2001:db8:99::2")}, 40001, 22, true, nil),
			"IPv6 fd00:99::12 → 2001:db8:99::2 TCP 40001 → 22 [SYN]"},
		{frames.ARP(frames.Host{MAC: dev}, 2, dev, a("10.99.0.10"), a("10.99.0.1")),
			"ARP reply 10.99.0.10 is-at 02:7a:64:00:00:02"},
		{frames.ARP(frames.Host{MAC: dev}, 1, dev, a("10.99.0.13"), a("10.99.0.1")),
			"ARP request who-has 10.99.0.1 tell 10.99.0.13"},
		{frames.Echo(frames.Host{MAC: dev, IP: a("10.99.0.12")}, frames.Host{MAC: gw, IP: a("10.99.0.1")}),
			"IPv4 10.99.0.12 → 10.99.0.1 ICMPv4 EchoRequest"},
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
	long := frames.UDP(frames.Host{MAC: dev, IP: a("10.99.0.12")}, frames.Host{MAC: gw, IP: a("192.0.2.2")}, 1, 2, make([]byte, 500))
	if fi := decodeFrame(long[:128]); fi.DPort != 2 || !strings.HasPrefix(fi.Text, "IPv4 10.99.0.12 → 192.0.2.2 UDP 1 → 2") {
		t.Errorf("cut frame decoded as %q", fi.Text)
	}
}
