package testenv

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The helpers below create their sockets inside the namespace (a socket keeps the namespace
// it was created in) and then use them from any goroutine. Every socket, listener and server
// they return is also closed when the topology is closed.

// Listen listens on a stream network ("tcp", "tcp4", "tcp6") inside the namespace, e.g.
// Listen("tcp", ":0").
func (ns *Namespace) Listen(network, addr string) (net.Listener, error) {
	l, err := inside(ns, func() (net.Listener, error) { return net.Listen(network, addr) })
	if err != nil {
		return nil, fmt.Errorf("testenv: listen %s %s in %s: %w", network, addr, ns, err)
	}
	ns.tp.track(l)
	return l, nil
}

// ListenPacket listens on a packet network ("udp", "udp4", "udp6") inside the namespace.
func (ns *Namespace) ListenPacket(network, addr string) (net.PacketConn, error) {
	pc, err := inside(ns, func() (net.PacketConn, error) { return net.ListenPacket(network, addr) })
	if err != nil {
		return nil, fmt.Errorf("testenv: listen %s %s in %s: %w", network, addr, ns, err)
	}
	ns.tp.track(pc)
	return pc, nil
}

// Dial connects from inside the namespace ("tcp" or "udp" families) to raddr, which must be
// an IP literal with a port ("10.99.0.10:80", "[fd00:99::10]:80"): name resolution could
// create the socket on another goroutine, outside the namespace. For TCP, timeout bounds the
// handshake; 0 means no limit.
func (ns *Namespace) Dial(network, raddr string, timeout time.Duration) (net.Conn, error) {
	if _, err := netip.ParseAddrPort(raddr); err != nil {
		return nil, fmt.Errorf("testenv: dial %s: want an IP literal with a port: %w", raddr, err)
	}
	c, err := inside(ns, func() (net.Conn, error) { return (&net.Dialer{Timeout: timeout}).Dial(network, raddr) })
	if err != nil {
		return nil, fmt.Errorf("testenv: dial %s %s from %s: %w", network, raddr, ns, err)
	}
	ns.tp.track(c)
	return c, nil
}

// inside runs open inside the namespace and returns what it opened.
func inside[T any](ns *Namespace, open func() (T, error)) (T, error) {
	var v T
	err := ns.Do(func() error {
		var err error
		v, err = open()
		return err
	})
	return v, err
}

// EchoServer echoes back what it receives, until closed (at the latest with the topology).
type EchoServer struct {
	addr  net.Addr
	close func() error
	once  sync.Once
	err   error
}

// Addr is the address the server is bound to.
func (s *EchoServer) Addr() net.Addr { return s.addr }

// Port is the port the server is bound to.
func (s *EchoServer) Port() int {
	switch a := s.addr.(type) {
	case *net.TCPAddr:
		return a.Port
	case *net.UDPAddr:
		return a.Port
	}
	return 0
}

// Close stops the server and waits for its goroutines.
func (s *EchoServer) Close() error {
	s.once.Do(func() { s.err = s.close() })
	return s.err
}

// EchoTCP starts a TCP echo server inside the namespace on addr (":0" picks a free port on
// all addresses of both families); each connection gets back every byte it sends.
func (ns *Namespace) EchoTCP(addr string) (*EchoServer, error) {
	l, err := inside(ns, func() (net.Listener, error) { return net.Listen("tcp", addr) })
	if err != nil {
		return nil, fmt.Errorf("testenv: tcp echo on %s in %s: %w", addr, ns, err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		done  bool
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if done {
				mu.Unlock()
				_ = c.Close()
				return
			}
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				_, _ = io.Copy(c, c)
				_ = c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			})
		}
	})
	s := &EchoServer{addr: l.Addr(), close: func() error {
		err := l.Close()
		mu.Lock()
		done = true
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
		return err
	}}
	ns.tp.track(s)
	return s, nil
}

// EchoUDP starts a UDP echo server inside the namespace on addr (":0" picks a free port on
// all addresses of both families); each datagram is sent back to its source.
func (ns *Namespace) EchoUDP(addr string) (*EchoServer, error) {
	pc, err := inside(ns, func() (net.PacketConn, error) { return net.ListenPacket("udp", addr) })
	if err != nil {
		return nil, fmt.Errorf("testenv: udp echo on %s in %s: %w", addr, ns, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. ICMP errors reported on the socket
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	})
	s := &EchoServer{addr: pc.LocalAddr(), close: func() error {
		err := pc.Close()
		wg.Wait()
		return err
	}}
	ns.tp.track(s)
	return s, nil
}

// Ping sends one ICMP (IPv4) or ICMPv6 echo request to dst from inside the namespace and
// waits up to timeout for the matching echo reply. It fails early when an ICMP error
// (unreachable, time exceeded, ...) about the request comes back.
func (ns *Namespace) Ping(dst netip.Addr, timeout time.Duration) error {
	_, err := ns.PingTTL(dst, timeout)
	return err
}

// PingTTL is [Namespace.Ping] that also returns the TTL (IPv4) or hop limit (IPv6) with which
// the echo reply arrived: 64 minus the number of routers on the way back, for Linux peers.
func (ns *Namespace) PingTTL(dst netip.Addr, timeout time.Duration) (int, error) {
	ttl, err := ns.ping(dst, timeout)
	if err != nil {
		return 0, fmt.Errorf("testenv: ping %s from %s: %w", dst, ns, err)
	}
	return ttl, nil
}

func (ns *Namespace) ping(dst netip.Addr, timeout time.Duration) (int, error) {
	dst = dst.Unmap()
	if !dst.IsValid() {
		return 0, errors.New("invalid address")
	}
	v4 := dst.Is4()
	var fd, zone int
	err := ns.Do(func() error {
		if dst.Zone() != "" {
			ifi, err := net.InterfaceByName(dst.Zone())
			if err != nil {
				return err
			}
			zone = ifi.Index
		}
		var err error
		if v4 {
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		} else {
			fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)

	var idseq [4]byte
	_, _ = rand.Read(idseq[:])
	msg := append([]byte{8, 0, 0, 0}, idseq[:]...)
	msg = append(msg, "ztgate-testenv-ping"...)
	var sa unix.Sockaddr
	if v4 {
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
		sa = &unix.SockaddrInet4{Addr: dst.As4()}
	} else {
		msg[0] = 128 // the kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1); err != nil {
			return 0, fmt.Errorf("IPV6_RECVHOPLIMIT: %w", err)
		}
		sa = &unix.SockaddrInet6{Addr: dst.As16(), ZoneId: uint32(zone)}
	}
	if err := unix.Sendto(fd, msg, 0, sa); err != nil {
		return 0, fmt.Errorf("send: %w", err)
	}

	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	oob := make([]byte, 128)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, fmt.Errorf("no echo reply within %v", timeout)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, int((left+time.Millisecond-1)/time.Millisecond)); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, fmt.Errorf("poll: %w", err)
		}
		n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("receive: %w", err)
		}
		var src netip.Addr
		var ttl int
		var icmp []byte
		if v4 {
			if n < 20 || int(buf[0]&0x0f)*4 > n {
				continue
			}
			ihl := int(buf[0]&0x0f) * 4
			ttl = int(buf[8])
			src = netip.AddrFrom4([4]byte(buf[12:16]))
			icmp = buf[ihl:n]
		} else {
			if sa6, ok := from.(*unix.SockaddrInet6); ok {
				src = netip.AddrFrom16(sa6.Addr)
			}
			ttl = hopLimit(oob[:oobn])
			icmp = buf[:n]
		}
		if len(icmp) < 8 {
			continue
		}
		typ, code := icmp[0], icmp[1]
		if (v4 && typ == 0 || !v4 && typ == 129) && [4]byte(icmp[4:8]) == idseq && src == dst.WithZone("") {
			return ttl, nil
		}
		if quotesEcho(v4, typ, icmp[8:], idseq) {
			proto := "ICMP"
			if !v4 {
				proto = "ICMPv6"
			}
			return 0, fmt.Errorf("%s %s (type %d code %d) from %s", proto, icmpError(v4, typ), typ, code, src)
		}
	}
}

// quotesEcho reports whether an ICMP error message of type typ quotes our echo request.
func quotesEcho(v4 bool, typ byte, quoted []byte, idseq [4]byte) bool {
	if v4 {
		if typ != 3 && typ != 11 && typ != 12 || len(quoted) < 20 {
			return false
		}
		ihl := int(quoted[0]&0x0f) * 4
		return quoted[9] == unix.IPPROTO_ICMP && len(quoted) >= ihl+8 && quoted[ihl] == 8 &&
			[4]byte(quoted[ihl+4:ihl+8]) == idseq
	}
	if typ < 1 || typ > 4 || len(quoted) < 48 {
		return false
	}
	return quoted[6] == unix.IPPROTO_ICMPV6 && quoted[40] == 128 && [4]byte(quoted[44:48]) == idseq
}

func icmpError(v4 bool, typ byte) string {
	switch {
	case v4 && typ == 3, !v4 && typ == 1:
		return "destination unreachable"
	case v4 && typ == 11, !v4 && typ == 3:
		return "time exceeded"
	case v4 && typ == 12, !v4 && typ == 4:
		return "parameter problem"
	case !v4 && typ == 2:
		return "packet too big"
	}
	return "error"
}

// hopLimit extracts IPV6_HOPLIMIT from control messages (-1 if absent).
func hopLimit(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT && len(m.Data) >= 4 {
			return int(int32(binary.NativeEndian.Uint32(m.Data)))
		}
	}
	return -1
}

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
