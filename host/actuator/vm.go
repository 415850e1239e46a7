package actuator

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/channel"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/host/memory"
	"github.com/hotplugheaven/hotplug/proto"
)

// VMConfig is what a VM controller needs.
type VMConfig struct {
	Name           string
	Policy         engine.Policy
	Hypervisor     hypervisor.Hypervisor
	Channel        channel.Channel
	CommandTimeout time.Duration
	// HelloTimeout bounds the wait for Hello on listening channels
	// (default 10 s).
	HelloTimeout time.Duration
	// RecheckInterval is how often the hypervisor's state is re-read while
	// nothing else reads it (default 30 s): it notices a QEMU that died or
	// a CPU someone plugged by hand.
	RecheckInterval time.Duration
	// BlackBox measures and scales the VM from the host when no agent has
	// been connected for AgentTimeout (default 60 s). See blackbox.go.
	BlackBox     bool
	AgentTimeout time.Duration
	// ProcRoot is where the host's /proc is (tests); default /proc.
	ProcRoot string
	// MaxBackoff caps the wait before serving the VM's channel again after
	// a failed connection (default 5 s).
	MaxBackoff time.Duration
	// Memory is the memory policy; the zero value (or mode "off") leaves
	// memory alone.
	Memory memory.Policy
}

// VM is the handle of one virtual machine's controller. Its methods are
// safe from any goroutine: they read the published Status or send a
// request to the VM's goroutine (Run), which alone owns the VM's state
// (see loop).
type VM struct {
	name  string
	log   hclog.Logger
	env   env
	ctrl  chan control
	inbox chan any
	conn  *agentConn
	// complain rate-limits what the log says about the guest (guard.go).
	complain *complaints
	cfg      timing
	// interval is the policy interval in force, ns: the loop stores it,
	// agentConn reads it.
	interval atomic.Int64
	status   statusBox
	// unfinished are actions a previous actuator did not finish, found by
	// New in the event log; the loop takes them over.
	unfinished []eventlog.Event
	// loop is the VM's state; only the goroutine in Run touches it.
	loop *loop
}

// env is what a VM's controller is given to act with.
type env struct {
	hyp       hypervisor.Hypervisor
	events    *eventlog.Log
	budget    *Budget // vCPUs
	memBudget *Budget // bytes of memory
	// hostShort is set while the host is under its memory reserve
	// (squeeze.go); nil when there is no override.
	hostShort *atomic.Bool
	obs       observers
}

// timing is a VM's configured timeouts.
type timing struct {
	cmdTimeout   time.Duration
	recheck      time.Duration
	agentTimeout time.Duration
	blackbox     bool
	procRoot     string
}

// statusBox is the Status the loop publishes for everyone else.
type statusBox struct {
	mu sync.Mutex
	st Status
}

// Status is a read-only view of a VM for the API, metrics and tests
// (plain values: the API's JSON shape is package api's).
type Status struct {
	Name   string
	Mode   string
	Policy engine.Policy
	// Current is the vCPU count the hypervisor reports; Online the guest's
	// online CPUs in its latest report; Target what the last decision
	// asked for.
	Current   int
	Online    int
	Target    int
	MaxSlots  int
	Paused    bool
	Reachable bool
	// Degraded says why the last action failed; empty when healthy.
	Degraded       string
	Agent          AgentStatus
	LastDecision   engine.Decision
	LastDecisionAt time.Time
	Signals        Signals
	// Accuracy is how well the engine's forecasts held (metrics only: its
	// NaNs have no JSON form).
	Accuracy engine.Accuracy
	Memory   MemoryStatus
}

// MemoryStatus is a VM's memory as the hypervisor reports it, in bytes,
// and what the memory policy last decided.
type MemoryStatus struct {
	Mode string
	// Device is hypervisor.MemVirtioMem or MemBalloon; empty when unknown.
	Device                string
	Total, Requested, Max uint64
	Target                uint64
	// Floor is the least the memory policy would shrink the VM to now;
	// Priority and Block are the policy's, for the host-pressure override.
	Floor          uint64
	Priority       int
	Block          uint64
	LastDecision   memory.Decision
	LastDecisionAt time.Time
	// Degraded says why the last resize fell short; empty when healthy.
	Degraded string
}

// AgentStatus is what the actuator knows of a VM's agent.
type AgentStatus struct {
	Connected bool
	// Version is the agent's, from its Hello.
	Version string
	// Source is where the measurements come from: SourceAgent, or
	// SourceHost (black-box fallback); empty before the first.
	Source string
	// Reports counts the reports accepted since the actuator started.
	Reports uint64
}

// RunQSignal is the latest run-queue latency, in seconds, and where it
// was measured (a proto.RunQSource constant).
type RunQSignal struct {
	Source        string
	P50, P95, P99 float64
}

// Signals are the latest measurements of a VM.
type Signals struct {
	At          time.Time
	Utilisation float64 // demand ÷ online vCPUs
	Demand      float64
	Busy        float64
	Waiting     float64
	Load1       float64
	PSISome10   float64
	RunQ        RunQSignal
	// Steal is the share of the online CPUs' time the hypervisor ran
	// something else (host contention), in the latest interval.
	Steal float64
	// Memory as the guest reports it (MemTotal, MemAvailable) and its
	// swap traffic in pages per second.
	MemTotal, MemAvailable uint64
	SwapIn, SwapOut        float64
	// MemStallSome and MemStallFull are the seconds of the latest
	// interval some (all non-idle) tasks stalled on memory (PSI).
	MemStallSome, MemStallFull float64
	Apps                       []AppSignal
}

// AppSignal is one application's latest figures against its SLA.
type AppSignal struct {
	Name        string
	Rate        float64
	RespP95     float64
	ServiceMean float64
	SLAMean     float64
	SLAPct      float64
	SLATarget   float64
	DropRate    float64
}

func newVM(cfg VMConfig, events *eventlog.Log, budget, memBudget *Budget, obs observers, logger hclog.Logger) (*VM, error) {
	v := &VM{
		name:  cfg.Name,
		log:   logger.Named(cfg.Name).With("vm", cfg.Name),
		env:   env{hyp: cfg.Hypervisor, events: events, budget: budget, memBudget: memBudget, obs: obs},
		inbox: make(chan any, 16),
		ctrl:  make(chan control),
		cfg: timing{cmdTimeout: cfg.CommandTimeout, recheck: cfg.RecheckInterval, agentTimeout: cfg.AgentTimeout,
			blackbox: cfg.BlackBox, procRoot: cfg.ProcRoot},
	}
	if v.cfg.cmdTimeout <= 0 {
		v.cfg.cmdTimeout = 30 * time.Second
	}
	if v.cfg.recheck <= 0 {
		v.cfg.recheck = 30 * time.Second
	}
	if v.cfg.agentTimeout <= 0 {
		v.cfg.agentTimeout = 60 * time.Second
	}
	if v.cfg.procRoot == "" {
		v.cfg.procRoot = "/proc"
	}
	conn := &agentConn{vm: cfg.Name, log: v.log, obs: obs, ch: cfg.Channel, out: v.inbox,
		hello: cfg.HelloTimeout, backoff: cfg.MaxBackoff, interval: &v.interval}
	if conn.hello <= 0 {
		conn.hello = 10 * time.Second
	}
	if conn.backoff <= 0 {
		conn.backoff = 5 * time.Second
	}
	v.complain = newComplaints(v.log)
	conn.guard, conn.complain = newGuard(time.Duration(cfg.Policy.Interval)), v.complain
	v.conn = conn
	v.interval.Store(int64(cfg.Policy.Interval))
	if cfg.Memory.Mode == "" {
		cfg.Memory.Mode = memory.ModeOff
	}
	if cfg.Memory.Mode != memory.ModeOff {
		if err := cfg.Memory.Validate(); err != nil {
			return nil, fmt.Errorf("vm %s: memory policy: %w", cfg.Name, err)
		}
	}
	v.status.st = Status{Name: cfg.Name, Policy: cfg.Policy, Mode: modeName(cfg.Policy), Memory: MemoryStatus{Mode: cfg.Memory.Mode, Priority: cfg.Memory.Priority, Block: uint64(cfg.Memory.Block)}}
	var err error
	if v.loop, err = newLoop(v, cfg.Policy, cfg.Memory); err != nil {
		return nil, fmt.Errorf("vm %s: policy: %w", cfg.Name, err)
	}
	return v, nil
}

// Name is the VM's configured name.
func (v *VM) Name() string { return v.name }

// Status returns a snapshot of the VM's state.
func (v *VM) Status() Status {
	v.status.mu.Lock()
	defer v.status.mu.Unlock()
	st := v.status.st
	st.Signals.Apps = append([]AppSignal(nil), st.Signals.Apps...)
	return st
}

func modeName(p engine.Policy) string {
	if p.Mode == "" {
		return engine.ModeSandpiper
	}
	return p.Mode
}

func (v *VM) publish(update func(*Status)) {
	v.status.mu.Lock()
	update(&v.status.st)
	v.status.mu.Unlock()
}

func (v *VM) policyInterval() time.Duration { return time.Duration(v.interval.Load()) }

// Run controls the VM until ctx ends: the agent connection on a goroutine
// of its own, everything else on this one.
func (v *VM) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		v.conn.serve(ctx)
	}()
	defer func() {
		v.conn.ch.Close()
		wg.Wait()
		v.complain.stop()
		v.env.hyp.Close()
	}()
	v.loop.run(ctx)
}

// checkClock refuses reports whose wall clock is not a clock at all: more
// than a day ahead of the host or before 2001. A merely skewed guest clock
// is tolerated (reports are stamped on arrival), and logged once.
func checkClock(r *proto.Report, at time.Time) error {
	wall := time.Unix(0, r.WallUnixNanos)
	switch {
	case wall.After(at.Add(24 * time.Hour)):
		return fmt.Errorf("report %d is dated %s, more than a day ahead of the host", r.Seq, wall.UTC().Format(time.RFC3339))
	case r.WallUnixNanos != 0 && wall.Before(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)):
		return fmt.Errorf("report %d is dated %s, before 2001", r.Seq, wall.UTC().Format(time.RFC3339))
	}
	return nil
}

// signalsOf summarises a report for status and the API.
func signalsOf(r *proto.Report, s engine.Sample) Signals {
	g := Signals{At: s.Time, Demand: s.Demand(), Busy: s.Busy, Waiting: s.Waiting, Load1: r.Load1,
		Utilisation: s.Demand() / float64(max(1, r.Online.Len()))}
	if r.PSI != nil {
		g.PSISome10 = r.PSI.SomeAvg10
	}
	online := 0
	for _, c := range r.CPUs {
		if r.Online.Has(int(c.CPU)) {
			g.Steal += float64(c.Steal)
			online++
		}
	}
	if online > 0 {
		g.Steal /= float64(online)
	}
	g.MemTotal, g.MemAvailable, g.SwapIn, g.SwapOut = r.MemTotalBytes, r.MemAvailableBytes, r.SwapInPerSec, r.SwapOutPerSec
	if m := r.Memory; m != nil && m.HavePSI {
		g.MemStallSome, g.MemStallFull = float64(m.PSISomeMicros)/1e6, float64(m.PSIFullMicros)/1e6
	}
	if q := r.RunQueue; q != nil {
		g.RunQ = RunQSignal{Source: q.Source, P50: float64(q.P50Nanos) / 1e9, P95: float64(q.P95Nanos) / 1e9, P99: float64(q.P99Nanos) / 1e9}
	}
	for _, a := range r.Apps {
		as := AppSignal{Name: a.Name, Rate: a.ArrivalRate, RespP95: a.RespP95, ServiceMean: a.ServiceMean,
			SLAMean: a.SLAMean, SLAPct: a.SLAPercentile, SLATarget: a.SLATarget}
		if a.Arrivals > 0 {
			as.DropRate = float64(a.Drops) / float64(a.Arrivals)
		}
		g.Apps = append(g.Apps, as)
	}
	return g
}

// sampleOf turns a report into the engine's view of it.
func sampleOf(r *proto.Report, at time.Time) engine.Sample {
	s := engine.Sample{Time: at, Online: r.Online.Len(), Busy: r.BusyCPUs(), Waiting: r.WaitingTasks()}
	if r.RunQueue != nil {
		s.RunQP95 = time.Duration(r.RunQueue.P95Nanos)
	}
	for _, a := range r.Apps {
		s.Apps = append(s.Apps, engine.AppSample{Name: a.Name, Arrivals: a.Arrivals, Rate: a.ArrivalRate,
			IAMean: a.InterArrivalMean, IAVar: a.InterArrivalVar, SvcMean: a.ServiceMean, SvcVar: a.ServiceVar,
			CPUSeconds: a.CPUSeconds, HasCPU: a.CPUSource != "",
			RespP50: a.RespP50, RespP95: a.RespP95, RespP99: a.RespP99,
			SLAMean: a.SLAMean, SLAPercentile: a.SLAPercentile, SLATarget: a.SLATarget})
	}
	return s
}
