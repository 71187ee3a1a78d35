package e2e

import (
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ztgate/ztgate/bpf"
	"github.com/ztgate/ztgate/loader"
	"github.com/ztgate/ztgate/policy"
)

// swapPolicies returns A and B. In A cam may send udp 7100 to segment "open" and broker is in
// "closed"; in B cam may send to "closed" and broker is in "open". Neither lets cam reach
// broker on 7100, but a frame that saw cam's rules from one revision and broker's segment from
// the other (or the rule map of one and the address map of the other) would pass. cam -> the
// upstream on udp 7000 is allowed in both.
func swapPolicies(t *testing.T, g *gateway) (a, b *policy.Snapshot) {
	mk := func(camTo, brokerIn string) *policy.Snapshot {
		p := basePolicy(t, g.tp)
		p.Spec.Segments = []policy.Segment{{Name: "open"}, {Name: "closed"}}
		for i := range p.Spec.Devices {
			d := &p.Spec.Devices[i]
			switch d.Name {
			case "cam":
				d.Allow = append(d.Allow, policy.Rule{To: policy.Target{Segment: camTo}, Proto: "udp",
					Ports: []policy.PortRange{{Lo: 7100, Hi: 7100}}})
			case "broker":
				d.Segment = brokerIn
			}
		}
		s, err := g.compile(p)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return mk("open", "closed"), mk("closed", "open")
}

// TestAtomicSwap: flip between A and B thousands of times while cam sends both flows as fast as
// it can. The forbidden flow is never delivered; the allowed one keeps flowing. ZTGATE_SWAP_FLIPS
// overrides the number of flips (default 2000).
func TestAtomicSwap(t *testing.T) {
	flips := 2000
	if s := os.Getenv("ZTGATE_SWAP_FLIPS"); s != "" {
		flips, _ = strconv.Atoi(s)
	}
	// Both ways of filling the inactive slot: fresh maps every time, and incremental (shared and
	// patched inner maps: what the agent uses).
	t.Run("full", func(t *testing.T) { atomicSwap(t, flips/2, false) })
	t.Run("incremental", func(t *testing.T) { atomicSwap(t, flips/2, true) })
}

// atomicSwap is TestAtomicSwap with flips swaps, the inactive slot filled fresh or incrementally.
func atomicSwap(t *testing.T, flips int, incremental bool) {
	tp := topology(t)
	g := attach(t, tp, loader.ModeNative, basePolicy(t, tp))
	g.maps.SetIncremental(incremental)
	a, b := swapPolicies(t, g)
	lim := limits(g.dp)
	if err := g.maps.Apply(a, lim); err != nil {
		t.Fatal(err)
	}
	cam, broker, up := tp.Device("cam"), tp.Device("broker"), tp.Upstream

	forbidden, err := broker.NS.ListenPacket("udp", ":7100")
	if err != nil {
		t.Fatal(err)
	}
	defer forbidden.Close()
	allowed, err := up.NS.ListenPacket("udp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer allowed.Close()
	var leaked, delivered atomic.Int64
	var wg sync.WaitGroup
	recv := func(read func([]byte) error, n *atomic.Int64) {
		defer wg.Done()
		buf := make([]byte, 64)
		for read(buf) == nil {
			n.Add(1)
		}
	}
	wg.Add(2)
	go recv(func(b []byte) error { _, _, err := forbidden.ReadFrom(b); return err }, &leaked)
	go recv(func(b []byte) error { _, _, err := allowed.ReadFrom(b); return err }, &delivered)

	fc, err := cam.NS.Dial("udp", addrPort(broker.IPv4[0], 7100), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	ac, err := cam.NS.Dial("udp", addrPort(up.IPv4, 7000), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	stop := make(chan struct{})
	var sent atomic.Int64
	var sendWG sync.WaitGroup
	sendWG.Add(1)
	go func() {
		defer sendWG.Done()
		msg := []byte("probe")
		for {
			select {
			case <-stop:
				return
			default:
			}
			for range 16 {
				_, _ = fc.Write(msg)
			}
			_, _ = ac.Write(msg)
			sent.Add(17)
		}
	}()

	dropsBefore := g.counter(bpf.VerdictDrop, bpf.ReasonNoRule)
	start := time.Now()
	for i := range flips {
		s := a
		if i%2 == 0 {
			s = b
		}
		if err := g.maps.Apply(s, lim); err != nil {
			t.Fatalf("flip %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	close(stop)
	sendWG.Wait()
	time.Sleep(200 * time.Millisecond) // let the last frames land
	forbidden.Close()
	allowed.Close()
	wg.Wait()

	drops := g.counter(bpf.VerdictDrop, bpf.ReasonNoRule) - dropsBefore
	perFlip := float64(elapsed.Microseconds()) / 1000 / float64(flips)
	t.Logf("%d flips in %v (%.2f ms each); %d probes sent, forbidden flow: %d no_rule drops, %d delivered; "+
		"allowed flow: %d delivered", flips, elapsed.Round(time.Millisecond), perFlip, sent.Load(), drops,
		leaked.Load(), delivered.Load())
	if leaked.Load() != 0 {
		t.Fatalf("%d forbidden datagrams were delivered during policy swaps", leaked.Load())
	}
	if delivered.Load() == 0 || drops == 0 {
		t.Fatal("no traffic ran during the swaps: the test proved nothing")
	}
}
