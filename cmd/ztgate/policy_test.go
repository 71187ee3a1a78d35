package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/policy"
)

// testYAML has no trailing newline and odd spacing: get must not normalise it.
const testYAML = "apiVersion: ztgate.io/v1\nkind: Policy\nmetadata:\n  name: home-lab   # the lab\n" +
	"spec:\n  mode: enforce\n\n  devices: []"

func TestPolicyGetYAMLVerbatim(t *testing.T) {
	info := api.PolicyInfo{PolicyMeta: api.PolicyMeta{Revision: 3, Name: "home-lab", Hash: "abc"}, YAML: testYAML}
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathPolicy: reply(info)})
	for _, args := range [][]string{{"policy", "get"}, {"policy", "get", "-o", "yaml"}} {
		r := fa.run(t, args...)
		wantCode(t, r, exitOK)
		if r.stdout != testYAML {
			t.Errorf("%v: stdout %q, want %q", args, r.stdout, testYAML)
		}
	}
	r := fa.run(t, "policy", "get", "-o", "json")
	wantCode(t, r, exitOK)
	var got api.PolicyInfo
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !reflect.DeepEqual(got, info) {
		t.Errorf("policy get -o json: %v %+v", err, got)
	}
}

func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPolicyApplyRejected(t *testing.T) {
	path := writeFile(t, "policy.yaml", testYAML)
	e := api.Error{Kind: api.KindInvalidPolicy, Message: "invalid policy", Fields: []api.FieldError{
		{File: path, Line: 4, Column: 9, Field: "metadata.name", Message: "must be a DNS label"},
		{File: path, Line: 8, Column: 3, Field: "spec.devices", Message: "at least one device is required"},
		{File: path, Message: "too many errors, 3 more not shown"},
	}}
	fa := newFakeAgent(t, map[string]http.HandlerFunc{
		api.PathPolicyApply:    replyError(http.StatusUnprocessableEntity, e),
		api.PathPolicyValidate: replyError(http.StatusUnprocessableEntity, e),
		api.PathPolicyDiff:     replyError(http.StatusUnprocessableEntity, e),
	})
	for _, sub := range []string{"apply", "validate", "diff"} {
		r := fa.run(t, "policy", sub, path)
		wantCode(t, r, exitRejected)
		want := "ztgate: invalid policy\n" +
			path + ":4:9: metadata.name: must be a DNS label\n" +
			path + ":8:3: spec.devices: at least one device is required\n" +
			path + ": too many errors, 3 more not shown\n"
		if r.stderr != want || r.stdout != "" {
			t.Errorf("policy %s: stderr\n%s\nwant\n%s", sub, r.stderr, want)
		}
		req := fa.lastRequest(t)
		if req.Method != http.MethodPost || req.Filename != path || string(req.Body) != testYAML {
			t.Errorf("policy %s sent %s %s filename %q body %q", sub, req.Method, req.Path, req.Filename, req.Body)
		}
	}

	// A valid policy the datapath cannot hold: also exit 4.
	fa = newFakeAgent(t, map[string]http.HandlerFunc{api.PathPolicyApply: replyError(http.StatusConflict,
		api.Error{Kind: api.KindRejected, Message: "policy needs 20000 rules, the datapath holds 16384"})})
	r := fa.run(t, "policy", "apply", path)
	wantCode(t, r, exitRejected)
	if !strings.Contains(r.stderr, "20000 rules") {
		t.Errorf("%s", r)
	}
}

func TestPolicyFromStdin(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathPolicyValidate: reply(api.ValidateResult{
		Name: "home-lab", Hash: "00112233445566778899", Devices: 2, Segments: 1})})
	r := ztgate(t, context.Background(), testYAML, "--socket", fa.socket, "policy", "validate", "-")
	wantCode(t, r, exitOK)
	if r.stdout != "<stdin>: valid: policy \"home-lab\", 2 devices in 1 segments, hash 001122334455\n" {
		t.Errorf("%s", r)
	}
	req := fa.lastRequest(t)
	if req.Filename != "<stdin>" || string(req.Body) != testYAML {
		t.Errorf("sent filename %q body %q", req.Filename, req.Body)
	}
}

func TestPolicyMissingFile(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathPolicyApply: reply(api.ApplyResult{})})
	r := fa.run(t, "policy", "apply", filepath.Join(t.TempDir(), "nope.yaml"))
	wantCode(t, r, exitError)
	if !strings.Contains(r.stderr, "no such file") || len(fa.requests()) != 0 {
		t.Errorf("%s", r)
	}
}

var testChanges = policy.Diff{
	Settings: []policy.FieldChange{{Field: "spec.mode", Old: "audit", New: "enforce"}},
	Devices: []policy.ItemChange{
		{Op: policy.OpAdded, Name: "cam-2"},
		{Op: policy.OpChanged, Name: "cam-1", RulesAdded: []string{"to gateway proto tcp ports 443"}},
	},
}

func TestPolicyApply(t *testing.T) {
	res := api.ApplyResult{OldRevision: 6, NewRevision: 7, Hash: "fedcba9876543210fedcba",
		Duration: 1500 * time.Microsecond, Changes: testChanges}
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathPolicyApply: reply(res)})
	path := writeFile(t, "p.yaml", testYAML)
	r := fa.run(t, "policy", "apply", path)
	wantCode(t, r, exitOK)
	want := "applied revision 6 -> 7 (hash fedcba987654, 1.5 ms)\n" + testChanges.String()
	if r.stdout != want {
		t.Errorf("stdout\n%s\nwant\n%s", r.stdout, want)
	}
	for _, s := range []string{"~ spec.mode: audit -> enforce", "+ device cam-2", "+ to gateway proto tcp ports 443"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("apply output lacks %q:\n%s", s, r.stdout)
		}
	}

	r = fa.run(t, "policy", "apply", "-o", "json", path)
	wantCode(t, r, exitOK)
	var got api.ApplyResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !reflect.DeepEqual(got, res) {
		t.Errorf("apply -o json: %v\n got %+v\nwant %+v", err, got, res)
	}
}

func TestPolicyDiff(t *testing.T) {
	path := writeFile(t, "p.yaml", testYAML)
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathPolicyDiff: reply(api.DiffResult{Revision: 7,
		Diff: testChanges})})
	r := fa.run(t, "policy", "diff", path)
	wantCode(t, r, exitOK)
	if r.stdout != "changes against revision 7:\n"+testChanges.String() {
		t.Errorf("%s", r)
	}
	fa = newFakeAgent(t, map[string]http.HandlerFunc{api.PathPolicyDiff: reply(api.DiffResult{Revision: 7})})
	r = fa.run(t, "policy", "diff", path)
	wantCode(t, r, exitOK)
	if r.stdout != "no changes against revision 7\n" {
		t.Errorf("%s", r)
	}
}

func TestPolicyExplain(t *testing.T) {
	e := api.Explanation{Revision: 7, Explanation: policy.Explanation{
		From: "cam-1", Src: "10.0.0.5", Dst: "192.0.2.2", DstDevice: "nvr", Proto: "tcp", Port: 22,
		Mode: "enforce", Verdict: "drop", Reason: "no_rule",
	}}
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathExplain: reply(e)})
	r := fa.run(t, "policy", "explain", "--from", "cam-1", "--to", "nvr", "--proto", "tcp", "--port", "22")
	wantCode(t, r, exitOK)
	for _, s := range []string{"drop (no_rule)", "cam-1 (10.0.0.5)", "192.0.2.2 (device nvr)", "tcp port 22",
		"Revision:"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("explain lacks %q:\n%s", s, r.stdout)
		}
	}
	var q api.ExplainRequest
	if err := json.Unmarshal(fa.lastRequest(t).Body, &q); err != nil || q != (api.ExplainRequest{From: "cam-1", To: "nvr",
		Proto: "tcp", Port: 22}) {
		t.Errorf("sent %+v (%v)", q, err)
	}
	r = fa.run(t, "policy", "explain", "--from", "cam-1", "--to", "nvr", "--proto", "tcp", "-o", "json")
	wantCode(t, r, exitOK)
	var got api.Explanation
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got != e {
		t.Errorf("explain -o json: %v %+v", err, got)
	}
}

func TestPolicyExplainInbound(t *testing.T) {
	e := api.Explanation{Revision: 7, Explanation: policy.Explanation{
		Direction: policy.DirectionInbound, From: "10.0.0.24", Src: "10.0.0.24", SrcDevice: "nvr", Dst: "10.0.0.21",
		DstDevice: "cam-1", Proto: "tcp", Port: 554, Mode: "enforce", Verdict: "pass", Reason: "allow",
		Rule: "spec.segments[0].allow[0]", RuleText: "from device nvr proto tcp ports 554",
	}}
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathExplain: reply(e)})
	r := fa.run(t, "policy", "explain", "--from", "10.0.0.24", "--to", "cam-1", "--proto", "tcp", "--port", "554")
	wantCode(t, r, exitOK)
	for _, s := range []string{"pass (allow)", "tcp port 554, inbound", "10.0.0.24 (device nvr)",
		"10.0.0.21 (device cam-1)",
		"spec.segments[0].allow[0]: from device nvr proto tcp ports 554"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("explain lacks %q:\n%s", s, r.stdout)
		}
	}
	r = fa.run(t, "policy", "explain", "--from", "10.0.0.24", "--to", "cam-1", "--proto", "tcp", "-o", "json")
	wantCode(t, r, exitOK)
	for _, key := range []string{`"direction": "inbound"`, `"src_device": "nvr"`} {
		if !strings.Contains(r.stdout, key) {
			t.Errorf("explain -o json lacks %s:\n%s", key, r.stdout)
		}
	}

	e.Direction, e.Replies = policy.DirectionOutbound, policy.RepliesFollowFlow
	fa = newFakeAgent(t, map[string]http.HandlerFunc{api.PathExplain: reply(e)})
	r = fa.run(t, "policy", "explain", "--from", "nvr", "--to", "cam-1", "--proto", "tcp", "--port", "554")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "Replies:") || !strings.Contains(r.stdout, "follow the flow") {
		t.Errorf("explain lacks the replies:\n%s", r.stdout)
	}
}

func TestPolicyExplainICMP(t *testing.T) {
	e := api.Explanation{Revision: 7, Explanation: policy.Explanation{
		From: "cam-1", Src: "10.0.0.5", Dst: "10.0.0.1", Proto: "icmp", ICMP: "destination-unreachable/4",
		Mode: "enforce", Verdict: "pass", Reason: "allow",
	}}
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathExplain: reply(e)})
	r := fa.run(t, "policy", "explain", "--from", "cam-1", "--to", "gateway", "--proto", "icmp", "--icmp", "3/4")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "icmp destination-unreachable/4") {
		t.Errorf("explain lacks the ICMP message:\n%s", r.stdout)
	}
	var q api.ExplainRequest
	if err := json.Unmarshal(fa.lastRequest(t).Body, &q); err != nil || q != (api.ExplainRequest{From: "cam-1",
		To: "gateway", Proto: "icmp", ICMP: "3/4"}) {
		t.Errorf("sent %+v (%v)", q, err)
	}
}
