// Package fakeguest plays a Linux guest running hotplug-agent, for tests of
// the actuator: it speaks the real protocol over any connection, reports a
// demand the test sets, and onlines and offlines CPUs on command. Its CPUs
// are wired to a qmptest VM: the CPUs QEMU has plugged are present,
// numbered as Linux does on x86 (lowest free number first; APIC id = core
// id = CPU number for QEMU's default topology).
//
// It is test support: no shipped binary may import it. Where it simplifies
// (no real /proc, CPUs appear in the guest as soon as QEMU plugs them) it
// says so here rather than pretend.
package fakeguest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hotplugheaven/hotplug/host/qmp/qmptest"
	"github.com/hotplugheaven/hotplug/proto"
)

// Guest is one fake guest.
type Guest struct {
	mu            sync.Mutex
	qmp           Machine
	online        proto.CPUSet
	demand        float64
	memUsed       uint64
	refuseOnline  bool
	refuseOffline bool
	commands      []proto.Command
	sessions      int
	cmdDelay      time.Duration
	received      chan struct{} // signalled when a command arrives
	app           bool
	// failOnline and failOffline are CPUs the guest cannot bring online or
	// take offline (-1: none).
	failOnline, failOffline int
	// noWall leaves reports undated: inside a synctest bubble the clock
	// reads 2000, which the actuator refuses as no clock at all.
	noWall bool
}

// Machine is the hypervisor side a fake guest sees: which CPUs are
// plugged. A *qmptest.Server is one; an in-memory hypervisor another.
type Machine interface {
	Plugged() int
	PluggedAPICIDs() []int
}

var _ Machine = (*qmptest.Server)(nil)

// MemoryMachine is a Machine with a memory device: the guest's MemTotal
// grows and shrinks with what it has plugged.
type MemoryMachine interface {
	PluggedMemory() uint64
}

var _ MemoryMachine = (*qmptest.Server)(nil)

// guestMemory is the guest's MemTotal before any memory device adds to it.
const guestMemory = 1 << 30

// SetMemoryUsed makes the guest report used bytes in use (MemAvailable is
// MemTotal less them); 0, the default, is half of MemTotal.
func (g *Guest) SetMemoryUsed(used uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.memUsed = used
}

// New returns a guest whose boot CPUs (those plugged in qmp now) are online.
func New(qmp Machine) *Guest {
	g := &Guest{qmp: qmp, received: make(chan struct{}, 64), failOnline: -1, failOffline: -1}
	for i := 0; i < qmp.Plugged(); i++ {
		g.online.Add(i)
	}
	return g
}

// SetFailOnline makes the guest fail to online cpu (-1: none), as a CPU
// whose hot-add went wrong in the kernel.
func (g *Guest) SetFailOnline(cpu int) { g.mu.Lock(); g.failOnline = cpu; g.mu.Unlock() }

// SetFailOffline makes the guest refuse to offline cpu (-1: none), as a CPU
// with tasks pinned to it.
func (g *Guest) SetFailOffline(cpu int) { g.mu.Lock(); g.failOffline = cpu; g.mu.Unlock() }

// SetNoWallClock makes the guest send its reports without a wall-clock
// time (as an agent that cannot read one), for tests on synctest's fake
// clock, which starts in 2000.
func (g *Guest) SetNoWallClock() { g.mu.Lock(); g.noWall = true; g.mu.Unlock() }

// SetDemand sets the CPUs' worth of work the guest wants; beyond its online
// CPUs the rest is reported as runnable tasks waiting (run delay).
func (g *Guest) SetDemand(d float64) { g.mu.Lock(); g.demand = d; g.mu.Unlock() }

// SetRefuseOnline makes every online command fail, as a guest whose kernel
// cannot bring a CPU up.
func (g *Guest) SetRefuseOnline(v bool) { g.mu.Lock(); g.refuseOnline = v; g.mu.Unlock() }

// SetRefuseOffline makes every offline command fail (EBUSY).
func (g *Guest) SetRefuseOffline(v bool) { g.mu.Lock(); g.refuseOffline = v; g.mu.Unlock() }

// SetApp makes the guest report one application, "web", with a p95 ≤ 50 ms
// SLA whose response time grows once its CPUs are more than half busy.
func (g *Guest) SetApp(on bool) { g.mu.Lock(); g.app = on; g.mu.Unlock() }

// SetCommandDelay makes the guest take d before carrying out each command
// (a slow guest; or a window for a test to kill the actuator in).
func (g *Guest) SetCommandDelay(d time.Duration) { g.mu.Lock(); g.cmdDelay = d; g.mu.Unlock() }

// Received is signalled once per command as it arrives, before the delay.
func (g *Guest) Received() <-chan struct{} { return g.received }

// SetOnline sets the online CPUs (e.g. a CPU left offline by a crash).
func (g *Guest) SetOnline(s proto.CPUSet) { g.mu.Lock(); g.online = s.Clone(); g.mu.Unlock() }

// SetQMP rewires the guest to another qmptest VM (a restarted QEMU).
func (g *Guest) SetQMP(s Machine) { g.mu.Lock(); g.qmp = s; g.mu.Unlock() }

// Commands returns the commands received so far.
func (g *Guest) Commands() []proto.Command {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]proto.Command(nil), g.commands...)
}

// Sessions is how many sessions (Hello accepted) the guest has had.
func (g *Guest) Sessions() int { g.mu.Lock(); defer g.mu.Unlock(); return g.sessions }

func (g *Guest) present() proto.CPUSet {
	g.mu.Lock()
	q := g.qmp
	g.mu.Unlock()
	// The guest numbers CPUs by APIC id, so a slot unplugged in the
	// middle leaves a hole, as in Linux.
	var s proto.CPUSet
	for _, apic := range q.PluggedAPICIDs() {
		s.Add(apic)
	}
	return s
}

// Sets returns the present and online CPUs; an unplugged CPU cannot stay
// online.
func (g *Guest) Sets() (present, online proto.CPUSet) {
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

// OnlineCount is the number of online CPUs.
func (g *Guest) OnlineCount() int {
	_, online := g.Sets()
	return online.Len()
}

func (g *Guest) hello(interval time.Duration) *proto.Hello {
	present, online := g.Sets()
	return &proto.Hello{MinVersion: 1, MaxVersion: proto.MaxVersion, AgentVersion: "fakeguest", Apps: []string{"web"},
		Possible: proto.NewCPUSet(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), Present: present, Online: online,
		Topology: topo(online), IntervalNanos: int64(interval)}
}

func topo(s proto.CPUSet) []proto.CPUTopology {
	var out []proto.CPUTopology
	for _, c := range s.Slice() {
		out = append(out, proto.CPUTopology{CPU: uint16(c), APICID: uint32(c)})
	}
	return out
}

// Run connects with dial and serves until ctx ends, reconnecting after the
// actuator drops the connection, like the real agent.
func (g *Guest) Run(ctx context.Context, dial func(context.Context) (net.Conn, error), interval time.Duration) {
	for ctx.Err() == nil {
		conn, err := dial(ctx)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		g.Session(ctx, conn, interval)
		conn.Close()
	}
}

// Session runs one connection: Hello, then reports every interval and
// commands answered, until either side fails.
func (g *Guest) Session(ctx context.Context, conn net.Conn, interval time.Duration) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	w := proto.NewWriter(conn)
	r := proto.NewReader(conn, 0)
	if w.Write(g.hello(interval)) != nil {
		return
	}
	if m, err := r.Next(); err != nil || m.(*proto.Welcome).Error != "" {
		return
	}
	g.mu.Lock()
	g.sessions++
	g.mu.Unlock()
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
		c, ok := m.(*proto.Command)
		if !ok {
			return
		}
		if w.Write(g.execute(c)) != nil {
			return
		}
	}
}

func (g *Guest) report(seq uint64, interval time.Duration) *proto.Report {
	present, online := g.Sets()
	g.mu.Lock()
	demand, app, noWall, used, machine := g.demand, g.app, g.noWall, g.memUsed, g.qmp
	g.mu.Unlock()
	total := uint64(guestMemory)
	if m, ok := machine.(MemoryMachine); ok {
		total += m.PluggedMemory()
	}
	if used == 0 {
		used = total / 2
	}
	avail := total - min(used, total)
	now := time.Now().UnixNano()
	wall := now
	if noWall {
		wall = 0
	}
	r := &proto.Report{Seq: seq, MonotonicNanos: now, WallUnixNanos: wall, IntervalNanos: int64(interval),
		Online: online, Present: present, MemTotalBytes: total, MemAvailableBytes: avail, Load1: demand}
	n := float64(max(online.Len(), 1))
	busy := min(demand, n)
	for _, c := range online.Slice() {
		r.CPUs = append(r.CPUs, proto.CPUStat{CPU: uint16(c), Busy: float32(busy / n), Idle: float32(1 - busy/n)})
	}
	wait := demand - busy
	if wait > 0 {
		r.RunDelay = []proto.RunDelay{{CPU: 0, WaitNanos: uint64(wait * float64(interval))}}
	}
	// Run-queue latency grows with the queue: 50 µs idle, milliseconds
	// when tasks wait.
	p95 := int64(50_000 + max(wait, 0)*4_000_000)
	r.RunQueue = &proto.RunQueue{Source: proto.RunQSourceSchedstat, P50Nanos: p95 / 3, P95Nanos: p95, P99Nanos: 2 * p95}
	if app {
		resp := 0.020 * (1 + 4*max(0, busy/n-0.5))
		r.Apps = []proto.AppStats{{Name: "web", Arrivals: 100, ArrivalRate: 100 / interval.Seconds(),
			ServiceMean: 0.01, RespP50: resp / 2, RespP95: resp, RespP99: resp * 1.5, SLAPercentile: 0.95, SLATarget: 0.05}}
	}
	return r
}

func (g *Guest) execute(c *proto.Command) *proto.Ack {
	g.mu.Lock()
	g.commands = append(g.commands, *c)
	refuseOn, refuseOff, delay := g.refuseOnline, g.refuseOffline, g.cmdDelay
	failOn, failOff := g.failOnline, g.failOffline
	g.mu.Unlock()
	select {
	case g.received <- struct{}{}:
	default:
	}
	time.Sleep(delay)
	ack := &proto.Ack{ID: c.ID}
	for _, n := range c.Offline.Slice() {
		ack.Topology = append(ack.Topology, proto.CPUTopology{CPU: uint16(n), APICID: uint32(n)})
		if n == 0 || refuseOff || n == failOff {
			ack.Failed = append(ack.Failed, proto.CPUError{CPU: uint16(n), Error: "device or resource busy"})
			continue
		}
		g.mu.Lock()
		g.online.Remove(n)
		g.mu.Unlock()
	}
	for _, n := range c.Online.Slice() {
		// A hot-added CPU appears in the guest a little after device_add.
		deadline := time.Now().Add(2 * time.Second)
		for !g.present().Has(n) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if refuseOn || n == failOn || !g.present().Has(n) {
			ack.Failed = append(ack.Failed, proto.CPUError{CPU: uint16(n), Error: "no such CPU"})
			continue
		}
		g.mu.Lock()
		g.online.Add(n)
		g.mu.Unlock()
		ack.Topology = append(ack.Topology, proto.CPUTopology{CPU: uint16(n), APICID: uint32(n)})
	}
	if c.WantOnline > 0 {
		// Online hot-added CPUs (they appear a little after device_add)
		// until enough are online.
		deadline := time.Now().Add(2 * time.Second)
		failed := false
		for {
			present, online := g.Sets()
			if online.Len() >= int(c.WantOnline) {
				break
			}
			stray := present.Difference(online)
			if failOn >= 0 && stray.Has(failOn) {
				stray.Remove(failOn)
				if !failed {
					failed = true
					ack.Failed = append(ack.Failed, proto.CPUError{CPU: uint16(failOn),
						Error: fmt.Sprintf("cpu %d: write 1 to online: input/output error", failOn)})
				}
				if stray.Len() == 0 {
					break
				}
			}
			if refuseOn && stray.Len() > 0 {
				for _, n := range stray.Slice() {
					ack.Failed = append(ack.Failed, proto.CPUError{CPU: uint16(n),
						Error: fmt.Sprintf("cpu %d: write 1 to online: input/output error", n)})
				}
				break
			}
			if stray.Len() == 0 && time.Now().After(deadline) {
				ack.Failed = append(ack.Failed, proto.CPUError{CPU: 0, Error: fmt.Sprintf("%d of %d CPUs online: no hot-added CPU appeared", online.Len(), c.WantOnline)})
				break
			}
			for _, n := range stray.Slice() {
				g.mu.Lock()
				g.online.Add(n)
				g.mu.Unlock()
				ack.Topology = append(ack.Topology, proto.CPUTopology{CPU: uint16(n), APICID: uint32(n)})
			}
			if stray.Len() == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	ack.Present, ack.Online = g.Sets()
	ack.OK = len(ack.Failed) == 0
	if !ack.OK {
		ack.Error = "failed"
	}
	return ack
}

// PipeChannel is an actuator channel (channel.Channel) whose connections a
// Guest makes in memory with net.Pipe: Dial is the Guest's dial function.
type PipeChannel struct {
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

// NewPipeChannel returns an open PipeChannel.
func NewPipeChannel() *PipeChannel {
	return &PipeChannel{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept implements channel.Channel.
func (p *PipeChannel) Accept(ctx context.Context) (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close implements channel.Channel.
func (p *PipeChannel) Close() error { p.once.Do(func() { close(p.closed) }); return nil }

func (p *PipeChannel) String() string { return "pipe" }

// Dial hands the actuator one end of a new pipe and returns the other.
func (p *PipeChannel) Dial(ctx context.Context) (net.Conn, error) {
	guest, host := net.Pipe()
	select {
	case p.conns <- host:
		return guest, nil
	case <-p.closed:
	case <-ctx.Done():
	}
	guest.Close()
	host.Close()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, net.ErrClosed
}
