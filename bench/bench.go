// Package bench is ztgate's benchmark suite (`make bench`): per-packet decision cost with
// BPF_PROG_TEST_RUN (cache-hot and cache-cold), receiver cost of live traffic over veth against
// the peers (xdp-filter, nftables, iptables), the control plane through the real agent, and the
// event path. Every figure that is compared is measured side by side in the same run and
// reported as a ratio. Each section is a package of its own; core holds what they share, and
// docs/benchmarks.md describes the methods.
package bench

import (
	"context"

	"github.com/ztgate/ztgate/bench/cold"
	"github.com/ztgate/ztgate/bench/control"
	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/bench/events"
	"github.com/ztgate/ztgate/bench/flows"
	"github.com/ztgate/ztgate/bench/hot"
	"github.com/ztgate/ztgate/bench/live"
)

// Config selects what runs and how long.
type Config = core.Config

// Section is one part of the suite.
type Section = core.Section

// Report collects the suite's results and target verdicts.
type Report = core.Report

// Senders of the live section, the values of Config.LiveSender.
const (
	LiveSenderAuto     = core.LiveSenderAuto
	LiveSenderKernel   = core.LiveSenderKernel
	LiveSenderAFPacket = core.LiveSenderAFPacket
)

// LiveSenders lists the accepted values of Config.LiveSender.
var LiveSenders = core.LiveSenders

// sections are the suite's sections in run order; the cold section reuses the fleets the hot
// one compiled.
var sections = []Section{control.Section, events.Section, hot.Section, cold.Section, flows.Section, live.Section}

// Sections lists the sections in run order.
func Sections() []Section { return append([]Section(nil), sections...) }

// Run runs the named sections (all when names is empty) and returns the report. A section that
// fails is recorded in Report.Errors and the others still run.
func Run(ctx context.Context, cfg *Config, names []string) *Report {
	return core.Run(ctx, cfg, sections, names)
}
