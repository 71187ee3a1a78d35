package maps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/ztgate/ztgate/bpf"
)

// eventSize is the size of struct zt_event (the fixed layout the program submits).
var eventSize = binary.Size(bpf.Event{})

// EventReader reads the drop/audit events of the zt_events ring buffer. One reader per ring
// buffer: records are consumed as they are read.
type EventReader struct {
	rd       *ringbuf.Reader
	rec      ringbuf.Record
	coalesce time.Duration
	batch    int // events read since the reader last waited

	mu     sync.Mutex // orders available against Close
	closed bool
}

// OpenEvents opens a reader on the event ring buffer of objs.
func OpenEvents(objs *bpf.ZtgateObjects) (*EventReader, error) {
	if objs == nil || objs.ZtEvents == nil {
		return nil, errors.New("open events: datapath objects not loaded")
	}
	rd, err := ringbuf.NewReader(objs.ZtEvents)
	if err != nil {
		return nil, fmt.Errorf("open events: %w", err)
	}
	return &EventReader{rd: rd}, nil
}

// Read blocks until an event is available (or the deadline passes, or the reader is closed) and
// decodes it. After Close it returns an error wrapping os.ErrClosed (ringbuf.ErrClosed); after
// the deadline, one wrapping os.ErrDeadlineExceeded. Not for concurrent use (Close is).
func (r *EventReader) Read() (bpf.Event, error) {
	var ev bpf.Event
	if r.coalesce > 0 && r.batch > 0 && r.available() == 0 {
		// Caught up after a batch: let events gather before waiting for a wake-up (see
		// SetCoalesce).
		r.batch = 0
		time.Sleep(r.coalesce)
	}
	if err := r.rd.ReadInto(&r.rec); err != nil {
		return ev, fmt.Errorf("read event: %w", err)
	}
	r.batch++
	if len(r.rec.RawSample) < eventSize {
		return ev, fmt.Errorf("read event: record of %d bytes, want %d", len(r.rec.RawSample), eventSize)
	}
	decodeEvent(r.rec.RawSample, &ev)
	return ev, nil
}

// decodeEvent decodes struct zt_event (eventSize bytes at least) without reflection: the
// reader of a flood decodes millions of events per second.
func decodeEvent(b []byte, ev *bpf.Event) {
	ne := binary.NativeEndian
	_ = b[eventSize-1]
	ev.Ts = ne.Uint64(b[0:])
	ev.DevId = ne.Uint32(b[8:])
	ev.Ifindex = ne.Uint32(b[12:])
	ev.Revision = ne.Uint64(b[16:])
	ev.Verdict = b[24]
	ev.Reason = b[25]
	ev.FrameLen = ne.Uint16(b[26:])
	ev.CapLen = ne.Uint16(b[28:])
	ev.Dir = b[30]
	ev.Pad = b[31]
	copy(ev.Data[:], b[32:eventSize])
}

// The layout decodeEvent assumes, checked at compile time against the bpf2go-generated
// bpf.Event (struct zt_event in bpf/structs.h): any change there fails the build here.
var (
	_ = [1]struct{}{}[unsafe.Offsetof(bpf.Event{}.Ts)-0]
	_ = [1]struct{}{}[unsafe.Offsetof(bpf.Event{}.DevId)-8]
	_ = [1]struct{}{}[unsafe.Offsetof(bpf.Event{}.Ifindex)-12]
	_ = [1]struct{}{}[unsafe.Offsetof(bpf.Event{}.Revision)-16]
	_ = [1]struct{}{}[unsafe.Offsetof(bpf.Event{}.Verdict)-24]
	_ = [1]struct{}{}[unsafe.Offsetof(bpf.Event{}.Reason)-25]
	_ = [1]struct{}{}[unsafe.Offsetof(bpf.Event{}.FrameLen)-26]
	_ = [1]struct{}{}[unsafe.Offsetof(bpf.Event{}.CapLen)-28]
	_ = [1]struct{}{}[unsafe.Offsetof(bpf.Event{}.Dir)-30]
	_ = [1]struct{}{}[unsafe.Offsetof(bpf.Event{}.Pad)-31]
	_ = [1]struct{}{}[unsafe.Offsetof(bpf.Event{}.Data)-32]
	_ = [1]struct{}{}[unsafe.Sizeof(bpf.Event{})-160]
)

// available returns the unread bytes of the ring buffer (ringbuf.Reader.AvailableBytes must not
// race with Close). After Close it returns 1: ReadInto then reports the closed reader.
func (r *EventReader) available() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 1
	}
	return r.rd.AvailableBytes()
}

// SetCoalesce makes Read, once it has read every event of a batch, sleep d before it waits for
// the next event (0, the default: wait at once). Sleeping d lets a flood's events gather into
// batches, at the price of up to d of delivery latency: the program wakes a waiting reader up
// when it submits into a ring buffer the reader had caught up with (an irq_work), so a reader
// that waits at once after each event makes the program pay that for nearly every event of a
// flood. Not for concurrent use with Read.
func (r *EventReader) SetCoalesce(d time.Duration) { r.coalesce = d }

// SetDeadline makes Read return os.ErrDeadlineExceeded once t has passed (zero: no deadline).
func (r *EventReader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Close stops the reader; a blocked Read returns.
func (r *EventReader) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	if err := r.rd.Close(); err != nil {
		return fmt.Errorf("close events: %w", err)
	}
	return nil
}
