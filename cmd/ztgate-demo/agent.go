package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/loader"
)

// metricsAddress is where the agent serves /metrics, inside the gateway's namespace (so it
// cannot collide with anything on the host).
const metricsAddress = "127.0.0.1:9431"

// eventBurst lets every drop reach the ring buffer (the default samples a few per device and
// reason per window): the demo looks for the event of each attempt.
const eventBurst = 1_000_000

// build compiles ztgate into the demo directory (when no -ztgate binary was given).
func (d *demo) build() error {
	d.bin = filepath.Join(d.dir, "ztgate")
	ctx, cancel := context.WithTimeout(d.ctx, buildTimeout)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", d.bin,
		"github.com/ztgate/ztgate/cmd/ztgate").CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build ztgate: %w\n%s", err, out)
	}
	d.printf("\n(built ztgate with `go build` in %v; -ztgate PATH uses a prebuilt binary)\n",
		time.Since(start).Round(time.Millisecond))
	return nil
}

// displayBin is how the walkthrough names the binary.
func (d *demo) displayBin() string {
	if d.opts.Ztgate != "" {
		return d.opts.Ztgate
	}
	return filepath.Join(d.dir, "ztgate")
}

// ---------------------------------------------------------------------------------------------
// Running the CLI.

// cliResult is what one ztgate command did.
type cliResult struct {
	stdout, stderr string
	code           int
}

// env is the environment of every ztgate process: ZTGATE_SOCKET names the agent's socket.
func (d *demo) env() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "ZTGATE_SOCKET=") })
	return append(env, "ZTGATE_SOCKET="+d.socket)
}

// cli runs `ztgate args...` in the demo directory. An exit status is not an error; failing
// to run it (or being interrupted) is.
func (d *demo) cli(args ...string) (cliResult, error) {
	ctx, cancel := context.WithTimeout(d.ctx, cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Dir, cmd.Env = d.dir, d.env()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := cliResult{stdout: o.String(), stderr: e.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	case d.ctx.Err() != nil:
		return r, d.interrupted()
	case ctx.Err() != nil:
		return r, fmt.Errorf("ztgate %s: no result within %v", strings.Join(args, " "), cliTimeout)
	default:
		return r, fmt.Errorf("ztgate %s: %w", strings.Join(args, " "), err)
	}
	return r, nil
}

// trimmer picks the lines of a command's output to print and says what it left out.
type trimmer func(lines []string) (keep []string, omitted string)

// untilLine keeps the lines before the first one equal to marker (trailing blank lines too).
func untilLine(marker, what string) trimmer {
	return func(lines []string) ([]string, string) {
		i := slices.Index(lines, marker)
		if i < 0 {
			return lines, ""
		}
		keep := lines[:i]
		for len(keep) > 0 && strings.TrimSpace(keep[len(keep)-1]) == "" {
			keep = keep[:len(keep)-1]
		}
		return keep, fmt.Sprintf("(%d more lines: %s)", len(lines)-len(keep), what)
	}
}

// headLines keeps the first n lines.
func headLines(n int, what string) trimmer {
	return func(lines []string) ([]string, string) {
		if len(lines) <= n {
			return lines, ""
		}
		return lines[:n], fmt.Sprintf("(%d more lines: %s)", len(lines)-n, what)
	}
}

// keepPrefixes keeps the lines that start (after indentation) with one of prefixes.
func keepPrefixes(what string, prefixes ...string) trimmer {
	return func(lines []string) ([]string, string) {
		keep := slices.DeleteFunc(slices.Clone(lines), func(l string) bool {
			return !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(strings.TrimSpace(l), p) })
		})
		if len(keep) == len(lines) {
			return lines, ""
		}
		return keep, fmt.Sprintf("(%d more lines: %s)", len(lines)-len(keep), what)
	}
}

// dropLine leaves out the lines starting with prefix.
func dropLine(prefix, what string) trimmer {
	return func(lines []string) ([]string, string) {
		keep := slices.DeleteFunc(slices.Clone(lines), func(l string) bool { return strings.HasPrefix(l, prefix) })
		if len(keep) == len(lines) {
			return lines, ""
		}
		return keep, fmt.Sprintf("(%d lines not shown: %s)", len(lines)-len(keep), what)
	}
}

// show prints the command line as an operator types it, runs it and prints what it wrote,
// indented (stdout, then stderr). An exit status other than want is an error: the demo stops.
func (d *demo) show(want int, trim trimmer, args ...string) (cliResult, error) {
	d.printf("  $ ztgate %s\n", strings.Join(args, " "))
	r, err := d.cli(args...)
	if err != nil {
		return r, err
	}
	var lines []string
	for _, s := range []string{r.stdout, r.stderr} {
		if s = strings.TrimRight(s, "\n"); s != "" {
			lines = append(lines, strings.Split(s, "\n")...)
		}
	}
	omitted := ""
	if trim != nil && r.code == want {
		lines, omitted = trim(lines)
	}
	for _, l := range lines {
		if l = strings.TrimRight(l, " "); l == "" {
			d.printf("\n")
		} else {
			d.printf("    %s\n", l)
		}
	}
	if omitted != "" {
		d.printf("    %s\n", omitted)
	}
	if r.code != want {
		return r, fmt.Errorf("`ztgate %s` exited with status %d, expected %d", strings.Join(args, " "), r.code, want)
	}
	return r, nil
}

// cliJSON runs a ztgate command with -o json (not shown) and decodes its output into v.
func (d *demo) cliJSON(v any, args ...string) error {
	args = append(args, "-o", "json")
	r, err := d.cli(args...)
	if err != nil {
		return err
	}
	if r.code != 0 {
		return fmt.Errorf("`ztgate %s` exited with status %d: %s", strings.Join(args, " "), r.code,
			strings.TrimSpace(r.stderr))
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		return fmt.Errorf("`ztgate %s`: %w", strings.Join(args, " "), err)
	}
	return nil
}

// events runs `ztgate events -o json` with filter flags and decodes its JSON lines.
func (d *demo) events(flags ...string) ([]api.Event, string, error) {
	args := append([]string{"events", "-o", "json"}, flags...)
	r, err := d.cli(args...)
	if err != nil {
		return nil, "", err
	}
	if r.code != 0 {
		return nil, "", fmt.Errorf("`ztgate %s` exited with status %d: %s", strings.Join(args, " "), r.code,
			strings.TrimSpace(r.stderr))
	}
	evs, err := parseEvents(r.stdout)
	return evs, r.stdout, err
}

// parseEvents decodes the output of `ztgate events -o json`: one api.Event a line.
func parseEvents(out string) ([]api.Event, error) {
	var evs []api.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var ev api.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			return nil, fmt.Errorf("event %q: %w", line, err)
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// ---------------------------------------------------------------------------------------------
// Step 2: the agent.

// agentProc is the running `ztgate agent`.
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the result of Wait, once done is closed
}

func (p *agentProc) pid() int { return p.cmd.Process.Pid }

func (p *agentProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits for a clean exit; after timeout it kills the agent and
// reports that.
func (p *agentProc) stop(timeout time.Duration) error {
	if p.exited() {
		return p.err
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("exit after SIGTERM: %w", p.err)
		}
		return nil
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("no exit within %v of SIGTERM: killed", timeout)
}

// agentConfig is the part of agent.Config the demo sets (the rest keeps its defaults).
const agentConfig = `# ztgate agent configuration of the demo (every key not set here keeps its default)
interfaces: [%s]
state_dir: %s
bpffs_dir: %s
socket: %s
metrics_address: %s   # inside the gateway's namespace
xdp_mode: %s
event_burst: %d   # report every drop (the default samples per device and reason)
`

func (d *demo) startAgent() error {
	d.heading("Agent started: `ztgate agent` in the gateway's namespace, no policy yet")
	var ports []string
	for _, dev := range d.tp.Devices {
		ports = append(ports, dev.Port.Name)
	}
	stateDir := filepath.Join(d.dir, "state")
	doc := fmt.Sprintf(agentConfig, strings.Join(ports, ", "), stateDir, d.pinDir, d.socket, metricsAddress, d.opts.Mode,
		eventBurst)
	cfgPath := filepath.Join(d.dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		return err
	}
	// The agent reads it strictly (unknown keys are errors); check it says what we mean.
	cfg, err := agent.LoadConfig(cfgPath, false)
	if err == nil {
		err = cfg.Validate()
	}
	if err == nil && (!slices.Equal(cfg.Interfaces, ports) || cfg.BPFFSDir != d.pinDir || cfg.Socket != d.socket ||
		cfg.StateDir != stateDir || cfg.EventBurst != eventBurst || cfg.XDPMode != d.opts.Mode.String()) {
		err = fmt.Errorf("agent.yaml reads back as %+v", cfg)
	}
	if err != nil {
		return fmt.Errorf("agent.yaml: %w", err)
	}
	d.printf("agent.yaml: the agent pins its XDP datapath in bpffs_dir, attaches it to every interface and\n" +
		"serves its API on socket (keys not set keep their defaults):\n")
	for _, l := range strings.Split(strings.TrimRight(doc, "\n"), "\n")[1:] {
		d.printf("  | %s\n", l)
	}
	d.printf("  $ cd %s && export ZTGATE_SOCKET=$PWD/run/ztgate.sock   # ztgate is %s\n", d.dir, d.displayBin())
	// nsenter (unlike `ip netns exec`) keeps the host's /sys, so the agent sees the bpffs.
	d.printf("  $ nsenter --net=%s -- ztgate agent --config agent.yaml > agent.log 2>&1 &\n", d.tp.Gateway.Path())

	// Registered before the agent starts: it pins things, and it may fail half-way. Normally
	// step 7 has uninstalled already (with `ztgate uninstall`); this is the fallback.
	d.onCleanup("uninstall the datapath", func() (string, error) {
		if _, err := os.Lstat(d.pinDir); errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		if err := loader.Uninstall(d.pinDir); err != nil {
			return "", err
		}
		return "uninstalled the datapath (detached XDP, removed " + d.pinDir + ")", nil
	})
	logf, err := os.Create(filepath.Join(d.dir, "agent.log"))
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command("nsenter", "--net="+d.tp.Gateway.Path(), "--", d.bin, "agent", "--config", cfgPath)
	cmd.Dir, cmd.Env = d.dir, d.env()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches the demo, which then stops the
	// agent itself, in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the agent: %w", err)
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	d.agent = p
	d.onCleanup("stop the agent", func() (string, error) {
		if p.exited() {
			return "", nil
		}
		if err := p.stop(stopTimeout); err != nil {
			return "", fmt.Errorf("agent pid %d: %w", p.pid(), err)
		}
		return fmt.Sprintf("stopped the agent (pid %d) with SIGTERM", p.pid()), nil
	})

	for {
		var st api.Status
		if err := d.cliJSON(&st, "status"); err == nil && st.Ready {
			break
		} else if d.ctx.Err() != nil {
			return d.interrupted()
		}
		if p.exited() {
			return fmt.Errorf("the agent exited during start-up (%v)", p.err)
		}
		if time.Since(start) > readyTimeout {
			return fmt.Errorf("the agent is not ready after %v", readyTimeout)
		}
		if err := d.sleep(50 * time.Millisecond); err != nil {
			return err
		}
	}
	d.expect(fmt.Sprintf("agent pid %d ready after %v", p.pid(), time.Since(start).Round(time.Millisecond)), nil)
	if _, err := d.show(0, untilLine("Maps:", "map fill levels"), "status"); err != nil {
		return err
	}
	// Fail closed: with the program attached and no policy, nothing passes (not even the
	// thermostat's ARP for the gateway).
	what := "fail closed: thermostat → cloud " + hostPort(d.cloud.IPv4, portMQTT) + " TCP gets nothing through"
	err = d.blockedTCP(d.thermo, hostPort(d.cloud.IPv4, portMQTT))
	if err == nil {
		var ev api.Event
		gw4 := d.tp.Config().GatewayIPv4
		ev, err = d.waitEvent("no_policy", d.thermo, func(fi frameInfo) bool {
			return (fi.ARP != nil && bytes.Equal(fi.ARP.DstProtAddress, gw4.AsSlice())) || // its ARP for the gateway, or
				(fi.Dst == d.cloud.IPv4 && fi.DPort == portMQTT) // the SYN itself
		})
		what += ": drop/" + ev.Reason + ": " + summary(ev)
	}
	d.expect(what, err)
	return nil
}

// agentLogTail prints the end of the agent's log (after a failure).
func (d *demo) agentLogTail() {
	if d.dir == "" || d.agent == nil {
		return
	}
	data, err := os.ReadFile(filepath.Join(d.dir, "agent.log"))
	if err != nil || len(data) == 0 {
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	lines = lines[max(0, len(lines)-15):]
	d.printf("  the agent's log (last %d lines):\n", len(lines))
	for _, l := range lines {
		d.printf("    %s\n", l)
	}
}
