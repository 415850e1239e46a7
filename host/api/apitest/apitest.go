// Package apitest serves the API over a real actuator whose VMs are
// qmptest QEMU doubles with fake guests, for the tests of the API, the
// dashboard (in a browser) and the CLI. The fake guest follows the
// actuator's own tests (host/actuator/fakeagent_test.go): it speaks the
// real protocol over a net.Pipe, onlines and offlines CPUs on command,
// and reports whatever demand the test sets.
package apitest

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/host/qmp/qmptest"
	"github.com/hotplugheaven/hotplug/proto"
)

// Spec describes one VM of a rig.
type Spec struct {
	Name string
	// Boot and Max are the vCPUs plugged at start and the hot-plug slots
	// (default 1 and 4).
	Boot, Max int
	// Interval is the report interval (default 100 ms).
	Interval time.Duration
	// Policy adjusts the fast test policy.
	Policy func(*engine.Policy)
	// Demand is the initial CPUs' worth of work the guest reports.
	Demand float64
	// App makes the guest report one application with an SLA.
	App bool
}

// Rig is an actuator with fake VMs and the API served on a unix socket.
type Rig struct {
	t        testing.TB
	Act      *actuator.Actuator
	Hub      *api.Hub
	Metrics  *api.Metrics
	Server   *api.Server
	EventLog string
	// Socket is the unix socket the API is served on.
	Socket string
	VMs    map[string]*VM

	events *eventlog.Log
	cancel context.CancelFunc
	done   chan struct{}
}

// VM is one fake VM.
type VM struct {
	Name  string
	QMP   *qmptest.Server
	Guest *Guest
}

// FastPolicy decides quickly: 2 of 3 samples, no cooldowns.
func FastPolicy(interval time.Duration) engine.Policy {
	p := engine.DefaultPolicy()
	p.Interval = engine.Duration(interval)
	p.MinVCPUs, p.MaxVCPUs = 1, 4
	p.K, p.N, p.Window, p.DownSamples = 2, 3, 6, 3
	p.CooldownUp, p.CooldownDown = 0, 0
	return p
}

// Start runs an actuator over the specs and serves the API on a unix
// socket in a temporary directory. Everything stops at the test's end.
func Start(t testing.TB, specs ...Spec) *Rig {
	t.Helper()
	dir := t.TempDir()
	r := &Rig{t: t, EventLog: filepath.Join(dir, "events.jsonl"), VMs: map[string]*VM{}, done: make(chan struct{}),
		Hub: api.NewHub(), Metrics: api.NewMetrics()}
	var err error
	if r.events, err = eventlog.Open(r.EventLog); err != nil {
		t.Fatal(err)
	}
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: testWriter{t}})
	var cfgs []actuator.VMConfig
	type guestRun struct {
		g        *Guest
		ch       *pipeChannel
		interval time.Duration
	}
	var runs []guestRun
	for _, s := range specs {
		if s.Boot == 0 {
			s.Boot = 1
		}
		if s.Max == 0 {
			s.Max = 4
		}
		if s.Interval == 0 {
			s.Interval = 100 * time.Millisecond
		}
		srv := qmptest.Start(t, &qmptest.Config{MaxCPUs: s.Max, BootCPUs: s.Boot, Accel: "kvm"})
		ch := newPipeChannel()
		g := newGuest(t, srv, s.Max)
		g.demand, g.app = s.Demand, s.App
		p := FastPolicy(s.Interval)
		if s.Policy != nil {
			s.Policy(&p)
		}
		cfgs = append(cfgs, actuator.VMConfig{Name: s.Name, Policy: p, Channel: ch, CommandTimeout: 5 * time.Second,
			RecheckInterval: 300 * time.Millisecond,
			Hypervisor:      hypervisor.NewQEMU(srv.Path(), hypervisor.QEMUOptions{UnplugTimeout: 5 * time.Second, Logger: logger})})
		r.VMs[s.Name] = &VM{Name: s.Name, QMP: srv, Guest: g}
		runs = append(runs, guestRun{g, ch, s.Interval})
	}
	if r.Act, err = actuator.New(cfgs, r.events, 0, logger, r.Hub, r.Metrics); err != nil {
		t.Fatal(err)
	}
	if r.Server, err = api.New(api.Options{Actuator: r.Act, Hub: r.Hub, Metrics: r.Metrics, EventLog: r.EventLog,
		Version: "test", Logger: logger}); err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are limited to 108 bytes; test temp dirs can be
	// longer.
	sockDir, err := shortTempDir(t)
	if err != nil {
		t.Fatal(err)
	}
	r.Socket = filepath.Join(sockDir, "api.sock")
	ln, err := api.ListenUnix(r.Socket, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	served := make(chan struct{})
	go func() { r.Server.Serve(ctx, ln, nil); close(served) }()
	go func() { r.Act.Run(ctx); close(r.done) }()
	for _, gr := range runs {
		go gr.g.run(ctx, gr.ch, gr.interval)
	}
	t.Cleanup(func() {
		cancel()
		r.Server.Shutdown()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("actuator did not stop within 10 s")
		}
		<-served
		r.events.Close()
	})
	// Tests act on VMs at once: wait until every agent is connected and
	// has reported.
	WaitFor(t, 10*time.Second, "every fake agent to connect and report", func() bool {
		for _, v := range r.Act.VMs() {
			if st := v.Status(); !st.Connected || st.ReportsSeen == 0 {
				return false
			}
		}
		return true
	})
	return r
}

// HTTPClient is an http.Client that dials the rig's unix socket; use it
// with URLs like http://actuator/v1/vms.
func (r *Rig) HTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", r.Socket)
		}}}
}

// Client is an API client on the rig's socket.
func (r *Rig) Client() *api.Client { return api.NewUnixClient(r.Socket) }

// WaitFor polls cond every 20 ms for up to d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// pipeChannel is a channel.Channel whose connections the fake guest makes
// with net.Pipe.
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

func (p *pipeChannel) dial(ctx context.Context) (net.Conn, bool) {
	guest, host := net.Pipe()
	select {
	case p.conns <- host:
		return guest, true
	case <-p.closed:
	case <-ctx.Done():
	}
	guest.Close()
	host.Close()
	return nil, false
}

// Guest plays a Linux guest with our agent, wired to a qmptest VM: the
// CPUs QEMU has plugged are present, and it onlines and offlines them on
// command.
type Guest struct {
	t        testing.TB
	qmp      *qmptest.Server
	possible int

	mu     sync.Mutex
	online proto.CPUSet
	demand float64
	app    bool
}

func newGuest(t testing.TB, qmp *qmptest.Server, possible int) *Guest {
	g := &Guest{t: t, qmp: qmp, possible: possible}
	for i := range qmp.Plugged() {
		g.online.Add(i)
	}
	return g
}

// SetDemand sets the CPUs' worth of work the guest reports.
func (g *Guest) SetDemand(d float64) {
	g.mu.Lock()
	g.demand = d
	g.mu.Unlock()
}

// Online is the number of CPUs online in the guest.
func (g *Guest) Online() int {
	_, on := g.sets()
	return on.Len()
}

func (g *Guest) present() proto.CPUSet {
	var s proto.CPUSet
	for i := range g.qmp.Plugged() {
		s.Add(i)
	}
	return s
}

func (g *Guest) sets() (present, online proto.CPUSet) {
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

func (g *Guest) hello(interval time.Duration) *proto.Hello {
	present, online := g.sets()
	var possible proto.CPUSet
	for i := range g.possible {
		possible.Add(i)
	}
	var topo []proto.CPUTopology
	for _, c := range online.Slice() {
		topo = append(topo, proto.CPUTopology{CPU: uint16(c), APICID: uint32(c)})
	}
	return &proto.Hello{MinVersion: 1, MaxVersion: 1, AgentVersion: "apitest",
		Possible: possible, Present: present, Online: online, Topology: topo, IntervalNanos: int64(interval)}
}

func (g *Guest) run(ctx context.Context, ch *pipeChannel, interval time.Duration) {
	for ctx.Err() == nil {
		conn, ok := ch.dial(ctx)
		if !ok {
			return
		}
		g.session(ctx, conn, interval)
		conn.Close()
	}
}

func (g *Guest) session(ctx context.Context, conn net.Conn, interval time.Duration) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	w := proto.NewWriter(conn)
	r := proto.NewReader(conn, 0)
	var wmu sync.Mutex
	write := func(m proto.Message) error {
		wmu.Lock()
		defer wmu.Unlock()
		return w.Write(m)
	}
	if write(g.hello(interval)) != nil {
		return
	}
	if m, err := r.Next(); err != nil {
		return
	} else if wl, ok := m.(*proto.Welcome); !ok || wl.Error != "" {
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
			if write(g.report(seq, interval)) != nil {
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
		if write(g.execute(c)) != nil {
			return
		}
	}
}

func (g *Guest) report(seq uint64, interval time.Duration) *proto.Report {
	present, online := g.sets()
	g.mu.Lock()
	demand, app := g.demand, g.app
	g.mu.Unlock()
	now := time.Now().UnixNano()
	r := &proto.Report{Seq: seq, MonotonicNanos: now, WallUnixNanos: now, IntervalNanos: int64(interval),
		Online: online, Present: present, MemTotalBytes: 1 << 30, MemAvailableBytes: 1 << 29, Load1: demand}
	n := float64(online.Len())
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
	p95 := int64(50_000 + wait*4_000_000)
	r.RunQueue = &proto.RunQueue{Source: proto.RunQSourceSchedstat, P50Nanos: p95 / 3, P95Nanos: p95, P99Nanos: 2 * p95}
	if app {
		resp := 0.020 * (1 + 4*max(0, busy/n-0.5))
		r.Apps = []proto.AppStats{{Name: "web", Arrivals: 100, ArrivalRate: 100 / interval.Seconds(),
			ServiceMean: 0.01, RespP50: resp / 2, RespP95: resp, RespP99: resp * 1.5, SLAPercentile: 0.95, SLATarget: 0.05}}
	}
	return r
}

func (g *Guest) execute(c *proto.Command) *proto.Ack {
	ack := &proto.Ack{ID: c.ID}
	for _, n := range c.Offline.Slice() {
		ack.Topology = append(ack.Topology, proto.CPUTopology{CPU: uint16(n), APICID: uint32(n)})
		if n == 0 {
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
		if !g.present().Has(n) {
			ack.Failed = append(ack.Failed, proto.CPUError{CPU: uint16(n), Error: "no such CPU"})
			continue
		}
		g.mu.Lock()
		g.online.Add(n)
		g.mu.Unlock()
		ack.Topology = append(ack.Topology, proto.CPUTopology{CPU: uint16(n), APICID: uint32(n)})
	}
	ack.Present, ack.Online = g.sets()
	ack.OK = len(ack.Failed) == 0
	if !ack.OK {
		ack.Error = "failed"
	}
	return ack
}

// shortTempDir makes a directory with a short path (unix socket paths
// are limited to 108 bytes) and removes it at the test's end.
func shortTempDir(t testing.TB) (string, error) {
	dir, err := os.MkdirTemp("", "hp")
	if err != nil {
		return "", err
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir, nil
}
