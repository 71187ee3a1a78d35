// Command ztgate-bench runs ztgate's benchmark suite (root): `make bench` (full) or
// `make bench-quick` (reduced, a smoke test of the suite). It prints a table of figures, ratios
// and target verdicts and writes the same as JSON. -live-sender picks the live section's sender
// (auto: the kernel's live frames where the kernel allows them, else an AF_PACKET TX ring).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ztgate/ztgate/bench"
)

// main parses the flags, runs the sections and writes the report.
func main() {
	quick := flag.Bool("quick", false, "reduced sizes and repeats (a smoke test of the suite)")
	out := flag.String("json", "bin/bench.json", "write the results as JSON to this file")
	ztgate := flag.String("ztgate", "bin/ztgate", "the ztgate binary (agent and CLI) for the control-plane section")
	only := flag.String("sections", "", "comma-separated sections to run (default: all)")
	list := flag.Bool("list", false, "list the sections and exit")
	sender := flag.String("live-sender", bench.LiveSenderAuto, "the live section's sender: "+
		strings.Join(bench.LiveSenders, ", ")+" (auto: the kernel's live frames where the kernel allows them, else afpacket)")
	flag.Parse()
	if !slices.Contains(bench.LiveSenders, *sender) {
		fmt.Fprintf(os.Stderr, "ztgate-bench: -live-sender %q: want one of %s\n", *sender,
			strings.Join(bench.LiveSenders, ", "))
		os.Exit(2)
	}
	if *list {
		for _, s := range bench.Sections() {
			fmt.Printf("%-8s %s\n", s.Name, s.Desc)
		}
		return
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "ztgate-bench: needs root (BPF, network namespaces)")
		os.Exit(1)
	}
	var names []string
	if *only != "" {
		names = strings.Split(*only, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := &bench.Config{Quick: *quick, Ztgate: *ztgate, LiveSender: *sender, Log: os.Stderr}
	t0 := time.Now()
	r := bench.Run(ctx, cfg, names)
	r.Print(os.Stdout)
	if err := r.WriteJSON(*out); err != nil {
		fmt.Fprintln(os.Stderr, "ztgate-bench:", err)
		os.Exit(1)
	}
	mode := map[bool]string{true: "quick", false: "full"}[*quick]
	fmt.Printf("\nresults written to %s (%s, %s)\n", *out, time.Since(t0).Round(time.Second), mode)
	if len(r.Errors) > 0 {
		os.Exit(1)
	}
}
