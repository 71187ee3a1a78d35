// Command ztgate-demo is a guided tour of ztgate on a fresh Linux machine (run as root, or with
// `sudo make demo`): it builds a small lab network of IoT devices behind a gateway out of network
// namespaces and veth pairs, writes a policy for it, loads the XDP datapath, and shows allowed
// traffic passing and attacks (lateral movement, forbidden ports, MAC/IP/ARP spoofing, a rogue
// device) being dropped, with the drop events and counters the datapath reports. It removes
// everything it created on the way out, also on error or Ctrl-C.
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
	mode := flag.String("mode", "auto", "XDP attach mode: auto (native, else generic), native or generic")
	pinDir := flag.String("pin-dir", "", "bpffs directory for the datapath's pins (default: /sys/fs/bpf/ztgate-demo-<random>)")
	flag.Parse()
	m, err := loader.ParseMode(*mode)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ztgate-demo: %v\n", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "ztgate-demo: needs root (network namespaces, veths and XDP): sudo make demo")
		os.Exit(1)
	}

	// The first Ctrl-C (or SIGTERM) cancels ctx: the demo stops at the next check and tears
	// everything down. Later signals are swallowed until then, so teardown always completes.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err = run(ctx, os.Stdout, Options{Mode: m, PinDir: *pinDir})
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nztgate-demo: FAILED: %v\n", err)
		os.Exit(1)
	}
}
