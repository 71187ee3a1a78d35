package policy

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ztgate/ztgate/bpf"
)

// editGen makes random devices for a policy of a few segments, so that rule lists repeat
// (shared rule sets), rules name devices and segments, and addresses and MACs collide.
type editGen struct {
	r     *rand.Rand
	segs  []string
	names []string // device names in use (by the test's policy)
}

func (g *editGen) rules() []Rule {
	var out []Rule
	for range g.r.IntN(3) {
		var r Rule
		switch g.r.IntN(5) {
		case 0:
			cidrs := []string{"198.51.100.0/24", "198.51.0.0/16", "2001:db8::/32", "2001:db8:1::/48", "0.0.0.0/0"}
			r.To.CIDR = cidrs[g.r.IntN(len(cidrs))]
		case 1:
			if len(g.names) > 0 {
				r.To.Device = g.names[g.r.IntN(len(g.names))]
			} else {
				r.To.Gateway = true
			}
		case 2:
			r.To.Segment = g.segs[g.r.IntN(len(g.segs))]
		default:
			r.To.Gateway = true
		}
		switch g.r.IntN(3) {
		case 0:
			r.Proto = "tcp"
			r.Ports = []PortRange{{Lo: uint16(80 + g.r.IntN(3)), Hi: uint16(80 + g.r.IntN(3))}}
			if r.Ports[0].Hi < r.Ports[0].Lo {
				r.Ports[0].Hi = r.Ports[0].Lo
			}
		case 1:
			r.Proto = "udp"
		default:
			r.Proto = "icmp"
			// Lists that differ only by icmp types must not share a rule set.
			if k := g.r.IntN(4); k > 0 {
				r.ICMP = [][]ICMPType{{"echo-request"}, {"echo-reply"}, {"8/0", "3"}}[k-1]
			}
		}
		if g.r.IntN(3) == 0 {
			// A from: rule: the same target as a source, toward the device.
			r.From, r.To = r.To, Target{}
		}
		out = append(out, r)
	}
	return out
}

// device returns a device named name; small pools of MACs and addresses make collisions.
func (g *editGen) device(name string) Device {
	d := Device{Name: name, MAC: fmt.Sprintf("02:00:00:00:%02x:%02x", g.r.IntN(2), g.r.IntN(40)+1)}
	for range g.r.IntN(3) {
		a := fmt.Sprintf("10.0.%d.%d", g.r.IntN(2), g.r.IntN(60)+1)
		if !slices.Contains(d.IPv4, a) {
			d.IPv4 = append(d.IPv4, a)
		}
	}
	if g.r.IntN(3) == 0 {
		d.IPv6 = []string{fmt.Sprintf("fd00::%x", g.r.IntN(60)+1)}
	}
	if g.r.IntN(4) > 0 {
		d.Segment = g.segs[g.r.IntN(len(g.segs))]
	}
	if g.r.IntN(4) == 0 {
		d.Mode = ModeAudit
	}
	d.Quarantined = g.r.IntN(8) == 0
	if g.r.IntN(2) == 0 {
		d.Allow = g.rules()
	}
	return d
}

func editBase(g *editGen, n int) *Policy {
	p := &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "edit"}}
	p.Spec.Gateway = Gateway{IPv4: []string{"10.0.0.254"}, Services: []Service{ServiceDNS, ServiceNTP}}
	for _, s := range g.segs {
		seg := Segment{Name: s}
		if s != "s0" {
			seg.Allow = []Rule{{To: Target{Segment: "s0"}, Proto: "tcp", Ports: []PortRange{{Lo: 443, Hi: 443}}},
				{To: Target{CIDR: "203.0.113.0/24"}, Proto: "udp"},
				{From: Target{Segment: "s0"}, Proto: "tcp", Ports: []PortRange{{Lo: 8080, Hi: 8080}}}}
		}
		p.Spec.Segments = append(p.Spec.Segments, seg)
	}
	p.Spec.Quarantine.Allow = []Rule{
		{To: Target{CIDR: "192.0.2.0/24"}, Proto: "tcp", Ports: []PortRange{{Lo: 443, Hi: 443}}}}
	for i := 0; len(p.Spec.Devices) < n; i++ {
		d := g.device(fmt.Sprintf("d%d", i))
		q := *p
		q.Spec.Devices = append(slices.Clone(p.Spec.Devices), d)
		if q.Validate() == nil {
			p.Spec.Devices = q.Spec.Devices
			g.names = append(g.names, d.Name)
		}
	}
	return p
}

// canonSnap describes a snapshot without its rule set and prefix group numbers: each device
// record with its rule set's content, the address index, the names and the entry counts.
func canonSnap(s *Snapshot) string {
	groups := map[[2]uint32]string{} // (rule set, group) -> prefix
	for k, v := range s.Prefixes {
		groups[[2]uint32{k.Ruleset, v.Group}] = fmt.Sprintf("%d/%x", k.Prefixlen, k.Addr)
	}
	content := map[uint32][]string{}
	for k, v := range s.Rules {
		sel := fmt.Sprintf("%d/%d", k.SelKind, k.SelId)
		switch k.SelKind {
		case bpf.SelPrefix:
			sel = "p" + groups[[2]uint32{k.Ruleset, k.SelId}]
		case bpf.SelMcast:
			sel = "m" + groups[[2]uint32{k.Ruleset, k.SelId}]
		}
		content[k.Ruleset] = append(content[k.Ruleset], fmt.Sprintf("%s/%d=%v", sel, k.Proto, v))
	}
	rs := func(id uint32) string {
		c := content[id]
		slices.Sort(c)
		return strings.Join(c, ";")
	}
	var lines []string
	for k, rec := range s.Devices {
		r := rec
		r.Ruleset, r.InRuleset = 0, 0
		lines = append(lines, fmt.Sprintf("dev %x %+v {%s} in {%s}", k.Mac, r, rs(rec.Ruleset), rs(rec.InRuleset)))
	}
	for k, v := range s.Addrs {
		a := v
		a.Ruleset, a.InRuleset = 0, 0
		lines = append(lines, fmt.Sprintf("addr %x %+v {%s} in {%s}", k.Addr, a, rs(v.Ruleset), rs(v.InRuleset)))
	}
	for id, n := range s.DeviceNames {
		lines = append(lines, fmt.Sprintf("name %d %s", id, n))
	}
	cfg := s.Config
	cfg.QuarantineRuleset, cfg.Revision = 0, 0
	lines = append(lines, fmt.Sprintf("cfg %+v {%s} rev %d", cfg, rs(s.Config.QuarantineRuleset), s.Revision),
		fmt.Sprintf("counts %d %d %d %d", len(s.Devices), len(s.Addrs), len(s.Prefixes), len(s.Rules)))
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func cloneSnap(s *Snapshot) *Snapshot {
	c := *s
	c.Devices, c.Addrs = maps.Clone(s.Devices), maps.Clone(s.Addrs)
	c.Prefixes, c.Rules = maps.Clone(s.Prefixes), maps.Clone(s.Rules)
	c.DeviceNames = maps.Clone(s.DeviceNames)
	return &c
}

// TestEditorMatchesCompile changes random devices one at a time and checks after every change
// that the Editor's snapshot is what Compile makes of its policy (rule set numbers aside), that
// the Delta is exactly the change of the snapshot's maps, and that a refused change or a change
// prepared but not committed changes nothing.
func TestEditorMatchesCompile(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			g := &editGen{r: rand.New(rand.NewPCG(seed, 7)), segs: []string{"s0", "s1", "s2"}}
			p := editBase(g, 12)
			e, err := NewEditor(p, CompileOptions{Revision: 1})
			if err != nil {
				t.Fatal(err)
			}
			var accepted, refused, deleted int
			for step := range 400 {
				before := canonSnap(e.Snapshot())
				prev := cloneSnap(e.Snapshot())
				orig := cloneSnap(e.Snapshot()) // prev is rewritten below
				var d *Delta
				var err error
				name := fmt.Sprintf("d%d", g.r.IntN(20))
				switch od, ok := e.Device(name); {
				case g.r.IntN(4) == 0:
					d, err = e.PrepareDelete(name)
				case ok && g.r.IntN(4) == 0:
					// The same device under a new MAC (a new identity), rules kept.
					nd := *od
					nd.MAC = g.device(name).MAC
					d, err = e.PreparePut("dev.yaml", "", &nd, nil)
				default:
					nd := g.device(name)
					d, err = e.PreparePut("dev.yaml", "", &nd, nil)
				}
				if got := canonSnap(e.Snapshot()); got != before {
					t.Fatalf("step %d: Prepare changed the snapshot", step)
				}
				if err != nil {
					refused++
					continue
				}
				if g.r.IntN(5) == 0 {
					continue // prepared, never committed: must have changed nothing
				}
				e.Commit(d)
				accepted++
				if strings.HasPrefix(d.Summary, "delete") {
					deleted++
				}
				got := e.Snapshot()
				// The Delta replayed on the previous snapshot's maps gives the new ones.
				d.Devices.ApplyTo(prev.Devices)
				d.Addrs.ApplyTo(prev.Addrs)
				d.Prefixes.ApplyTo(prev.Prefixes)
				d.Rules.ApplyTo(prev.Rules)
				if !maps.Equal(prev.Devices, got.Devices) || !maps.Equal(prev.Addrs, got.Addrs) ||
					!maps.Equal(prev.Prefixes, got.Prefixes) || !maps.Equal(prev.Rules, got.Rules) {
					t.Fatalf("step %d (%s): the delta is not the change of the maps", step, d.Summary)
				}
				if c := [4]int{len(got.Devices), len(got.Addrs), len(got.Prefixes), len(got.Rules)}; c != d.Counts {
					t.Fatalf("step %d (%s): counts %v, delta says %v", step, d.Summary, c, d.Counts)
				}
				if got.MaxDevID() > d.MaxDevID {
					t.Fatalf("step %d (%s): max dev id %d above the delta's %d (next %d heap %v)",
						step, d.Summary, got.MaxDevID(), d.MaxDevID, e.next, e.ids)
				}
				if err := e.Policy().Validate(); err != nil {
					t.Fatalf("step %d (%s): the edited policy is invalid: %v", step, d.Summary, err)
				}
				want, err := Compile(e.Policy(), CompileOptions{Revision: d.Revision, Prev: prevSnapIDs(prev, d)})
				if err != nil {
					t.Fatalf("step %d: compile: %v", step, err)
				}
				if a, b := canonSnap(got), canonSnap(want); a != b {
					t.Fatalf("step %d (%s): editor and Compile differ:\n%s", step, d.Summary, firstDiff(a, b))
				}
				// Compile over the snapshot before the change gives the same ids fresh.
				over, err := Compile(e.Policy(), CompileOptions{Revision: d.Revision, Prev: orig})
				if err != nil {
					t.Fatalf("step %d: compile: %v", step, err)
				}
				checkFresh(t, step, d, orig, got, over)
			}
			t.Logf("%d accepted (%d deletes), %d refused", accepted, deleted, refused)
			if accepted < 100 || refused < 20 || deleted < 5 {
				t.Fatalf("the walk did not exercise enough: %d accepted, %d refused, %d deleted", accepted, refused, deleted)
			}
		})
	}
}

// prevSnapIDs is the Prev a whole Compile gets: the snapshot before the change.
func prevSnapIDs(prev *Snapshot, _ *Delta) *Snapshot { return prev }

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("editor:  %s\ncompile: %s", al[i], bl[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(al), len(bl))
}

// TestEditorRefusals: each refused change names the field and leaves the policy as it was.
func TestEditorRefusals(t *testing.T) {
	p := &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "r"}}
	p.Spec.Gateway.IPv4 = []string{"10.0.0.1"}
	p.Spec.Segments = []Segment{{Name: "cams"}}
	p.Spec.Devices = []Device{
		{Name: "cam", MAC: "02:00:00:00:00:01", IPv4: []string{"10.0.0.10"}, Segment: "cams"},
		{Name: "nvr", MAC: "02:00:00:00:00:02", IPv4: []string{"10.0.0.20"},
			Allow: []Rule{{To: Target{Device: "cam"}, Proto: "tcp", Ports: []PortRange{{Lo: 554, Hi: 554}}}}},
	}
	e, err := NewEditor(p, CompileOptions{Revision: 1})
	if err != nil {
		t.Fatal(err)
	}
	before := canonSnap(e.Snapshot())
	doc := func(s string) (*Device, func(string) (int, int)) {
		d, loc, err := ParseDevice("dev.yaml", []byte(s))
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		return d, loc
	}
	for _, c := range []struct{ doc, want string }{
		{
			doc:  "name: x\nmac: \"02:00:00:00:00:01\"\n",
			want: `dev.yaml:2:6: mac: MAC address 02:00:00:00:00:01 is already used by device "cam"`,
		},
		{
			doc:  "name: x\nmac: \"02:00:00:00:00:09\"\nipv4: [10.0.0.20]\n",
			want: `dev.yaml:3:8: ipv4[0]: address 10.0.0.20 of device "x" is already bound to device "nvr"`,
		},
		{
			doc:  "name: x\nmac: \"02:00:00:00:00:09\"\nipv4: [10.0.0.1]\n",
			want: `dev.yaml:3:8: ipv4[0]: 10.0.0.1 is a gateway address`,
		},
		{
			doc:  "name: x\nmac: \"02:00:00:00:00:09\"\nsegment: nope\n",
			want: `dev.yaml:3:10: segment: segment "nope" is not defined in spec.segments`,
		},
		{
			doc:  "name: x\nmac: \"02:00:00:00:00:09\"\nallow: [{to: {device: ghost}}]\n",
			want: `dev.yaml:3:23: allow[0].to.device: device "ghost" is not defined in spec.devices`,
		},
		{
			doc:  "name: cam\nmac: \"02:00:00:00:00:0a\"\n",
			want: `dev.yaml:2:6: mac: changing the MAC address of device "cam" gives it a new identity`,
		},
		{doc: "name: X\nmac: \"02:00:00:00:00:09\"\n", want: `dev.yaml:1:7: name: "X" is not a valid name`},
	} {
		d, loc := doc(c.doc)
		_, err := e.PreparePut("dev.yaml", "", d, loc)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("put %q: got %v, want %q", c.doc, err, c.want)
		}
	}
	const referenced = `device "cam" is the destination of 1 rule(s)`
	if _, err := e.PrepareDelete("cam"); err == nil || !strings.Contains(err.Error(), referenced) {
		t.Errorf("delete cam: got %v", err)
	}
	if _, err := e.PrepareDelete("ghost"); err == nil || !strings.Contains(err.Error(), "no such device") {
		t.Errorf("delete ghost: got %v", err)
	}
	if got := canonSnap(e.Snapshot()); got != before {
		t.Fatal("a refused change changed the snapshot")
	}
	// A device that names itself gets a new id with a new MAC, and its rule set follows: the
	// id it frees goes to the next new device, which its rules must not reach.
	d0, loc0 := doc("name: selfy\nmac: \"02:00:00:00:00:07\"\nallow: [{to: {device: selfy}, proto: udp}]\n")
	dl0, err := e.PreparePut("dev.yaml", "", d0, loc0)
	if err != nil {
		t.Fatal(err)
	}
	e.Commit(dl0)
	d1, loc1 := doc("name: selfy\nmac: \"02:00:00:00:00:08\"\nallow: [{to: {device: selfy}, proto: udp}]\n")
	dl1, err := e.PreparePut("dev.yaml", "", d1, loc1)
	if err != nil {
		t.Fatal(err)
	}
	e.Commit(dl1)
	prev2 := cloneSnap(e.Snapshot())
	d2, loc2 := doc("name: other\nmac: \"02:00:00:00:00:0b\"\n")
	dl2, err := e.PreparePut("dev.yaml", "", d2, loc2)
	if err != nil {
		t.Fatal(err)
	}
	e.Commit(dl2)
	want, err := Compile(e.Policy(), CompileOptions{Revision: e.Snapshot().Revision, Prev: prev2})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := canonSnap(e.Snapshot()), canonSnap(want); a != b {
		t.Fatalf("self-referencing device under a new MAC:\n%s", firstDiff(a, b))
	}
	if dl, err := e.PrepareDelete("other"); err != nil {
		t.Fatal(err)
	} else {
		e.Commit(dl)
	}
	if dl, err := e.PrepareDelete("selfy"); err != nil {
		t.Fatal(err)
	} else {
		e.Commit(dl)
	}
	// A device may name itself; then it can be deleted.
	d, loc := doc("name: self\nmac: \"02:00:00:00:00:09\"\nallow: [{to: {device: self}, proto: udp}]\n")
	dl, err := e.PreparePut("dev.yaml", "", d, loc)
	if err != nil {
		t.Fatal(err)
	}
	e.Commit(dl)
	if dl, err = e.PrepareDelete("self"); err != nil {
		t.Fatal(err)
	}
	e.Commit(dl)
	if got := canonSnap(e.Snapshot()); strings.Replace(got, "rev 8", "rev 1", 1) != before {
		t.Fatalf("put then delete did not come back to the start:\n%s", firstDiff(got, before))
	}
}

// FuzzEditor drives the Editor with a random walk seeded by the input and checks it against
// Compile after every committed change (as TestEditorMatchesCompile does).
func FuzzEditor(f *testing.F) {
	f.Add(uint64(1), uint64(2), uint8(10))
	f.Add(uint64(99), uint64(7), uint8(3))
	f.Fuzz(func(t *testing.T, s1, s2 uint64, n uint8) {
		g := &editGen{r: rand.New(rand.NewPCG(s1, s2)), segs: []string{"s0", "s1"}}
		e, err := NewEditor(editBase(g, 1+int(n%16)), CompileOptions{Revision: 1})
		if err != nil {
			t.Fatal(err)
		}
		for step := range 40 {
			prev := cloneSnap(e.Snapshot())
			var d *Delta
			name := fmt.Sprintf("d%d", g.r.IntN(24))
			if g.r.IntN(4) == 0 {
				d, err = e.PrepareDelete(name)
			} else {
				nd := g.device(name)
				d, err = e.PreparePut("f", "", &nd, nil)
			}
			if err != nil {
				continue
			}
			e.Commit(d)
			want, err := Compile(e.Policy(), CompileOptions{Revision: d.Revision, Prev: prev})
			if err != nil {
				t.Fatalf("step %d: compile: %v", step, err)
			}
			if a, b := canonSnap(e.Snapshot()), canonSnap(want); a != b {
				t.Fatalf("step %d (%s): editor and Compile differ:\n%s", step, d.Summary, firstDiff(a, b))
			}
			checkFresh(t, step, d, prev, e.Snapshot(), want)
		}
	})
}

// checkFresh: the ids a change gives that the snapshot before it did not use are the Delta's
// Fresh, and Compile over that snapshot says the same; a committed snapshot has none left.
func checkFresh(t *testing.T, step int, d *Delta, prev, got, want *Snapshot) {
	t.Helper()
	used := map[uint32]bool{}
	for _, r := range prev.Devices {
		used[r.DevId] = true
	}
	var fresh []uint32
	for _, r := range got.Devices {
		if !used[r.DevId] {
			fresh = append(fresh, r.DevId)
		}
	}
	slices.Sort(fresh)
	if !slices.Equal(slices.Sorted(slices.Values(d.Fresh)), fresh) {
		t.Fatalf("step %d (%s): delta's fresh ids %v, want %v", step, d.Summary, d.Fresh, fresh)
	}
	if !slices.Equal(slices.Sorted(slices.Values(want.Fresh)), fresh) {
		t.Fatalf("step %d (%s): Compile's fresh ids %v, want %v", step, d.Summary, want.Fresh, fresh)
	}
	if got.Fresh != nil {
		t.Fatalf("step %d (%s): the committed snapshot keeps fresh ids %v", step, d.Summary, got.Fresh)
	}
}

// TestEditorCompileErrors: what only compiling finds (a gateway port that does not exist)
// names the field and line of the device document.
func TestEditorCompileErrors(t *testing.T) {
	p := &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "c"}}
	e, err := NewEditor(p, CompileOptions{Revision: 1, Ifindex: func(name string) (uint32, error) {
		return 0, errors.New("no such interface")
	}})
	if err != nil {
		t.Fatal(err)
	}
	d, loc, err := ParseDevice("d.yaml", []byte("name: x\nmac: \"02:00:00:00:00:01\"\nport: eth9\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.PreparePut("d.yaml", "", d, loc)
	if err == nil || err.Error() != `d.yaml:3:7: port: "eth9": no such interface` {
		t.Fatalf("got %v", err)
	}
}
