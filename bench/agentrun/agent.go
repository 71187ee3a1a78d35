// Package agentrun runs the real `ztgate agent` for the control and events sections of the
// benchmark suite, drives it through the real CLI, and writes the policy documents it is fed.
package agentrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/internal/syncbuf"
	"github.com/ztgate/ztgate/testenv"
)

// Agent is a running `ztgate agent` in the gateway namespace of a topology.
type Agent struct {
	bin     string
	socket  string
	PinDir  string
	cmd     *exec.Cmd
	log     *syncbuf.Buffer
	done    chan struct{}
	waitErr error
}

// Start writes an agent configuration protecting every device port of tp (state,
// socket and config under dir, pins in a fresh bpffs directory), adjusted by edit, starts the
// agent and waits until it is ready. The caller must stop it.
func Start(ctx context.Context, bin string, tp *testenv.Topology, dir string, edit func(*agent.Config)) (*Agent,
	error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	a := &Agent{bin: bin, socket: filepath.Join(dir, "run", "ztgate.sock"), PinDir: core.PinDir("agent"),
		log: &syncbuf.Buffer{}, done: make(chan struct{})}
	ac := agent.DefaultConfig()
	for _, d := range tp.Devices {
		ac.Interfaces = append(ac.Interfaces, d.Port.Name)
	}
	ac.StateDir = filepath.Join(dir, "state")
	ac.BPFFSDir = a.PinDir
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
		if st, err := a.Status(ctx); err == nil && st.Ready {
			return a, nil
		}
		select {
		case <-a.done:
			a.uninstall()
			return nil, fmt.Errorf("agent exited during start-up (%v):\n%s", a.waitErr, a.log.String())
		case <-ctx.Done():
			a.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.Stop()
			return nil, fmt.Errorf("agent not ready after 30s:\n%s", a.log.String())
		}
	}
}

// CLI runs the CLI against the agent; a non-zero exit is an error carrying stderr.
func (a *Agent) CLI(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, a.bin, append([]string{"--socket", a.socket, "--timeout", "0"}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.Bytes(), fmt.Errorf("ztgate %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(e.String()))
	}
	return o.Bytes(), nil
}

// Status is the agent's status (`ztgate status`).
func (a *Agent) Status(ctx context.Context) (api.Status, error) {
	var st api.Status
	out, err := a.CLI(ctx, "status", "-o", "json")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

// Applied is one apply as the CLI and the agent saw it.
type Applied struct {
	Wall   time.Duration // exec of the CLI (policy apply, policy set-device) to its exit
	Result api.ApplyResult
	Phases Phases
}

// Phases is the breakdown the agent logs with "policy applied" or "device changed"
// (nanoseconds).
type Phases struct {
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

// Apply pushes the policy file path with `ztgate policy apply` and returns its timings.
func (a *Agent) Apply(ctx context.Context, path string) (Applied, error) {
	return a.push(ctx, "apply", path, "policy applied")
}

// SetDevice changes one device with `ztgate policy set-device` and returns its timings.
func (a *Agent) SetDevice(ctx context.Context, path string) (Applied, error) {
	return a.push(ctx, "set-device", path, "device changed")
}

// push runs `ztgate policy verb path` and waits for the agent's log record msg of the new
// revision.
func (a *Agent) push(ctx context.Context, verb, path, msg string) (Applied, error) {
	var ap Applied
	t0 := time.Now()
	out, err := a.CLI(ctx, "policy", verb, path, "-o", "json")
	ap.Wall = time.Since(t0)
	if err != nil {
		return ap, err
	}
	if err := json.Unmarshal(out, &ap.Result); err != nil {
		return ap, fmt.Errorf("policy %s -o json: %w", verb, err)
	}
	ap.Phases, err = a.waitPhases(msg, ap.Result.NewRevision)
	return ap, err
}

// waitPhases waits for the agent's log record msg of revision rev: the agent logs it before
// it answers, but its output reaches us through a pipe.
func (a *Agent) waitPhases(msg string, rev uint64) (Phases, error) {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if ph, ok := a.findPhases(msg, rev); ok {
			return ph, nil
		}
		if time.Now().After(deadline) {
			return Phases{}, fmt.Errorf("no %q log record of revision %d", msg, rev)
		}
	}
}

// findPhases finds the agent's log record msg of revision rev in its output so far.
func (a *Agent) findPhases(msg string, rev uint64) (Phases, bool) {
	data := a.log.Bytes()
	// The record is near the end: search backwards line by line.
	for len(data) > 0 {
		i := bytes.LastIndexByte(data[:len(data)-1], '\n')
		line := data[i+1:]
		data = data[:i+1]
		if bytes.Contains(line, []byte(`"msg":"`+msg+`"`)) {
			var ph Phases
			if json.Unmarshal(line, &ph) == nil && ph.Rev == rev {
				return ph, true
			}
		}
		if i < 0 {
			break
		}
	}
	return Phases{}, false
}

// Stop ends the agent (SIGTERM, then SIGKILL) and removes its datapath.
func (a *Agent) Stop() error {
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

// uninstall removes the agent's datapath.
func (a *Agent) uninstall() error {
	out, err := exec.Command(a.bin, "uninstall", "--bpffs-dir", a.PinDir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ztgate uninstall: %w: %s", err, out)
	}
	return nil
}

// PeakRSS is the peak resident set size of process pid, in bytes.
func PeakRSS(pid int) (float64, error) {
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

// Binary is the absolute path of the ztgate binary.
func Binary(cfg *core.Config) (string, error) {
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
