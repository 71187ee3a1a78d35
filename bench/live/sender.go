package live

// The live section's senders: the in-kernel live-frames generator where the kernel allows
// BPF_F_TEST_XDP_LIVE_FRAMES, and an AF_PACKET TX ring from user space where it does not.

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ztgate/ztgate/bench/core"
	"github.com/ztgate/ztgate/testenv"
)

// RefuseEnv is the environment variable that makes the live-frames probe report a refusal
// (EPERM, as the kernels that refuse live frames do), so that the automatic fallback can be
// exercised on a kernel that allows them.
const RefuseEnv = "ZTGATE_BENCH_REFUSE_LIVE_FRAMES"

// senderDesc describes a sender for the report.
func senderDesc(s string) string {
	switch s {
	case core.LiveSenderKernel:
		return "kernel: in-kernel generator, BPF_F_TEST_XDP_LIVE_FRAMES, xdp_frames in batches of 64"
	case core.LiveSenderAFPacket:
		return "afpacket: AF_PACKET TX ring with PACKET_QDISC_BYPASS, one pinned thread, skbs one at a time " +
			"(the receiving veth copies each into a page before XDP)"
	}
	return s
}

// frameSender sends one variant's frame.
type frameSender interface {
	// send sends n frames (at least one) and returns how many it sent.
	send(n uint32) (uint32, error)
	Close() error
}

// kernelSender runs the generator with live frames: every repetition is an xdp_frame
// transmitted on the generator's veth.
type kernelSender struct {
	gen   *ebpf.Program
	frame []byte
}

// send runs the generator n times with live frames.
func (s *kernelSender) send(n uint32) (uint32, error) {
	_, err := s.gen.Run(&ebpf.RunOptions{Data: s.frame, Repeat: n, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		BatchSize: batchFrames})
	if err != nil {
		return 0, fmt.Errorf("generator: %w", err)
	}
	return n, nil
}

// Close releases the generator.
func (s *kernelSender) Close() error { return s.gen.Close() }

// newKernelSender loads a generator that redirects to ifindex (in the namespace of the
// thread that will run it).
func newKernelSender(ifindex int, frame []byte) (*kernelSender, error) {
	gen, err := newGenerator(ifindex)
	if err != nil {
		return nil, err
	}
	return &kernelSender{gen: gen, frame: frame}, nil
}

// The AF_PACKET TX ring: TPACKET_V2 frames of ringFrameSize bytes, the data of each at
// TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) after its header.
const (
	ringBlockSize = 1 << 16
	ringBlocks    = 4
	ringFrameSize = 256
	ringFrames    = ringBlockSize / ringFrameSize * ringBlocks
	ringDataOff   = (unix.SizeofTpacket2Hdr + unix.TPACKET_ALIGNMENT - 1) &^ (unix.TPACKET_ALIGNMENT - 1)
	ringSndBuf    = 4 << 20
	ringTimeout   = 2 * time.Second // bounds the wait for a ring's frames to be sent
	ringRetries   = 8               // sends interrupted by a signal in a row before giving up
)

// afPacketSender is an AF_PACKET socket bound to one interface, with a TX ring every frame of
// which holds the same frame. A send marks frames ready and calls sendto without MSG_DONTWAIT:
// the kernel transmits them one by one straight to the driver (PACKET_QDISC_BYPASS), on the
// calling thread, and returns once every one was freed, so a veth's receiver has run (in the
// softirq each transmission's bottom-half section ends with) before it returns.
type afPacketSender struct {
	fd   int
	ring []byte
	next int // the next frame the kernel will look at
}

// newAFPacketSender opens the socket in the network namespace of the calling thread and binds it
// to ifindex there. Protocol 0: it receives nothing.
func newAFPacketSender(ifindex int, frame []byte) (_ *afPacketSender, err error) {
	if len(frame) > ringFrameSize-ringDataOff {
		return nil, fmt.Errorf("frame of %d bytes: the ring's frames hold %d", len(frame), ringFrameSize-ringDataOff)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("af_packet socket: %w", err)
	}
	s := &afPacketSender{fd: fd}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for _, o := range []struct {
		level, opt, v int
		name          string
	}{
		{unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2, "packet_version"},
		{unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1, "packet_qdisc_bypass"},
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, ringSndBuf, "so_sndbufforce"},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			return nil, fmt.Errorf("set %s: %w", o.name, err)
		}
	}
	tv := unix.NsecToTimeval(ringTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("set so_sndtimeo: %w", err)
	}
	req := unix.TpacketReq{Block_size: ringBlockSize, Block_nr: ringBlocks, Frame_size: ringFrameSize,
		Frame_nr: ringFrames}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		return nil, fmt.Errorf("set packet_tx_ring: %w", err)
	}
	if s.ring, err = unix.Mmap(fd, 0, ringBlockSize*ringBlocks, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("mmap the tx ring: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		return nil, fmt.Errorf("bind to ifindex %d: %w", ifindex, err)
	}
	for i := range ringFrames {
		f := s.ring[i*ringFrameSize:]
		h := (*unix.Tpacket2Hdr)(unsafe.Pointer(&f[0]))
		h.Len = uint32(len(frame))
		copy(f[ringDataOff:], frame)
	}
	return s, nil
}

// status is the status word of the ring's frame i.
func (s *afPacketSender) status(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&s.ring[i*ringFrameSize]))
}

// send transmits n frames through the ring.
func (s *afPacketSender) send(n uint32) (uint32, error) {
	var sent uint32
	for sent < n {
		k := int(min(n-sent, ringFrames))
		for j := range k {
			atomic.StoreUint32(s.status((s.next+j)%ringFrames), unix.TP_STATUS_SEND_REQUEST)
		}
		// A signal may interrupt the wait for the frames' completion: the next call resumes it.
		var errno unix.Errno
		for try := 0; try < ringRetries; try++ {
			if _, _, errno = unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, 0, 0, 0); errno != unix.EINTR {
				break
			}
		}
		if errno != 0 {
			return sent, fmt.Errorf("af_packet send: %w", errno)
		}
		for j := range k {
			i := (s.next + j) % ringFrames
			if st := atomic.LoadUint32(s.status(i)); st != unix.TP_STATUS_AVAILABLE {
				atomic.StoreUint32(s.status(i), unix.TP_STATUS_AVAILABLE)
				return sent, fmt.Errorf("af_packet send: frame %d of the ring has status %#x after the send", i, st)
			}
		}
		s.next = (s.next + k) % ringFrames
		sent += uint32(k)
	}
	return sent, nil
}

// Close unmaps the ring and closes the socket.
func (s *afPacketSender) Close() error {
	var err error
	if s.ring != nil {
		err = unix.Munmap(s.ring)
		s.ring = nil
	}
	if s.fd >= 0 {
		err = errors.Join(err, unix.Close(s.fd))
		s.fd = -1
	}
	return err
}

// sinkName is the interface the AF_PACKET sender alone sends to, in the sender's namespace.
const sinkName = "ztbsink0"

// addSink adds the sink to ns: an ifb device, which frees every frame it is given at once
// unless tc redirected it there, and counts it under rx_dropped. It goes with ns.
func addSink(ns *testenv.Namespace) (int, error) {
	l := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: sinkName}}
	if err := ns.Netlink().LinkAdd(l); err != nil {
		return 0, fmt.Errorf("add the sink %s (ifb): %w", sinkName, err)
	}
	if err := ns.Netlink().LinkSetUp(l); err != nil {
		return 0, fmt.Errorf("set %s up: %w", sinkName, err)
	}
	return ns.LinkIndex(sinkName)
}

// isRefusal reports whether err is a kernel's refusal of live frames (not a failure).
func isRefusal(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) ||
		errors.Is(err, enotsupp)
}

// enotsupp is the kernel's internal ENOTSUPP, which BPF commands may return to user space.
const enotsupp = unix.Errno(524)

// probeFrames runs the generator once with live frames (one frame, to a veth that refuses
// it) and returns nil if the kernel allows them. RefuseEnv=1 makes it report EPERM.
func probeFrames(gen frameSender) error {
	if os.Getenv(RefuseEnv) == "1" {
		return fmt.Errorf("%w (simulated: %s=1)", unix.EPERM, RefuseEnv)
	}
	_, err := gen.send(1)
	return err
}

// chooseSender picks the sender for want (one of core.LiveSenders, "" is auto), given the
// result of the live-frames probe. A refusal makes auto fall back to AF_PACKET; without root it
// is a privilege problem, not the kernel's refusal, and an error.
func chooseSender(cfg *core.Config, want string, probe func() error) (string, error) {
	switch want {
	case "", core.LiveSenderAuto:
	case core.LiveSenderAFPacket:
		return want, nil
	case core.LiveSenderKernel:
		if err := probe(); err != nil {
			return "", fmt.Errorf("live frames unavailable on this kernel: %w (the kernel sender was forced)", err)
		}
		return want, nil
	default:
		return "", fmt.Errorf("live sender %q: want one of %v", want, core.LiveSenders)
	}
	err := probe()
	switch {
	case err == nil:
		return core.LiveSenderKernel, nil
	case errors.Is(err, unix.EPERM) && os.Geteuid() != 0:
		return "", fmt.Errorf("live frames: %w: needs root", err)
	case isRefusal(err):
		cfg.Logf("live: live frames unavailable on this kernel: %v; falling back to the AF_PACKET sender", err)
		return core.LiveSenderAFPacket, nil
	}
	return "", fmt.Errorf("live frames probe: %w", err)
}

// Legacy ethtool commands: get and set TCP segmentation offload (every TSO feature).
const (
	ethtoolGTSO = 0x1e
	ethtoolSTSO = unix.ETHTOOL_STSO
)

// setTSO turns TSO on or off on ifname inside ns and reads it back. A veth hands an skb to
// its peer's NAPI (and XDP program) only if it deems it fit for GRO, which depends on the
// sending veth's TSO features in some kernel versions: the AF_PACKET sender turns TSO off on the
// ports it sends from, so the path does not depend on the version (each variant's probe checks
// it).
func setTSO(ns *testenv.Namespace, ifname string, on bool) error {
	return setFeature(ns, ifname, "tso", ethtoolGTSO, ethtoolSTSO, on)
}
