package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/internal/syncbuf"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// The agent tests drive the real binaries: `ztgate agent` runs in the gateway namespace (via
// nsenter, which keeps /sys and so the bpffs pins visible), the CLI talks to it over its unix
// socket, exactly as an operator would.

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds bin/ztgate twice (two versions: a restart "on a new binary") once per test
// binary run.
func binaries(t *testing.T) (v1, v2 string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "zt-e2e-bin-")
		if buildErr != nil {
			return
		}
		for _, v := range []string{"e2e-v1", "e2e-v2"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "ztgate-"+v),
				"-ldflags", "-X github.com/ztgate/ztgate/internal/buildinfo.version="+v,
				"github.com/ztgate/ztgate/cmd/ztgate").CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build: %v\n%s", err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "ztgate-e2e-v1"), filepath.Join(buildDir, "ztgate-e2e-v2")
}

// lab is a topology protected by a real agent process.
type lab struct {
	t       *testing.T
	tp      *testenv.Topology
	dir     string // state, socket, config, policies
	pinDir  string
	socket  string
	cfgPath string
	cfg     agent.Config
	bin     string // the CLI (and agent) binary in use
	agent   *agentProc
	metrics string   // metrics address inside the gateway namespace
	wrap    []string // command (and args) the agent runs under, e.g. setpriv
	env     []string // added to the agent's environment
}

// newLab builds the usual topology and writes an agent configuration protecting every port;
// edit adjusts it. The agent is not started.
func newLab(t *testing.T, edit func(*agent.Config)) *lab {
	t.Helper()
	return newLabOn(t, topology(t), edit)
}

// newLabOn is newLab on the topology tp.
func newLabOn(t *testing.T, tp *testenv.Topology, edit func(*agent.Config)) *lab {
	t.Helper()
	bin, _ := binaries(t)
	dir := t.TempDir()
	l := &lab{t: t, tp: tp, dir: dir, pinDir: pinDir(), bin: bin, metrics: "127.0.0.1:9431"}
	l.socket = filepath.Join(dir, "run", "ztgate.sock")
	cfg := agent.DefaultConfig()
	for _, d := range tp.Devices {
		cfg.Interfaces = append(cfg.Interfaces, d.Port.Name)
	}
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.BPFFSDir = l.pinDir
	cfg.Socket = l.socket
	cfg.MetricsAddress = l.metrics
	cfg.LogLevel = "debug"
	if edit != nil {
		edit(&cfg)
	}
	l.cfgPath = filepath.Join(dir, "agent.yaml")
	l.writeConfig(cfg)
	t.Cleanup(func() {
		if l.agent != nil {
			l.agent.kill()
		}
		if _, stderr, code := l.ztgate("uninstall", "--bpffs-dir", l.pinDir); code != 0 {
			t.Errorf("uninstall: exit %d: %s", code, stderr)
		}
		if _, err := os.Stat(l.pinDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("uninstall left %s behind (%v)", l.pinDir, err)
		}
	})
	return l
}

// writeConfig makes cfg the configuration the next start uses.
func (l *lab) writeConfig(cfg agent.Config) {
	l.t.Helper()
	l.cfg = cfg
	l.socket = cfg.Socket
	data, err := yaml.Marshal(cfg)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(l.cfgPath, data, 0o600); err != nil {
		l.t.Fatal(err)
	}
}

// agentProc is a running `ztgate agent`.
type agentProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  *syncbuf.Buffer
	done chan struct{}
	err  error
}

// start runs the agent binary bin in the gateway namespace and waits until it is ready.
func (l *lab) start(bin string) *agentProc {
	l.t.Helper()
	return l.startUntil(bin, "ready", func(st api.Status) bool { return st.Ready })
}

// startUntil runs the agent binary bin in the gateway namespace and waits until its status
// satisfies ok.
func (l *lab) startUntil(bin, what string, ok func(api.Status) bool) *agentProc {
	l.t.Helper()
	l.bin = bin
	p := &agentProc{t: l.t, log: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = l.agentCmd(bin, p.log)
	if err := p.cmd.Start(); err != nil {
		l.t.Fatalf("start agent: %v", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	l.agent = p
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st api.Status
		if out, _, code := l.ztgate("status", "-o", "json"); code == 0 {
			if err := json.Unmarshal([]byte(out), &st); err == nil && ok(st) {
				return p
			}
		}
		select {
		case <-p.done:
			l.t.Fatalf("agent exited during start-up (%v):\n%s", p.err, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("agent not %s after 20s:\n%s", what, p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// agentCmd is the command running the agent binary bin in the gateway namespace (under l.wrap,
// with l.env added), its output going to out.
func (l *lab) agentCmd(bin string, out io.Writer) *exec.Cmd {
	args := append([]string{"--net=" + l.tp.Gateway.Path(), "--"}, l.wrap...)
	cmd := exec.Command("nsenter", append(args, bin, "agent", "--config", l.cfgPath)...)
	cmd.Stdout, cmd.Stderr = out, out
	if l.env != nil {
		cmd.Env = append(os.Environ(), l.env...)
	}
	return cmd
}

// startFails runs the agent binary and expects it to exit with an error before it is ready;
// it returns the agent's output.
func (l *lab) startFails(bin string) string {
	l.t.Helper()
	out := &syncbuf.Buffer{}
	cmd := l.agentCmd(bin, out)
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			l.t.Fatalf("agent exited 0, want a start-up failure:\n%s", out.String())
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		l.t.Fatalf("agent kept running, want a start-up failure:\n%s", out.String())
	}
	return out.String()
}

// signal sends sig to the agent.
func (p *agentProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *agentProc) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			p.t.Fatalf("agent exit after SIGTERM: %v\n%s", p.err, p.log.String())
		}
	case <-time.After(10 * time.Second):
		p.t.Fatalf("agent did not exit 10s after SIGTERM:\n%s", p.log.String())
	}
}

// kill sends SIGKILL (also to a stopped process) and reaps it.
func (p *agentProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// ztgate runs the CLI against the lab's agent.
func (l *lab) ztgate(args ...string) (stdout, stderr string, code int) {
	return l.ztgateIn(nil, args...)
}

// ztgateIn runs the CLI against the lab's agent with stdin as its input.
func (l *lab) ztgateIn(stdin []byte, args ...string) (stdout, stderr string, code int) {
	l.t.Helper()
	bin := l.bin
	if bin == "" {
		bin, _ = binaries(l.t)
	}
	cmd := exec.Command(bin, append([]string{"--socket", l.socket}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		l.t.Fatalf("run ztgate %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// must runs the CLI and fails the test on a non-zero exit.
func (l *lab) must(args ...string) string {
	l.t.Helper()
	out, stderr, code := l.ztgate(args...)
	if code != 0 {
		l.t.Fatalf("ztgate %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, stderr)
	}
	return out
}

// mustJSON runs the CLI with -o json and decodes its output.
func (l *lab) mustJSON(v any, args ...string) {
	l.t.Helper()
	out := l.must(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		l.t.Fatalf("ztgate %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// run starts the agent (the first binary) and applies p, written to p.yaml in the lab; it
// returns the binary.
func (l *lab) run(p *policy.Policy) string {
	l.t.Helper()
	v1, _ := binaries(l.t)
	l.start(v1)
	l.must("policy", "apply", l.writePolicy("p.yaml", p))
	return v1
}

// writePolicy writes p to a file in the lab and returns its path.
func (l *lab) writePolicy(name string, p *policy.Policy) string {
	l.t.Helper()
	data, err := policy.Marshal(p)
	if err != nil {
		l.t.Fatal(err)
	}
	path := filepath.Join(l.dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		l.t.Fatal(err)
	}
	return path
}

// status is the agent's status, as the CLI reports it.
func (l *lab) status() api.Status {
	l.t.Helper()
	var st api.Status
	l.mustJSON(&st, "status")
	return st
}

// scrape fetches the metrics exposition from inside the gateway namespace.
func (l *lab) scrape(path string) (int, string) {
	l.t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return l.tp.Gateway.Dial(network, addr, 5*time.Second)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + l.metrics + path)
	if err != nil {
		l.t.Fatalf("scrape %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		l.t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// checkAttached checks that st lists n interfaces, each attached in native or generic mode.
func checkAttached(t *testing.T, st api.Status, n int) {
	t.Helper()
	if len(st.Interfaces) != n {
		t.Fatalf("status lists %d interfaces, want %d: %+v", len(st.Interfaces), n, st.Interfaces)
	}
	for _, ifc := range st.Interfaces {
		if !ifc.Attached || (ifc.Mode != loader.ModeNative.String() && ifc.Mode != loader.ModeGeneric.String()) {
			t.Errorf("interface %s: attached=%v mode=%s err=%q", ifc.Name, ifc.Attached, ifc.Mode, ifc.Error)
		}
	}
}
