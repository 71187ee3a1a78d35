// Package testenv builds throw-away network topologies for testing the XDP gateway: a gateway
// network namespace with one veth "port" per device, one namespace per device and, optionally,
// an upstream namespace (a server behind the gateway) on an uplink veth. Every helper that
// needs a namespace enters it with setns on a locked OS thread (see [Do]); nothing shells out
// to `ip netns exec`, whose /sys remount would hide bpffs.
//
// # Usage
//
//	testenv.RequirePriv(t)
//	tp := testenv.New(t, testenv.Config{Devices: []testenv.DeviceSpec{{Name: "cam"}}, Upstream: true})
//	cam, up := tp.Device("cam"), tp.Upstream
//	err := tp.Gateway.Do(func() error { // XDP on cam's port, inside the gateway namespace
//		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: cam.Port.Index})
//		...
//	})
//	srv, err := up.NS.EchoTCP(":0")
//	c, err := cam.NS.Dial("tcp", netip.AddrPortFrom(up.IPv4, uint16(srv.Port())).String(), time.Second)
//	err = cam.NS.Ping(up.IPv6, time.Second)
//	sn, err := tp.Gateway.Sniff(cam.Port.Name)          // what the gateway let through
//	err = cam.NS.SendFrame(cam.Ifname, spoofedFrame)    // arrives at cam's port
//	f, ok := sn.WaitFor(time.Second, func(f testenv.Frame) bool { ... })
//
// # Topology
//
//	 device ns "ztdev-<id>-<n>"          gateway ns "ztgw-<id>"             upstream ns "ztup-<id>"
//	+--------------------------+        +-------------------------+        +----------------------+
//	| zt<id>d<n>               |  veth  | zt<id>g<n>  (port n)    |  veth  |                      |
//	|  10.99.0.<10+n>/32       |--------|  10.99.0.1/32           |        |                      |
//	|  fd00:99::<10+n>/128     |        |  fd00:99::1/128         |        |                      |
//	|  default via gw, onlink  |        |  + fe80:: link-local    |        |                      |
//	+--------------------------+        |  route dev-addr dev port|        |                      |
//	                                    | zt<id>gu   (uplink)     |--------| zt<id>u              |
//	                                    |  192.0.2.1/24           |        |  192.0.2.2/24        |
//	                                    |  2001:db8:99::1/64      |        |  2001:db8:99::2/64   |
//	                                    |  default via upstream   |        |  default via gw      |
//	                                    +-------------------------+        +----------------------+
//
// <id> is 6 random hex digits chosen per topology, so topologies built concurrently (by
// parallel tests or by other processes) never collide, and interface names stay within 15
// bytes ("zt" + id + "g" + port number). Interfaces are created directly inside their
// namespaces; nothing is ever created in, or moved through, the caller's namespace.
//
// # Addressing plan
//
// These are the defaults; every item is configurable in [Config] and [DeviceSpec].
//
//   - Gateway: Config.GatewayIPv4 (10.99.0.1) as /32 and Config.GatewayIPv6 (fd00:99::1) as
//     /128 on every port (the same addresses on all ports), plus each port's own link-local
//     address, and a host route (/32, /128, scope link) to every device address via that
//     device's port. IPv4 and IPv6 forwarding are on; rp_filter is off, so the kernel itself
//     does no anti-spoofing and whatever the tests observe is the XDP program's doing.
//   - Device n (0-based, in the order devices were added): IPv4 = the gateway's /24 with host
//     10+n (10.99.0.10, 10.99.0.11, ...); IPv6 = the gateway's /112 with host 0x10+n
//     (fd00:99::10, fd00:99::11, ...). Each address is a /32 or /128 and the only routes are
//     the defaults via the gateway addresses with the onlink flag, so ALL of a device's traffic,
//     including to other devices, goes through the gateway. A nil IPv4/IPv6 slice in the
//     DeviceSpec means "default"; an empty non-nil slice means "no address of that family".
//   - With Config.Bridge the device ports are ports of one bridge, Topology.Bridge
//     ("zt" + id + "br", MAC 02:7a:62:00:00:00), which carries the gateway's addresses and
//     the host routes to the devices instead of the ports; the uplink stays routed.
//   - Device MAC: DeviceSpec.MAC or 02:7a:64:00:<n>; gateway port n MAC: 02:7a:67:00:<n>
//     (<n> as two bytes, big endian). All are locally administered unicast.
//   - Uplink: Config.UplinkIPv4 (192.0.2.0/24, TEST-NET-1) and Config.UplinkIPv6
//     (2001:db8:99::/64, documentation range): the gateway takes the first host address (.1,
//     ::1), the upstream the second (.2, ::2). The upstream's default routes point at the
//     gateway, so it reaches every device address; the gateway's default routes point at the
//     upstream, so the upstream stands in for "the internet": addresses added to it with
//     [Upstream.AddAddress] are reachable from the devices. Uplink MACs are 02:7a:75:00:00:01
//     (gateway side) and 02:7a:75:00:00:02 (upstream side).
//
// IPv6 duplicate address detection is disabled (accept_dad=0 and IFA_F_NODAD), devices send
// no router solicitations, and [New] / [Build] return only once every link is up and every
// address (including the link-locals) is usable.
//
// # Cleanup
//
// [New] registers a t.Cleanup that closes the topology even if the test fails or New fails
// half-way; [Build] cleans up after itself when it fails, and [Topology.Close] tears down a
// built topology: it closes every socket, sniffer and echo server created through this
// package, deletes the veths (synchronously), closes the namespace handles and unmounts and
// removes the /run/netns entries. Sockets created inside [Namespace.Do] by the caller keep a
// namespace alive (without its veths) until they are closed.
//
// Root is needed ([RequirePriv]); bpffs stays visible inside [Do] because only the network
// namespace is switched, so XDP programs and pinned maps can be attached/used from inside it.
package testenv
