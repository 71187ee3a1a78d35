package testenv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// SendFrame transmits frame, a complete Ethernet frame (no FCS), out of the interface ifname
// of the namespace with an AF_PACKET socket, bypassing the namespace's own stack: any source
// MAC/IP, any payload. Sent from a device's interface, the frame arrives at the device's
// gateway port, where the XDP program sees it.
func (ns *Namespace) SendFrame(ifname string, frame []byte) error {
	if len(frame) < 14 {
		return fmt.Errorf("testenv: send on %s in %s: frame of %d bytes is shorter than an Ethernet header",
			ifname, ns, len(frame))
	}
	index, err := ns.LinkIndex(ifname)
	if err != nil {
		return err
	}
	var fd int
	err = ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("testenv: packet socket in %s: %w", ns, err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Ifindex: index, Protocol: htons(binary.BigEndian.Uint16(frame[12:14]))}
	if err := unix.Sendto(fd, frame, 0, sa); err != nil {
		return fmt.Errorf("testenv: send on %s in %s: %w", ifname, ns, err)
	}
	return nil
}

// Sender sends frames out of one interface through one AF_PACKET socket (SendFrame opens a
// socket per frame; a Sender is for floods).
type Sender struct {
	fd    int
	index int
	where string
}

// NewSender opens a Sender on the interface ifname of the namespace.
func (ns *Namespace) NewSender(ifname string) (*Sender, error) {
	index, err := ns.LinkIndex(ifname)
	if err != nil {
		return nil, err
	}
	var fd int
	if err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		return nil, fmt.Errorf("testenv: packet socket in %s: %w", ns, err)
	}
	return &Sender{fd: fd, index: index, where: ifname + " in " + ns.String()}, nil
}

// Send transmits one complete Ethernet frame (no FCS).
func (s *Sender) Send(frame []byte) error {
	if len(frame) < 14 {
		return fmt.Errorf("testenv: send on %s: frame of %d bytes is shorter than an Ethernet header", s.where, len(frame))
	}
	sa := &unix.SockaddrLinklayer{Ifindex: s.index, Protocol: htons(binary.BigEndian.Uint16(frame[12:14]))}
	if err := unix.Sendto(s.fd, frame, 0, sa); err != nil {
		return fmt.Errorf("testenv: send on %s: %w", s.where, err)
	}
	return nil
}

// Close closes the socket.
func (s *Sender) Close() error { return unix.Close(s.fd) }

// Frame is one frame captured by a [Sniffer].
type Frame struct {
	Data     []byte    // the Ethernet frame as captured (GSO/GRO aggregates can exceed the MTU)
	Outgoing bool      // sent by the namespace on the interface, rather than received on it
	PktType  uint8     // the AF_PACKET packet type (unix.PACKET_HOST, PACKET_OTHERHOST, ...)
	Len      int       // the frame's length on the wire; > len(Data) if the capture was truncated
	Time     time.Time // when it was read from the socket
}

// Sniffer captures every frame seen on one interface (both directions) from the moment
// [Namespace.Sniff] returns until Stop. On a gateway port with an XDP program attached it
// sees only what the program passed (received) or transmitted; on a device's interface, what
// the device really received. Frames are read from the socket asynchronously: to check for a
// frame right after the event that causes it, use WaitFor rather than Frames.
type Sniffer struct {
	f      *os.File
	done   chan struct{}
	mu     sync.Mutex
	frames []Frame
	wake   chan struct{} // closed and replaced on every new frame
	err    error
	once   sync.Once
}

// snapLen bounds one captured frame: enough for 64 KiB GSO aggregates.
const snapLen = 128 << 10

// Sniff starts capturing on the interface ifname of the namespace (an AF_PACKET socket bound
// to it). The sniffer is stopped at the latest when the topology is closed.
func (ns *Namespace) Sniff(ifname string) (*Sniffer, error) {
	index, err := ns.LinkIndex(ifname)
	if err != nil {
		return nil, err
	}
	var fd int
	err = ns.Do(func() error {
		var err error
		// Protocol 0 receives nothing until bound: no frames from other interfaces leak in.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("testenv: packet socket in %s: %w", ns, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: index, Protocol: htons(unix.ETH_P_ALL)}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("testenv: bind packet socket to %s in %s: %w", ifname, ns, err)
	}
	s := &Sniffer{
		f:    os.NewFile(uintptr(fd), fmt.Sprintf("sniff:%s/%s", ns, ifname)),
		done: make(chan struct{}),
		wake: make(chan struct{}),
	}
	go s.loop()
	ns.tp.track(s)
	return s, nil
}

func (s *Sniffer) loop() {
	defer close(s.done)
	rc, err := s.f.SyscallConn()
	if err != nil {
		s.fail(err)
		return
	}
	buf := make([]byte, snapLen)
	for {
		var (
			n    int
			from unix.Sockaddr
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil { // closed by Stop
			return
		}
		if errors.Is(rerr, unix.EINTR) {
			continue
		}
		if rerr != nil {
			s.fail(rerr)
			return
		}
		fr := Frame{Data: append([]byte(nil), buf[:min(n, len(buf))]...), Len: n, Time: time.Now()}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			fr.PktType = ll.Pkttype
			fr.Outgoing = ll.Pkttype == unix.PACKET_OUTGOING
		}
		s.mu.Lock()
		s.frames = append(s.frames, fr)
		close(s.wake)
		s.wake = make(chan struct{})
		s.mu.Unlock()
	}
}

func (s *Sniffer) fail(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// Frames returns the frames captured so far, in order.
func (s *Sniffer) Frames() []Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Frame(nil), s.frames...)
}

// Received returns the frames captured so far that the interface received (not Outgoing).
func (s *Sniffer) Received() []Frame {
	var in []Frame
	for _, f := range s.Frames() {
		if !f.Outgoing {
			in = append(in, f)
		}
	}
	return in
}

// WaitFor returns the first captured frame (already captured or arriving within timeout)
// for which match returns true; ok is false if there is none by then.
func (s *Sniffer) WaitFor(timeout time.Duration, match func(Frame) bool) (f Frame, ok bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	seen := 0
	for {
		s.mu.Lock()
		frames, wake := s.frames[seen:], s.wake
		s.mu.Unlock()
		for _, f := range frames {
			if match(f) {
				return f, true
			}
		}
		seen += len(frames)
		select {
		case <-wake:
		case <-s.done:
			// Stopped: look at what arrived before the end, then give up.
			s.mu.Lock()
			frames = s.frames[seen:]
			s.mu.Unlock()
			for _, f := range frames {
				if match(f) {
					return f, true
				}
			}
			return Frame{}, false
		case <-timer.C:
			return Frame{}, false
		}
	}
}

// Stop ends the capture (frames captured so far stay available) and returns the error that
// ended the capture early, if any.
func (s *Sniffer) Stop() error {
	s.once.Do(func() {
		_ = s.f.Close()
		<-s.done
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close is Stop, to make a Sniffer an io.Closer.
func (s *Sniffer) Close() error { return s.Stop() }
