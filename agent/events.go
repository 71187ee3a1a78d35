package agent

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/api"
	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/maps"
)

// eventCoalesce is how long the event reader, once it has read every event of a batch, lets
// new events gather before it waits for a wake-up (maps.EventReader.SetCoalesce): a flood costs
// the datapath one wake-up per eventCoalesce instead of one per event; events reach the agent
// at most that much later.
const eventCoalesce = 500 * time.Microsecond

// subBuffer is how many events a stream consumer may fall behind before events are dropped
// for it (counted): a slow CLI never slows the reader of the ring buffer.
const subBuffer = 1024

// hub reads the datapath's ring buffer, keeps the recent events and fans them out to streams.
type hub struct {
	mu      sync.Mutex
	history []api.Event // ring of the last cap(history) events
	next    int         // where the next event goes once history is full
	subs    map[*subscriber]struct{}
	closed  bool

	read    atomic.Uint64 // decoded from the ring buffer
	dropped atomic.Uint64 // not delivered to a slow subscriber

	rd   *maps.EventReader
	done chan struct{}
}

type subscriber struct {
	ch     chan api.Event
	match  func(*api.Event) bool
	closed chan struct{}
}

func newHub(size int) *hub {
	return &hub{history: make([]api.Event, 0, size), subs: map[*subscriber]struct{}{}}
}

// start reads rd until stop, converting each event with conv.
func (h *hub) start(rd *maps.EventReader, conv func(*bpf.Event) api.Event, log *slog.Logger) {
	h.rd = rd
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		for {
			ev, err := rd.Read()
			if err != nil {
				if errors.Is(err, os.ErrClosed) {
					return
				}
				log.Warn("read event", "err", err)
				continue
			}
			h.read.Add(1)
			h.publish(conv(&ev))
		}
	}()
}

func (h *hub) publish(ev api.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.history) < cap(h.history) {
		h.history = append(h.history, ev)
	} else if cap(h.history) > 0 {
		h.history[h.next] = ev
		h.next = (h.next + 1) % cap(h.history)
	}
	for s := range h.subs {
		if !s.match(&ev) {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			h.dropped.Add(1)
		}
	}
}

// recent returns the kept events matching match, oldest first, at most limit (0: all).
func (h *hub) recent(match func(*api.Event) bool, limit int) []api.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.recentLocked(match, limit)
}

func (h *hub) recentLocked(match func(*api.Event) bool, limit int) []api.Event {
	var out []api.Event
	n := len(h.history)
	for i := range n {
		ev := &h.history[(h.next+i)%n]
		if match(ev) {
			out = append(out, *ev)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// subscribe returns the recent matching events and a subscription to the next ones, taken
// atomically so that no event falls between the two.
func (h *hub) subscribe(match func(*api.Event) bool, limit int) ([]api.Event, *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	recent := h.recentLocked(match, limit)
	s := &subscriber{ch: make(chan api.Event, subBuffer), match: match, closed: make(chan struct{})}
	if h.closed {
		close(s.closed)
		return recent, s
	}
	h.subs[s] = struct{}{}
	return recent, s
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.closed)
	}
}

// stop stops the reader and ends every subscription. Idempotent.
func (h *hub) stop() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.closed)
	}
	h.mu.Unlock()
	if h.rd != nil {
		h.rd.Close()
		<-h.done
	}
}

// ktimeToWall converts CLOCK_MONOTONIC nanoseconds (the datapath's zt_now: the coarse clock,
// a couple of ticks behind) to wall-clock time. The
// offset between the two clocks is measured again only when ns is more than clockRefresh past
// the last measurement: the reader of an event flood must not make a system call, nor read a
// clock, per event.
func ktimeToWall(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	off, ok := monoToWall(ns)
	if !ok {
		return time.Time{}
	}
	return time.Unix(0, int64(ns)+off).UTC()
}

// clockRefresh is how long (in event time) a measured monotonic-to-wall offset is used.
const clockRefresh = 100 * time.Millisecond

type clockOffset struct {
	mono uint64 // CLOCK_MONOTONIC nanoseconds when it was measured
	off  int64  // wall-clock Unix nanoseconds minus CLOCK_MONOTONIC nanoseconds
}

var clockOff atomic.Pointer[clockOffset]

// monoToWall returns the offset from CLOCK_MONOTONIC to wall-clock Unix nanoseconds, measured
// again when ns is past the last measurement by more than clockRefresh.
func monoToWall(ns uint64) (int64, bool) {
	if c := clockOff.Load(); c != nil && ns <= c.mono+uint64(clockRefresh) {
		return c.off, true
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, false
	}
	now := time.Now()
	c := &clockOffset{mono: uint64(ts.Nano()), off: now.UnixNano() - ts.Nano()}
	clockOff.Store(c)
	return c.off, true
}

// toAPIEvent converts a datapath event, naming its device and interface.
func (a *Agent) toAPIEvent(ev *bpf.Event) api.Event {
	out := api.Event{
		Time:      ktimeToWall(ev.Ts),
		DevID:     ev.DevId,
		Direction: bpf.Dir(ev.Dir).String(),
		Ifindex:   ev.Ifindex,
		Revision:  ev.Revision,
		Verdict:   bpf.Verdict(ev.Verdict).String(),
		Reason:    bpf.Reason(ev.Reason).String(),
		FrameLen:  int(ev.FrameLen),
	}
	n := min(int(ev.CapLen), len(ev.Data))
	out.Frame = a.frames.copy(ev.Data[:n])
	if ev.DevId != 0 {
		a.polMu.RLock()
		if cur := a.cur.Load(); cur != nil && cur.snap != nil {
			out.Device = cur.snap.DeviceNames[ev.DevId]
		}
		a.polMu.RUnlock()
	}
	if names := a.ifnames.Load(); names != nil {
		out.Interface = (*names)[ev.Ifindex]
		return out
	}
	a.ifMu.Lock()
	for name, st := range a.ifaces {
		if st.index == int(ev.Ifindex) {
			out.Interface = name
		}
	}
	a.ifMu.Unlock()
	return out
}

// indexIfaces publishes the interface names by ifindex for toAPIEvent. Call it with ifMu held
// after a change of ifaces.
func (a *Agent) indexIfaces() {
	names := make(map[uint32]string, len(a.ifaces))
	for name, st := range a.ifaces {
		names[uint32(st.index)] = name
	}
	a.ifnames.Store(&names)
}

// frameSlab hands out the captured bytes of events from shared blocks: one allocation per
// frameBlock bytes instead of one per event (the reader of a flood decodes millions per
// second). A block stays alive while an event that uses it is kept.
type frameSlab struct {
	mu    sync.Mutex
	block []byte
}

const frameBlock = 64 << 10

// copy returns a copy of b (nil when empty) whose capacity is its length.
func (s *frameSlab) copy(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	if len(b) > frameBlock/8 {
		return append([]byte(nil), b...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cap(s.block)-len(s.block) < len(b) {
		s.block = make([]byte, 0, frameBlock)
	}
	n := len(s.block)
	s.block = append(s.block, b...)
	return s.block[n : n+len(b) : n+len(b)]
}
