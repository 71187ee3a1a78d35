package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/api"
)

// noAgent returns a socket path nothing listens on.
func noAgent(t *testing.T) string {
	return filepath.Join(t.TempDir(), "no-agent.sock")
}

// shippedPolicies are the policies the repository ships, relative to this package.
func shippedPolicies(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("examples: %v %v", files, err)
	}
	return append(files, "../../deploy/policy.yaml")
}

func TestValidateOffline(t *testing.T) {
	files := shippedPolicies(t)
	r := ztgate(t, context.Background(), "", append([]string{"--socket", noAgent(t), "policy", "validate"}, files...)...)
	wantCode(t, r, exitOK)
	for _, f := range files {
		if !strings.Contains(r.stdout, f+": valid: policy ") {
			t.Errorf("stdout does not report %s valid:\n%s", f, r.stdout)
		}
	}
	if n := strings.Count(r.stderr, "not checked"); n != 1 {
		t.Errorf("want one note that the live capacity check was skipped, got %d:\n%s", n, r.stderr)
	}
}

// brokenCopy writes a copy of the shipped policy src with old replaced by new.
func brokenCopy(t *testing.T, src, old, new string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s has no %q", src, old)
	}
	return writeFile(t, filepath.Base(src), strings.Replace(string(data), old, new, 1))
}

func TestValidateOfflineRejects(t *testing.T) {
	for _, tc := range []struct {
		name      string
		src       string
		old, new  string
		wantLines []string // after the file name
	}{
		{
			name: "bad mac",
			src:  "../../examples/home.yaml", old: `"02:00:00:00:01:02"`, new: `"02:00:zz:00:01:02"`,
			wantLines: []string{`:43:12: spec.devices[1].mac: "02:00:zz:00:01:02" is not a MAC address`},
		},
		{
			name: "unknown field",
			src:  "../../examples/office.yaml", old: "      vlan: 20\n", new: "      vlna: 20\n",
			wantLines: []string{`:68:7: spec.devices[2].vlna: unknown field "vlna"`},
		},
		{
			name: "compile error located",
			src:  "../../deploy/policy.yaml", old: "ports: [443]",
			new:       "ports: [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 33]",
			wantLines: []string{`:33:7: spec.devices[0].allow: 17 distinct port ranges for one destination and protocol 6`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := brokenCopy(t, tc.src, tc.old, tc.new)
			r := ztgate(t, context.Background(), "", "--socket", noAgent(t), "policy", "validate", path)
			wantCode(t, r, exitRejected)
			if r.stdout != "" {
				t.Errorf("stdout: %q", r.stdout)
			}
			for _, l := range tc.wantLines {
				if !strings.Contains(r.stderr, "\n"+path+l) {
					t.Errorf("stderr lacks %s%s:\n%s", path, l, r.stderr)
				}
			}
		})
	}
}

// TestValidateSeveralFiles: every file is checked and reported; the exit status is the first
// failure's.
func TestValidateSeveralFiles(t *testing.T) {
	good := "../../examples/factory.yaml"
	bad := brokenCopy(t, good, "kind: Policy", "kind: Polcy")
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	r := ztgate(t, context.Background(), "", "--socket", noAgent(t), "policy", "validate", bad, good, missing)
	wantCode(t, r, exitRejected)
	if !strings.Contains(r.stdout, good+": valid:") || strings.Contains(r.stdout, bad) {
		t.Errorf("stdout:\n%s", r.stdout)
	}
	for _, s := range []string{bad + ":10:7: kind: ", "missing.yaml: no such file"} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

// TestValidateAgentFirst: when the agent answers, its answer (with the live capacity check)
// is the result, for every file, and nothing is checked offline.
func TestValidateAgentFirst(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathPolicyValidate: replyError(http.StatusConflict,
		api.Error{Kind: api.KindRejected, Message: "policy needs 20000 rules, the datapath holds 16384"})})
	files := shippedPolicies(t)
	r := fa.run(t, append([]string{"policy", "validate"}, files...)...)
	wantCode(t, r, exitRejected)
	if n := strings.Count(r.stderr, "20000 rules"); n != len(files) || strings.Contains(r.stderr, "offline") {
		t.Errorf("want the agent's answer for each of %d files:\n%s", len(files), r)
	}
	if got := len(fa.requests()); got != len(files) {
		t.Errorf("the agent got %d requests, want %d", got, len(files))
	}
}

// TestValidateBinary runs the built binary as CI does: exit status 0 for the shipped policies,
// 4 with file:line:col for a broken copy, and no agent needed.
func TestValidateBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "ztgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(args ...string) (int, string, string) {
		cmd := exec.Command(bin, append([]string{"--socket", noAgent(t), "policy", "validate"}, args...)...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}
	if code, stdout, stderr := run(shippedPolicies(t)...); code != exitOK || strings.Count(stdout, ": valid: ") != 4 {
		t.Errorf("shipped policies: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	bad := brokenCopy(t, "../../examples/factory.yaml", "port: eth3", "port: eth3/0")
	code, stdout, stderr := run(bad)
	want := bad + `:70:13: spec.devices[4].port: "eth3/0" is not a valid interface name: contains '/'`
	if code != exitRejected || stdout != "" || !strings.Contains(stderr, "\n"+want) {
		t.Errorf("broken copy: exit %d, want 4 and %s\nstdout:\n%s\nstderr:\n%s", code, want, stdout, stderr)
	}
}
