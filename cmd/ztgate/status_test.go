package main

import (
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ztgate/ztgate/api"
)

// fixNow sets the clock of relative times for the test.
func fixNow(t *testing.T, at time.Time) {
	t.Helper()
	old := now
	now = func() time.Time { return at }
	t.Cleanup(func() { now = old })
}

var t0 = time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)

var testStatus = api.Status{
	Version: "v1.2.3",
	PID:     4242,
	Started: t0.Add(-3 * time.Hour),
	Ready:   true,
	Policy: api.PolicyMeta{
		Revision:  7,
		Name:      "home-lab",
		Hash:      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		AppliedAt: t0.Add(-5 * time.Minute),
		Devices:   12,
		Segments:  3,
	},
	Interfaces: []api.Interface{
		{Name: "eth1", Ifindex: 3, Mode: "native", Attached: true, State: "attached", Attaches: 2},
		{Name: "wlan0", Ifindex: 4, Mode: "none", Attached: false, State: "failed", Attaches: 0, Error: "link down"},
		{Name: "gw-p*", Mode: "none", State: "absent", Error: "no interface matches the pattern"},
	},
	Maps: []api.MapUsage{
		{Map: "zt_devices", Entries: 12, Capacity: 4096},
		{Map: "zt_rules", Entries: 8192, Capacity: 16384},
	},
	Flows: &api.FlowStats{Entries: 300, Capacity: 65536, Quota: 1024, Devices: 7,
		Top: []api.DeviceFlows{{Device: "cam-1", DevID: 1, Flows: 200}, {DevID: 9, Flows: 40}}},
	Events: api.EventStats{Emitted: 100, Lost: 1, Suppressed: 20, Read: 99, Dropped: 2},
}

func TestStatusTable(t *testing.T) {
	fixNow(t, t0)
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathStatus: reply(testStatus)})
	r := fa.run(t, "status")
	wantCode(t, r, exitOK)
	for _, re := range []string{
		`Agent:\s+v1\.2\.3 \(pid 4242, up 3h\)`,
		`Ready:\s+yes`,
		`Policy:\s+revision 7, "home-lab"`,
		`Hash:\s+0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef`,
		`Applied:\s+.*\(5m ago\)`,
		`Devices:\s+12 in 3 segments`,
		`Events:\s+emitted 100, lost 1, suppressed 20, read 99, dropped 2`,
		`Flows:\s+300 of 65536 \(0\.5%\), 7 devices hold any, at most 1024 each`,
		`Most:\s+cam-1 200, id 9 40`,
		`(?m)^\s+NAME\s+IFINDEX\s+MODE\s+ATTACHED\s+STATE\s+SINCE\s+ATTACHES\s+ERROR$`,
		`(?m)^\s+eth1\s+3\s+native\s+yes\s+attached\s+-\s+2\s+-$`,
		`(?m)^\s+wlan0\s+4\s+none\s+no\s+failed\s+-\s+0\s+link down$`,
		`(?m)^\s+gw-p\*\s+0\s+none\s+no\s+absent\s+-\s+0\s+no interface matches the pattern$`,
		`(?m)^\s+zt_devices\s+12\s+4096\s+0\.3%$`,
		`(?m)^\s+zt_rules\s+8192\s+16384\s+50\.0%$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("status output does not match %s:\n%s", re, r.stdout)
		}
	}
	if r.stderr != "" {
		t.Errorf("stderr: %q", r.stderr)
	}
}

func TestStatusNoPolicy(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathStatus: reply(api.Status{Version: "v1"})})
	r := fa.run(t, "status")
	wantCode(t, r, exitOK)
	if !regexp.MustCompile(`Policy:\s+none`).MatchString(r.stdout) {
		t.Errorf("%s", r)
	}
}

func TestStatusJSON(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathStatus: reply(testStatus)})
	r := fa.run(t, "status", "-o", "json")
	wantCode(t, r, exitOK)
	var got api.Status
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v: %s", err, r)
	}
	if !reflect.DeepEqual(got, testStatus) {
		t.Errorf("status -o json:\n got %+v\nwant %+v", got, testStatus)
	}
}

var testDevices = []api.Device{
	{
		Name: "cam-1", ID: 1, Segment: "cameras", MAC: "02:00:00:00:00:01", IPv4: []string{"10.0.0.5", "10.0.0.6"},
		State: "enforce", Allowed: api.Traffic{Packets: 12, Bytes: 1536}, Dropped: api.Traffic{Packets: 3, Bytes: 180},
		Inbound: api.Verdicts{Allowed: api.Traffic{Packets: 10, Bytes: 4096}, Dropped: api.Traffic{Packets: 2, Bytes: 120}},
		Flows:   4, LastSeen: t0.Add(-3 * time.Minute),
	},
	{Name: "sensor-9", ID: 2, MAC: "02:00:00:00:00:09", State: "quarantined"},
}

func TestDevicesTable(t *testing.T) {
	fixNow(t, t0)
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathDevices: reply(testDevices)})
	r := fa.run(t, "devices")
	wantCode(t, r, exitOK)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 rows: %s", r)
	}
	want := [][]string{
		{"NAME", "SEGMENT", "STATE", "MAC", "IPV4", "ALLOWED", "DROPPED", "AUDITED", "IN-ALLOWED", "IN-DROPPED",
			"IN-AUDITED", "FLOWS", "LAST-SEEN"},
		{"cam-1", "cameras", "enforce", "02:00:00:00:00:01", "10.0.0.5,10.0.0.6", "12/1.5K", "3/180B", "0/0B",
			"10/4.0K", "2/120B", "0/0B", "4", "3m", "ago"},
		{"sensor-9", "-", "quarantined", "02:00:00:00:00:09", "-", "0/0B", "0/0B", "0/0B", "0/0B", "0/0B", "0/0B", "0",
			"-"},
	}
	for i, l := range lines {
		if got := strings.Fields(l); !reflect.DeepEqual(got, want[i]) {
			t.Errorf("line %d: got %q, want %q", i, got, want[i])
		}
	}
	// Columns are aligned: every row's LAST-SEEN starts where the header's does.
	col := strings.Index(lines[0], "LAST-SEEN")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("misaligned row %q (LAST-SEEN at %d)", l, col)
		}
	}
}

func TestDevicesJSON(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathDevices: reply(testDevices)})
	r := fa.run(t, "devices", "-o", "json")
	wantCode(t, r, exitOK)
	var got []api.Device
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v: %s", err, r)
	}
	if !reflect.DeepEqual(got, testDevices) {
		t.Errorf("devices -o json:\n got %+v\nwant %+v", got, testDevices)
	}

	// No devices: an empty JSON array, not null.
	fa = newFakeAgent(t, map[string]http.HandlerFunc{api.PathDevices: reply([]api.Device{})})
	r = fa.run(t, "devices", "-o", "json")
	wantCode(t, r, exitOK)
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("no devices: %s", r)
	}
}

func TestHumanise(t *testing.T) {
	fixNow(t, t0)
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{t: time.Time{}, want: "-"},
		{t: t0.Add(-42 * time.Second), want: "42s ago"},
		{t: t0.Add(-90 * time.Minute), want: "1h ago"},
		{t: t0.Add(-72 * time.Hour), want: "3d ago"},
		{t: t0.Add(time.Minute), want: "0s ago"},
	} {
		if got := age(tc.t); got != tc.want {
			t.Errorf("age(%v) = %q, want %q", tc.t, got, tc.want)
		}
	}
	for n, want := range map[uint64]string{0: "0B", 1023: "1023B", 1536: "1.5K", 5 << 20: "5.0M", 3 << 30: "3.0G"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

var testFlows = []api.Flow{
	{Opener: "10.0.0.5:40000", Responder: "203.0.113.5:443", Proto: "tcp", Direction: "from_device", Device: "cam-1",
		DevID: 1, Revision: 7, Idle: 90 * time.Second},
	{Opener: "192.0.2.9:5000", Responder: "10.0.0.9:8883", Proto: "udp", Direction: "to_device", DevID: 9,
		Revision: 6, Idle: 2 * time.Second},
}

func TestFlowsTable(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathFlows: reply(testFlows)})
	r := fa.run(t, "flows")
	wantCode(t, r, exitOK)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	want := [][]string{
		{"OPENER", "RESPONDER", "PROTO", "DIRECTION", "DEVICE", "IDLE", "REVISION"},
		{"10.0.0.5:40000", "203.0.113.5:443", "tcp", "from_device", "cam-1", "1m", "7"},
		{"192.0.2.9:5000", "10.0.0.9:8883", "udp", "to_device", "id", "9", "2s", "6"},
	}
	if len(lines) != len(want) {
		t.Fatalf("want a header and 2 rows: %s", r)
	}
	for i, l := range lines {
		if got := strings.Fields(l); !reflect.DeepEqual(got, want[i]) {
			t.Errorf("line %d: got %q, want %q", i, got, want[i])
		}
	}
	if q := fa.lastRequest(t).Query; len(q) != 0 {
		t.Errorf("query %v, want none", q)
	}
}

func TestFlowsJSON(t *testing.T) {
	fa := newFakeAgent(t, map[string]http.HandlerFunc{api.PathFlows: reply(testFlows)})
	r := fa.run(t, "flows", "-o", "json", "--device", "cam-1", "--limit", "10")
	wantCode(t, r, exitOK)
	var got []api.Flow
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v: %s", err, r)
	}
	if !reflect.DeepEqual(got, testFlows) {
		t.Errorf("flows -o json:\n got %+v\nwant %+v", got, testFlows)
	}
	q, want := fa.lastRequest(t).Query, map[string]string{"device": "cam-1", "limit": "10"}
	if !reflect.DeepEqual(q, want) {
		t.Errorf("query %v, want %v", q, want)
	}

	// No flows: an empty JSON array, not null.
	fa = newFakeAgent(t, map[string]http.HandlerFunc{api.PathFlows: reply([]api.Flow{})})
	r = fa.run(t, "flows", "-o", "json")
	wantCode(t, r, exitOK)
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("no flows: %s", r)
	}

	// An unknown device is the agent's not-found error.
	fa = newFakeAgent(t, map[string]http.HandlerFunc{api.PathFlows: replyError(http.StatusNotFound,
		api.Error{Kind: api.KindNotFound, Message: "no such device in the policy in force: \"x\""})})
	r = fa.run(t, "flows", "--device", "x")
	if r.code == exitOK || !strings.Contains(r.stderr, "no such device") {
		t.Errorf("flows of an unknown device: %s", r)
	}
}
