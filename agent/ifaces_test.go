package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/testenv"
)

// TestStartInterfaceStates: started with one configured interface absent, one whose VLAN
// offload cannot be turned off and a pattern that matches nothing, the agent starts, attaches
// where it can and reports each one: absent, degraded (attached, with the reason), and the
// pattern; it is ready (neither absent nor degraded holds readiness back).
func TestStartInterfaceStates(t *testing.T) {
	testenv.RequirePriv(t)
	tp := testenv.New(t, testenv.Config{Devices: []testenv.DeviceSpec{{}, {}}})
	ok, stuck := tp.Devices[0].Port, tp.Devices[1].Port
	absent, pattern := "zt"+tp.ID+"gx", "zt"+tp.ID+"q*"

	orig := disableVLANOffload
	t.Cleanup(func() { disableVLANOffload = orig })
	disableVLANOffload = func(name string) error {
		if name == stuck.Name {
			return errors.New("vlan offload: rx-vlan-hw-parse stays on")
		}
		return orig(name)
	}

	cfg := testConfig(t, ok.Name, stuck.Name, absent, pattern)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var ifcs []api.Interface
	var ready bool
	err := tp.Gateway.Do(func() error {
		a, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return err
		}
		defer a.close()
		a.ready.Store(true) // what serve does
		ifcs, ready = a.interfaces(), a.isReady()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		state    string
		attached bool
		err      string
	}{
		ok.Name:    {"attached", true, ""},
		stuck.Name: {"degraded", true, "vlan offload: rx-vlan-hw-parse stays on"},
		absent:     {"absent", false, ""},
		pattern:    {"absent", false, "no interface matches the pattern"},
	}
	if len(ifcs) != len(want) {
		t.Fatalf("interfaces: %+v", ifcs)
	}
	for _, ifc := range ifcs {
		w, found := want[ifc.Name]
		if !found || ifc.State != w.state || ifc.Attached != w.attached || ifc.Error != w.err {
			t.Errorf("%s: %+v, want %+v", ifc.Name, ifc, w)
		}
	}
	if !ready {
		t.Error("not ready")
	}
}

// TestWatchLinksResubscribe: when the link event subscription ends (a receive buffer overflow
// closes it), the agent subscribes again and lists every interface, so a port re-created while
// no event could arrive is attached anyway.
func TestWatchLinksResubscribe(t *testing.T) {
	testenv.RequirePriv(t)
	tp := testenv.New(t, testenv.Config{Devices: []testenv.DeviceSpec{{}}})
	d := tp.Devices[0]

	origSub, origResync := linkSubscribe, resync
	t.Cleanup(func() { linkSubscribe, resync = origSub, origResync })
	resync = time.Hour // only a subscription's listing may find the port
	lost := make(chan netlink.LinkUpdate)
	calls := 0
	linkSubscribe = func(ch chan<- netlink.LinkUpdate, done <-chan struct{}, o netlink.LinkSubscribeOptions) error {
		calls++
		if calls > 1 {
			return origSub(ch, done, o)
		}
		// The first subscription delivers nothing until the test ends it; the port is gone
		// before its listing.
		if err := tp.DeletePort(d); err != nil {
			return err
		}
		go func() {
			for range lost {
			}
			close(ch)
		}()
		return nil
	}

	cfg := testConfig(t, d.Port.Name)
	state := func(a *Agent) ifaceState {
		a.ifMu.Lock()
		defer a.ifMu.Unlock()
		return a.ifaces[d.Port.Name]
	}
	waitState := func(a *Agent, ok func(ifaceState) bool, what string) error {
		deadline := time.Now().Add(10 * time.Second)
		for !ok(state(a)) {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: %+v", what, state(a))
			}
			time.Sleep(10 * time.Millisecond)
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	steps := make(chan *Agent, 1)
	result := make(chan error, 1)
	go func() {
		defer cancel()
		a := <-steps
		if a == nil {
			result <- errors.New("no agent")
			return
		}
		// The first listing found the port gone.
		if err := waitState(a, func(st ifaceState) bool { return st.state == ifAbsent }, "not absent"); err != nil {
			result <- err
			return
		}
		if err := tp.RecreatePort(d, nil); err != nil {
			result <- err
			return
		}
		time.Sleep(100 * time.Millisecond) // nothing may happen: no events, no listing
		if st := state(a); st.state != ifAbsent {
			result <- fmt.Errorf("the agent saw the re-created port without events: %+v", st)
			return
		}
		close(lost) // the subscription ends
		result <- waitState(a, func(st ifaceState) bool { return st.state == ifAttached && st.index == d.Port.Index },
			"not attached to the re-created port")
	}()
	err := tp.Gateway.Do(func() error {
		a, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			steps <- nil
			return err
		}
		defer a.close()
		steps <- a
		a.watchLinks(ctx) // until the steps end
		if a.linkResubs.Load() == 0 || calls != 2 {
			return fmt.Errorf("%d subscriptions ended, %d made", a.linkResubs.Load(), calls)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-result; err != nil {
		t.Fatal(err)
	}
}
