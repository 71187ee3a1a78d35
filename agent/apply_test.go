package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// testConfig is an agent configuration for tests protecting ifaces, with its own state, socket
// and pin directories (the pins are removed when the test ends) and no metrics server.
func testConfig(t *testing.T, ifaces ...string) Config {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	cfg := DefaultConfig()
	cfg.Interfaces = ifaces
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.BPFFSDir = filepath.Join("/sys/fs/bpf", "zt-agent-test-"+hex.EncodeToString(b[:]))
	cfg.Socket = filepath.Join(t.TempDir(), "ztgate.sock")
	cfg.MetricsAddress = ""
	t.Cleanup(func() {
		if err := loader.Uninstall(cfg.BPFFSDir); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	return cfg
}

// startTestAgent starts an agent (without its servers) on the port of a one-device topology,
// with its own state and pin directories, and a capacity of maxDevices devices.
func startTestAgent(t *testing.T, maxDevices int) *Agent {
	t.Helper()
	testenv.RequirePriv(t)
	tp := testenv.New(t, testenv.Config{Devices: []testenv.DeviceSpec{{Name: "cam"}}})
	cfg := testConfig(t, tp.Devices[0].Port.Name)
	cfg.MaxDevices = maxDevices
	cfg.Events = false
	var a *Agent
	err := tp.Gateway.Do(func() error {
		var err error
		a, err = start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		return err
	})
	t.Cleanup(func() {
		if a != nil {
			a.close()
		}
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	a.ready.Store(true)
	return a
}

// fleet is a policy document of n devices.
func fleet(t *testing.T, n int) []byte {
	t.Helper()
	p := &policy.Policy{APIVersion: policy.APIVersion, Kind: policy.Kind, Metadata: policy.Metadata{Name: "fleet"}}
	for i := range n {
		p.Spec.Devices = append(p.Spec.Devices, policy.Device{Name: fmt.Sprintf("d%d", i),
			MAC: fmt.Sprintf("02:00:00:00:01:%02x", i), IPv4: []string{fmt.Sprintf("10.0.1.%d", i+1)}})
	}
	doc, err := policy.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// answers runs fn and fails the test if it does not return: fn must not wait for the compile
// the test holds up.
func answers(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s is held up by the compile in progress", what)
	}
}

// TestReadersDuringLongCompile: while an apply or a validate is compiling (held there by a
// hook), status, policy get, devices and the metrics answer, and a device change's write lock
// on the policy in force is not held up by it (readers would queue behind that writer).
func TestReadersDuringLongCompile(t *testing.T) {
	a := startTestAgent(t, 64)
	a.access = access{uids: []uint32{0}}
	h := a.routes()
	get := func(path string) int {
		r := withTestPeer(httptest.NewRequest("GET", path, nil), &peer{uid: 0, gid: 0, pid: 1})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if _, err := a.apply("first.yaml", fleet(t, 3), self); err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	var release chan struct{}
	compileHook = func(name string) {
		if name == "block.yaml" {
			entered <- struct{}{}
			<-release
		}
	}
	t.Cleanup(func() { compileHook = nil })
	doc := fleet(t, 5)
	for _, op := range []struct {
		name string
		run  func() error
	}{
		{name: "apply", run: func() error { _, err := a.apply("block.yaml", doc, self); return err }},
		{name: "validate", run: func() error { _, _, err := a.validate("block.yaml", doc); return err }},
	} {
		release = make(chan struct{})
		before := a.cur.Load().meta.Revision
		done := make(chan error, 1)
		go func() { done <- op.run() }()
		answers(t, op.name+": reaching the hook", func() { <-entered })
		answers(t, op.name+": a device change's write lock", func() {
			a.polMu.Lock()
			defer a.polMu.Unlock() // taking the lock is what is checked
		})
		for _, path := range []string{api.PathStatus, api.PathPolicy, api.PathDevices} {
			answers(t, op.name+": GET "+path, func() {
				if code := get(path); code != http.StatusOK {
					t.Errorf("%s: GET %s: %d", op.name, path, code)
				}
			})
		}
		answers(t, op.name+": metrics", func() {
			reg := prometheus.NewRegistry()
			reg.MustRegister(a.metrics)
			if _, err := reg.Gather(); err != nil {
				t.Errorf("%s: metrics: %v", op.name, err)
			}
		})
		if rev := a.cur.Load().meta.Revision; rev != before {
			t.Errorf("%s: revision %d while the change is held up, want %d", op.name, rev, before)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
	}
	if rev := a.cur.Load().meta.Revision; rev != 2 {
		t.Errorf("revision %d after the apply, want 2", rev)
	}
}

// TestOverCapacityBeforeCompile: a policy with more devices than the agent's capacity is
// rejected, by validate and apply, without being compiled.
func TestOverCapacityBeforeCompile(t *testing.T) {
	a := startTestAgent(t, 4)
	compiled := 0
	compileHook = func(string) { compiled++ }
	t.Cleanup(func() { compileHook = nil })
	doc := fleet(t, 5)
	_, _, verr := a.validate("big.yaml", doc)
	_, aerr := a.apply("big.yaml", doc, self)
	for _, err := range []error{verr, aerr} {
		e := errorFor(err)
		if e.Kind != api.KindRejected || len(e.Fields) != 1 ||
			!strings.Contains(e.Fields[0].Message, "needs 5 entries in zt_devices, the agent's capacity is 4") {
			t.Errorf("over capacity: %v, want a capacity rejection", err)
		}
	}
	if compiled != 0 {
		t.Errorf("the over-capacity policy was compiled %d times", compiled)
	}
	if _, err := a.apply("fits.yaml", fleet(t, 4), self); err != nil || compiled != 1 {
		t.Errorf("a policy that fits: %v, compiled %d times", err, compiled)
	}
}

// TestCompileRejectLocated checks that a policy the compile refuses (a device's port that is no
// interface) is rejected by apply and validate with the file, line, column and field of the
// problem, and that the running policy stays in force.
func TestCompileRejectLocated(t *testing.T) {
	a := startTestAgent(t, 16)
	if _, err := a.apply("first.yaml", fleet(t, 2), self); err != nil {
		t.Fatal(err)
	}
	before := a.cur.Load().meta
	doc := []byte(`apiVersion: ztgate/v1
kind: Policy
metadata: {name: typo}
spec:
  devices:
    - name: cam
      mac: "02:00:00:00:01:01"
      ipv4: [10.0.1.1]
      port: ztnosuch0
`)
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{name: "apply", run: func() error { _, err := a.apply("typo.yaml", doc, self); return err }},
		{name: "validate", run: func() error { _, _, err := a.validate("typo.yaml", doc); return err }},
	} {
		err := tc.run()
		var re *rejectError
		if !errors.As(err, &re) || len(re.fields) != 1 {
			t.Fatalf("%s: %v, want one rejected field", tc.name, err)
		}
		got := re.fields[0]
		want := api.FieldError{File: "typo.yaml", Line: 9, Column: 13, Field: "spec.devices[0].port",
			Message: got.Message}
		if got != want || !strings.Contains(got.Message, "ztnosuch0") {
			t.Errorf("%s: %+v, want %+v naming the port", tc.name, got, want)
		}
	}
	if after := a.cur.Load().meta; after.Revision != before.Revision || after.Hash != before.Hash {
		t.Errorf("running policy changed: %+v, was %+v", after, before)
	}
}
