// Package agent is ztgate's privileged daemon: it owns the datapath (loads, attaches and adopts
// the XDP program and its pinned maps), applies policies all-or-nothing, serves the local API on
// a unix socket and the Prometheus metrics, and reads the drop events.
//
// Start-up never opens a gap in enforcement: the maps (pinned, so they survive the agent) get
// the last applied policy from the state directory before the program is attached or swapped
// into an existing link, and the links are adopted with an atomic program update. Stopping the
// agent, gracefully or not, leaves the program and the policy in force; `ztgate uninstall`
// removes them.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ztgate/ztgate/agent/audit"
	"github.com/ztgate/ztgate/internal/buildinfo"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/metrics"
)

// Agent is a running agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	started time.Time

	store  *store
	unlock func()
	audit  *audit.Log
	dp     *loader.Datapath
	maps   *maps.Maps
	lim    maps.Limits

	unlockPins func() // releases the pin directory's owner lock (loader.LockPinDir)
	damage     damage // what was found damaged at start (reported until an apply)

	applyMu sync.Mutex // serialises policy changes
	// polMu guards the content of the policy and snapshot in force, which a device change
	// modifies in place (see changeDevice): readers of cur.pol and cur.snap hold it.
	polMu   sync.RWMutex
	cur     atomic.Pointer[current] // the policy in force (never nil after start)
	saved   *persisted              // what the state file holds, when known (under applyMu)
	journal *journal                // the device change journal, once opened (under applyMu)
	// journalBroken: a failed change's record could not be removed nor the journal folded;
	// device changes are refused until a whole apply (under applyMu).
	journalBroken bool

	access  access // who may use the API
	events  *hub
	metrics *metrics.Collector
	ready   atomic.Bool

	ifMu       sync.Mutex
	ifaces     map[string]ifaceState             // the protected interfaces by name
	ifnames    atomic.Pointer[map[uint32]string] // ifaces' names by ifindex (for events)
	progID     ebpf.ProgramID                    // the program the interfaces should run
	linkResubs atomic.Uint64                     // link event subscriptions that ended
	notified   atomic.Bool                       // READY=1 was sent to the service manager
	frames     frameSlab                         // captured bytes of events
}

// kernelFeatures lists what the datapath needs from the kernel (replaced in tests).
var kernelFeatures = loader.Features

// Run starts the agent and serves until ctx ends, then stops the agent, leaving enforcement in
// place.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	a, err := start(cfg, log)
	if err != nil {
		return err
	}
	defer a.close()
	return a.serve(ctx)
}

// start brings the datapath up in the order that keeps enforcement continuous.
func start(cfg Config, log *slog.Logger) (_ *Agent, err error) {
	a := &Agent{cfg: cfg, log: log, started: time.Now(), ifaces: map[string]ifaceState{}}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	// 0. Refuse to run unenforced: check the kernel before anything is pinned or attached.
	fs, err := kernelFeatures()
	if err != nil {
		return nil, err
	}
	if err := loader.CheckFeatures(fs); err != nil {
		return nil, fmt.Errorf("refusing to run unenforced: %w", err)
	}
	if a.store, err = openStore(cfg.StateDir); err != nil {
		return nil, err
	}
	if a.unlock, err = a.store.lock(); err != nil {
		return nil, err
	}
	lc := cfg.loaderConfig()
	if a.unlockPins, err = loader.LockPinDir(lc.PinDir); err != nil {
		return nil, err
	}
	if err = a.openAudit(); err != nil {
		return nil, err
	}
	if a.dp, err = loader.Open(lc); err != nil {
		return nil, err
	}
	if a.maps, err = maps.New(a.dp.Objects(), a.dp.MapSpecs()); err != nil {
		return nil, err
	}
	// Applies write only what changes (both policy slots stay populated): a small change to a
	// large policy costs one RCU grace period instead of three and no full rebuild.
	a.maps.SetIncremental(true)
	a.lim = maps.Limits{Devices: lc.MaxDevices, Addrs: lc.MaxAddrs, Rules: lc.MaxRules, Prefixes: lc.MaxPrefixes}
	a.metrics = metrics.New(source{a}, buildinfo.Version())

	// 1. Policy into the maps, before any program runs on a new link or replaces an old one.
	if err := a.restore(); err != nil {
		return nil, err
	}
	// 2. Program on every protected interface present (adopting pinned links with an atomic
	// update); the absent ones get it when they appear (watchLinks).
	if a.progID, err = a.dp.ProgramID(); err != nil {
		return nil, err
	}
	if err := a.reconcile(); err != nil {
		return nil, err
	}
	// 3. Events.
	a.events = newHub(cfg.EventHistory)
	if cfg.Events {
		rd, err := maps.OpenEvents(a.dp.Objects())
		if err != nil {
			return nil, err
		}
		rd.SetCoalesce(eventCoalesce)
		a.events.start(rd, a.toAPIEvent, log)
	}
	return a, nil
}

// serve runs the API and metrics servers and the housekeeping until ctx ends.
func (a *Agent) serve(ctx context.Context) error {
	ln, err := a.listenSocket()
	if err != nil {
		return err
	}
	api := &http.Server{
		Handler:           a.routes(),
		ConnContext:       withPeer,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 2)
	go func() { errc <- api.Serve(ln) }()

	var msrv *http.Server
	if a.cfg.MetricsAddress != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(a.metrics,
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mln, err := net.Listen("tcp", a.cfg.MetricsAddress)
		if err != nil {
			api.Close()
			return fmt.Errorf("metrics: listen %s: %w", a.cfg.MetricsAddress, err)
		}
		h := metrics.Handler(reg, func() bool { return a.isReady() && !a.damage.any() })
		if a.cfg.Pprof {
			mux := http.NewServeMux()
			mux.Handle("/", h)
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
			h = mux
			a.log.Warn("pprof enabled: the profiler is served on the metrics address", "address", a.cfg.MetricsAddress)
		}
		msrv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- msrv.Serve(mln) }()
		a.log.Info("metrics", "address", mln.Addr().String())
	}

	sweepCtx, stopSweep := context.WithCancel(ctx)
	defer stopSweep()
	go a.sweepFrags(sweepCtx)
	go a.sweepFlows(sweepCtx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		a.watchLinks(sweepCtx)
	}()
	defer func() { stopSweep(); <-watched }()

	a.ready.Store(true)
	cur := a.cur.Load()
	a.log.Info("ready", "socket", a.cfg.Socket, "revision", cur.meta.Revision, "pid", os.Getpid(),
		"version", buildinfo.Version())
	a.notifyReady()

	var runErr error
	select {
	case <-ctx.Done():
		a.log.Info("stopping: enforcement stays in place", "revision", a.cur.Load().meta.Revision)
	case runErr = <-errc:
		if errors.Is(runErr, http.ErrServerClosed) {
			runErr = nil
		}
	}
	a.ready.Store(false)
	a.notify("STOPPING=1\nSTATUS=stopping: enforcement stays in place")
	shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a.events.stop() // ends the event streams, so that Shutdown does not wait for them
	_ = api.Shutdown(shut)
	if msrv != nil {
		_ = msrv.Shutdown(shut)
	}
	_ = os.Remove(a.cfg.Socket)
	return runErr
}

// sweepFrags removes fragment records whose datagram never completed.
func (a *Agent) sweepFrags(ctx context.Context) {
	t := time.NewTicker(a.cfg.FragSweep)
	defer t.Stop()
	timeout := a.dp.Config().FragTimeout
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := a.maps.SweepFrags(timeout)
			if err != nil {
				a.log.Warn("sweep fragment table", "err", err)
			} else if n > 0 {
				a.log.Debug("swept stale fragment records", "removed", n)
			}
		}
	}
}

// flowSweepMax and flowSweepMin bound the interval between two sweeps of the flow table.
const (
	flowSweepMax = 10 * time.Second
	flowSweepMin = 100 * time.Millisecond
)

// flowSweepInterval is how often the flow table is swept: every flowSweepMax, or four times per
// shortest lifetime when that is shorter, but not more often than every flowSweepMin.
func flowSweepInterval(l maps.FlowLifetimes) time.Duration {
	return max(min(flowSweepMax, l.Shortest()/4), flowSweepMin)
}

// flowLifetimes are the flow lifetimes the datapath was loaded with.
func (a *Agent) flowLifetimes() maps.FlowLifetimes {
	c := a.dp.Config()
	return maps.FlowLifetimes{TCP: c.FlowTCP, UDP: c.FlowUDP, Other: c.FlowOther}
}

// sweepFlows removes the flows no packet came back for within their lifetime, giving them back
// to their device's quota, until ctx ends.
func (a *Agent) sweepFlows(ctx context.Context) {
	lim := a.flowLifetimes()
	t := time.NewTicker(flowSweepInterval(lim))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.sweepFlowsOnce(lim)
		}
	}
}

// sweepFlowsOnce sweeps the flow table once and returns how many flows it removed.
func (a *Agent) sweepFlowsOnce(lim maps.FlowLifetimes) int {
	now, err := maps.Now()
	if err != nil {
		a.log.Warn("sweep flow table", "err", err)
		return 0
	}
	n, err := a.maps.SweepFlows(now, lim)
	if err != nil {
		a.log.Warn("sweep flow table", "err", err)
	} else if n > 0 {
		a.log.Debug("swept idle flows", "removed", n)
	}
	return n
}

// close releases the agent's resources; pins, links and the policy stay.
func (a *Agent) close() {
	if a.events != nil {
		a.events.stop()
	}
	if a.maps != nil {
		a.maps.Close()
	}
	if a.dp != nil {
		if err := a.dp.Close(); err != nil {
			a.log.Warn("close datapath", "err", err)
		}
	}
	if a.audit != nil {
		a.audit.Close()
	}
	if a.journal != nil {
		a.journal.f.Close()
	}
	if a.unlockPins != nil {
		a.unlockPins()
	}
	if a.unlock != nil {
		a.unlock()
	}
}
