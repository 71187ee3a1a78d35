package main

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
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/ztgate/ztgate/api"
)

// fakeAgent serves canned answers for API paths on a unix socket and records the requests.
type fakeAgent struct {
	socket string

	mu   sync.Mutex
	reqs []request
}

// request is what the fake agent received.
type request struct {
	Method, Path string
	Query        map[string]string
	Filename     string
	Body         []byte
}

// newFakeAgent serves routes (path → handler) on a socket in a temporary directory.
func newFakeAgent(t *testing.T, routes map[string]http.HandlerFunc) *fakeAgent {
	t.Helper()
	fa := &fakeAgent{socket: filepath.Join(t.TempDir(), "agent.sock")}
	l, err := net.Listen("unix", fa.socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for path, h := range routes {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			q := map[string]string{}
			for k := range r.URL.Query() {
				q[k] = r.URL.Query().Get(k)
			}
			fa.mu.Lock()
			fa.reqs = append(fa.reqs, request{r.Method, r.URL.Path, q, r.Header.Get(api.HeaderFilename), body})
			fa.mu.Unlock()
			h(w, r)
		})
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return fa
}

// requests returns the requests received so far.
func (fa *fakeAgent) requests() []request {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return append([]request(nil), fa.reqs...)
}

// lastRequest returns the last request received, failing the test if there is none.
func (fa *fakeAgent) lastRequest(t *testing.T) request {
	t.Helper()
	rs := fa.requests()
	if len(rs) == 0 {
		t.Fatal("the agent received no request")
	}
	return rs[len(rs)-1]
}

// reply answers with v as JSON.
func reply(v any) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
}

// replyError answers with an API error.
func replyError(status int, e api.Error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(e)
	}
}

// result is the outcome of one ztgate run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// ztgate runs the command line args in-process with stdin as the standard input.
func ztgate(t *testing.T, ctx context.Context, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := runIO(ctx, append([]string{"ztgate"}, args...), strings.NewReader(stdin), &out, &errb)
	return result{code, out.String(), errb.String()}
}

// client runs ztgate against the fake agent.
func (fa *fakeAgent) run(t *testing.T, args ...string) result {
	t.Helper()
	return ztgate(t, context.Background(), "", append([]string{"--socket", fa.socket}, args...)...)
}

// wantCode fails the test unless r exited with code.
func wantCode(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit %d, got %s", code, r)
	}
}

func TestNoAgentIsExit3(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "missing.sock")
	for _, args := range [][]string{{"status"}, {"devices"}, {"policy", "get"}, {"events"}, {"audit"}} {
		r := ztgate(t, context.Background(), "", append([]string{"--socket", sock}, args...)...)
		wantCode(t, r, exitUnreachable)
		if !strings.HasPrefix(r.stderr, "ztgate: agent unreachable at "+sock) || r.stdout != "" {
			t.Errorf("%v: %s", args, r)
		}
	}
}

func TestSocketFromEnvironment(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathStatus: reply(api.Status{Version: "v9.9.9"})})
	t.Setenv("ZTGATE_SOCKET", fa.socket)
	r := ztgate(t, context.Background(), "", "status")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "v9.9.9") {
		t.Errorf("status via $ZTGATE_SOCKET: %s", r)
	}
}

func TestUsageErrorsAreExit2(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{
		api.PathStatus:      reply(api.Status{}),
		api.PathPolicyApply: reply(api.ApplyResult{}),
	})
	for _, args := range [][]string{
		{"--no-such-flag", "status"},
		{"status", "--no-such-flag"},
		{"status", "-o", "yaml"},
		{"devices", "-o", "xml"},
		{"policy", "get", "-o", "table"},
		{"events", "-o", "pcap"},
		{"events", "--reason", "not_a_reason"},
		{"events", "--limit", "-1"},
		{"audit", "-o", "csv"},
		{"policy", "apply"},
		{"policy", "apply", "a.yaml", "b.yaml"},
		{"policy", "validate"},
		{"policy", "diff"},
		{"policy", "explain", "--from", "cam"},
		{"policy", "explain", "--from", "cam", "--to", "gateway", "--proto", "tcp", "--port", "70000"},
		{"policy", "nope"},
		{"nope"},
		{"status", "extra"},
		{"events", "--direction", "inbound"},
		{"flows", "--limit", "-1"},
		{"flows", "extra"},
		{"--timeout", "soon", "status"},
		{"agent", "--xdp-mode", "turbo"},
		{"agent", "--log-format", "xml"},
		{"completion", "tcsh"},
	} {
		r := fa.run(t, args...)
		if r.code != exitUsage {
			t.Errorf("%v: want exit 2, got %s", args, r)
			continue
		}
		if !strings.HasPrefix(r.stderr, "ztgate: ") || !strings.Contains(r.stderr, "--help' for usage") {
			t.Errorf("%v: stderr %q", args, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("%v: wrote to stdout: %q", args, r.stdout)
		}
	}
	for _, r := range fa.requests() {
		if r.Path == api.PathPolicyApply {
			t.Errorf("a usage error reached the agent: %+v", r)
		}
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{err: nil, code: 0},
		{err: errors.New("boom"), code: 1},
		{err: &usageError{err: errors.New("bad")}, code: 2},
		{err: fmt.Errorf("wrapped: %w", &api.ErrUnreachable{Socket: "s", Err: syscall.ECONNREFUSED}), code: 3},
		{err: &api.ErrUnreachable{Socket: "s", Err: syscall.EACCES}, code: 5},
		{err: &api.Error{Kind: api.KindInvalidPolicy}, code: 4},
		{err: &api.Error{Kind: api.KindRejected}, code: 4},
		{err: &api.Error{Kind: api.KindForbidden}, code: 5},
		{err: &api.Error{Kind: api.KindNotFound}, code: 1},
		{err: &api.Error{Kind: api.KindInternal}, code: 1},
		{err: &codeError{code: 5, err: errors.New("x")}, code: 5},
	} {
		if got := exitCode(tc.err); got != tc.code {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}

func TestForbiddenIsExit5(t *testing.T) {
	forbidden := replyError(http.StatusForbidden, api.Error{Kind: api.KindForbidden,
		Message: "uid 1000 may not use the API"})
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathStatus: forbidden, api.PathPolicyApply: forbidden})
	r := fa.run(t, "status")
	wantCode(t, r, exitForbidden)
	if !strings.Contains(r.stderr, "ztgate: permission denied: uid 1000 may not use the API") {
		t.Errorf("stderr: %s", r)
	}
	r = ztgate(t, context.Background(), "kind: Policy\n", "--socket", fa.socket, "policy", "apply", "-")
	wantCode(t, r, exitForbidden)
}

func TestOtherAgentErrorIsExit1(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{
		api.PathPolicy: replyError(http.StatusNotFound, api.Error{Kind: api.KindNotFound, Message: "no policy applied yet"}),
		api.PathStatus: func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "kaputt", http.StatusBadGateway) },
	})
	r := fa.run(t, "policy", "get")
	wantCode(t, r, exitError)
	if r.stderr != "ztgate: no policy applied yet\n" || r.stdout != "" {
		t.Errorf("%s", r)
	}
	r = fa.run(t, "status")
	wantCode(t, r, exitError)
	if !strings.Contains(r.stderr, "kaputt") {
		t.Errorf("%s", r)
	}
}

func TestTimeout(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathStatus: func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}})
	r := fa.run(t, "--timeout", "100ms", "status")
	wantCode(t, r, exitError)
	if !strings.Contains(r.stderr, "within 100ms") { // the client gave up, not the 10 s handler
		t.Errorf("%s", r)
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := ztgate(t, context.Background(), "", "completion", shell)
		wantCode(t, r, exitOK)
		if !strings.Contains(r.stdout, "ztgate") || len(r.stdout) < 200 {
			t.Errorf("completion %s: %s", shell, r)
		}
	}
	r := ztgate(t, context.Background(), "", "completion", "bash")
	if !strings.Contains(r.stdout, "complete ") {
		t.Errorf("bash completion script has no complete command: %s", r)
	}
	// The script asks the binary for candidates.
	r = ztgate(t, context.Background(), "", "policy", "--generate-shell-completion")
	wantCode(t, r, exitOK)
	for _, sub := range []string{"validate", "apply", "diff", "get", "explain"} {
		if !strings.Contains(r.stdout, sub) {
			t.Errorf("completion of 'policy' lacks %s: %s", sub, r)
		}
	}
}

func TestVersionAndHelp(t *testing.T) {
	r := ztgate(t, context.Background(), "", "version")
	wantCode(t, r, exitOK)
	if !strings.HasPrefix(r.stdout, "ztgate ") {
		t.Errorf("%s", r)
	}
	r = ztgate(t, context.Background(), "", "--help")
	wantCode(t, r, exitOK)
	for _, s := range []string{"EXIT STATUS", "3  agent unreachable", "4  policy rejected", "5  permission denied",
		"policy", "events", "audit"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("help lacks %q:\n%s", s, r.stdout)
		}
	}
}

// TestPackageDocListsCommands: the command list in main.go's package comment names every
// command of the tree.
func TestPackageDocListsCommands(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(src[:bytes.Index(src, []byte("\npackage main"))])
	root := (&app{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}).command()
	root.Run(context.Background(), []string{"ztgate", "version"}) // adds the completion command
	n := 0
	_ = root.Walk(func(c *cli.Command) error {
		if c == root || c.Hidden || c.Name == "help" {
			return nil
		}
		name := strings.TrimPrefix(c.FullName(), "ztgate ")
		if strings.HasPrefix(name, "completion ") { // one per shell: completion SHELL
			return nil
		}
		n++
		if !strings.Contains(doc, "//\t  "+name+" ") {
			t.Errorf("main.go's command list lacks %q", name)
		}
		return nil
	})
	if n < 16 {
		t.Errorf("walked %d commands, want at least 16", n)
	}
}
