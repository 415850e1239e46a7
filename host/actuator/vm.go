package actuator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotplugheaven/hotplug/host/channel"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
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
}

// counters are kept per VM; the metrics endpoint reads them.
type counters struct {
	mu           sync.Mutex
	badMessages  map[string]uint64
	replayed     atomic.Uint64
	reports      atomic.Uint64
	actions      map[string]uint64 // by outcome
	unreachable  atomic.Uint64
	agentDropped atomic.Uint64
}

func (c *counters) badMessage(err error) {
	reason := "invalid"
	switch {
	case errors.Is(err, proto.ErrMalformed):
		reason = "malformed"
	case errors.Is(err, proto.ErrUnknownType):
		reason = "unknown_type"
	}
	c.mu.Lock()
	c.badMessages[reason]++
	c.mu.Unlock()
}

func (c *counters) action(outcome string) {
	c.mu.Lock()
	c.actions[outcome]++
	c.mu.Unlock()
}

// VM controls one virtual machine: it owns the agent session, the engine
// and the hypervisor connection, and is the only goroutine that changes
// the VM's vCPUs.
type VM struct {
	name    string
	log     hclog.Logger
	hyp     hypervisor.Hypervisor
	ch      channel.Channel
	events  *eventlog.Log
	budget  *Budget
	inbox   chan any
	metrics *counters

	cmdTimeout   time.Duration
	helloTimeout time.Duration
	recheck      time.Duration
	lastRefresh  time.Time

	// Owned by the Run goroutine.
	engine     *engine.Engine
	sess       *session
	lastSeq    uint64
	last       *proto.Report // latest report of the current session
	lastAt     time.Time
	current    int // vCPUs plugged, as the hypervisor last said
	state      hypervisor.State
	reachable  bool
	apic       map[int]uint32 // guest CPU → APIC id, from Hello and Acks
	nextCmd    uint64
	retryAfter time.Time // backoff after a failed action
	failures   int

	mu       sync.Mutex // guards the snapshot fields below for Status
	snapshot Status
}

// Status is a read-only view of a VM for the API, CLI and tests.
type Status struct {
	Name         string
	Current      int
	Online       int
	Connected    bool
	Reachable    bool
	Degraded     string
	LastDecision engine.Decision
	LastReportAt time.Time
	LastUtil     float64
	LastDemand   float64
	SessionAgent string
	ReportsSeen  uint64
}

func newVM(cfg VMConfig, events *eventlog.Log, budget *Budget, logger hclog.Logger) (*VM, error) {
	eng, err := engine.New(cfg.Policy)
	if err != nil {
		return nil, fmt.Errorf("vm %s: policy: %w", cfg.Name, err)
	}
	v := &VM{
		name: cfg.Name, log: logger.Named(cfg.Name).With("vm", cfg.Name),
		hyp: cfg.Hypervisor, ch: cfg.Channel, events: events, budget: budget,
		inbox:   make(chan any, 16),
		metrics: &counters{badMessages: map[string]uint64{}, actions: map[string]uint64{}},
		engine:  eng, cmdTimeout: cfg.CommandTimeout, helloTimeout: cfg.HelloTimeout, recheck: cfg.RecheckInterval,
		apic: map[int]uint32{},
	}
	if v.cmdTimeout <= 0 {
		v.cmdTimeout = 30 * time.Second
	}
	if v.helloTimeout <= 0 {
		v.helloTimeout = 10 * time.Second
	}
	if v.recheck <= 0 {
		v.recheck = 30 * time.Second
	}
	v.snapshot.Name = cfg.Name
	return v, nil
}

// Name is the VM's configured name.
func (v *VM) Name() string { return v.name }

// Status returns a snapshot of the VM's state.
func (v *VM) Status() Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.snapshot
}

func (v *VM) publish(update func(*Status)) {
	v.mu.Lock()
	update(&v.snapshot)
	v.mu.Unlock()
}

func (v *VM) policyInterval() time.Duration { return v.engine.Policy().Interval.D() }

// idleTimeout is how long an agent may stay silent before its connection is
// dropped: three missed reports and some slack for a slow guest.
func (v *VM) idleTimeout() time.Duration { return 3*v.policyInterval() + 10*time.Second }

// Run controls the VM until ctx ends.
func (v *VM) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		v.serveChannel(ctx, v.ch)
	}()
	defer func() {
		v.ch.Close()
		wg.Wait()
		v.hyp.Close()
	}()

	v.refresh(ctx)
	tick := time.NewTicker(v.policyInterval())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-v.inbox:
			v.handle(ctx, ev, true)
		case <-tick.C:
			if !v.reachable || time.Since(v.lastRefresh) >= v.recheck {
				v.refresh(ctx)
			}
		}
	}
}

// refresh reads the VM's CPU state from the hypervisor: the only source of
// truth for how many vCPUs it has.
func (v *VM) refresh(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	v.lastRefresh = time.Now()
	st, err := v.hyp.State(cctx)
	if err != nil {
		if v.reachable || v.metrics.unreachable.Load() == 0 {
			v.log.Error("hypervisor unreachable; VM will not be scaled until it answers", "error", err)
		}
		v.metrics.unreachable.Add(1)
		v.reachable = false
		v.publish(func(s *Status) { s.Reachable = false })
		return false
	}
	if !v.reachable || st.Plugged() != v.current {
		v.log.Info("hypervisor state", "vcpus", st.Plugged(), "slots", st.Max())
	}
	v.reachable = true
	v.state = st
	v.current = st.Plugged()
	v.budget.Set(v.name, v.current)
	v.publish(func(s *Status) { s.Reachable, s.Current = true, v.current })
	return true
}

// handle processes one event from the channel goroutine. decide is false
// while an action is waiting for the agent: reports still feed the engine
// but start nothing new.
func (v *VM) handle(ctx context.Context, ev any, decide bool) {
	switch ev := ev.(type) {
	case evSession:
		v.sess, v.lastSeq, v.last = ev.s, 0, nil
		for _, t := range ev.s.hello.Topology {
			v.apic[int(t.CPU)] = t.APICID
		}
		v.publish(func(s *Status) { s.Connected, s.SessionAgent = true, ev.s.hello.AgentVersion })
		if decide {
			v.reconcile(ctx, ev.s.hello.Present, ev.s.hello.Online)
		}
	case evClosed:
		if v.sess == ev.s {
			v.sess, v.last = nil, nil
			v.publish(func(s *Status) { s.Connected = false })
		}
	case evReport:
		if ev.s != v.sess {
			return // from a connection that has since been replaced
		}
		r := ev.r
		if r.Seq <= v.lastSeq {
			v.metrics.replayed.Add(1)
			v.log.Warn("report ignored: sequence number not increasing", "seq", r.Seq, "last", v.lastSeq)
			return
		}
		v.lastSeq = r.Seq
		v.metrics.reports.Add(1)
		if r.Dropped > 0 {
			v.metrics.agentDropped.Add(r.Dropped)
			v.log.Warn("agent dropped reports while the actuator was unreachable", "dropped", r.Dropped)
		}
		v.last, v.lastAt = r, ev.at
		sample := sampleOf(r, ev.at)
		v.engine.Observe(sample)
		v.publish(func(s *Status) {
			s.Online, s.LastReportAt = r.Online.Len(), ev.at
			s.LastDemand = sample.Demand()
			s.LastUtil = sample.Demand() / float64(max(1, r.Online.Len()))
			s.ReportsSeen++
		})
		if decide {
			v.decideAndAct(ctx)
		}
	case evAck:
		// An Ack nobody waits for (its command timed out): nothing to do.
		v.log.Debug("late ack ignored", "id", ev.a.ID, "ok", ev.a.OK)
	}
}

// sampleOf turns a report into the engine's view of it.
func sampleOf(r *proto.Report, at time.Time) engine.Sample {
	s := engine.Sample{Time: at, Online: r.Online.Len()}
	for _, c := range r.CPUs {
		if r.Online.Has(int(c.CPU)) {
			s.Busy += float64(c.Busy)
		}
	}
	var wait uint64
	for _, d := range r.RunDelay {
		wait += d.WaitNanos
	}
	if r.IntervalNanos > 0 {
		s.Waiting = float64(wait) / float64(r.IntervalNanos)
	}
	if r.RunQueue != nil {
		s.RunQP95 = time.Duration(r.RunQueue.P95Nanos)
	}
	for _, a := range r.Apps {
		s.Apps = append(s.Apps, engine.AppSample{Name: a.Name, Arrivals: a.Arrivals, Rate: a.ArrivalRate,
			IAVar: a.InterArrivalVar, SvcMean: a.ServiceMean, SvcVar: a.ServiceVar,
			RespP50: a.RespP50, RespP95: a.RespP95, RespP99: a.RespP99,
			SLAMean: a.SLAMean, SLAPercentile: a.SLAPercentile, SLATarget: a.SLATarget})
	}
	return s
}

func (v *VM) decideAndAct(ctx context.Context) {
	if !v.reachable && !v.refresh(ctx) {
		return
	}
	d := v.engine.Decide(engine.Input{Now: time.Now(), Current: v.current, Allowed: v.allowed()})
	v.publish(func(s *Status) { s.LastDecision = d })
	if d.Action == engine.Hold {
		return
	}
	if time.Now().Before(v.retryAfter) {
		return
	}
	v.act(ctx, d)
}

// allowed is the most vCPUs this VM may have now: hypervisor slots and the
// host budget.
func (v *VM) allowed() int {
	a := v.state.Max()
	if b := v.budget.Allowed(v.name, v.current); b > 0 && (a == 0 || b < a) {
		a = b
	}
	return a
}
