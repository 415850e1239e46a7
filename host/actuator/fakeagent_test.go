package actuator

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/qmp/qmptest"
	"github.com/hotplugheaven/hotplug/proto"
)

// pipeChannel is a channel.Channel whose connections a test makes with
// net.Pipe: the test plays the guest.
type pipeChannel struct {
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newPipeChannel() *pipeChannel {
	return &pipeChannel{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (p *pipeChannel) Accept(ctx context.Context) (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pipeChannel) Close() error   { p.once.Do(func() { close(p.closed) }); return nil }
func (p *pipeChannel) String() string { return "pipe" }

// dial gives the actuator a new connection and returns the guest's end.
func (p *pipeChannel) dial(t *testing.T) net.Conn {
	guest, host := net.Pipe()
	select {
	case p.conns <- host:
	case <-time.After(10 * time.Second):
		t.Fatal("actuator did not accept a connection")
	}
	return guest
}

// fakeGuest plays a Linux guest with our agent, wired to a qmptest VM: the
// CPUs QEMU has plugged are present (numbered as Linux does, lowest free
// number first, APIC id = core id = CPU number for QEMU's default
// topology), and the agent onlines and offlines them on command.
type fakeGuest struct {
	t   *testing.T
	qmp *qmptest.Server

	mu            sync.Mutex
	online        proto.CPUSet
	demand        float64 // CPUs' worth of work wanted
	refuseOnline  bool
	refuseOffline bool
	commands      []proto.Command
}

func newFakeGuest(t *testing.T, qmp *qmptest.Server) *fakeGuest {
	g := &fakeGuest{t: t, qmp: qmp}
	for i := 0; i < qmp.Plugged(); i++ {
		g.online.Add(i)
	}
	return g
}

func (g *fakeGuest) set(f func(g *fakeGuest)) {
	g.mu.Lock()
	f(g)
	g.mu.Unlock()
}

func (g *fakeGuest) present() proto.CPUSet {
	g.mu.Lock()
	q := g.qmp
	g.mu.Unlock()
	var s proto.CPUSet
	for i := 0; i < q.Plugged(); i++ {
		s.Add(i)
	}
	return s
}

// sets returns present and online, with online limited to present (an
// unplugged CPU cannot stay online).
func (g *fakeGuest) sets() (present, online proto.CPUSet) {
	present = g.present()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.online.Slice() {
		if !present.Has(c) {
			g.online.Remove(c)
		}
	}
	return present, g.online.Clone()
}

func (g *fakeGuest) hello() *proto.Hello {
	present, online := g.sets()
	return &proto.Hello{MinVersion: 1, MaxVersion: 1, AgentVersion: "fake",
		Possible: proto.NewCPUSet(0, 1, 2, 3), Present: present, Online: online,
		Topology: topo(online), IntervalNanos: int64(100 * time.Millisecond)}
}

func topo(s proto.CPUSet) []proto.CPUTopology {
	var out []proto.CPUTopology
	for _, c := range s.Slice() {
		out = append(out, proto.CPUTopology{CPU: uint16(c), APICID: uint32(c)})
	}
	return out
}

// run connects and serves until ctx ends, reconnecting when the actuator
// drops the connection, like the real agent.
func (g *fakeGuest) run(ctx context.Context, ch *pipeChannel, interval time.Duration) {
	for ctx.Err() == nil {
		conn := ch.dial(g.t)
		g.session(ctx, conn, interval)
		conn.Close()
	}
}

func (g *fakeGuest) session(ctx context.Context, conn net.Conn, interval time.Duration) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	w := proto.NewWriter(conn)
	r := proto.NewReader(conn, 0)
	if w.Write(g.hello()) != nil {
		return
	}
	if m, err := r.Next(); err != nil || m.(*proto.Welcome).Error != "" {
		return
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		var seq uint64
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			seq++
			if w.Write(g.report(seq, interval)) != nil {
				return
			}
		}
	}()
	for {
		m, err := r.Next()
		if err != nil {
			return
		}
		c := m.(*proto.Command)
		if w.Write(g.execute(c)) != nil {
			return
		}
	}
}

func (g *fakeGuest) report(seq uint64, interval time.Duration) *proto.Report {
	present, online := g.sets()
	g.mu.Lock()
	demand := g.demand
	g.mu.Unlock()
	r := &proto.Report{Seq: seq, MonotonicNanos: time.Now().UnixNano(), WallUnixNanos: time.Now().UnixNano(),
		IntervalNanos: int64(interval), Online: online, Present: present, MemTotalBytes: 1 << 30, MemAvailableBytes: 1 << 29}
	n := float64(online.Len())
	busy := min(demand, n)
	for _, c := range online.Slice() {
		r.CPUs = append(r.CPUs, proto.CPUStat{CPU: uint16(c), Busy: float32(busy / n), Idle: float32(1 - busy/n)})
	}
	if wait := demand - busy; wait > 0 {
		r.RunDelay = []proto.RunDelay{{CPU: 0, WaitNanos: uint64(wait * float64(interval))}}
	}
	return r
}

func (g *fakeGuest) execute(c *proto.Command) *proto.Ack {
	g.mu.Lock()
	g.commands = append(g.commands, *c)
	refuseOn, refuseOff := g.refuseOnline, g.refuseOffline
	g.mu.Unlock()
	ack := &proto.Ack{ID: c.ID}
	for _, n := range c.Offline.Slice() {
		ack.Topology = append(ack.Topology, proto.CPUTopology{CPU: uint16(n), APICID: uint32(n)})
		if n == 0 || refuseOff {
			ack.Failed = append(ack.Failed, proto.CPUError{CPU: uint16(n), Error: "device or resource busy"})
			continue
		}
		g.set(func(g *fakeGuest) { g.online.Remove(n) })
	}
	for _, n := range c.Online.Slice() {
		// A hot-added CPU appears in the guest a little after device_add.
		deadline := time.Now().Add(2 * time.Second)
		for !g.present().Has(n) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if refuseOn || !g.present().Has(n) {
			ack.Failed = append(ack.Failed, proto.CPUError{CPU: uint16(n), Error: "no such CPU"})
			continue
		}
		g.set(func(g *fakeGuest) { g.online.Add(n) })
		ack.Topology = append(ack.Topology, proto.CPUTopology{CPU: uint16(n), APICID: uint32(n)})
	}
	ack.Present, ack.Online = g.sets()
	ack.OK = len(ack.Failed) == 0
	if !ack.OK {
		ack.Error = "failed"
	}
	return ack
}

func (g *fakeGuest) onlineCount() int {
	_, online := g.sets()
	return online.Len()
}
