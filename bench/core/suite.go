// Package core is what every section of ztgate's benchmark suite shares: the configuration,
// the report (its table and JSON), the statistics of interleaved rounds and the helpers that
// measure a program with BPF_PROG_TEST_RUN.
package core

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"
)

// Senders of the live section, the values of Config.LiveSender.
const (
	LiveSenderAuto     = "auto"     // the kernel's generator if the kernel allows live frames, else AF_PACKET
	LiveSenderKernel   = "kernel"   // BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES
	LiveSenderAFPacket = "afpacket" // an AF_PACKET socket with a TX ring and PACKET_QDISC_BYPASS
)

// LiveSenders lists the accepted values of Config.LiveSender.
var LiveSenders = []string{LiveSenderAuto, LiveSenderKernel, LiveSenderAFPacket}

// Config selects what runs and how long.
type Config struct {
	// Quick: reduced sizes and repeats (CI's `make bench-quick`): proves the suite runs, its
	// figures are not meant to be read.
	Quick bool
	// Ztgate is the path of the ztgate binary (agent + CLI) the control-plane section drives.
	Ztgate string
	// LiveSender is the live section's sender: LiveSenderAuto ("" too: the kernel's live frames
	// where the kernel allows them, else AF_PACKET), LiveSenderKernel or LiveSenderAFPacket.
	LiveSender string
	// Log receives progress lines.
	Log io.Writer
}

// Sizes returns full or quick, by Config.Quick.
func (c *Config) Sizes(full, quick []int) []int {
	if c.Quick {
		return quick
	}
	return full
}

// Pick returns full or quick, by Config.Quick.
func (c *Config) Pick(full, quick int) int {
	if c.Quick {
		return quick
	}
	return full
}

// QuickNote returns note when the run is quick, else "": the prefix of a target's note.
func (c *Config) QuickNote(note string) string {
	if c.Quick {
		return note
	}
	return ""
}

// Logf writes a progress line.
func (c *Config) Logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "bench: "+format+"\n", args...)
	}
}

// Section is one part of the suite.
type Section struct {
	Name string
	Desc string
	Run  func(ctx context.Context, cfg *Config, r *Report) error
}

// Run runs the sections named in names (all when names is empty), in the order of sections,
// and returns the report. A section that fails is recorded in Report.Errors and the others
// still run.
func Run(ctx context.Context, cfg *Config, sections []Section, names []string) *Report {
	r := &Report{Started: time.Now().UTC(), Host: HostInfo(), Quick: cfg.Quick}
	for _, s := range sections {
		if len(names) > 0 && !slices.Contains(names, s.Name) {
			continue
		}
		t0 := time.Now()
		cfg.Logf("%s: %s", s.Name, s.Desc)
		if err := s.Run(ctx, cfg, r); err != nil {
			cfg.Logf("%s: FAILED: %v", s.Name, err)
			r.Fail(s.Name, err)
		}
		cfg.Logf("%s: done in %s", s.Name, time.Since(t0).Round(time.Millisecond))
		if ctx.Err() != nil {
			r.Fail(s.Name, ctx.Err())
			break
		}
	}
	return r
}
