package maps

import (
	"errors"
	"fmt"
	stdmaps "maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
)

// deltaPolicy is a policy of n devices in three segments; device i has a rule of its own to
// port 1000+i%5, so rule lists repeat.
func deltaPolicy(n int) *policy.Policy {
	p := &policy.Policy{APIVersion: policy.APIVersion, Kind: policy.Kind, Metadata: policy.Metadata{Name: "delta"}}
	p.Spec.Gateway = policy.Gateway{IPv4: []string{"10.9.0.1"}, Services: []policy.Service{policy.ServiceDNS}}
	for s := range 3 {
		p.Spec.Segments = append(p.Spec.Segments, policy.Segment{Name: fmt.Sprintf("s%d", s),
			Allow: []policy.Rule{{To: policy.Target{CIDR: fmt.Sprintf("203.0.%d.0/24", 113+s)}, Proto: "tcp"}}})
	}
	for i := range n {
		p.Spec.Devices = append(p.Spec.Devices, deltaDevice(i, 1000+i%5, i%3))
	}
	return p
}

func deltaDevice(i, port, seg int) policy.Device {
	return policy.Device{Name: fmt.Sprintf("d%d", i), MAC: fmt.Sprintf("02:10:00:00:%02x:%02x", i>>8, i&0xff),
		IPv4: []string{fmt.Sprintf("10.9.%d.%d", 1+i>>8, i&0xff)}, Segment: fmt.Sprintf("s%d", seg),
		Allow: []policy.Rule{{To: policy.Target{CIDR: "198.51.100.0/24"}, Proto: "udp",
			Ports: []policy.PortRange{{Lo: uint16(port), Hi: uint16(port)}}}}}
}

// TestApplyDelta: one-device changes (new rule lists, removed rule sets, new and removed
// devices, new addresses, capacity growth) written with ApplyDelta, with full Applies in
// between, leave exactly the Editor's snapshot in the kernel's active slot every time; a
// change over capacity is refused and changes nothing.
func TestApplyDelta(t *testing.T) {
	e := setup(t, func(c *loader.Config) { c.MaxDevices, c.MaxAddrs, c.MaxPrefixes, c.MaxRules = 200, 400, 512, 1024 })
	e.m.SetIncremental(true)
	rnd := rand.New(rand.NewPCG(3, 4))
	fresh := func(rev uint64, n int) *policy.Editor {
		ed, err := policy.NewEditor(deltaPolicy(n), policy.CompileOptions{Revision: rev})
		if err != nil {
			t.Fatal(err)
		}
		mustApply(t, e, ed.Snapshot())
		checkActive(t, e, ed.Snapshot())
		return ed
	}
	ed := fresh(1, 20)
	next := 20
	var inPlace int
	for step := range 120 {
		if step == 60 {
			// A whole policy in between: the slots' content is known again from Apply.
			ed = fresh(ed.Snapshot().Revision+1, 30)
			next = 30
		}
		var d *policy.Delta
		var err error
		switch rnd.IntN(4) {
		case 0:
			nd := deltaDevice(next, 2000+rnd.IntN(40), rnd.IntN(3))
			next++
			d, err = ed.PreparePut("t", "", &nd, nil)
		case 1:
			d, err = ed.PrepareDelete(fmt.Sprintf("d%d", rnd.IntN(next)))
			if err != nil && strings.Contains(err.Error(), "no such device") {
				continue
			}
		default:
			i := rnd.IntN(next)
			if _, ok := ed.Device(fmt.Sprintf("d%d", i)); !ok {
				continue
			}
			nd := deltaDevice(i, 1000+rnd.IntN(60), rnd.IntN(3))
			d, err = ed.PreparePut("t", "", &nd, nil)
		}
		if err != nil {
			t.Fatalf("step %d: prepare: %v", step, err)
		}
		before := e.m.LastApply()
		if err := e.m.ApplyDelta(d, ed.Snapshot(), e.lim); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if e.m.LastApply() == before {
			t.Fatalf("step %d: no apply stats", step)
		}
		ed.Commit(d)
		checkActive(t, e, ed.Snapshot())
		if st := e.m.slots[0].dsync && e.m.slots[1].dsync; st {
			inPlace++
		}
		checkUsage(t, e, ed.Snapshot())
	}
	if inPlace < 100 {
		t.Fatalf("only %d of 120 changes found both slots in step", inPlace)
	}

	// Over capacity: refused before any write.
	rev := ed.Snapshot().Revision
	for i := 0; ; i++ {
		nd := deltaDevice(500+i, 3000, 0)
		d, err := ed.PreparePut("t", "", &nd, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = e.m.ApplyDelta(d, ed.Snapshot(), e.lim)
		if err != nil {
			var ce *CapacityError
			if !errors.As(err, &ce) || ce.Map != "zt_devices" {
				t.Fatalf("over capacity: %v", err)
			}
			break
		}
		ed.Commit(d)
		rev = d.Revision
		if i > 300 {
			t.Fatal("never over capacity")
		}
	}
	checkActive(t, e, ed.Snapshot())
	if got, _ := e.m.ActiveRevision(); got != rev {
		t.Fatalf("revision %d after a refused change, want %d", got, rev)
	}
}

// TestDeltaNeverMixesRevisions: one-device changes that each replace the device's rule set
// (and remove the old one) while frames run: a frame that saw the new device record with the
// old rules, or the reverse, would drop as no_rule. Every frame must pass.
func TestDeltaNeverMixesRevisions(t *testing.T) {
	e := setup(t, nil)
	e.m.SetIncremental(true)
	p := &policy.Policy{APIVersion: policy.APIVersion, Kind: policy.Kind, Metadata: policy.Metadata{Name: "mix"}}
	p.Spec.Gateway.IPv4 = []string{"10.0.0.1"}
	dev := func(extra uint16) policy.Device {
		return policy.Device{Name: "dev", MAC: net.HardwareAddr(devMAC[:]).String(), IPv4: []string{"10.0.0.2"},
			Allow: []policy.Rule{{To: policy.Target{Gateway: true}, Proto: "udp",
				Ports: []policy.PortRange{{Lo: 53, Hi: 53}, {Lo: extra, Hi: extra}}}}}
	}
	p.Spec.Devices = []policy.Device{dev(1000)}
	ed, err := policy.NewEditor(p, policy.CompileOptions{Revision: 1})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, e, ed.Snapshot())
	neverMixes(t, e, func(rev uint64) error {
		nd := dev(uint16(1000 + (rev+1)%2))
		d, err := ed.PreparePut("t", "", &nd, nil)
		if err != nil {
			return err
		}
		if d.Rules.Empty() {
			return fmt.Errorf("revision %d: the change does not replace the rule set", rev)
		}
		if err := e.m.ApplyDelta(d, ed.Snapshot(), e.lim); err != nil {
			return err
		}
		ed.Commit(d)
		return nil
	})
	checkActive(t, e, ed.Snapshot())
}

// TestApplyDeltaFailure: a change that fails while it writes the inactive slot (here: a delete
// of a key that is not there) leaves the active revision in force, and the next change is
// written correctly from scratch.
func TestApplyDeltaFailure(t *testing.T) {
	e := setup(t, func(c *loader.Config) { c.MaxDevices, c.MaxAddrs, c.MaxPrefixes, c.MaxRules = 200, 400, 512, 1024 })
	e.m.SetIncremental(true)
	ed, err := policy.NewEditor(deltaPolicy(20), policy.CompileOptions{Revision: 1})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, e, ed.Snapshot())
	put := func(i, port int) *policy.Delta {
		t.Helper()
		nd := deltaDevice(i, port, 0)
		d, err := ed.PreparePut("t", "", &nd, nil)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for i := range 3 { // both slots get their own device maps, in step
		d := put(i, 1500+i)
		if err := e.m.ApplyDelta(d, ed.Snapshot(), e.lim); err != nil {
			t.Fatal(err)
		}
		ed.Commit(d)
	}
	if !e.m.slots[0].dsync || !e.m.slots[1].dsync {
		t.Fatal("the slots are not in step")
	}
	want := cloneForCheck(ed.Snapshot())
	bad := put(5, 1600)
	bad.Devices.Del = append(bad.Devices.Del, policy.DevKey(net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}))
	if err := e.m.ApplyDelta(bad, ed.Snapshot(), e.lim); err == nil {
		t.Fatal("a delete of a missing key succeeded")
	}
	checkActive(t, e, want)
	for i := range 4 {
		d := put(6+i, 1700+i)
		if err := e.m.ApplyDelta(d, ed.Snapshot(), e.lim); err != nil {
			t.Fatal(err)
		}
		ed.Commit(d)
		checkActive(t, e, ed.Snapshot())
	}
}

// cloneForCheck copies what checkActive compares.
func cloneForCheck(s *policy.Snapshot) *policy.Snapshot {
	c := *s
	c.Devices, c.Addrs = stdmaps.Clone(s.Devices), stdmaps.Clone(s.Addrs)
	c.Prefixes, c.Rules = stdmaps.Clone(s.Prefixes), stdmaps.Clone(s.Rules)
	return &c
}

// TestFreshDeviceStartsAtZero: a deleted device's id, given to a new device by a later
// revision, starts with zeroed counters, through Apply and through ApplyDelta alike; the other
// devices keep theirs.
func TestFreshDeviceStartsAtZero(t *testing.T) {
	e := setup(t, nil)
	e.m.SetIncremental(true)
	key := func(i int) bpf.DevKey {
		hw, err := net.ParseMAC(deltaDevice(i, 0, 0).MAC)
		if err != nil {
			t.Fatal(err)
		}
		return policy.DevKey(hw)
	}
	// charge sends one frame from device i (counted, then dropped: no rule for it).
	charge := func(i int) {
		d := deltaDevice(i, 0, 0)
		if ret := run(t, e, ipv4Frame(key(i).Mac, d.IPv4[0], "192.0.2.1", 17, 4000, 9)); ret != xdpDrop {
			t.Fatalf("frame of d%d: action %d, want XDP_DROP", i, ret)
		}
	}
	frames := func(id uint32) uint64 {
		t.Helper()
		ds, err := e.m.DeviceStats(id)
		if err != nil {
			t.Fatal(err)
		}
		return ds.Packets[bpf.VerdictPass] + ds.Packets[bpf.VerdictDrop]
	}
	compile := func(p *policy.Policy, rev uint64, prev *policy.Snapshot) *policy.Snapshot {
		s, err := policy.Compile(p, policy.CompileOptions{Revision: rev, Prev: prev})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// Whole policies: d1 leaves, then d9 arrives and is given d1's id.
	p := deltaPolicy(3)
	s1 := compile(p, 1, nil)
	mustApply(t, e, s1)
	charge(0)
	charge(1)
	charge(1)
	id0, id1 := s1.Devices[key(0)].DevId, s1.Devices[key(1)].DevId
	p.Spec.Devices = slices.Delete(p.Spec.Devices, 1, 2)
	s2 := compile(p, 2, s1)
	mustApply(t, e, s2)
	p.Spec.Devices = append(p.Spec.Devices, deltaDevice(9, 1000, 0))
	s3 := compile(p, 3, s2)
	if s3.Devices[key(9)].DevId != id1 || !slices.Equal(s3.Fresh, []uint32{id1}) {
		t.Fatalf("d9 has id %d (fresh %v), want d1's %d, fresh", s3.Devices[key(9)].DevId, s3.Fresh, id1)
	}
	if frames(id1) != 2 {
		t.Fatalf("before the apply: %d frames on id %d, want d1's 2", frames(id1), id1)
	}
	mustApply(t, e, s3)
	if s3.Fresh != nil {
		t.Errorf("Apply left the snapshot's fresh ids %v: applying it again would clear them again", s3.Fresh)
	}
	if n := frames(id1); n != 0 {
		t.Errorf("Apply: d9 starts with %d frames of d1's", n)
	}
	if n := frames(id0); n != 1 {
		t.Errorf("Apply: d0 has %d frames, want its 1 kept", n)
	}

	// One-device changes: d9 leaves, d10 arrives with its id.
	charge(9)
	ed, err := policy.NewEditor(p, policy.CompileOptions{Revision: 4, Prev: s3})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, e, ed.Snapshot()) // the same ids: nothing fresh, nothing cleared
	if n := frames(id1); n != 1 {
		t.Fatalf("whole apply of the same devices: d9 has %d frames, want its 1 kept", n)
	}
	change := func(d *policy.Delta, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if err := e.m.ApplyDelta(d, ed.Snapshot(), e.lim); err != nil {
			t.Fatal(err)
		}
		ed.Commit(d)
	}
	change(ed.PrepareDelete("d9"))
	nd := deltaDevice(10, 1000, 1)
	d, err := ed.PreparePut("t", "", &nd, nil)
	if err == nil && !slices.Equal(d.Fresh, []uint32{id1}) {
		t.Fatalf("d10's change: fresh %v, want d9's id %d", d.Fresh, id1)
	}
	change(d, err)
	if n := frames(id1); n != 0 {
		t.Errorf("ApplyDelta: d10 starts with %d frames of d9's", n)
	}
	if n := frames(id0); n != 1 {
		t.Errorf("ApplyDelta: d0 has %d frames, want its 1 kept", n)
	}
}

// TestFreshOverActive: a snapshot compiled over a Prev the maps do not hold (its Fresh is empty
// although the id it gives d9 was d1's in the maps) gets its fresh ids from the active slot, and
// d9 starts at zero.
func TestFreshOverActive(t *testing.T) {
	e := setup(t, nil)
	p := deltaPolicy(3)
	s1, err := policy.Compile(p, policy.CompileOptions{Revision: 1})
	if err != nil {
		t.Fatal(err)
	}
	if fresh, err := e.m.FreshOverActive(s1); err != nil || len(fresh) != 3 {
		t.Fatalf("no policy in force: fresh %v, %v, want all 3 ids", fresh, err)
	}
	mustApply(t, e, s1)
	d1 := deltaDevice(1, 0, 0)
	hw, _ := net.ParseMAC(d1.MAC)
	id1 := s1.Devices[policy.DevKey(hw)].DevId
	if ret := run(t, e, ipv4Frame(policy.DevKey(hw).Mac, d1.IPv4[0], "192.0.2.1", 17, 4000, 9)); ret != xdpDrop {
		t.Fatalf("frame of d1: action %d", ret)
	}
	// The state says d1 left at revision 2 (never applied) and d9 took its id at revision 3.
	p.Spec.Devices = slices.Delete(p.Spec.Devices, 1, 2)
	s2, err := policy.Compile(p, policy.CompileOptions{Revision: 2, Prev: s1})
	if err != nil {
		t.Fatal(err)
	}
	p.Spec.Devices = append(p.Spec.Devices, deltaDevice(9, 1000, 0))
	s3, err := policy.Compile(p, policy.CompileOptions{Revision: 3, Prev: s2})
	if err != nil {
		t.Fatal(err)
	}
	s3.Fresh = nil // what a restarted agent knows: the ids of its state, all of them in use
	if s3.Fresh, err = e.m.FreshOverActive(s3); err != nil || !slices.Equal(s3.Fresh, []uint32{id1}) {
		t.Fatalf("fresh over the active slot: %v, %v, want [%d]", s3.Fresh, err, id1)
	}
	mustApply(t, e, s3)
	if ds, err := e.m.DeviceStats(id1); err != nil || ds != (bpf.DevStats{}) {
		t.Errorf("d9 (id %d) starts with %+v, %v, want zero", id1, ds, err)
	}
}
