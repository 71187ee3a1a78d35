package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/ztgate/ztgate/agent"
	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/internal/frames"
	"github.com/ztgate/ztgate/policy"
	"github.com/ztgate/ztgate/testenv"
)

// TestAgentRestart: with the allowed and forbidden probes running, the agent is killed with
// SIGKILL, stopped with SIGTERM, or replaced by a new binary; each time the restarted agent
// adopts the pins and reports the same revision, a new policy is pushed, and at no point is a
// forbidden datagram delivered while the allowed flow keeps flowing.
func TestAgentRestart(t *testing.T) {
	l := newLab(t, nil)
	tp := l.tp
	p := basePolicy(t, tp)
	v1 := l.run(p)
	f := l.probeFlows(5*time.Millisecond, "first policy")
	_, v2 := binaries(t)

	steps := []struct {
		name string
		down func()
		bin  string
	}{
		{name: "kill -9", down: l.agent.kill, bin: v1},
		{name: "graceful", down: nil, bin: v1},
		{name: "new binary", down: nil, bin: v2},
	}
	// allowed is what each device passed so far, by name (the probes keep it growing).
	allowed := func() map[string]uint64 {
		var devs []api.Device
		l.mustJSON(&devs, "devices")
		out := map[string]uint64{}
		for _, d := range devs {
			out[d.Name] = d.Allowed.Packets
		}
		return out
	}
	for i, s := range steps {
		before := l.status()
		passed := allowed()
		switch {
		case s.down != nil:
			s.down()
		default:
			l.agent.stop()
		}
		// Agent down: enforcement unchanged.
		f.waitAllowed(s.name + ": agent down")
		f.checkNoLeak(s.name + ": agent down")

		l.start(s.bin)
		after := l.status()
		if after.Policy.Revision != before.Policy.Revision || after.Policy.Hash != before.Policy.Hash {
			t.Fatalf("%s: restarted agent reports revision %d (%s), was %d (%s)", s.name,
				after.Policy.Revision, after.Policy.Hash, before.Policy.Revision, before.Policy.Hash)
		}
		checkAttached(t, after, len(tp.Devices))
		if want := strings.TrimPrefix(filepath.Base(s.bin), "ztgate-"); after.Version != want {
			t.Errorf("%s: version %q, want %q", s.name, after.Version, want)
		}
		if !strings.Contains(l.agent.log.String(), "adopted the pinned policy") {
			t.Errorf("%s: the restarted agent did not adopt the pinned policy:\n%s", s.name, l.agent.log.String())
		}
		f.waitAllowed(s.name + ": restarted")
		// The pinned per-device counters went on counting: none restarted from zero.
		now := allowed()
		for name, n := range passed {
			if now[name] < n || (name == "cam" && n == 0) {
				t.Errorf("%s: %s passed %d frames before, %d after the restart", s.name, name, n, now[name])
			}
		}

		// A new policy through the restarted agent (one more allowed device rule each time).
		port := uint16(8000 + i)
		p.Spec.Devices[1].Allow = append(p.Spec.Devices[1].Allow, policy.Rule{To: policy.Target{Device: "broker"},
			Proto: "tcp", Ports: []policy.PortRange{{Lo: port, Hi: port}}})
		var ar api.ApplyResult
		l.mustJSON(&ar, "policy", "apply", l.writePolicy(fmt.Sprintf("p%d.yaml", i+1), p))
		if ar.OldRevision != before.Policy.Revision || ar.NewRevision != before.Policy.Revision+1 {
			t.Fatalf("%s: apply after restart: %+v", s.name, ar)
		}
		f.waitAllowed(s.name + ": new policy")
		f.checkNoLeak(s.name)
	}
	t.Logf("allowed datagrams delivered: %d, forbidden: %d", f.allowed.Load(), f.forbidden.Load())
}

// floodFrames are denied frames for many (device, reason) pairs: each device sends a spoofed
// source IP, an unknown ethertype, a spoofed ARP and a datagram no rule allows; plus an
// unknown device.
func floodFrames(tp *testenv.Topology) map[*testenv.Device][][]byte {
	out := map[*testenv.Device][][]byte{}
	up := frames.Host{MAC: tp.Upstream.Uplink.MAC, IP: tp.Upstream.IPv4}
	for _, d := range tp.Devices {
		gw := frames.Host{MAC: d.Port.MAC, IP: up.IP}
		me := frames.Host{MAC: d.MAC, IP: d.IPv4[0]}
		spoof := frames.Host{MAC: d.MAC, IP: netip.MustParseAddr("10.250.0.1")}
		raw := append(append(append([]byte{}, gw.MAC...), d.MAC...), 0x88, 0xb5)
		raw = append(raw, make([]byte, 46)...)
		out[d] = [][]byte{
			frames.UDP(spoof, gw, 4000, 7000, []byte("spoof")),
			raw,
			frames.ARP(me, 1, d.MAC, netip.MustParseAddr("10.250.0.2"), tp.Config().GatewayIPv4),
			frames.UDP(me, gw, 4000, 9, []byte("no rule")),
			frames.UDP(frames.Host{MAC: net.HardwareAddr{0x02, 0xee, 0, 0, 0, byte(d.N)}, IP: d.IPv4[0]}, gw, 4000, 7000, nil),
		}
	}
	return out
}

// metricValue reads one sample from an exposition.
func metricValue(t *testing.T, expo, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(expo))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	t.Fatalf("metric %s not in the exposition", series)
	return 0
}

// TestAgentFlood: a flood of denied frames while the agent is stopped (SIGSTOP): enforcement is
// unchanged, the event rate stays within the per-(device, reason) budget, the full ring buffer
// loses events and counts every one of them; once resumed, the agent reads the rest and status
// and metrics show the losses.
func TestAgentFlood(t *testing.T) {
	l := newLab(t, func(c *agent.Config) {
		c.EventRingBytes = 4096 // about 24 events: a stopped agent overflows it quickly
		c.EventBurst = 10
		c.EventWindow = time.Second
	})
	tp := l.tp
	l.run(basePolicy(t, tp))
	f := l.probeFlows(5*time.Millisecond, "policy")

	before := l.status()
	l.agent.signal(syscall.SIGSTOP)
	stopped := time.Now()
	flood := floodFrames(tp)
	senders := map[*testenv.Device]*testenv.Sender{}
	for d := range flood {
		s, err := d.NS.NewSender(d.Ifname)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		senders[d] = s
	}
	keys := 0
	sent := 0
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for d, fs := range flood {
			for _, fr := range fs {
				if err := senders[d].Send(fr); err != nil && !errors.Is(err, syscall.ENOBUFS) {
					t.Fatalf("send: %v", err)
				}
				sent++
			}
		}
	}
	for _, fs := range flood {
		keys += len(fs)
	}
	f.waitAllowed("flood, agent stopped")
	f.checkNoLeak("flood, agent stopped")
	l.agent.signal(syscall.SIGCONT)
	elapsed := time.Since(stopped)

	// Let the agent drain the ring buffer, then compare.
	var st api.Status
	for range 50 {
		st = l.status()
		if st.Events.Read == st.Events.Emitted {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	emitted := st.Events.Emitted - before.Events.Emitted
	lost := st.Events.Lost - before.Events.Lost
	suppressed := st.Events.Suppressed - before.Events.Suppressed
	t.Logf("flood: %d frames sent in %v over %d (device, reason) keys; events emitted %d, lost %d, suppressed %d, read %d",
		sent, elapsed.Round(time.Millisecond), keys, emitted, lost, suppressed, st.Events.Read)
	if lost == 0 {
		t.Errorf("no events lost with the agent stopped and a %d-byte ring: the test proved nothing", l.cfg.EventRingBytes)
	}
	// Bounded rate: every key gets at most burst events per window (+ background keys).
	windows := uint64(elapsed/l.cfg.EventWindow) + 2
	if bound := uint64(keys+8) * l.cfg.EventBurst * windows; emitted+lost > bound {
		t.Errorf("%d events offered to the ring in %v, above the budget %d", emitted+lost, elapsed, bound)
	}
	if suppressed < uint64(sent)/2 {
		t.Errorf("only %d of %d flood frames were suppressed by the event budget", suppressed, sent)
	}
	if st.Events.Read != st.Events.Emitted {
		t.Errorf("agent read %d events, the datapath emitted %d: uncounted loss", st.Events.Read, st.Events.Emitted)
	}
	// Status and metrics agree on the losses.
	code, expo := l.scrape("/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	if got := metricValue(t, expo, "ztgate_events_lost_total"); got < float64(st.Events.Lost) || got == 0 {
		t.Errorf("ztgate_events_lost_total %v, status lost %d", got, st.Events.Lost)
	}
	out := l.must("status")
	if !strings.Contains(out, "lost") || !strings.Contains(out, strconv.FormatUint(st.Events.Lost, 10)) {
		t.Errorf("status does not show %d lost events:\n%s", st.Events.Lost, out)
	}
	f.checkNoLeak("after the flood")
}

// TestAgentPeerCheck: the API checks the caller's uid/gid from the kernel on every connection. A
// uid that gets through the socket's file permissions (here with CAP_DAC_OVERRIDE) but is neither
// root nor allowed is refused with exit code 5 and audited; a member of the configured socket
// group is served.
func TestAgentPeerCheck(t *testing.T) {
	const group = 4300
	base, err := os.MkdirTemp("", "zt-e2e-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(base, "run", "ztgate.sock")
	l := newLab(t, func(c *agent.Config) {
		c.Socket = sock
		c.SocketGroup = strconv.Itoa(group)
	})
	v1, _ := binaries(t)
	if err := os.Chmod(filepath.Dir(v1), 0o755); err != nil {
		t.Fatal(err)
	}
	l.start(v1)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != group {
		t.Errorf("socket mode %v gid %d, want 0660 to gid %d", perm, fi.Sys().(*syscall.Stat_t).Gid, group)
	}
	if di, err := os.Stat(filepath.Dir(sock)); err != nil || di.Mode().Perm() != 0o750 {
		t.Errorf("socket directory: %v %v", di.Mode(), err)
	}

	run := func(cred *syscall.Credential, caps []uintptr) (string, string, int) {
		cmd := exec.Command(v1, "--socket", sock, "status", "-o", "json")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, AmbientCaps: caps}
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}
	// A member of the socket group (supplementary group) is served.
	member := &syscall.Credential{Uid: 4301, Gid: 4301, Groups: []uint32{group}}
	if out, stderr, code := run(member, nil); code != 0 || !strings.Contains(out, `"ready": true`) {
		t.Errorf("group member: exit %d: %s %s", code, out, stderr)
	}
	// Without the group, the file permissions stop it (the kernel refuses the connect).
	if _, stderr, code := run(&syscall.Credential{Uid: 4302, Gid: 4302}, nil); code != 5 && code != 3 {
		t.Errorf("outsider without the group: exit %d: %s", code, stderr)
	}
	// Through the permissions with CAP_DAC_OVERRIDE, the agent itself refuses.
	const capDacOverride = 1
	_, stderr, code := run(&syscall.Credential{Uid: 4303, Gid: 4303}, []uintptr{capDacOverride})
	if code != 5 || !strings.Contains(stderr, "uid 4303") {
		t.Fatalf("outsider with CAP_DAC_OVERRIDE: exit %d, want 5 (refused): %s", code, stderr)
	}
	recs := auditRecords(t, l)
	found := false
	for _, r := range recs {
		if r.Action == api.ActionConnect && r.Result == api.ResultRefused && r.UID == 4303 && r.GID == 4303 && r.PID > 0 {
			found = true
		}
		if r.Action == api.ActionConnect && (r.UID == 4301 || r.UID == 0) {
			t.Errorf("an allowed caller was audited as refused: %+v", r)
		}
	}
	if !found {
		t.Errorf("the refusal of uid 4303 is not in the audit log: %+v", recs)
	}
}

var sampleRE = regexp.MustCompile(`^ztgate_`)

// TestAgentMetrics: the scraped exposition passes the lint of `promtool check metrics`, and the
// datapath counters match the frames the test sent.
// fromDev is the direction label of frames from devices, first of a series' labels.
const fromDev = `direction="from_device",`

func TestAgentMetrics(t *testing.T) {
	l := newLab(t, func(c *agent.Config) { c.EventBurst = 1 << 20 })
	tp := l.tp
	v1, _ := binaries(t)
	l.start(v1)
	if code, body := l.scrape("/readyz"); code != 200 {
		t.Errorf("readyz: %d %s", code, body)
	}
	if code, _ := l.scrape("/healthz"); code != 200 {
		t.Errorf("healthz: %d", code)
	}
	p := basePolicy(t, tp)
	p.Spec.Segments = []policy.Segment{{Name: "cameras"}, {Name: "untrusted"}}
	p.Spec.Devices[0].Segment = "cameras"
	p.Spec.Devices[3].Segment = "untrusted"
	l.must("policy", "apply", l.writePolicy("p.yaml", p))

	_, expo0 := l.scrape("/metrics")
	// Frames only this test produces: spoofed sources from attacker (spoof_ip) and frames from
	// an unknown MAC (unknown_device); and allowed datagrams from cam.
	attacker, cam := tp.Device("attacker"), tp.Device("cam")
	gw := frames.Host{MAC: attacker.Port.MAC, IP: tp.Upstream.IPv4}
	spoofed := frames.Host{MAC: attacker.MAC, IP: netip.MustParseAddr("10.251.0.7")}
	spoof := frames.UDP(spoofed, gw, 1, 7000, []byte("spoofed"))
	stranger := frames.Host{MAC: net.HardwareAddr{0x02, 0xdd, 0, 0, 0, 1}, IP: netip.MustParseAddr("10.99.0.200")}
	unknown := frames.UDP(stranger, gw, 1, 7000, nil)
	noRule := frames.UDP(frames.Host{MAC: attacker.MAC, IP: attacker.IPv4[0]}, gw, 1, 7000, []byte("no rule"))
	const nSpoof, nUnknown, nNoRule, nAllowed = 37, 23, 29, 50
	for range nNoRule {
		if err := attacker.NS.SendFrame(attacker.Ifname, noRule); err != nil {
			t.Fatal(err)
		}
	}
	for range nSpoof {
		if err := attacker.NS.SendFrame(attacker.Ifname, spoof); err != nil {
			t.Fatal(err)
		}
	}
	for range nUnknown {
		if err := attacker.NS.SendFrame(attacker.Ifname, unknown); err != nil {
			t.Fatal(err)
		}
	}
	// The allowed datagrams go to a listening port (a closed one answers with port
	// unreachable, and the connected socket's next write fails).
	echo, err := tp.Upstream.NS.EchoUDP(":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	c, err := cam.NS.Dial("udp", addrPort(tp.Upstream.IPv4, 7000), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for range nAllowed {
		_, _ = c.Write([]byte("allowed"))
		time.Sleep(2 * time.Millisecond)
	}
	c.Close()
	time.Sleep(200 * time.Millisecond)

	code, expo := l.scrape("/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	delta := func(series string) float64 { return metricValue(t, expo, series) - metricValue(t, expo0, series) }
	checks := []struct {
		series string
		want   float64
	}{
		{series: `ztgate_datapath_packets_total{` + fromDev + `reason="spoof_ip",verdict="drop"}`, want: nSpoof},
		{
			series: `ztgate_datapath_bytes_total{` + fromDev + `reason="spoof_ip",verdict="drop"}`,
			want:   nSpoof * float64(len(spoof)),
		},
		{series: `ztgate_datapath_packets_total{` + fromDev + `reason="unknown_device",verdict="drop"}`, want: nUnknown},
		{
			series: `ztgate_datapath_bytes_total{` + fromDev + `reason="unknown_device",verdict="drop"}`,
			want:   nUnknown * float64(len(unknown)),
		},
	}
	for _, c := range checks {
		if got := delta(c.series); got != c.want {
			t.Errorf("%s grew by %v, sent %v", c.series, got, c.want)
		}
	}
	if got := delta(`ztgate_datapath_packets_total{` + fromDev + `reason="allow",verdict="pass"}`); got < nAllowed {
		t.Errorf("pass/allow grew by %v, sent %d allowed datagrams", got, nAllowed)
	}
	// Per-device (and so per-segment) counters count only frames from identified devices with
	// their own addresses: attacker's no_rule frames, not its spoofed ones.
	const untrusted = `ztgate_segment_packets_total{` + fromDev + `segment="untrusted",verdict="drop"}`
	if got := delta(untrusted); got < nNoRule || got >= nNoRule+nSpoof {
		t.Errorf("untrusted segment drops grew by %v, attacker sent %d no_rule frames (and %d spoofed)", got, nNoRule, nSpoof)
	}
	if got := delta(`ztgate_datapath_packets_total{` + fromDev + `reason="no_rule",verdict="drop"}`); got < nNoRule {
		t.Errorf("no_rule drops grew by %v, attacker sent %d", got, nNoRule)
	}
	if got := delta(`ztgate_segment_packets_total{` + fromDev + `segment="cameras",verdict="pass"}`); got < nAllowed {
		t.Errorf("cameras segment passes grew by %v, cam sent %d", got, nAllowed)
	}
	if got := metricValue(t, expo, "ztgate_policy_revision"); got != 1 {
		t.Errorf("ztgate_policy_revision %v", got)
	}
	if got := metricValue(t, expo, `ztgate_policy_applies_total{result="accepted"}`); got != 1 {
		t.Errorf("accepted applies %v", got)
	}
	// No MAC, IP or device name anywhere in the ztgate_ series.
	for _, line := range strings.Split(expo, "\n") {
		if !sampleRE.MatchString(line) {
			continue
		}
		identities := []string{cam.MAC.String(), attacker.MAC.String(), cam.IPv4[0].String(),
			`"cam"`, `"attacker"`, "mac=", "ip=", "device="}
		for _, bad := range identities {
			if strings.Contains(line, bad) {
				t.Errorf("metric line carries %q: %s", bad, line)
			}
		}
	}
	problems, err := promlint.New(strings.NewReader(expo)).Lint()
	if err != nil {
		t.Errorf("lint the exposition: %v", err)
	}
	for _, p := range problems {
		t.Errorf("exposition: %s: %s", p.Metric, p.Text)
	}
}

// TestAgentReboot: after a reboot the pins are gone but the state directory is not; the agent
// puts the persisted policy (same revision, same device ids) into the maps before it attaches
// anything, so the first frame it sees is already decided by that policy.
func TestAgentReboot(t *testing.T) {
	l := newLab(t, nil)
	tp := l.tp
	v1 := l.run(basePolicy(t, tp))
	var before []api.Device
	l.mustJSON(&before, "devices")
	st := l.status()
	l.agent.kill()
	l.must("uninstall", "--bpffs-dir", l.pinDir) // what a reboot does to bpffs

	l.start(v1)
	after := l.status()
	if after.Policy.Revision != st.Policy.Revision || after.Policy.Hash != st.Policy.Hash {
		t.Fatalf("after the reboot: revision %d (%s), was %d (%s)",
			after.Policy.Revision, after.Policy.Hash, st.Policy.Revision, st.Policy.Hash)
	}
	if !strings.Contains(l.agent.log.String(), "restored the persisted policy") {
		t.Errorf("agent log:\n%s", l.agent.log.String())
	}
	var devs []api.Device
	l.mustJSON(&devs, "devices")
	for i := range before {
		if devs[i].Name != before[i].Name || devs[i].ID != before[i].ID {
			t.Errorf("device %s: id %d after the reboot, %d before", devs[i].Name, devs[i].ID, before[i].ID)
		}
	}
	checkEnforced(t, tp, "after the reboot")
}
