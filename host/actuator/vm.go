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
}

// VM controls one virtual machine: it owns the agent session, the engine
// and the hypervisor connection, and is the only goroutine that changes
// the VM's vCPUs.
type VM struct {
	name   string
	log    hclog.Logger
	hyp    hypervisor.Hypervisor
	ch     channel.Channel
	events *eventlog.Log
	budget *Budget
	inbox  chan any
	ctrl   chan control
	obs    observers

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
	paused     bool
	interval   atomic.Int64 // policy interval, ns; read by the channel goroutine too

	blackbox          bool
	blackboxOn        bool
	agentTimeout      time.Duration
	agentSeen         time.Time // last time an agent session existed (or start)
	meter             *hostMeter
	unfinished        []eventlog.Event // actions a previous actuator did not finish
	procRoot          string
	maxBackoff        time.Duration
	life              lifetime
	unreachableLogged bool
	skewLogged        bool

	mu       sync.Mutex // guards the snapshot fields below for Status
	snapshot Status
}

// Status is a read-only view of a VM for the API, CLI, metrics and tests.
// Field names are part of the API (JSON).
type Status struct {
	Name   string        `json:"name"`
	Mode   string        `json:"mode"`
	Policy engine.Policy `json:"policy"`
	// Current is the vCPU count the hypervisor reports; Online the guest's
	// online CPUs in its latest report; Target what the last decision
	// asked for.
	Current   int  `json:"current_vcpus"`
	Online    int  `json:"online_vcpus"`
	Target    int  `json:"target_vcpus"`
	MaxSlots  int  `json:"max_slots"`
	Paused    bool `json:"paused"`
	Connected bool `json:"agent_connected"`
	// Source is where the measurements come from: "agent", or "host"
	// (black-box fallback); empty before the first.
	Source    string `json:"source,omitempty"`
	Reachable bool   `json:"hypervisor_reachable"`
	// Degraded says why the last action failed; empty when healthy.
	Degraded       string          `json:"degraded,omitempty"`
	Agent          string          `json:"agent_version,omitempty"`
	LastDecision   engine.Decision `json:"last_decision"`
	LastDecisionAt time.Time       `json:"last_decision_at,omitzero"`
	Signals        Signals         `json:"signals"`
	ReportsSeen    uint64          `json:"reports_seen"`
	// Accuracy is how well the engine's forecasts held (metrics only: its
	// NaNs have no JSON form).
	Accuracy engine.Accuracy `json:"-"`
}

// Signals are the latest measurements of a VM.
type Signals struct {
	At          time.Time   `json:"at,omitzero"`
	Utilisation float64     `json:"utilisation"` // demand ÷ online vCPUs
	Demand      float64     `json:"demand_cpus"`
	Busy        float64     `json:"busy_cpus"`
	Waiting     float64     `json:"waiting_tasks"`
	Load1       float64     `json:"load1"`
	PSISome10   float64     `json:"psi_cpu_some_avg10,omitempty"`
	RunQSource  string      `json:"runq_source,omitempty"`
	RunQP50     float64     `json:"runq_p50_seconds,omitempty"`
	RunQP95     float64     `json:"runq_p95_seconds,omitempty"`
	RunQP99     float64     `json:"runq_p99_seconds,omitempty"`
	Apps        []AppSignal `json:"apps,omitempty"`
}

// AppSignal is one application's latest figures against its SLA.
type AppSignal struct {
	Name        string  `json:"name"`
	Rate        float64 `json:"arrival_rate"`
	RespP95     float64 `json:"response_p95_seconds"`
	ServiceMean float64 `json:"service_mean_seconds"`
	SLAMean     float64 `json:"sla_mean_seconds,omitempty"`
	SLAPct      float64 `json:"sla_percentile,omitempty"`
	SLATarget   float64 `json:"sla_target_seconds,omitempty"`
	DropRate    float64 `json:"drop_rate"`
}

func newVM(cfg VMConfig, events *eventlog.Log, budget *Budget, obs observers, logger hclog.Logger) (*VM, error) {
	eng, err := engine.New(cfg.Policy)
	if err != nil {
		return nil, fmt.Errorf("vm %s: policy: %w", cfg.Name, err)
	}
	v := &VM{
		name: cfg.Name, log: logger.Named(cfg.Name).With("vm", cfg.Name),
		hyp: cfg.Hypervisor, ch: cfg.Channel, events: events, budget: budget,
		inbox:  make(chan any, 16),
		ctrl:   make(chan control),
		obs:    obs,
		engine: eng, cmdTimeout: cfg.CommandTimeout, helloTimeout: cfg.HelloTimeout, recheck: cfg.RecheckInterval,
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
	v.blackbox, v.agentTimeout, v.procRoot = cfg.BlackBox, cfg.AgentTimeout, cfg.ProcRoot
	if v.agentTimeout <= 0 {
		v.agentTimeout = 60 * time.Second
	}
	if v.procRoot == "" {
		v.procRoot = "/proc"
	}
	v.maxBackoff = cfg.MaxBackoff
	if v.maxBackoff <= 0 {
		v.maxBackoff = 5 * time.Second
	}
	v.interval.Store(int64(cfg.Policy.Interval))
	v.snapshot.Name = cfg.Name
	v.snapshot.Policy = cfg.Policy
	v.snapshot.Mode = modeName(cfg.Policy)
	return v, nil
}

// Name is the VM's configured name.
func (v *VM) Name() string { return v.name }

// Status returns a snapshot of the VM's state.
func (v *VM) Status() Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := v.snapshot
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
	v.mu.Lock()
	update(&v.snapshot)
	v.mu.Unlock()
}

// policyInterval is the sampling interval in force. The channel goroutine
// reads it too, hence an atomic rather than the engine's policy.
func (v *VM) policyInterval() time.Duration { return time.Duration(v.interval.Load()) }

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
	v.agentSeen = time.Now()
	v.warnUnfinished()
	tick := time.NewTicker(v.policyInterval())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-v.inbox:
			v.handle(ctx, ev, true)
		case c := <-v.ctrl:
			c.reply <- v.control(ctx, c)
			tick.Reset(v.policyInterval())
		case <-tick.C:
			if v.blackBoxDue(time.Now()) {
				v.hostSample(ctx)
			} else if !v.reachable || time.Since(v.lastRefresh) >= v.recheck {
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
		if v.reachable || !v.unreachableLogged {
			v.log.Error("hypervisor unreachable; VM will not be scaled until it answers", "error", err)
			v.unreachableLogged = true
		}
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
	v.publish(func(s *Status) { s.Reachable, s.Current, s.MaxSlots = true, v.current, st.Max() })
	return true
}

// handle processes one event from the channel goroutine. decide is false
// while an action is waiting for the agent: reports still feed the engine
// but start nothing new.
func (v *VM) handle(ctx context.Context, ev any, decide bool) {
	switch ev := ev.(type) {
	case evSession:
		v.sess, v.lastSeq, v.last = ev.s, 0, nil
		v.agentSeen = time.Now()
		if v.blackboxOn {
			v.blackboxOn, v.meter = false, nil
			v.log.Info("agent back: measuring the VM from the guest again")
		}
		for _, t := range ev.s.hello.Topology {
			v.apic[int(t.CPU)] = t.APICID
		}
		v.publish(func(s *Status) { s.Connected, s.Agent, s.Source = true, ev.s.hello.AgentVersion, SourceAgent })
		if decide {
			v.reconcile(ctx, ev.s.hello.Present, ev.s.hello.Online)
		}
	case evClosed:
		if v.sess == ev.s {
			v.sess, v.last = nil, nil
			v.agentSeen = time.Now()
			v.publish(func(s *Status) { s.Connected = false })
		}
	case evReport:
		if ev.s != v.sess {
			return // from a connection that has since been replaced
		}
		r := ev.r
		if r.Seq <= v.lastSeq {
			v.obs.rejected(v.name, RejectReplayed)
			v.log.Warn("report ignored: sequence number not increasing", "seq", r.Seq, "last", v.lastSeq)
			return
		}
		if err := checkClock(r, ev.at); err != nil {
			v.obs.rejected(v.name, RejectInvalid)
			v.log.Warn("report ignored", "seq", r.Seq, "reason", err)
			return
		}
		if skew := time.Duration(r.WallUnixNanos - ev.at.UnixNano()); (skew > 5*time.Minute || skew < -5*time.Minute) && !v.skewLogged {
			v.skewLogged = true
			v.log.Warn("guest clock differs from the host's; reports are stamped with the host's time, so scaling is unaffected",
				"skew", skew.Round(time.Second), "hint", "run NTP or chrony in the guest")
		}
		v.lastSeq = r.Seq
		if r.Dropped > 0 {
			v.log.Warn("agent dropped reports while the actuator was unreachable", "dropped", r.Dropped)
		}
		v.last, v.lastAt = r, ev.at
		sample := sampleOf(r, ev.at)
		v.engine.Observe(sample)
		v.publish(func(s *Status) {
			s.Online = r.Online.Len()
			s.Signals = signalsOf(r, sample)
			s.ReportsSeen++
		})
		v.obs.report(v.name, v.Status())
		if decide {
			v.decideAndAct(ctx)
		}
	case evAck:
		// An Ack nobody waits for (its command timed out): nothing to do.
		v.log.Debug("late ack ignored", "id", ev.a.ID, "ok", ev.a.OK)
	}
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
	if q := r.RunQueue; q != nil {
		g.RunQSource = q.Source
		g.RunQP50, g.RunQP95, g.RunQP99 = float64(q.P50Nanos)/1e9, float64(q.P95Nanos)/1e9, float64(q.P99Nanos)/1e9
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

func (v *VM) decideAndAct(ctx context.Context) {
	if !v.reachable && !v.refresh(ctx) {
		return
	}
	now := time.Now()
	d := v.engine.Decide(engine.Input{Now: now, Current: v.current, Allowed: v.allowed()})
	acc := v.engine.Accuracy()
	v.publish(func(s *Status) { s.LastDecision, s.LastDecisionAt, s.Target, s.Accuracy = d, now, d.To, acc })
	v.obs.decision(v.name, d, now)
	if d.Action == engine.Hold || v.paused {
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
