package agent

import (
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/api"
)

func all(*api.Event) bool { return true }

// ev is a test event: Revision numbers it, Reason and Device are for matching.
func ev(n uint64, reason string) api.Event {
	return api.Event{Revision: n, Reason: reason, Device: "dev"}
}

func revisions(evs []api.Event) []uint64 {
	out := []uint64{}
	for _, e := range evs {
		out = append(out, e.Revision)
	}
	return out
}

// publishEvery publishes events 1..n to h, every kth of reason spoof_ip, the others no_rule.
func publishEvery(h *hub, n, k uint64) {
	for i := uint64(1); i <= n; i++ {
		reason := "no_rule"
		if i%k == 0 {
			reason = "spoof_ip"
		}
		h.publish(ev(i, reason))
	}
}

func seq(from, to uint64) []uint64 {
	out := []uint64{}
	for n := from; n <= to; n++ {
		out = append(out, n)
	}
	return out
}

func TestHubHistory(t *testing.T) {
	const size = 5
	h := newHub(size)
	if got := revisions(h.recent(all, 0)); len(got) != 0 {
		t.Errorf("empty hub: recent %v", got)
	}
	for n := uint64(1); n <= 3; n++ {
		h.publish(ev(n, "no_rule"))
	}
	if got := revisions(h.recent(all, 0)); !slices.Equal(got, seq(1, 3)) {
		t.Errorf("before the history is full: got %v", got)
	}
	// Exactly full, then wrapping around several times: always the last size, oldest first.
	for n := uint64(4); n <= 23; n++ {
		h.publish(ev(n, "no_rule"))
		if got, want := revisions(h.recent(all, 0)), seq(max(1, n-size+1), n); !slices.Equal(got, want) {
			t.Fatalf("after %d events: got %v, want %v", n, got, want)
		}
	}
	// limit keeps the newest.
	if got := revisions(h.recent(all, 2)); !slices.Equal(got, []uint64{22, 23}) {
		t.Errorf("limit 2: got %v", got)
	}
	if got := revisions(h.recent(all, 100)); !slices.Equal(got, seq(19, 23)) {
		t.Errorf("limit 100: got %v", got)
	}
}

func TestHubRecentMatch(t *testing.T) {
	h := newHub(10)
	publishEvery(h, 14, 3)
	spoof := func(e *api.Event) bool { return e.Reason == "spoof_ip" }
	// History holds 5..14; of those, 6, 9 and 12 match.
	if got := revisions(h.recent(spoof, 0)); !slices.Equal(got, []uint64{6, 9, 12}) {
		t.Errorf("match: got %v", got)
	}
	if got := revisions(h.recent(spoof, 2)); !slices.Equal(got, []uint64{9, 12}) {
		t.Errorf("match, limit 2: got %v", got)
	}
	none := func(*api.Event) bool { return false }
	if got := h.recent(none, 0); len(got) != 0 {
		t.Errorf("no match: got %v", got)
	}
}

func TestHubZeroHistory(t *testing.T) {
	h := newHub(0)
	_, s := h.subscribe(all, 0)
	h.publish(ev(1, "no_rule"))
	if got := h.recent(all, 0); len(got) != 0 {
		t.Errorf("history 0: recent %v", got)
	}
	if got := revisions(drain(s)); !slices.Equal(got, []uint64{1}) {
		t.Errorf("history 0: subscriber got %v", got)
	}
}

// drain returns what is queued for s.
func drain(s *subscriber) []api.Event {
	var out []api.Event
	for {
		select {
		case e := <-s.ch:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestHubSubscribe(t *testing.T) {
	h := newHub(8)
	publishEvery(h, 6, 2)
	spoof := func(e *api.Event) bool { return e.Reason == "spoof_ip" }
	recent, s := h.subscribe(spoof, 2)
	if got := revisions(recent); !slices.Equal(got, []uint64{4, 6}) {
		t.Errorf("subscribe: recent %v, want [4 6]", got)
	}
	if got := drain(s); len(got) != 0 {
		t.Errorf("subscribe: the recent events are queued again: %v", revisions(got))
	}
	_, other := h.subscribe(all, 0)
	for n := uint64(7); n <= 12; n++ {
		reason := "no_rule"
		if n%2 == 0 {
			reason = "spoof_ip"
		}
		h.publish(ev(n, reason))
	}
	if got := revisions(drain(s)); !slices.Equal(got, []uint64{8, 10, 12}) {
		t.Errorf("subscriber got %v, want [8 10 12]", got)
	}
	if got := revisions(drain(other)); !slices.Equal(got, seq(7, 12)) {
		t.Errorf("second subscriber got %v", got)
	}
	if d := h.dropped.Load(); d != 0 {
		t.Errorf("dropped %d", d)
	}

	h.unsubscribe(s)
	select {
	case <-s.closed:
	default:
		t.Error("unsubscribe does not close the subscription")
	}
	h.unsubscribe(s) // idempotent
	h.publish(ev(14, "spoof_ip"))
	if got := drain(s); len(got) != 0 {
		t.Errorf("unsubscribed subscriber still gets %v", revisions(got))
	}
	if got := revisions(drain(other)); !slices.Equal(got, []uint64{14}) {
		t.Errorf("remaining subscriber got %v", got)
	}
}

func TestHubSlowSubscriber(t *testing.T) {
	h := newHub(16)
	_, slow := h.subscribe(func(e *api.Event) bool { return e.Reason == "no_rule" }, 0)
	_, fast := h.subscribe(all, 0)
	const extra = 37
	var fastGot []api.Event
	for n := uint64(1); n <= subBuffer+extra; n++ {
		h.publish(ev(n, "no_rule"))
		h.publish(ev(0, "spoof_ip")) // not for slow: never counted as its drop
		fastGot = append(fastGot, drain(fast)...)
	}
	if got := len(slow.ch); got != subBuffer {
		t.Errorf("slow subscriber has %d queued, want %d", got, subBuffer)
	}
	if got := h.dropped.Load(); got != extra {
		t.Errorf("dropped %d, want %d", got, extra)
	}
	// The queue keeps the oldest: it is a contiguous prefix of the stream.
	if got := revisions(drain(slow)); !slices.Equal(got, seq(1, subBuffer)) {
		t.Errorf("slow subscriber queue: %d events, first %v", len(got), got[:min(3, len(got))])
	}
	if len(fastGot) != 2*(subBuffer+extra) {
		t.Errorf("fast subscriber got %d events, want %d", len(fastGot), 2*(subBuffer+extra))
	}
	// Once it catches up, it receives again.
	h.publish(ev(5000, "no_rule"))
	if got := revisions(drain(slow)); !slices.Equal(got, []uint64{5000}) {
		t.Errorf("after catching up: got %v", got)
	}
}

func TestHubStop(t *testing.T) {
	h := newHub(4)
	h.publish(ev(1, "no_rule"))
	_, s1 := h.subscribe(all, 0)
	_, s2 := h.subscribe(all, 0)
	h.stop()
	for i, s := range []*subscriber{s1, s2} {
		select {
		case <-s.closed:
		default:
			t.Errorf("subscription %d not closed by stop", i+1)
		}
	}
	h.stop()          // idempotent
	h.unsubscribe(s1) // after stop (the API handler's defer): no double close
	recent, s3 := h.subscribe(all, 0)
	select {
	case <-s3.closed:
	default:
		t.Error("subscription after stop is not closed")
	}
	if got := revisions(recent); !slices.Equal(got, []uint64{1}) {
		t.Errorf("subscribe after stop: recent %v", got)
	}
	h.unsubscribe(s3)
	h.publish(ev(2, "no_rule"))
	if len(s1.ch)+len(s2.ch)+len(s3.ch) != 0 {
		t.Error("events delivered after stop")
	}
}

func TestKtimeToWall(t *testing.T) {
	if got := ktimeToWall(0); !got.IsZero() {
		t.Errorf("ktimeToWall(0) = %v, want the zero time", got)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	mono := uint64(ts.Nano())
	now := time.Now()
	for _, tc := range []struct {
		ns   uint64
		want time.Time
	}{
		{ns: mono, want: now},
		{ns: mono - uint64(90*time.Second), want: now.Add(-90 * time.Second)},
		{ns: mono + uint64(time.Hour), want: now.Add(time.Hour)}, // a clock a little ahead stays sane
	} {
		got := ktimeToWall(tc.ns)
		if d := got.Sub(tc.want); d < -time.Second || d > time.Second {
			t.Errorf("ktimeToWall(%d) = %v, want about %v", tc.ns, got, tc.want)
		}
		if got.Location() != time.UTC {
			t.Errorf("ktimeToWall: location %v, want UTC", got.Location())
		}
	}
}
