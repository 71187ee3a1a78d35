package maps

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/ztgate/ztgate/bpf"
)

// eventSize is the size of struct zt_event (the fixed layout the program submits).
var eventSize = binary.Size(bpf.Event{})

// EventReader reads the drop/audit events of the zt_events ring buffer. One reader per ring
// buffer: records are consumed as they are read.
type EventReader struct {
	rd  *ringbuf.Reader
	rec ringbuf.Record
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
	if err := r.rd.ReadInto(&r.rec); err != nil {
		return ev, fmt.Errorf("read event: %w", err)
	}
	if len(r.rec.RawSample) < eventSize {
		return ev, fmt.Errorf("read event: record of %d bytes, want %d", len(r.rec.RawSample), eventSize)
	}
	if err := binary.Read(bytes.NewReader(r.rec.RawSample[:eventSize]), binary.NativeEndian, &ev); err != nil {
		return ev, fmt.Errorf("read event: decode: %w", err)
	}
	return ev, nil
}

// SetDeadline makes Read return os.ErrDeadlineExceeded once t has passed (zero: no deadline).
func (r *EventReader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Close stops the reader; a blocked Read returns.
func (r *EventReader) Close() error {
	if err := r.rd.Close(); err != nil {
		return fmt.Errorf("close events: %w", err)
	}
	return nil
}
