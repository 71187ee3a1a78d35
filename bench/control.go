package bench

// Section "control": the control plane through the real agent and the real CLI. A testenv
// topology is protected by `ztgate agent` (run in the gateway namespace with nsenter, as an
// operator would run it), and generated policies of N devices are pushed with `ztgate policy
// apply`. Measured per N: the wall time of a full apply from the push to the CLI's return (the
// agent answers after the flip and the RCU barrier: the policy is enforced), the agent-side
// duration and its breakdown (from the agent's "policy applied" log record), one-device changes,
// the kernel memory of the policy maps per device and the agent's peak RSS. In-process: the
// atomic swap (maps.Apply) itself.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"gopkg.in/yaml.v3"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/maps"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

func init() {
	register(Section{
		Name: "control",
		Desc: "control plane through the real agent and CLI: full apply, one-device change, atomic swap, kernel memory and agent RSS per N",
		Run:  runControl,
	})
}

// Targets of the issue.
const (
	ctlTargetFull1M     = 1500 * time.Millisecond // 1M devices enforced after the push
	ctlTargetFull100k   = 200 * time.Millisecond  // 100k devices
	ctlTargetChangeP99  = 20 * time.Millisecond   // one-device change, end to end
	ctlTargetBytesPerDv = 200.0                   // kernel memory per configured device
	ctlTargetRSS100kMB  = 100.0                   // agent peak RSS at 100k devices
)

// ctlSegments is the number of segments of a generated policy.
const ctlSegments = 8

// ctlWritePolicy writes a policy of n devices in ctlSegments segments: each segment allows
// three rules (a CIDR with two ports, NTP to the gateway, ICMP within the segment), each device
// one more rule of its own; every device has a distinct MAC and IPv4 address, one in four an
// IPv6 address too; no device is bound to a port, so any n compiles on any topology. Device i's
// own rule is to port base+i%4 (so changing base changes every device). Devices are written
// one per line in YAML flow style (about 157 bytes each).
func ctlWritePolicy(path string, n, base int) (int64, error) {
	return ctlWriteFile(path, func(w *bufio.Writer) {
		w.WriteString("apiVersion: ztgate/v1\nkind: Policy\nmetadata:\n  name: bench\nspec:\n  gateway:\n" +
			"    ipv4: [10.0.0.1]\n    ipv6: [\"fd00::1\"]\n    services: [dns]\n  segments:\n")
		for s := range ctlSegments {
			fmt.Fprintf(w, "    - name: s%d\n      allow:\n"+
				"        - {to: {cidr: 203.0.%d.0/24}, proto: tcp, ports: [443, 8883]}\n"+
				"        - {to: {gateway: true}, proto: udp, ports: [123]}\n"+
				"        - {to: {segment: s%d}, proto: icmp}\n", s, 100+s, s)
		}
		w.WriteString("  devices:\n")
		var b []byte
		for i := range n {
			port := base + i%4
			b = append(b[:0], "    - {name: d"...)
			b = strconv.AppendInt(b, int64(i), 10)
			b = fmt.Appendf(b, ", mac: \"02:20:%02x:%02x:%02x:%02x\", ipv4: [%s]", byte(i>>24), byte(i>>16), byte(i>>8), byte(i), ctlV4(i))
			if i%4 == 0 {
				b = fmt.Appendf(b, ", ipv6: [\"fd00:20::%x:%x\"]", (i+1)>>16, (i+1)&0xffff)
			}
			b = fmt.Appendf(b, ", segment: s%d, allow: [{to: {cidr: 198.51.100.0/24}, proto: tcp, ports: [%d]}]}\n", i%ctlSegments, port)
			w.Write(b)
		}
	})
}

// ctlWritePolicyJSON writes the policy of ctlWritePolicy(path, n, base) as JSON, one device a
// line (about 180 bytes each): the format a program generating a fleet's policy writes, which
// the agent decodes without yaml.v3 (see policy.Parse).
func ctlWritePolicyJSON(path string, n, base int) (int64, error) {
	return ctlWriteFile(path, func(w *bufio.Writer) {
		w.WriteString(`{"apiVersion": "ztgate/v1", "kind": "Policy", "metadata": {"name": "bench"}, "spec": {` + "\n" +
			`"gateway": {"ipv4": ["10.0.0.1"], "ipv6": ["fd00::1"], "services": ["dns"]},` + "\n" + `"segments": [`)
		for s := range ctlSegments {
			if s > 0 {
				w.WriteString(",")
			}
			fmt.Fprintf(w, "\n"+`{"name": "s%d", "allow": [{"to": {"cidr": "203.0.%d.0/24"}, "proto": "tcp", "ports": [443, 8883]}, `+
				`{"to": {"gateway": true}, "proto": "udp", "ports": [123]}, {"to": {"segment": "s%d"}, "proto": "icmp"}]}`, s, 100+s, s)
		}
		w.WriteString("],\n" + `"devices": [`)
		var b []byte
		for i := range n {
			b = b[:0]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, "\n{\"name\": \"d"...)
			b = strconv.AppendInt(b, int64(i), 10)
			b = fmt.Appendf(b, `", "mac": "02:20:%02x:%02x:%02x:%02x", "ipv4": ["%s"]`, byte(i>>24), byte(i>>16), byte(i>>8), byte(i), ctlV4(i))
			if i%4 == 0 {
				b = fmt.Appendf(b, `, "ipv6": ["fd00:20::%x:%x"]`, (i+1)>>16, (i+1)&0xffff)
			}
			b = fmt.Appendf(b, `, "segment": "s%d", "allow": [{"to": {"cidr": "198.51.100.0/24"}, "proto": "tcp", "ports": [%d]}]}`, i%ctlSegments, base+i%4)
			w.Write(b)
		}
		w.WriteString("\n]}}\n")
	})
}

// ctlWriteFile creates path, writes it with write (buffered) and returns its size.
func ctlWriteFile(path string, write func(w *bufio.Writer)) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	write(w)
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, err
	}
	return st.Size(), f.Close()
}

// ctlDeviceDoc is device i of ctlWritePolicy as a device document (`policy set-device`), its
// own rule to port.
func ctlDeviceDoc(i, port int) []byte {
	b := fmt.Appendf(nil, "{name: d%d, mac: \"02:20:%02x:%02x:%02x:%02x\", ipv4: [%s]", i, byte(i>>24), byte(i>>16), byte(i>>8), byte(i), ctlV4(i))
	if i%4 == 0 {
		b = fmt.Appendf(b, ", ipv6: [\"fd00:20::%x:%x\"]", (i+1)>>16, (i+1)&0xffff)
	}
	return fmt.Appendf(b, ", segment: s%d, allow: [{to: {cidr: 198.51.100.0/24}, proto: tcp, ports: [%d]}]}\n", i%ctlSegments, port)
}

// ctlV4 is device i's IPv4 address (distinct for i < 2^24 - 2^20).
func ctlV4(i int) string {
	return fmt.Sprintf("10.%d.%d.%d", 16+(i>>16)&0xff, byte(i>>8), byte(i))
}

// ctlAgent is a running `ztgate agent` in the gateway namespace of a topology.
type ctlAgent struct {
	bin     string
	socket  string
	pinDir  string
	cmd     *exec.Cmd
	log     *ctlBuffer
	done    chan struct{}
	waitErr error
}

// ctlBuffer is the agent's output.
type ctlBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *ctlBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *ctlBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ctlPinDir is a fresh bpffs directory for one agent or datapath of the suite.
func ctlPinDir(what string) string {
	return filepath.Join("/sys/fs/bpf", fmt.Sprintf("zt-bench-%s-%d-%d", what, os.Getpid(), time.Now().UnixNano()%1e9))
}

// ctlStartAgent writes an agent configuration protecting every device port of tp (state,
// socket and config under dir, pins in a fresh bpffs directory), adjusted by edit, starts the
// agent and waits until it is ready. The caller must stop it.
func ctlStartAgent(ctx context.Context, bin string, tp *testenv.Topology, dir string, edit func(*agent.Config)) (*ctlAgent, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	a := &ctlAgent{bin: bin, socket: filepath.Join(dir, "run", "ztgate.sock"), pinDir: ctlPinDir("agent"),
		log: &ctlBuffer{}, done: make(chan struct{})}
	ac := agent.DefaultConfig()
	for _, d := range tp.Devices {
		ac.Interfaces = append(ac.Interfaces, d.Port.Name)
	}
	ac.StateDir = filepath.Join(dir, "state")
	ac.BPFFSDir = a.pinDir
	ac.Socket = a.socket
	ac.MetricsAddress = ""
	ac.LogFormat = "json"
	if edit != nil {
		edit(&ac)
	}
	data, err := yaml.Marshal(ac)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		return nil, err
	}
	// nsenter (not `ip netns exec`, which remounts /sys and hides bpffs) execs the agent: the
	// process id is the agent's.
	a.cmd = exec.Command("nsenter", "--net="+tp.Gateway.Path(), "--", bin, "agent", "--config", cfgPath)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	go func() { a.waitErr = a.cmd.Wait(); close(a.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err := a.status(ctx); err == nil && st.Ready {
			return a, nil
		}
		select {
		case <-a.done:
			a.uninstall()
			return nil, fmt.Errorf("agent exited during start-up (%v):\n%s", a.waitErr, a.log.String())
		case <-ctx.Done():
			a.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.stop()
			return nil, fmt.Errorf("agent not ready after 30s:\n%s", a.log.String())
		}
	}
}

// cli runs the CLI against the agent; a non-zero exit is an error carrying stderr.
func (a *ctlAgent) cli(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, a.bin, append([]string{"--socket", a.socket, "--timeout", "0"}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.Bytes(), fmt.Errorf("ztgate %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(e.String()))
	}
	return o.Bytes(), nil
}

func (a *ctlAgent) status(ctx context.Context) (api.Status, error) {
	var st api.Status
	out, err := a.cli(ctx, "status", "-o", "json")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

// ctlApplied is one apply as the CLI and the agent saw it.
type ctlApplied struct {
	wall   time.Duration // exec of the CLI (policy apply, policy set-device) to its exit
	res    api.ApplyResult
	phases ctlPhases
}

// ctlPhases is the breakdown the agent logs with "policy applied" or "device changed"
// (nanoseconds).
type ctlPhases struct {
	Duration int64 `json:"duration"`
	Bytes    int64 `json:"bytes"`
	Phases   struct {
		Hash, Parse, Compile, Persist, Maps, Compare int64
		CompareWait                                  int64 `json:"compare_wait"`
		Prepare, Journal                             int64 // a device change's
	} `json:"phases"`
	Maps struct {
		Build, Slot, Flip, Barrier, Release int64
	} `json:"maps"`
	Rev uint64 `json:"new_revision"`
}

// apply pushes the policy file path with the CLI and returns its timings.
func (a *ctlAgent) apply(ctx context.Context, path string) (ctlApplied, error) {
	var ap ctlApplied
	t0 := time.Now()
	out, err := a.cli(ctx, "policy", "apply", path, "-o", "json")
	ap.wall = time.Since(t0)
	if err != nil {
		return ap, err
	}
	if err := json.Unmarshal(out, &ap.res); err != nil {
		return ap, fmt.Errorf("policy apply -o json: %w", err)
	}
	ap.phases, err = a.waitPhases("policy applied", ap.res.NewRevision)
	return ap, err
}

// waitPhases waits for the agent's log record msg of revision rev: the agent logs it before
// it answers, but its output reaches us through a pipe.
func (a *ctlAgent) waitPhases(msg string, rev uint64) (ctlPhases, error) {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if ph, ok := a.phases(msg, rev); ok {
			return ph, nil
		}
		if time.Now().After(deadline) {
			return ctlPhases{}, fmt.Errorf("no %q log record of revision %d", msg, rev)
		}
	}
}

// setDevice changes one device with `ztgate policy set-device`.
func (a *ctlAgent) setDevice(ctx context.Context, path string) (ctlApplied, error) {
	var ap ctlApplied
	t0 := time.Now()
	out, err := a.cli(ctx, "policy", "set-device", path, "-o", "json")
	ap.wall = time.Since(t0)
	if err != nil {
		return ap, err
	}
	if err := json.Unmarshal(out, &ap.res); err != nil {
		return ap, fmt.Errorf("policy set-device -o json: %w", err)
	}
	ap.phases, err = a.waitPhases("device changed", ap.res.NewRevision)
	return ap, err
}

// phases finds the agent's log record msg of revision rev (the agent logs it before it
// answers).
func (a *ctlAgent) phases(msg string, rev uint64) (ctlPhases, bool) {
	a.log.mu.Lock()
	data := a.log.b.Bytes()
	// The record is near the end: search backwards line by line.
	for len(data) > 0 {
		i := bytes.LastIndexByte(data[:len(data)-1], '\n')
		line := data[i+1:]
		data = data[:i+1]
		if bytes.Contains(line, []byte(`"msg":"`+msg+`"`)) {
			var ph ctlPhases
			if json.Unmarshal(line, &ph) == nil && ph.Rev == rev {
				a.log.mu.Unlock()
				return ph, true
			}
		}
		if i < 0 {
			break
		}
	}
	a.log.mu.Unlock()
	return ctlPhases{}, false
}

// stop ends the agent (SIGTERM, then SIGKILL) and removes its datapath.
func (a *ctlAgent) stop() error {
	var errs []error
	select {
	case <-a.done:
	default:
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
			if a.waitErr != nil {
				errs = append(errs, fmt.Errorf("agent exit: %w", a.waitErr))
			}
		case <-time.After(15 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.done
			errs = append(errs, errors.New("agent did not stop within 15s of SIGTERM"))
		}
	}
	errs = append(errs, a.uninstall())
	return errors.Join(errs...)
}

func (a *ctlAgent) uninstall() error {
	out, err := exec.Command(a.bin, "uninstall", "--bpffs-dir", a.pinDir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ztgate uninstall: %w: %s", err, out)
	}
	return nil
}

// ctlVmHWM is the peak resident set size of process pid, in bytes.
func ctlVmHWM(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/<pid>/status")
}

// ctlKernelMem is the kernel memory (memlock) of a datapath's policy maps, read from its pins.
type ctlKernelMem struct {
	kind     [4]uint64 // inner maps of the active slot, by kind (devices, addrs, prefixes, rules)
	entries  [4]int    // their max_entries
	inactive uint64    // inner maps of the other slot that the active slot does not share
	devstats uint64    // zt_devstats (a row of max_devices+1 entries per CPU)
}

func (km ctlKernelMem) active() uint64 { return km.kind[0] + km.kind[1] + km.kind[2] + km.kind[3] }

var ctlOuterPins = [4]string{bpf.ZtgateMapZtDevices, bpf.ZtgateMapZtAddrs, bpf.ZtgateMapZtPrefixes, bpf.ZtgateMapZtRules}

func ctlReadKernelMem(pinDir string) (ctlKernelMem, error) {
	var km ctlKernelMem
	dir := loader.LayoutDir(pinDir)
	info := func(m *ebpf.Map) (uint64, uint32, error) {
		mi, err := m.Info()
		if err != nil {
			return 0, 0, err
		}
		b, _ := mi.Memlock() // 0 for an empty LPM trie
		return b, mi.MaxEntries, nil
	}
	active, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.ZtgateMapZtActive), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return km, err
	}
	var slot uint32
	err = active.Lookup(uint32(0), &slot)
	active.Close()
	if err != nil {
		return km, err
	}
	slot &= 1
	var ids [2][4]uint32
	for k, name := range ctlOuterPins {
		outer, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return km, err
		}
		for s := range uint32(2) {
			_ = outer.Lookup(s, &ids[s][k]) // a slot never written has no entry
		}
		outer.Close()
	}
	seen := map[uint32]bool{}
	for _, s := range []uint32{slot, 1 - slot} {
		for k, id := range ids[s] {
			if id == 0 || seen[id] {
				continue
			}
			seen[id] = true
			inner, err := ebpf.NewMapFromID(ebpf.MapID(id))
			if err != nil {
				return km, fmt.Errorf("%s[%d]: %w", ctlOuterPins[k], s, err)
			}
			b, n, err := info(inner)
			inner.Close()
			if err != nil {
				return km, err
			}
			if s == slot {
				km.kind[k], km.entries[k] = b, int(n)
			} else {
				km.inactive += b
			}
		}
	}
	ds, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.ZtgateMapZtDevstats), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return km, err
	}
	defer ds.Close()
	km.devstats, _, err = info(ds)
	return km, err
}

// ctlMemFloor is the kernel memory (memlock) of bare maps that hold the least a datapath binding
// identities and serving device/segment rules must keep: a hash from MAC to a 4-byte id, a hash
// from each bound address to a 4-byte id, and 6 counters per device in a plain array.
type ctlMemFloor struct{ dev, addr, counters uint64 }

func (f ctlMemFloor) total() uint64 { return f.dev + f.addr + f.counters }

func ctlKernelMemFloor(devices, addrs int) (ctlMemFloor, error) {
	var f ctlMemFloor
	for _, m := range []struct {
		spec *ebpf.MapSpec
		out  *uint64
	}{
		{&ebpf.MapSpec{Name: "bench_fl_dev", Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: uint32(devices)}, &f.dev},
		{&ebpf.MapSpec{Name: "bench_fl_addr", Type: ebpf.Hash, KeySize: 16, ValueSize: 4, MaxEntries: uint32(max(addrs, 1))}, &f.addr},
		{&ebpf.MapSpec{Name: "bench_fl_ctr", Type: ebpf.Array, KeySize: 4, ValueSize: 48, MaxEntries: uint32(devices)}, &f.counters},
	} {
		mp, err := ebpf.NewMap(m.spec)
		if err != nil {
			return f, err
		}
		info, err := mp.Info()
		mp.Close()
		if err != nil {
			return f, err
		}
		b, ok := info.Memlock()
		if !ok {
			return f, errors.New("kernel reports no memlock")
		}
		*m.out = b
	}
	return f, nil
}

func ctlMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func ctlNsMs(ns int64) float64      { return float64(ns) / 1e6 }

func ctlCount(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// ctlPlan is what is measured at n devices besides the full apply from no policy.
type ctlPlan struct {
	replace bool          // a second full apply that changes every device's rules
	changes int           // one-device changes wanted
	min     int           // ... at least, whatever the budget
	budget  time.Duration // time for the changes
}

func ctlPlanFor(cfg *Config, n int) ctlPlan {
	if cfg.Quick {
		if n == 10000 {
			return ctlPlan{replace: true, changes: 50, min: 10, budget: 10 * time.Second}
		}
		return ctlPlan{replace: true}
	}
	switch n {
	case 10000, 100000:
		return ctlPlan{replace: true, changes: 200, min: 50, budget: 30 * time.Second}
	case 1000000:
		// One YAML full apply only (it takes most of a minute here): a.yaml replaces b.json.
		return ctlPlan{changes: 200, min: 50, budget: 30 * time.Second}
	}
	return ctlPlan{replace: true}
}

func runControl(ctx context.Context, cfg *Config, r *Report) error {
	bin, err := ctlBinary(cfg)
	if err != nil {
		return err
	}
	tp, err := testenv.Build(testenv.Config{Devices: []testenv.DeviceSpec{{Name: "ctl0"}, {Name: "ctl1"}}})
	if err != nil {
		return err
	}
	defer tp.Close()
	dir, err := os.MkdirTemp("", "ztgate-bench-control-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	sizes := cfg.Sizes([]int{1000, 10000, 100000, 1000000}, []int{1000, 10000})
	for _, n := range sizes {
		if err := ctx.Err(); err != nil {
			return err
		}
		ch, err := ctlAtSize(ctx, cfg, r, bin, tp, filepath.Join(dir, "n"+strconv.Itoa(n)), n)
		if err != nil {
			return fmt.Errorf("%s devices: %w", ctlCount(n), err)
		}
		if ch.n > 0 {
			r.Check("control", fmt.Sprintf("one-device change p99 at %s devices <= 20 ms", ctlCount(n)), ch.isoP99, "<=",
				ctlMs(ctlTargetChangeP99), "ms", fmt.Sprintf("%d changes %d ms apart, end to end through the CLI; back to back the p99 is %.1f ms: each change then waits out the RCU grace period the previous one started",
					ch.n, ctlChangeGap/time.Millisecond, ch.b2bP99))
		}
	}
	return ctlSwap(ctx, cfg, r)
}

// ctlBinary is the absolute path of the ztgate binary.
func ctlBinary(cfg *Config) (string, error) {
	if cfg.Ztgate == "" {
		return "", errors.New("no ztgate binary (Config.Ztgate, -ztgate): build it with go build -o bin/ztgate ./cmd/ztgate")
	}
	bin, err := filepath.Abs(cfg.Ztgate)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		return "", fmt.Errorf("ztgate binary %s: not found (go build -o bin/ztgate ./cmd/ztgate)", bin)
	}
	return bin, nil
}

// ctlChangeGap separates the isolated one-device changes: longer than the grace periods
// measured here (see ctlGracePeriods).
const ctlChangeGap = 50 * time.Millisecond

// ctlChanges is what the one-device changes at one size gave.
type ctlChanges struct {
	isoP99, b2bP99 float64 // ms, isolated and back to back
	n              int     // isolated changes
}

// ctlAtSize runs an agent sized for n devices and measures the full applies, kernel memory,
// RSS and the one-device changes (ctlPlanFor says how many); it returns what the changes gave.
func ctlAtSize(ctx context.Context, cfg *Config, r *Report, bin string, tp *testenv.Topology, dir string, n int) (ctlChanges, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ctlChanges{}, err
	}
	defer os.RemoveAll(dir)
	plan := ctlPlanFor(cfg, n)
	t0 := time.Now()
	// The full applies, in this order: a.json (from no policy), b.json (every device's rule
	// changes), then a.yaml (every rule changes back) and b.yaml. a and b differ in every
	// device's own rule (base port 1000 or 2000).
	docs := map[string]int{"a.json": 1000, "b.json": 2000, "a.yaml": 1000}
	fullDocs := []string{"a.json", "b.json", "a.yaml"}
	base := "a.yaml"
	if plan.replace {
		docs["b.yaml"] = 2000
		fullDocs = append(fullDocs, "b.yaml")
		base = "b.yaml"
	}
	var docBytes int64
	docSize := map[string]int64{}
	for name, v := range docs {
		write := ctlWritePolicy
		if filepath.Ext(name) == ".json" {
			write = ctlWritePolicyJSON
		}
		sz, err := write(filepath.Join(dir, name), n, v)
		if err != nil {
			return ctlChanges{}, err
		}
		docBytes, docSize[filepath.Ext(name)] = max(docBytes, sz), sz
	}
	perDevice := float64(docSize[".yaml"]) / float64(n)
	cfg.Logf("control: %s devices: documents of %.1f MB YAML (%.0f B/device), %.1f MB JSON written in %s", ctlCount(n),
		float64(docSize[".yaml"])/1e6, perDevice, float64(docSize[".json"])/1e6, time.Since(t0).Round(time.Millisecond))
	yf, err := ctlYAMLFloor(filepath.Join(dir, "a.yaml"))
	if err != nil {
		return ctlChanges{}, err
	}
	r.Add(Result{Section: "control", Name: fmt.Sprintf("YAML decoding alone, %s devices", ctlCount(n)), Value: ctlMs(yf.took), Unit: "ms",
		Note: fmt.Sprintf("in the bench process: yaml.v3 decoding the %.1f MB document into its node tree, the first step of any YAML apply (no validation, no compile); the tree holds %.0f MB of live heap",
			float64(docSize[".yaml"])/1e6, yf.liveMB)})
	cfg.Logf("control: %s devices: yaml.v3 node tree in %s, %.0f MB live", ctlCount(n), yf.took.Round(time.Millisecond), yf.liveMB)
	limit := policy.MaxDocumentSize
	raised := int64(limit) < docBytes
	if raised {
		limit = int(docBytes+docBytes/4+(1<<20)-1) &^ (1<<20 - 1)
	}
	a, err := ctlStartAgent(ctx, bin, tp, filepath.Join(dir, "agent"), func(c *agent.Config) {
		c.MaxDevices = n
		c.MaxAddrs = n + n/4 + 16
		c.MaxPolicyBytes = limit
	})
	if err != nil {
		return ctlChanges{}, err
	}
	defer func() {
		if a != nil {
			a.stop()
		}
	}()
	name := ctlCount(n)
	limitNote := ""
	if raised {
		limitNote = fmt.Sprintf("; documents up to %.0f MB: max_policy_bytes raised to %d MiB (the 16 MiB default holds about %s devices of this generator's YAML)",
			float64(docBytes)/1e6, limit>>20, ctlCount(int(float64(policy.MaxDocumentSize)/perDevice)/1000*1000))
	}

	// Full applies: the JSON documents (from no policy, then every device's rule changes), the
	// agent's peak RSS after them, then the YAML documents (every rule changes each time).
	var fulls, yamls []ctlApplied
	var hwmJSON float64
	for i, doc := range fullDocs {
		ap, err := a.apply(ctx, filepath.Join(dir, doc))
		if err != nil {
			return ctlChanges{}, err
		}
		format := strings.ToUpper(filepath.Ext(doc)[1:])
		what := "replacing every device's rules"
		if i == 0 {
			what = "from no policy"
		}
		if format == "JSON" {
			fulls = append(fulls, ap)
		} else {
			yamls = append(yamls, ap)
		}
		cfg.Logf("control: %s devices: full apply of the %s document %s: %s (agent %s)", name, format, what, ap.wall.Round(time.Millisecond),
			time.Duration(ap.res.Duration).Round(time.Millisecond))
		ph := ap.phases
		r.Add(Result{Section: "control", Name: fmt.Sprintf("full apply, %s, %s, %s devices", format, what, name), Value: ctlMs(ap.wall), Unit: "ms",
			Note: fmt.Sprintf("push to CLI return (%.1f MB document); agent %.0f ms = parse %.0f + compile %.0f + persist %.0f + maps %.0f (build %.0f, slot %.0f, flip %.2f, barrier %.1f, release %.1f) + waiting for the change listing %.0f (%.0f on another CPU) + hash %.0f%s",
				float64(docSize[filepath.Ext(doc)])/1e6, ctlMs(ap.res.Duration), ctlNsMs(ph.Phases.Parse), ctlNsMs(ph.Phases.Compile), ctlNsMs(ph.Phases.Persist), ctlNsMs(ph.Phases.Maps),
				ctlNsMs(ph.Maps.Build), ctlNsMs(ph.Maps.Slot), ctlNsMs(ph.Maps.Flip), ctlNsMs(ph.Maps.Barrier), ctlNsMs(ph.Maps.Release),
				ctlNsMs(ph.Phases.CompareWait), ctlNsMs(ph.Phases.Compare), ctlNsMs(ph.Phases.Hash), limitNote)})
		if i == 1 {
			st, err := a.status(ctx)
			if err != nil {
				return ctlChanges{}, err
			}
			if hwmJSON, err = ctlVmHWM(st.PID); err != nil {
				return ctlChanges{}, fmt.Errorf("agent RSS: %w", err)
			}
		}
	}
	// The target: the slower of the JSON full applies (the YAML ones are listed above).
	worst := slices.MaxFunc(fulls, func(a, b ctlApplied) int { return cmp.Compare(a.wall, b.wall) })
	worstYAML := slices.MaxFunc(yamls, func(a, b ctlApplied) int { return cmp.Compare(a.wall, b.wall) })
	if limit, ok := map[int]time.Duration{100000: ctlTargetFull100k, 1000000: ctlTargetFull1M}[n]; ok {
		r.Check("control", fmt.Sprintf("full apply of %s devices enforced <= %s after the push", name, limit), ctlMs(worst.wall), "<=", ctlMs(limit), "ms",
			fmt.Sprintf("slowest of %d full applies of the JSON document; agent-side %.0f ms, of which parse %.0f ms (decode and validation). The same policy in YAML: %.0f ms (parse %.0f ms; yaml.v3's node tree alone takes %.0f ms)",
				len(fulls), ctlMs(worst.res.Duration), ctlNsMs(worst.phases.Phases.Parse), ctlMs(worstYAML.wall), ctlNsMs(worstYAML.phases.Phases.Parse), ctlMs(yf.took)))
	}

	// Kernel memory and RSS.
	st, err := a.status(ctx)
	if err != nil {
		return ctlChanges{}, err
	}
	if st.Policy.Devices != n {
		return ctlChanges{}, fmt.Errorf("the agent enforces %d devices, want %d", st.Policy.Devices, n)
	}
	km, err := ctlReadKernelMem(a.pinDir)
	if err != nil {
		return ctlChanges{}, fmt.Errorf("kernel memory: %w", err)
	}
	perDev := float64(km.active()+km.devstats) / float64(n)
	fn := float64(n)
	r.Add(Result{Section: "control", Name: fmt.Sprintf("kernel memory per device, %s devices", name), Value: perDev, Unit: "B/device",
		Note: fmt.Sprintf("memlock of the active slot's inner maps + zt_devstats over %d devices: devices %.0f B (%d entries), addresses %.0f B (%d entries), prefixes+rules %.1f B, zt_devstats %.0f B (a row per CPU, %d CPUs)",
			n, float64(km.kind[0])/fn, km.entries[0], float64(km.kind[1])/fn, km.entries[1], float64(km.kind[2]+km.kind[3])/fn,
			float64(km.devstats)/fn, numCPU())})
	r.Add(Result{Section: "control", Name: fmt.Sprintf("kernel memory per device incl. the inactive slot, %s devices", name),
		Value: float64(km.active()+km.inactive+km.devstats) / fn, Unit: "B/device",
		Note: fmt.Sprintf("the agent's incremental applies keep the inactive slot populated: %.1f MB of inner maps it does not share with the active slot", float64(km.inactive)/1e6)})
	if n == 100000 || n == 1000000 || (cfg.Quick && n == 10000) {
		fl, err := ctlKernelMemFloor(n, km.entries[1])
		if err != nil {
			return ctlChanges{}, fmt.Errorf("kernel memory floor: %w", err)
		}
		r.Add(Result{Section: "control", Name: fmt.Sprintf("kernel memory floor per device, %s devices", name), Value: float64(fl.total()) / fn, Unit: "B/device",
			Note: fmt.Sprintf("bare maps of the same capacities holding the least this map design keeps: MAC -> 4-byte id %.0f B, %d addresses -> 4-byte id %.0f B, 6 counters in a plain array %.0f B",
				float64(fl.dev)/fn, km.entries[1], float64(fl.addr)/fn, float64(fl.counters)/fn)})
		r.Check("control", fmt.Sprintf("kernel memory <= 200 B per configured device (%s)", name), perDev, "<=", ctlTargetBytesPerDv, "B/device",
			fmt.Sprintf("active policy maps + zt_devstats; the inactive slot adds its own (see results); the floor of an identity hash, an address index and 6 counters per device is %.0f B here", float64(fl.total())/fn))
	}
	hwm, err := ctlVmHWM(st.PID)
	if err != nil {
		return ctlChanges{}, fmt.Errorf("agent RSS: %w", err)
	}
	r.Add(Result{Section: "control", Name: fmt.Sprintf("agent peak RSS, JSON documents, %s devices", name), Value: hwmJSON / 1e6, Unit: "MB",
		Note: fmt.Sprintf("VmHWM of the agent (pid %d) after the %d full applies of JSON documents", st.PID, len(fulls))})
	r.Add(Result{Section: "control", Name: fmt.Sprintf("agent peak RSS, YAML documents, %s devices", name), Value: hwm / 1e6, Unit: "MB",
		Note: fmt.Sprintf("VmHWM of the agent after %d more full applies of YAML documents; yaml.v3's node tree of one document alone holds %.0f MB live", len(yamls), yf.liveMB)})
	if n == 100000 {
		r.Check("control", "agent peak RSS at 100k devices <= 100 MB", hwmJSON/1e6, "<=", ctlTargetRSS100kMB, "MB",
			fmt.Sprintf("VmHWM after the applies of JSON documents; with YAML documents %.0f MB (the node tree alone holds %.0f MB live)", hwm/1e6, yf.liveMB))
	}
	// One-device changes through `ztgate policy set-device`: device n/2's own rule alternates
	// between two ports (after the full applies, the kernel memory and RSS above). First back
	// to back, as fast as the CLI returns: each change waits for the grace period the previous
	// one started (see maps.ApplyDelta). Then isolated, ctlChangeGap apart: one change's
	// latency.
	var ch ctlChanges
	if plan.changes > 0 {
		i := n / 2
		var devDocs [2]string
		for j, port := range []int{9000, docs[base] + i%4} {
			devDocs[j] = filepath.Join(dir, fmt.Sprintf("device-%d.yaml", j))
			if err := os.WriteFile(devDocs[j], ctlDeviceDoc(i, port), 0o644); err != nil {
				return ch, err
			}
		}
		k := 0
		run := func(gap time.Duration) (walls, agentSide, prep, jour, mapsW, barr []float64, err error) {
			start := time.Now()
			for c := 0; c < plan.changes && (c < plan.min || time.Since(start) < plan.budget); c++ {
				time.Sleep(gap)
				ap, err := a.setDevice(ctx, devDocs[k%2])
				k++
				if err != nil {
					return nil, nil, nil, nil, nil, nil, err
				}
				if len(ap.res.Changes.Devices) != 1 {
					return nil, nil, nil, nil, nil, nil, fmt.Errorf("one-device change reported %d changed devices", len(ap.res.Changes.Devices))
				}
				walls = append(walls, ctlMs(ap.wall))
				agentSide = append(agentSide, ctlMs(ap.res.Duration))
				ph := ap.phases
				prep, jour = append(prep, ctlNsMs(ph.Phases.Prepare)), append(jour, ctlNsMs(ph.Phases.Journal))
				mapsW, barr = append(mapsW, ctlNsMs(ph.Phases.Maps)), append(barr, ctlNsMs(ph.Maps.Barrier))
			}
			return
		}
		for _, gap := range []time.Duration{0, ctlChangeGap} {
			walls, agentSide, prep, jour, mapsW, barr, err := run(gap)
			if err != nil {
				return ch, err
			}
			how, what := "back to back", fmt.Sprintf("each right after the previous one returned; the first change after a full apply builds the changed kinds' inner maps afresh (%.0f ms here), the rest write in place", walls[0])
			if gap > 0 {
				how, what = fmt.Sprintf("isolated, %d ms apart", gap/time.Millisecond), "the previous change's grace period is over when the next starts"
			}
			p99 := Percentile(walls, 99)
			r.Add(Result{Section: "control", Name: fmt.Sprintf("one-device change p50, %s devices, %s", name, how), Value: Median(walls), Unit: "ms",
				Note: fmt.Sprintf("%d changes of device d%d's rule with `ztgate policy set-device` (exec of the CLI to its exit; the agent answers once the change is enforced); agent-side p50 %.2f ms = prepare %.2f + journal (fsync) %.2f + maps.ApplyDelta %.2f (of which waiting for the previous change's RCU barrier %.2f)",
					len(walls), i, Median(agentSide), Median(prep), Median(jour), Median(mapsW), Median(barr))})
			r.Add(Result{Section: "control", Name: fmt.Sprintf("one-device change p99, %s devices, %s", name, how), Value: p99, Unit: "ms",
				Note: fmt.Sprintf("agent-side p99 %.2f ms, waiting for the previous barrier p99 %.2f ms; %s", Percentile(agentSide, 99), Percentile(barr, 99), what)})
			cfg.Logf("control: %s devices: %d one-device changes, %s: p50 %.1f ms, p99 %.1f ms (agent p99 %.1f ms)", name, len(walls), how, Median(walls), p99, Percentile(agentSide, 99))
			if gap > 0 {
				ch.isoP99, ch.n = p99, len(walls)
			} else {
				ch.b2bP99 = p99
			}
		}
		st, err := a.status(ctx)
		if err != nil {
			return ch, err
		}
		if st.Policy.Devices != n {
			return ch, fmt.Errorf("after the changes the agent enforces %d devices, want %d", st.Policy.Devices, n)
		}
	}

	err = a.stop()
	a = nil
	return ch, err
}

// ctlYAML is what decoding a policy document into yaml.v3's node tree costs: the floor of any
// apply of a YAML document (the agent's parser decodes that tree, then validates it).
type ctlYAML struct {
	took   time.Duration
	liveMB float64 // heap the tree holds, measured after a GC with the tree alive
}

func ctlYAMLFloor(path string) (ctlYAML, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ctlYAML{}, err
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	root := new(yaml.Node)
	t0 := time.Now()
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(root); err != nil {
		return ctlYAML{}, fmt.Errorf("yaml floor: %w", err)
	}
	took := time.Since(t0)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(root)
	root = nil
	debug.FreeOSMemory()
	return ctlYAML{took: took, liveMB: (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / 1e6}, nil
}

// ctlSwap measures maps.Apply in-process: two revisions of N devices that differ in one device
// are applied alternately; Apply's duration and its flip and barrier steps (maps.LastApply).
func ctlSwap(ctx context.Context, cfg *Config, r *Report) error {
	n := cfg.Pick(100000, 10000)
	rounds := cfg.Pick(20, 6)
	dir, err := os.MkdirTemp("", "ztgate-bench-swap-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "p.yaml")
	if _, err := ctlWritePolicy(path, n, 1000); err != nil {
		return err
	}
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	p, err := policy.ParseLimit(path, doc, len(doc))
	if err != nil {
		return err
	}
	s1, err := policy.Compile(p, policy.CompileOptions{Revision: 1})
	if err != nil {
		return err
	}
	d := &p.Spec.Devices[n/2]
	d.Allow[0].Ports = []policy.PortRange{{Lo: 9000, Hi: 9000}}
	s2, err := policy.Compile(p, policy.CompileOptions{Revision: 2, Prev: s1})
	if err != nil {
		return err
	}
	pin := ctlPinDir("swap")
	dp, err := loader.Open(loader.Config{PinDir: pin, MaxDevices: n, MaxAddrs: n + n/4 + 16, EventsEnabled: true})
	if err != nil {
		return err
	}
	defer func() {
		dp.Close()
		if err := loader.Uninstall(pin); err != nil {
			cfg.Logf("control: uninstall %s: %v", pin, err)
		}
	}()
	lim := dp.Config().Limits()
	name := ctlCount(n)
	rev := uint64(0)
	for _, incremental := range []bool{false, true} {
		m, err := maps.New(dp.Objects(), dp.MapSpecs())
		if err != nil {
			return err
		}
		m.SetIncremental(incremental)
		var total, build, slot, flip, barrier, release []float64
		for i := range rounds + 2 {
			if err := ctx.Err(); err != nil {
				m.Close()
				return err
			}
			s := s1
			if i%2 == 1 {
				s = s2
			}
			rev++
			s.Revision = rev
			s.Config.Revision = rev
			if err := m.Apply(s, lim); err != nil {
				m.Close()
				return err
			}
			if i < 2 {
				continue // a process's first Apply runs an extra barrier; the incremental mode's second fills the other slot
			}
			st := m.LastApply()
			total = append(total, ctlMs(st.Total))
			build = append(build, ctlMs(st.Build))
			slot = append(slot, ctlMs(st.Slot))
			flip = append(flip, float64(st.Flip)/1e3)
			barrier = append(barrier, ctlMs(st.Barrier))
			release = append(release, ctlMs(st.Release))
		}
		m.Close()
		mode, how := "full rebuild", "fresh inner maps for every kind, old slot released (maps.Apply's default)"
		if incremental {
			mode, how = "incremental", "the agent's mode: only the device record written in place, other maps shared with the active slot"
		}
		r.Add(Result{Section: "control", Name: fmt.Sprintf("maps.Apply p50, %s devices, one device differs, %s", name, mode), Value: Median(total), Unit: "ms",
			Note: fmt.Sprintf("in-process, %d applies alternating two revisions; %s; p50 build %.1f ms, outer writes %.1f ms, release %.1f ms",
				len(total), how, Median(build), Median(slot), Median(release))})
		r.Add(Result{Section: "control", Name: fmt.Sprintf("maps.Apply flip (zt_active write) p50, %s", mode), Value: Median(flip), Unit: "µs", Note: "the commit point"})
		r.Add(Result{Section: "control", Name: fmt.Sprintf("maps.Apply barrier (RCU grace period) p50, %s", mode), Value: Median(barrier), Unit: "ms",
			Spread: Spread(barrier), Note: "zt_barrier update: returns once every frame that read the old slot has finished"})
		cfg.Logf("control: maps.Apply at %s devices, %s: p50 %.1f ms (build %.1f, outer writes %.1f, flip %.1f µs, barrier %.1f ms, release %.1f ms)",
			name, mode, Median(total), Median(build), Median(slot), Median(flip), Median(barrier), Median(release))
	}
	return ctlGracePeriods(ctx, cfg, r, dp)
}

// ctlGracePeriods measures the RCU grace period alone (maps.Barrier, back to back): what a
// change waits for when the previous change's barrier is still running.
func ctlGracePeriods(ctx context.Context, cfg *Config, r *Report, dp *loader.Datapath) error {
	m, err := maps.New(dp.Objects(), dp.MapSpecs())
	if err != nil {
		return err
	}
	defer m.Close()
	var gp []float64
	for range cfg.Pick(300, 50) {
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := m.Barrier(); err != nil {
			return err
		}
		gp = append(gp, ctlMs(time.Since(t0)))
	}
	r.Add(Result{Section: "control", Name: "RCU grace period (zt_barrier update) p50", Value: Median(gp), Unit: "ms",
		Note: fmt.Sprintf("%d barriers back to back, no traffic; what separates two flips of the two-slot swap (a flip may reuse the old slot only after it)", len(gp))})
	r.Add(Result{Section: "control", Name: "RCU grace period (zt_barrier update) p99", Value: Percentile(gp, 99), Unit: "ms",
		Note: fmt.Sprintf("max %.1f ms", slices.Max(gp))})
	cfg.Logf("control: RCU grace period p50 %.1f ms, p99 %.1f ms, max %.1f ms", Median(gp), Percentile(gp, 99), slices.Max(gp))
	return nil
}
