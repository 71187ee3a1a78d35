package bench

import (
	"context"
	"fmt"
	"io"
	"time"
)

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

// Sections are registered by the section files (init), in run order.
var sections []Section

func register(s Section) { sections = append(sections, s) }

// Sections lists the registered sections.
func Sections() []Section { return append([]Section(nil), sections...) }

// Run runs the named sections (all when names is empty) and returns the report. A section that
// fails is recorded in Report.Errors and the others still run.
func Run(ctx context.Context, cfg *Config, names []string) *Report {
	r := &Report{Started: time.Now().UTC(), Host: HostInfo(), Quick: cfg.Quick}
	for _, s := range sections {
		if len(names) > 0 && !contains(names, s.Name) {
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

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
