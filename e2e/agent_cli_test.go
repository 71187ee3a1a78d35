package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/agent/audit"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// flows are the two probes the agent tests watch: an allowed flow (cam -> upstream udp 7000)
// and a forbidden one (attacker -> upstream udp 7000: attacker has no rule). The upstream
// counts what arrives from each.
type flows struct {
	t                  *testing.T
	allowed, forbidden atomic.Int64
	conn               net.PacketConn
	camIP, attackerIP  netip.Addr
	wg                 sync.WaitGroup
	stop               chan struct{}
}

// listenFlows starts the upstream's udp 7000 echo, which counts the datagrams of both flows.
func listenFlows(t *testing.T, tp *testenv.Topology) *flows {
	t.Helper()
	c, err := tp.Upstream.NS.ListenPacket("udp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	f := &flows{t: t, conn: c, camIP: tp.Device("cam").IPv4[0], attackerIP: tp.Device("attacker").IPv4[0],
		stop: make(chan struct{})}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			src, _ := netip.ParseAddrPort(from.String())
			switch src.Addr().Unmap() {
			case f.camIP:
				f.allowed.Add(1)
			case f.attackerIP:
				f.forbidden.Add(1)
			}
			_, _ = c.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(f.close)
	return f
}

// probeFlows starts the two probes, each sending every interval, and waits until the allowed
// flow passes (what names the moment in a failure).
func (l *lab) probeFlows(interval time.Duration, what string) *flows {
	l.t.Helper()
	f := listenFlows(l.t, l.tp)
	f.probe(l.tp, interval)
	f.waitAllowed(what)
	return f
}

// probe sends from both devices every interval until close.
func (f *flows) probe(tp *testenv.Topology, interval time.Duration) {
	f.t.Helper()
	up := addrPort(tp.Upstream.IPv4, 7000)
	var conns []net.Conn
	for _, name := range []string{"cam", "attacker"} {
		c, err := tp.Device(name).NS.Dial("udp", up, time.Second)
		if err != nil {
			f.t.Fatal(err)
		}
		conns = append(conns, c)
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-tick.C:
				for _, c := range conns {
					_, _ = c.Write([]byte("probe"))
				}
			}
		}
	}()
}

// close stops the probes and the listener (once).
func (f *flows) close() {
	select {
	case <-f.stop:
		return
	default:
	}
	close(f.stop)
	f.conn.Close()
	f.wg.Wait()
}

// waitAllowed waits until the allowed flow delivers more than it had delivered at call time.
func (f *flows) waitAllowed(what string) {
	f.t.Helper()
	base := f.allowed.Load()
	deadline := time.Now().Add(5 * time.Second)
	for f.allowed.Load() <= base+2 {
		if time.Now().After(deadline) {
			f.t.Fatalf("%s: the allowed flow stopped (%d delivered)", what, f.allowed.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkNoLeak fails the test if any forbidden datagram was delivered.
func (f *flows) checkNoLeak(what string) {
	f.t.Helper()
	if n := f.forbidden.Load(); n != 0 {
		f.t.Fatalf("%s: %d forbidden datagrams were delivered", what, n)
	}
}

// checkEnforced checks, with an echo on the upstream's udp 7000, that cam's allowed flow passes
// and attacker's forbidden one does not (what names the moment in a failure).
func checkEnforced(t *testing.T, tp *testenv.Topology, what string) {
	t.Helper()
	echo, err := tp.Upstream.NS.EchoUDP(":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	if !sendOnce(t, tp.Device("cam"), tp.Upstream.IPv4, 7000) {
		t.Errorf("%s: cam's allowed flow does not pass", what)
	}
	if sendOnce(t, tp.Device("attacker"), tp.Upstream.IPv4, 7000) {
		t.Errorf("%s: attacker's forbidden flow passes", what)
	}
}

// sendOnce sends one datagram from dev to the upstream's udp port and reports whether the
// echo came back.
func sendOnce(t *testing.T, dev *testenv.Device, dst netip.Addr, port uint16) bool {
	t.Helper()
	c, err := dev.NS.Dial("udp", addrPort(dst, port), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for range 3 {
		_ = c.SetDeadline(time.Now().Add(400 * time.Millisecond))
		if _, err := c.Write([]byte("once")); err != nil {
			return false
		}
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "once" {
			return true
		}
	}
	return false
}

// TestAgentCLI: the operator's whole loop through the real agent and CLI binaries: validate,
// diff, apply, traffic enforced, get -> apply round trip, explain, devices, events (json and a
// pcap re-read), status, audit, then SIGTERM (enforcement stays) and uninstall (enforcement and
// pins gone).
func TestAgentCLI(t *testing.T) {
	l := newLab(t, nil)
	tp := l.tp
	f := listenFlows(t, tp)
	cam, attacker := tp.Device("cam"), tp.Device("attacker")
	v1, _ := binaries(t)
	l.start(v1)

	// No policy yet: fail closed.
	if st := l.status(); st.Policy.Revision != 0 {
		t.Fatalf("fresh agent reports revision %d", st.Policy.Revision)
	}
	if sendOnce(t, cam, tp.Upstream.IPv4, 7000) {
		t.Fatal("traffic passed before any policy was applied")
	}

	p := basePolicy(t, tp)
	file := l.writePolicy("policy.yaml", p)
	var vr api.ValidateResult
	l.mustJSON(&vr, "policy", "validate", file)
	if vr.Devices != 4 || vr.Name != "e2e" {
		t.Fatalf("validate: %+v", vr)
	}
	diff := l.must("policy", "diff", file)
	for _, d := range []string{"cam", "sensor", "broker", "attacker"} {
		if !strings.Contains(diff, "+ device "+d) {
			t.Errorf("diff before the first apply does not add device %s:\n%s", d, diff)
		}
	}
	var ar api.ApplyResult
	l.mustJSON(&ar, "policy", "apply", file)
	if ar.OldRevision != 0 || ar.NewRevision != 1 {
		t.Fatalf("apply: %+v", ar)
	}
	f.probe(tp, 10*time.Millisecond)
	f.waitAllowed("after apply")

	// get -o yaml is valid input to apply; applying it changes nothing but the revision.
	got := l.must("policy", "get", "-o", "yaml")
	orig, _ := os.ReadFile(file)
	if got != string(orig) {
		t.Errorf("policy get returned other YAML than applied:\n%s", got)
	}
	roundTrip := filepath.Join(l.dir, "get.yaml")
	if err := os.WriteFile(roundTrip, []byte(got), 0o644); err != nil {
		t.Fatal(err)
	}
	var dr api.DiffResult
	l.mustJSON(&dr, "policy", "diff", roundTrip)
	if !dr.Diff.Empty() || dr.Revision != 1 {
		t.Errorf("diff of the policy in force: %+v", dr)
	}
	ar = api.ApplyResult{}
	l.mustJSON(&ar, "policy", "apply", roundTrip)
	if ar.NewRevision != 2 || !ar.Changes.Empty() {
		t.Fatalf("round-trip apply: %+v", ar)
	}

	// A real change shows in diff before it is applied.
	p2 := basePolicy(t, tp)
	p2.Spec.Devices[3].Allow = []policy.Rule{
		{To: policy.Target{Device: "broker"}, Proto: "tcp", Ports: []policy.PortRange{{Lo: 8080, Hi: 8080}}}}
	f2 := l.writePolicy("policy2.yaml", p2)
	diff = l.must("policy", "diff", f2)
	if !strings.Contains(diff, "attacker") || !strings.Contains(diff, "to device broker proto tcp ports 8080") {
		t.Errorf("diff does not show the new attacker rule:\n%s", diff)
	}
	if st := l.status(); st.Policy.Revision != 2 {
		t.Fatalf("diff changed the revision to %d", st.Policy.Revision)
	}

	// explain answers from the model, naming the deciding rule.
	var ex api.Explanation
	upstream := tp.Upstream.IPv4.String()
	l.mustJSON(&ex, "policy", "explain", "--from", "cam", "--to", upstream, "--proto", "udp", "--port", "7000")
	if ex.Verdict != "pass" || ex.Reason != "allow" || ex.Rule != "spec.devices[0].allow[2]" || ex.Revision != 2 {
		t.Errorf("explain allowed flow: %+v", ex)
	}
	ex = api.Explanation{}
	l.mustJSON(&ex, "policy", "explain", "--from", "attacker", "--to", upstream, "--proto", "udp", "--port", "7000")
	if ex.Verdict != "drop" || ex.Reason != "no_rule" || ex.Rule != "" {
		t.Errorf("explain forbidden flow: %+v", ex)
	}
	nosuch := []string{"policy", "explain", "--from", "nosuch", "--to", "gateway", "--proto", "udp", "--port", "53"}
	if out, _, code := l.ztgate(nosuch...); code == 0 {
		t.Errorf("explain from an unknown device succeeded: %s", out)
	}

	// Counters per device; drop events with frames, as JSON and as a pcap.
	time.Sleep(300 * time.Millisecond)
	var devs []api.Device
	l.mustJSON(&devs, "devices")
	byName := map[string]api.Device{}
	for _, d := range devs {
		byName[d.Name] = d
	}
	if d := byName["cam"]; d.Allowed.Packets == 0 || d.LastSeen.IsZero() || d.State != "enforce" ||
		d.MAC != cam.MAC.String() {
		t.Errorf("devices: cam %+v", d)
	}
	if d := byName["attacker"]; d.Dropped.Packets == 0 {
		t.Errorf("devices: attacker dropped nothing: %+v", d)
	}
	table := l.must("devices")
	if !strings.Contains(table, "attacker") || !strings.Contains(table, "NAME") {
		t.Errorf("devices table:\n%s", table)
	}

	pcapPath := filepath.Join(l.dir, "events.pcap")
	out := l.must("events", "--device", "attacker", "--reason", "no_rule", "-o", "json", "--pcap", pcapPath)
	var evs []api.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev api.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("events -o json line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		t.Fatal("no no_rule events for attacker")
	}
	checkPcap(t, pcapPath, evs, attacker, tp.Upstream.IPv4)

	// status: interfaces, revision, fill levels.
	st := l.status()
	checkAttached(t, st, len(tp.Devices))
	if st.Policy.Revision != 2 || st.Policy.Devices != 4 || st.Version != "e2e-v1" {
		t.Errorf("status: %+v", st.Policy)
	}
	fill := map[string]api.MapUsage{}
	for _, m := range st.Maps {
		fill[m.Map] = m
	}
	if m := fill["zt_devices"]; m.Entries != 4 || m.Capacity != l.cfg.MaxDevices {
		t.Errorf("status: devices map %+v (all: %+v)", m, st.Maps)
	}
	if st.Events.Emitted == 0 || st.Events.Read == 0 {
		t.Errorf("status: events %+v", st.Events)
	}

	// Audit: two accepted applies, a valid chain.
	recs := auditRecords(t, l)
	if len(recs) != 2 || recs[0].NewRevision != 1 || recs[0].UID != 0 ||
		recs[1].OldRevision != 1 || recs[1].NewRevision != 2 || recs[1].Result != api.ResultAccepted {
		t.Errorf("audit records: %+v", recs)
	}
	l.must("audit", "--verify")

	// SIGTERM: the agent goes, enforcement stays.
	l.agent.stop()
	f.waitAllowed("after SIGTERM")
	f.checkNoLeak("after SIGTERM")
	if _, _, code := l.ztgate("status"); code != 3 {
		t.Errorf("status without an agent: exit %d, want 3 (unreachable)", code)
	}

	// uninstall: programs, links and pins are gone; the forbidden flow now passes.
	l.must("uninstall", "--bpffs-dir", l.pinDir)
	if _, err := os.Stat(l.pinDir); !os.IsNotExist(err) {
		t.Fatalf("pins left after uninstall: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for f.forbidden.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("attacker's traffic is still dropped after uninstall")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkPcap re-reads the pcap written by `ztgate events --pcap` and checks that it holds the
// events' frames: attacker's UDP datagrams to dst:7000.
func checkPcap(t *testing.T, path string, evs []api.Event, attacker *testenv.Device, dst netip.Addr) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Fatalf("pcap: %v", err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Fatalf("pcap link type %v", r.LinkType())
	}
	n := 0
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		if n >= len(evs) {
			t.Fatalf("pcap has more packets than events (%d)", len(evs))
		}
		if !bytes.Equal(data, evs[n].Frame) || ci.Length != evs[n].FrameLen {
			t.Errorf("pcap packet %d differs from event %d", n, n)
		}
		pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if eth == nil || !bytes.Equal(eth.SrcMAC, attacker.MAC) {
			t.Errorf("pcap packet %d: not from attacker's MAC: %v", n, pkt)
		} else if ip != nil && udp != nil {
			if !ip.DstIP.Equal(dst.AsSlice()) || udp.DstPort != 7000 {
				t.Errorf("pcap packet %d: %v", n, pkt)
			}
		}
		n++
	}
	if n != len(evs) {
		t.Fatalf("pcap has %d packets, events %d", n, len(evs))
	}
}

// auditRecords lists the audit records through the CLI and checks the log on disk holds as many,
// intact.
func auditRecords(t *testing.T, l *lab) []api.AuditRecord {
	t.Helper()
	var recs []api.AuditRecord
	l.mustJSON(&recs, "audit")
	data, err := os.ReadFile(filepath.Join(l.cfg.StateDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := audit.Verify(bytes.NewReader(data)); err != nil || n != len(recs) {
		t.Fatalf("audit log on disk: %d records, err %v; API lists %d", n, err, len(recs))
	}
	return recs
}

// TestAgentRejects: malformed, oversized, invalid and over-capacity policies are rejected with
// file:line:col and field, exit code 4 and an audit record; the running policy and revision stay
// in force, checked by traffic.
func TestAgentRejects(t *testing.T) {
	l := newLab(t, func(c *agent.Config) { c.MaxDevices = 6 })
	tp := l.tp
	l.cfg.Policy = ""
	l.run(basePolicy(t, tp))
	f := l.probeFlows(10*time.Millisecond, "good policy")

	good, _ := os.ReadFile(filepath.Join(l.dir, "p.yaml")) // the policy in force
	tooMany := basePolicy(t, tp)
	for i := range 3 {
		extra := policy.Device{Name: fmt.Sprintf("extra-%d", i), MAC: fmt.Sprintf("02:00:00:aa:00:%02x", i+1)}
		tooMany.Spec.Devices = append(tooMany.Spec.Devices, extra)
	}
	over, _ := policy.Marshal(tooMany)
	huge := append(bytes.Repeat([]byte("# padding\n"), policy.MaxDocumentSize/10+1), good...)
	cases := []struct {
		name string
		doc  []byte
		want []string // substrings of stderr
	}{
		{name: "syntax.yaml", doc: []byte("apiVersion: ztgate/v1\nkind: Policy\nspec: [\n"), want: []string{"syntax.yaml:"}},
		{
			name: "unknown-field.yaml",
			doc:  bytes.Replace(good, []byte("  devices:\n"), []byte("  devcies: []\n  devices:\n"), 1),
			want: []string{"unknown-field.yaml:", "devcies"},
		},
		{
			name: "bad-mac.yaml",
			doc:  bytes.Replace(good, []byte(tp.Device("sensor").MAC.String()), []byte("02:00:zz:00:00:01"), 1),
			want: []string{"bad-mac.yaml:", "spec.devices[1].mac"},
		},
		{name: "oversized.yaml", doc: huge, want: []string{"oversized.yaml", "larger than"}},
		{name: "over-capacity.yaml", doc: over, want: []string{"over-capacity.yaml", "spec.devices", "max_devices"}},
	}
	for i, c := range cases {
		path := filepath.Join(l.dir, c.name)
		if err := os.WriteFile(path, c.doc, 0o644); err != nil {
			t.Fatal(err)
		}
		out, stderr, code := l.ztgate("policy", "apply", path)
		if code != 4 {
			t.Errorf("%s: exit %d, want 4 (rejected)\nstdout: %s\nstderr: %s", c.name, code, out, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: stderr does not name %q:\n%s", c.name, w, stderr)
			}
		}
		switch c.name {
		case "syntax.yaml":
			// The YAML parser reports the line of a syntax error, not its column.
			if !regexp.MustCompile(`syntax\.yaml:3: `).MatchString(stderr) {
				t.Errorf("%s: no file:line in:\n%s", c.name, stderr)
			}
		case "unknown-field.yaml", "bad-mac.yaml":
			// file:line:col: field: message
			if !lineColRE.MatchString(stderr) {
				t.Errorf("%s: no file:line:col: field in:\n%s", c.name, stderr)
			}
		}
		if strings.Count(stderr, c.want[len(c.want)-1]) > 2 {
			t.Errorf("%s: the error is repeated:\n%s", c.name, stderr)
		}
		if st := l.status(); st.Policy.Revision != 1 {
			t.Fatalf("%s: revision changed to %d", c.name, st.Policy.Revision)
		}
		f.waitAllowed(c.name)
		f.checkNoLeak(c.name)
		recs := auditRecords(t, l)
		last := recs[len(recs)-1]
		if len(recs) != i+2 || last.Result != api.ResultRejected || last.OldRevision != 1 || last.NewRevision != 1 ||
			last.Error == "" {
			t.Errorf("%s: audit record %+v (of %d)", c.name, last, len(recs))
		}
	}
	// validate reports the same errors without an audit record (it changes nothing).
	_, stderr, code := l.ztgate("policy", "validate", filepath.Join(l.dir, "bad-mac.yaml"))
	if code != 4 || !strings.Contains(stderr, "spec.devices[1].mac") {
		t.Errorf("validate bad-mac: exit %d: %s", code, stderr)
	}
	if got := l.must("policy", "get"); got != string(good) {
		t.Errorf("the policy in force changed:\n%s", got)
	}
}

var lineColRE = regexp.MustCompile(`\.yaml:\d+:\d+: spec\.`)

// TestAgentEventsFollow: `ztgate events -f` streams new events as they happen, filtered, as
// NDJSON, until interrupted (then it exits 0).
func TestAgentEventsFollow(t *testing.T) {
	l := newLab(t, func(c *agent.Config) { c.EventBurst = 1 << 20 })
	tp := l.tp
	v1 := l.run(basePolicy(t, tp))

	cmd := exec.Command(v1, "--socket", l.socket, "events", "-f", "--device", "attacker", "--reason", "no_rule",
		"-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(300 * time.Millisecond) // the stream is open before the traffic starts
	attacker := tp.Device("attacker")
	for range 3 {
		sendOnce(t, attacker, tp.Upstream.IPv4, 7000) // no rule: dropped, an event each
	}
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatalf("the stream ended: %s", stderr.String())
		}
		var ev api.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event line %q: %v", line, err)
		}
		if ev.Device != "attacker" || ev.Reason != "no_rule" || ev.Verdict != "drop" || len(ev.Frame) == 0 {
			t.Errorf("streamed event: %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no event streamed within 5s: %s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("events -f after SIGINT: %v (%s)", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Error("events -f did not stop on SIGINT")
	}
}
