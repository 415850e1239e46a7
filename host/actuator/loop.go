package actuator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/memory"
	"github.com/hotplugheaven/hotplug/proto"
)

// phase is where a VM's loop stands.
type phase int

const (
	// idle: no action in flight; a report (or host sample) leads to a
	// decision.
	idle phase = iota
	// acting: an action waits for the agent's Ack to a command.
	acting
	// confirming: an action waits for a report that shows its effect.
	confirming
	// resizing: an action waits for the hypervisor's memory device to
	// reach its request, polling it now and then.
	resizing
)

func (p phase) String() string {
	switch p {
	case idle:
		return "idle"
	case acting:
		return "acting"
	case confirming:
		return "confirming"
	case resizing:
		return "resizing"
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// loop is one VM's state, owned by the goroutine in VM.Run and touched by
// no other. It is a state machine: idle until a resource starts an action;
// the action's hypervisor steps run at once, and each wait for the guest
// (an Ack, a confirming report) is a phase the loop leaves when the event
// or the deadline comes. While it waits the loop keeps reading its inbox
// (reports still feed the engines, but start nothing) and its control
// channel (pause, resume and policy changes take effect at once).
type loop struct {
	vm    *VM
	hv    *hvView
	agent agentState
	cpu   *cpuResource
	mem   *memResource
	// res are the resources the loop scales, in the order they decide:
	// CPU, then memory.
	res []resource
	// act is the action in flight, nil when idle; wait is what it waits
	// for, nil while its steps run; timer fires at wait's deadline.
	act   *action
	wait  *wait
	timer *time.Timer
	// paused: the operator stopped scaling actions.
	paused bool
	// queued are set-vcpus requests that came while an action was in
	// flight; reconcileDue an agent (re)connect whose reconcile waits for
	// the same.
	queued       []control
	reconcileDue bool
	unfinished   []eventlog.Event
	nextCmd      uint64
}

// agentState is what the loop knows of the VM's agent.
type agentState struct {
	sess       *session
	lastSeq    uint64
	last       *proto.Report // latest report of the current session
	lastAt     time.Time
	seen       time.Time      // last time an agent session existed (or start)
	apic       map[int]uint32 // guest CPU → APIC id, from Hello and Acks
	skewLogged bool
}

// online is the guest's online CPUs as last heard: the latest report, or
// the Hello before the first.
func (a *agentState) online() proto.CPUSet {
	if a.last != nil {
		return a.last.Online
	}
	if a.sess != nil {
		return a.sess.hello.Online
	}
	return proto.CPUSet{}
}

func (a *agentState) learn(topo []proto.CPUTopology) {
	for _, t := range topo {
		a.apic[int(t.CPU)] = t.APICID
	}
}

// wait is what an action in flight waits for: the Ack to command cmd
// (acting), a report that shows the action's effect (confirming: ok says
// which), on session sess, until deadline; or the next look at the
// hypervisor (resizing: onPoll at deadline). Its continuation takes the
// next steps and returns the next wait, or nil when the action is over.
type wait struct {
	phase    phase
	sess     *session
	cmd      uint64
	ok       func(*proto.Report) bool
	missed   func() error // confirming: why no report confirmed, at the deadline
	after    uint64       // confirming: only reports with a later sequence number count
	deadline time.Time
	onAck    func(context.Context, *proto.Ack, error) *wait
	onReport func(context.Context, error) *wait
	onPoll   func(context.Context, error) *wait
}

// fail ends the wait with err.
func (w *wait) fail(ctx context.Context, err error) *wait {
	switch w.phase {
	case acting:
		return w.onAck(ctx, nil, err)
	case resizing:
		return w.onPoll(ctx, err)
	}
	return w.onReport(ctx, err)
}

func newLoop(v *VM, p engine.Policy, m memory.Policy) (*loop, error) {
	l := &loop{vm: v, agent: agentState{apic: map[int]uint32{}}}
	l.hv = &hvView{vm: v}
	cpu, err := newCPUResource(l, p)
	if err != nil {
		return nil, err
	}
	l.cpu = cpu
	l.mem = newMemResource(l, m)
	l.res = []resource{cpu, l.mem}
	return l, nil
}

// begin learns the VM's state from the hypervisor when the loop starts,
// and takes over what a previous actuator left unfinished.
func (l *loop) begin(ctx context.Context) {
	for _, ev := range l.vm.unfinished {
		if eventlog.IsMemory(ev.Kind) {
			l.mem.unfinished = append(l.mem.unfinished, ev)
		} else {
			l.unfinished = append(l.unfinished, ev)
		}
	}
	l.hv.refresh(ctx)
	l.agent.seen = time.Now()
	l.warnUnfinished()
	l.mem.recoverAtStart(ctx)
}

func (l *loop) run(ctx context.Context) {
	v := l.vm
	l.begin(ctx)
	tick := time.NewTicker(v.policyInterval())
	defer tick.Stop()
	for {
		var expired <-chan time.Time
		if l.wait != nil {
			expired = l.timer.C
		}
		select {
		case <-ctx.Done():
			l.stop(ctx)
			return
		case ev := <-v.inbox:
			l.handle(ctx, ev)
		case c := <-v.ctrl:
			l.control(ctx, c)
			tick.Reset(v.policyInterval())
		case <-expired:
			l.expire(ctx)
		case <-tick.C:
			l.tick(ctx)
		}
	}
}

// phase is where the loop stands now.
func (l *loop) phase() phase {
	if l.act == nil || l.wait == nil {
		return idle
	}
	return l.wait.phase
}

// tick runs every policy interval: black-box measurement when no agent
// has been seen for a while, otherwise a re-read of the hypervisor now and
// then.
func (l *loop) tick(ctx context.Context) {
	switch {
	case l.act == nil && l.cpu.blackBoxDue(time.Now()):
		l.cpu.hostSample(ctx)
	case !l.hv.reachable || time.Since(l.hv.lastRefresh) >= l.vm.cfg.recheck:
		l.hv.refresh(ctx)
	}
}

// handle processes one event from the agent connection.
func (l *loop) handle(ctx context.Context, ev any) {
	v := l.vm
	switch ev := ev.(type) {
	case evSession:
		l.agent.sess, l.agent.lastSeq, l.agent.last = ev.s, 0, nil
		l.agent.seen = time.Now()
		l.cpu.agentBack()
		// What an earlier session said of the CPUs' APIC ids is that
		// agent's claim; this one starts from its own Hello.
		clear(l.agent.apic)
		l.agent.learn(ev.s.hello.Topology)
		v.publish(func(s *Status) {
			s.Agent.Connected, s.Agent.Version, s.Agent.Source = true, ev.s.hello.AgentVersion, SourceAgent
		})
		l.reconcileDue = true
		if l.act == nil {
			l.next(ctx)
		}
	case evClosed:
		if l.agent.sess != ev.s {
			return
		}
		l.agent.sess, l.agent.last = nil, nil
		l.agent.seen = time.Now()
		v.publish(func(s *Status) { s.Agent.Connected = false })
		if w := l.wait; w != nil && w.sess == ev.s {
			what := "confirming"
			if w.phase == acting {
				what = fmt.Sprintf("waiting for command %d", w.cmd)
			}
			l.advance(ctx, w.fail(ctx, fmt.Errorf("agent connection lost while %s", what)))
		}
	case evReport:
		if !l.accept(ev) {
			return
		}
		if w := l.wait; w != nil && w.phase == confirming && w.sess == ev.s && ev.r.Seq > w.after && w.ok(ev.r) {
			l.advance(ctx, w.onReport(ctx, nil))
			return
		}
		if l.act == nil {
			l.decide(ctx)
		}
	case evAck:
		if w := l.wait; w != nil && w.phase == acting && w.sess == ev.s && w.cmd == ev.a.ID {
			l.advance(ctx, w.onAck(ctx, ev.a, nil))
			return
		}
		// An Ack nobody waits for (its command timed out): nothing to do.
		v.log.Debug("late ack ignored", "id", ev.a.ID, "ok", ev.a.OK)
	}
}

// accept checks a report and feeds it to the resources; false when it is
// refused or stale.
func (l *loop) accept(ev evReport) bool {
	v := l.vm
	if ev.s != l.agent.sess {
		return false // from a connection that has since been replaced
	}
	// The agent connection's guard has admitted r: its sequence number
	// increases, its clock is sane and it came within the rate limit.
	r := ev.r
	if skew := time.Duration(r.WallUnixNanos - ev.at.UnixNano()); (skew > 5*time.Minute || skew < -5*time.Minute) && !l.agent.skewLogged {
		l.agent.skewLogged = true
		v.log.Warn("guest clock differs from the host's; reports are stamped with the host's time, so scaling is unaffected",
			"skew", skew.Round(time.Second), "hint", "run NTP or chrony in the guest")
	}
	l.agent.lastSeq = r.Seq
	if r.Dropped > 0 {
		v.complain.warn(ev.at, "dropped_reports", "agent dropped reports while the actuator was unreachable", "dropped", r.Dropped)
	}
	l.agent.last, l.agent.lastAt = r, ev.at
	sample := sampleOf(r, ev.at)
	for _, res := range l.res {
		res.observe(sample, r)
	}
	v.publish(func(s *Status) {
		s.Online = r.Online.Len()
		s.Signals = signalsOf(r, sample)
		s.Agent.Reports++
	})
	v.env.obs.report(v.name, v.Status())
	return true
}

// decide asks each resource in turn whether to act, and starts the first
// action one returns.
func (l *loop) decide(ctx context.Context) {
	now := time.Now()
	for _, res := range l.res {
		if a := res.decide(ctx, now); a != nil {
			l.start(ctx, a)
			return
		}
	}
}

// start takes a's first steps; the loop is acting (or confirming) until
// the action is over.
func (l *loop) start(ctx context.Context, a *action) {
	l.act = a
	l.advance(ctx, a.res.start(ctx, a))
}

// advance moves the action in flight on to w; nil ends it.
func (l *loop) advance(ctx context.Context, w *wait) {
	if l.timer != nil {
		l.timer.Stop()
	}
	l.wait = w
	if w == nil {
		l.finish(ctx)
		return
	}
	l.timer = time.NewTimer(time.Until(w.deadline))
}

// expire ends a wait whose deadline passed.
func (l *loop) expire(ctx context.Context) {
	w := l.wait
	switch w.phase {
	case acting:
		l.advance(ctx, w.fail(ctx, fmt.Errorf("agent did not answer command %d within %v", w.cmd, l.vm.cfg.cmdTimeout)))
	case resizing:
		l.advance(ctx, w.onPoll(ctx, nil))
	default:
		l.advance(ctx, w.fail(ctx, w.missed()))
	}
}

// finish ends the action in flight and starts what waited for it.
func (l *loop) finish(ctx context.Context) {
	a := l.act
	l.act = nil
	a.res.done(a)
	if a.reply != nil {
		a.reply <- a.replyErr()
	}
	if ctx.Err() == nil {
		l.next(ctx)
	}
}

// next starts, when idle, what waited: a reconcile after an agent
// (re)connect, then queued set-vcpus requests.
func (l *loop) next(ctx context.Context) {
	for l.act == nil {
		switch {
		case l.reconcileDue && l.agent.sess != nil:
			l.reconcileDue = false
			if a := l.cpu.reconcile(ctx, l.agent.sess.hello); a != nil {
				l.start(ctx, a)
			}
		case len(l.queued) > 0:
			c := l.queued[0]
			l.queued = l.queued[1:]
			if c.kind == "memory" || c.kind == "squeeze" {
				l.setMemory(ctx, c)
			} else {
				l.setVCPUs(ctx, c)
			}
		default:
			return
		}
	}
}

// stop runs when ctx ends: the action in flight is recorded as it stands
// (failed with ctx's error), and queued requests are told.
func (l *loop) stop(ctx context.Context) {
	if l.act != nil {
		l.act.fail(ctx.Err())
		if l.timer != nil {
			l.timer.Stop()
		}
		l.wait = nil
		l.finish(ctx)
	}
	for _, c := range l.queued {
		c.reply <- fmt.Errorf("%w: %v", ErrNotRunning, ctx.Err())
	}
	l.queued = nil
}

// command sends c to the agent; then is called with its Ack, or with the
// reason there is none (no agent, send failed, timeout, connection lost).
func (l *loop) command(ctx context.Context, c *proto.Command, then func(context.Context, *proto.Ack, error) *wait) *wait {
	s := l.agent.sess
	if s == nil {
		return then(ctx, nil, errNoAgent)
	}
	l.nextCmd++
	c.ID = l.nextCmd
	if err := s.send(c); err != nil {
		return then(ctx, nil, fmt.Errorf("sending command %d: %w", c.ID, err))
	}
	return &wait{phase: acting, sess: s, cmd: c.ID, deadline: time.Now().Add(l.vm.cfg.cmdTimeout), onAck: then}
}

// awaitOnline waits for a report, newer than the latest, with at least
// want CPUs online.
func (l *loop) awaitOnline(ctx context.Context, want int, then func(context.Context, error) *wait) *wait {
	s := l.agent.sess
	if s == nil {
		return then(ctx, errors.New("agent connection lost while confirming"))
	}
	after := l.agent.lastSeq
	missed := func() error {
		got := "no report"
		if l.agent.last != nil && l.agent.lastSeq > after {
			got = l.agent.last.Online.String()
		}
		return fmt.Errorf("no report confirmed %d CPUs online (last: %s)", want, got)
	}
	return l.awaitReport(ctx, func(r *proto.Report) bool { return r.Online.Len() >= want }, missed, then)
}

// awaitReport waits for a report, newer than the latest, for which ok
// holds; missed says why none came, at the deadline.
func (l *loop) awaitReport(ctx context.Context, ok func(*proto.Report) bool, missed func() error, then func(context.Context, error) *wait) *wait {
	s := l.agent.sess
	if s == nil {
		return then(ctx, errors.New("agent connection lost while confirming"))
	}
	return &wait{phase: confirming, sess: s, ok: ok, missed: missed, after: l.agent.lastSeq,
		deadline: time.Now().Add(3*l.vm.policyInterval() + 5*time.Second), onReport: then}
}

// warnUnfinished says which actions a previous actuator started and did
// not finish (found by New in the event log).
func (l *loop) warnUnfinished() {
	for _, ev := range l.unfinished {
		l.vm.log.Warn("a previous actuator stopped in the middle of an action; it will be reconciled when the agent connects",
			"action", ev.Seq, "kind", ev.Kind, "from", ev.From, "to", ev.To, "at", ev.Time)
	}
}
