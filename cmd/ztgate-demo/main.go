// Command ztgate-demo is a guided tour of ztgate on a fresh Linux machine (run as root, or with
// `sudo make demo`). It drives the real binaries, as an operator would: it builds a small lab
// network of IoT devices behind a gateway out of network namespaces and veth pairs, starts
// `ztgate agent` inside the gateway's namespace, applies the demo site's policy
// (policy.yaml.tmpl, rendered for the lab) with `ztgate policy validate|diff|apply`, shows
// allowed traffic passing and attacks (lateral movement, a forbidden port, IP/ARP/MAC spoofing,
// a rogue device) being dropped, asks `ztgate policy explain`, `ztgate devices` and
// `ztgate events` (with a pcap), stops the agent (enforcement stays) and uninstalls the
// datapath. It removes everything it created on the way out, also on error or Ctrl-C.
//
// The exit status is 0 only if every expectation held.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ztgate/ztgate/loader"
)

func main() {
	mode := flag.String("mode", "auto", "XDP attach mode of the agent: auto (native, else generic), native or generic")
	pinDir := flag.String("pin-dir", "", "bpffs directory of the agent's pins (default: /sys/fs/bpf/ztgate-demo-<random>)")
	bin := flag.String("ztgate", "",
		"the ztgate binary (CLI and agent); empty: go build it into the demo's temporary directory")
	pcap := flag.String("pcap", "",
		"where `ztgate events --pcap` writes the drop events' frames "+
			"(default: in the temporary directory, removed at the end)")
	flag.Parse()
	m, err := loader.ParseMode(*mode)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ztgate-demo: %v\n", err)
		os.Exit(2)
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ztgate-demo: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "ztgate-demo: needs root (network namespaces, veths and XDP): sudo make demo")
		os.Exit(1)
	}

	// The first Ctrl-C (or SIGTERM) cancels ctx: the demo stops at the next check and tears
	// everything down. Later signals are swallowed until then, so teardown always completes.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err = run(ctx, os.Stdout, Options{Mode: m, PinDir: *pinDir, Ztgate: *bin, Pcap: *pcap})
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nztgate-demo: FAILED: %v\n", err)
		os.Exit(1)
	}
}
