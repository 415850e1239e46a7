package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/host/memory"
	"github.com/hotplugheaven/hotplug/proto"
)

// memResource sizes a VM's memory from the guest's pressure (package
// memory decides). A resize asks the hypervisor's memory device for the
// new total (virtio-mem's requested-size, or the balloon), polls the
// device until it gets there (resizing), then, for virtio-mem with an
// agent, waits for a report whose MemTotal moved by as much (confirming).
// A device that does not get there within the policy's resize_timeout is
// asked for what it reached: nothing is left outstanding, and the event
// says how far it got (partial).
type memResource struct {
	l       *loop
	policy  memory.Policy
	engine  *memory.Engine
	hyp     hypervisor.MemoryResizer // nil: the backend cannot resize memory
	dev     hypervisor.Memory        // as the hypervisor last said
	known   bool
	warned  string  // the last "cannot size memory" reason logged
	backoff backoff // after a resize that fell short
	// unfinished are memory actions a previous actuator did not finish.
	unfinished []eventlog.Event
}

var _ resource = (*memResource)(nil)

func newMemResource(l *loop, p memory.Policy) *memResource {
	m := &memResource{l: l, policy: p}
	m.hyp, _ = l.vm.env.hyp.(hypervisor.MemoryResizer)
	return m
}

// on says whether the resource sizes memory at all.
func (m *memResource) on() bool { return m.policy.Mode != memory.ModeOff && m.hyp != nil }

func (m *memResource) observe(_ engine.Sample, r *proto.Report) {
	if r == nil || m.engine == nil {
		return
	}
	m.engine.Observe(memorySample(r, time.Now()))
}

// memorySample is the memory engine's view of a report.
func memorySample(r *proto.Report, at time.Time) memory.Sample {
	ivl := time.Duration(r.IntervalNanos)
	s := memory.Sample{Time: at, Interval: ivl, Total: r.MemTotalBytes, Available: r.MemAvailableBytes,
		SwapIns: uint64(r.SwapInPerSec * ivl.Seconds())}
	if mm := r.Memory; mm != nil {
		s.HavePSI = mm.HavePSI
		s.StallSome, s.StallFull = time.Duration(mm.PSISomeMicros)*time.Microsecond, time.Duration(mm.PSIFullMicros)*time.Microsecond
		s.Refaults = mm.RefaultAnon + mm.RefaultFile
		s.OOMKills = mm.OOMKills
	}
	return s
}

// read takes the device's state from the hypervisor.
func (m *memResource) read(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	dev, err := m.hyp.Memory(cctx)
	if err != nil {
		if m.policy.Mode == memory.ModeOff {
			// Not sizing memory: a VM without a device is no news.
			m.l.vm.log.Debug("no memory device read", "error", err)
			m.known = false
			return false
		}
		if msg := err.Error(); msg != m.warned {
			m.warned = msg
			m.l.vm.log.Warn("memory is not sized: cannot read the VM's memory device", "error", err,
				"hint", "give QEMU a virtio-mem device (or a virtio-balloon), see docs/memory.md")
		}
		m.known = false
		return false
	}
	m.set(dev)
	return true
}

func (m *memResource) set(dev hypervisor.Memory) {
	v := m.l.vm
	if !m.known || dev.Total != m.dev.Total {
		v.log.Info("memory device", "device", dev.Device, "total_mib", dev.Total>>20, "requested_mib", dev.Requested>>20, "max_mib", dev.Max>>20)
	}
	if m.engine == nil {
		m.engine = memory.New(m.policy, dev.Base)
	}
	m.dev, m.known, m.warned = dev, true, ""
	v.env.memBudget.Set(v.name, int(dev.Total))
	floor := m.engine.Floor(time.Now())
	v.publish(func(s *Status) {
		s.Memory.Device, s.Memory.Total, s.Memory.Requested, s.Memory.Max = dev.Device, dev.Total, dev.Requested, dev.Max
		s.Memory.Floor = floor
	})
}

func (m *memResource) decide(ctx context.Context, now time.Time) *action {
	if !m.on() || (!m.known && !m.read(ctx)) {
		return nil
	}
	l, v := m.l, m.l.vm
	limit := m.dev.Max
	if b := v.env.memBudget.Allowed(v.name, int(m.dev.Total)); b > 0 {
		limit = min(limit, uint64(b))
	}
	if b := v.env.memBudget.Limit(); b > 0 {
		m.engine.SetHost(memory.Host{Total: uint64(b), Used: uint64(v.env.memBudget.Total())}) // the baselines' view
	}
	d := m.engine.Decide(now, m.dev.Total, limit)
	if short := v.env.hostShort != nil && v.env.hostShort.Load(); short && d.Action == memory.Grow && d.Rule != memory.RuleOOM {
		// The host is short: no grow, but an OOM kill in the guest is
		// answered.
		d.Action, d.To, d.Rule = memory.Hold, m.dev.Total, RuleHostPressure
		d.Reason = "host short of memory, no grow: " + d.Reason
	}
	if d.To < m.dev.Min {
		d.To = m.dev.Min
	}
	floor := m.engine.Floor(now)
	v.publish(func(s *Status) {
		s.Memory.Target, s.Memory.LastDecision, s.Memory.LastDecisionAt, s.Memory.Floor = d.To, d, now, floor
	})
	if d.To == m.dev.Total || l.paused || m.backoff.waiting(time.Now()) {
		return nil
	}
	return m.newAction(d, "")
}

// newAction is a resize to d.To; why, when set, replaces the reason (an
// operator's set-memory).
func (m *memResource) newAction(d memory.Decision, why string) *action {
	l := m.l
	kind := eventlog.KindMemoryGrow
	if d.To < m.dev.Total {
		kind = eventlog.KindMemoryShrink
	}
	if why != "" {
		d.Reason = why
	}
	r := &record{start: time.Now(), result: func() int { return toMiB(m.dev.Total) }}
	r.ev = eventlog.Event{Time: r.start, VM: l.vm.name, Kind: kind, From: toMiB(m.dev.Total), To: toMiB(d.To), Rule: d.Rule, Reason: d.Reason}
	sig := memSignals{Device: m.dev.Device, Floor: toMiB(d.Floor)}
	if last := l.agent.last; last != nil {
		sig.GuestTotal, sig.GuestAvailable, sig.ReportAt = toMiB(last.MemTotalBytes), toMiB(last.MemAvailableBytes), l.agent.lastAt
		if mm := last.Memory; mm != nil {
			sig.StallSomeMS, sig.StallFullMS, sig.Refaults, sig.OOMKills = float64(mm.PSISomeMicros)/1e3, float64(mm.PSIFullMicros)/1e3,
				mm.RefaultAnon+mm.RefaultFile, mm.OOMKills
		}
	}
	r.ev.Signals, _ = json.Marshal(sig)
	return &action{res: m, kind: kind, rec: r, mem: &memAction{d: d, from: m.dev.Total}}
}

// memSignals is what the event log keeps about a memory decision's inputs.
type memSignals struct {
	Device         string    `json:"device"`
	Floor          int       `json:"floor_mib,omitempty"`
	GuestTotal     int       `json:"guest_total_mib,omitempty"`
	GuestAvailable int       `json:"guest_available_mib,omitempty"`
	StallSomeMS    float64   `json:"stall_some_ms,omitempty"`
	StallFullMS    float64   `json:"stall_full_ms,omitempty"`
	Refaults       uint64    `json:"refaults,omitempty"`
	OOMKills       uint64    `json:"oom_kills,omitempty"`
	ReportAt       time.Time `json:"report_at,omitempty"`
}

// memAction is what a memory action carries beyond action.
type memAction struct {
	d    memory.Decision
	from uint64 // device total at the start
	want uint64 // what the device was asked for
	// guestFrom is the guest's MemTotal at the start (0: no report).
	guestFrom uint64
	deadline  time.Time
	resizeAt  time.Time
}

func toMiB(b uint64) int { return int(b >> 20) }

func (m *memResource) start(ctx context.Context, a *action) *wait {
	l, ma := m.l, a.mem
	l.started(a.rec)
	if last := l.agent.last; last != nil {
		ma.guestFrom = last.MemTotalBytes
	}
	if ma.d.To > ma.from {
		v := l.vm
		if !v.env.memBudget.ReserveN(v.name, int(ma.from), int(ma.d.To-ma.from)) {
			a.fail(a.rec.step(eventlog.StepResize, time.Now(), errors.New("host memory budget exhausted")))
			return nil
		}
	}
	ma.resizeAt = time.Now()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	dev, err := m.hyp.RequestMemory(cctx, ma.d.To)
	cancel()
	if err != nil {
		a.fail(a.rec.step(eventlog.StepResize, ma.resizeAt, err))
		m.read(ctx)
		return nil
	}
	ma.want, ma.deadline = dev.Requested, time.Now().Add(m.policy.ResizeTimeout)
	m.set(dev)
	return m.poll(a)
}

// poll is the next look at the device.
func (m *memResource) poll(a *action) *wait {
	next := time.Now().Add(100 * time.Millisecond)
	if next.After(a.mem.deadline) {
		next = a.mem.deadline
	}
	return &wait{phase: resizing, deadline: next, onPoll: func(ctx context.Context, err error) *wait {
		return m.polled(ctx, a, err)
	}}
}

func (m *memResource) polled(ctx context.Context, a *action, err error) *wait {
	ma := a.mem
	if err == nil && !m.read(ctx) {
		err = fmt.Errorf("the memory device cannot be read")
	}
	if err == nil && m.dev.Total == ma.want {
		a.rec.step(eventlog.StepResize, ma.resizeAt, nil)
		return m.confirm(ctx, a)
	}
	if err == nil && time.Now().Before(ma.deadline) {
		return m.poll(a)
	}
	if err == nil {
		err = fmt.Errorf("the guest reached %d MiB of %d MiB in %v", toMiB(m.dev.Total), toMiB(ma.want), m.policy.ResizeTimeout)
	}
	// Whatever stopped the wait, what was reached becomes the request.
	reached := m.dev.Total
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	dev, rerr := m.hyp.RequestMemory(cctx, reached)
	cancel()
	if rerr != nil {
		err = fmt.Errorf("%v, and setting the request to it failed: %w", err, rerr)
	} else {
		m.set(dev)
		err = fmt.Errorf("%v; the request is now %d MiB (memory the guest cannot move?)", err, toMiB(dev.Requested))
	}
	a.fail(a.rec.step(eventlog.StepResize, ma.resizeAt, err))
	return nil
}

// confirm waits for the guest to see what the device did: with
// virtio-mem, its MemTotal moves by as much (memory blocks onlined or
// offlined). A balloon leaves MemTotal alone, and with no agent there is
// nobody to ask.
func (m *memResource) confirm(ctx context.Context, a *action) *wait {
	ma := a.mem
	if m.dev.Device != hypervisor.MemVirtioMem || ma.guestFrom == 0 || m.l.agent.sess == nil {
		return nil
	}
	moved := func(r *proto.Report) int64 { return int64(r.MemTotalBytes) - int64(ma.guestFrom) }
	want := int64(m.dev.Total) - int64(ma.from)
	start := time.Now()
	missed := func() error {
		got := "no report"
		if last := m.l.agent.last; last != nil {
			got = fmt.Sprintf("%+d MiB", moved(last)>>20)
		}
		return fmt.Errorf("the guest's MemTotal did not move by %+d MiB (last: %s): are its memory blocks onlined? "+
			"(boot it with memhp_default_state=online_movable)", want>>20, got)
	}
	return m.l.awaitReport(ctx, func(r *proto.Report) bool { return moved(r) == want }, missed, func(ctx context.Context, err error) *wait {
		a.fail(a.rec.step(eventlog.StepConfirm, start, err))
		return nil
	})
}

func (m *memResource) reconcile(context.Context, *proto.Hello) *action { return nil }

func (m *memResource) done(a *action) {
	l, v, ma := m.l, m.l.vm, a.mem
	err := a.err
	switch {
	case err == nil:
		a.rec.ev.Outcome = eventlog.OutcomeOK
	case m.dev.Total != ma.from:
		a.rec.ev.Outcome = eventlog.OutcomePartial
	default:
		a.rec.ev.Outcome = eventlog.OutcomeFailed
	}
	if wait := m.backoff.record(err, v.policyInterval()); err != nil {
		v.log.Warn("memory resize fell short; backing off", "error", err, "retry_in", wait)
		v.publish(func(s *Status) { s.Memory.Degraded = err.Error() })
	} else {
		v.publish(func(s *Status) { s.Memory.Degraded = "" })
	}
	v.env.memBudget.Set(v.name, int(m.dev.Total))
	l.commit(a.rec)
}

// recoverAtStart reads the device when the loop starts. A request the
// device has not reached is an actuator that died during a resize (or a
// resize made by hand): it is set to what the guest has, and the event
// log says what was found, once per unfinished memory action of the
// previous actuator.
func (m *memResource) recoverAtStart(ctx context.Context) {
	// The device is read even with sizing off, so that status, metrics
	// and set-memory know it.
	if m.hyp == nil || !m.read(ctx) {
		return
	}
	l := m.l
	found := m.dev
	fixed := ""
	if found.Requested != found.Total && (m.policy.Mode != memory.ModeOff || len(m.unfinished) > 0) {
		// (With sizing off and nothing of ours unfinished, a request in
		// flight is someone else's.)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		dev, err := m.hyp.RequestMemory(cctx, found.Total)
		cancel()
		if err != nil {
			fixed = fmt.Sprintf("; setting the request to %d MiB failed: %v", toMiB(found.Total), err)
		} else {
			m.set(dev)
			fixed = fmt.Sprintf("; the request is now %d MiB", toMiB(dev.Requested))
		}
	}
	what := fmt.Sprintf("%s at %d MiB, request %d MiB%s", found.Device, toMiB(found.Total), toMiB(found.Requested), fixed)
	if len(m.unfinished) == 0 && fixed == "" {
		return
	}
	events := m.unfinished
	if len(events) == 0 {
		events = []eventlog.Event{{}}
	}
	for _, u := range events {
		r := &record{start: time.Now(), result: func() int { return toMiB(m.dev.Total) }}
		r.ev = eventlog.Event{Time: r.start, VM: l.vm.name, Kind: eventlog.KindMemoryRecover, From: toMiB(found.Total), To: toMiB(m.dev.Requested),
			Rule: "reconcile", Action: u.Seq, Outcome: eventlog.OutcomeOK, Reason: "found " + what}
		if u.Seq != 0 {
			r.ev.Reason = fmt.Sprintf("actuator stopped during %s %d→%d MiB (action %d); found %s", u.Kind, u.From, u.To, u.Seq, what)
		}
		l.commit(r)
	}
	m.unfinished = nil
}

// setMemory is an operator's resize to total bytes, within the device.
// A shrink is held to the guest's safety floor (what it uses plus the
// policy's headroom twice, as the policy's own shrinks are) unless force:
// virtio-mem's guest driver gives up free memory down to nothing, and a
// guest with nothing free OOM-kills its own processes.
func (m *memResource) setMemory(ctx context.Context, total uint64, force bool) (*action, error) {
	if m.hyp == nil {
		return nil, fmt.Errorf("%w: this hypervisor backend cannot resize memory", ErrUnsupported)
	}
	if !m.read(ctx) {
		return nil, fmt.Errorf("%w: cannot read the VM's memory device", hypervisor.ErrUnavailable)
	}
	if total < m.dev.Min || total > m.dev.Max {
		return nil, fmt.Errorf("%w: %d MiB is outside the device's [%d, %d] MiB", ErrOutOfRange, toMiB(total), toMiB(m.dev.Min), toMiB(m.dev.Max))
	}
	why := fmt.Sprintf("operator asked for %d MiB", toMiB(total))
	if total < m.dev.Total && !force {
		floor, known := m.safeFloor()
		if !known {
			return nil, fmt.Errorf("%w: no memory report from the guest yet, so what it uses is unknown: a shrink needs one (or force)", ErrOutOfRange)
		}
		if total < floor {
			why += fmt.Sprintf(", held to the guest's safety floor of %d MiB (what it uses plus headroom; force to go below)", toMiB(floor))
			total = floor
		}
		if total >= m.dev.Total {
			return nil, fmt.Errorf("%w: the guest's safety floor is %d MiB, at or above its %d MiB: nothing to shrink (force to go below)",
				ErrOutOfRange, toMiB(floor), toMiB(m.dev.Total))
		}
	}
	d := memory.Decision{From: m.dev.Total, To: total, Rule: "operator"}
	return m.newAction(d, why), nil
}

// squeezeTo is the host-pressure override's cut to total bytes (never
// below the policy's floor, which Squeeze was given).
func (m *memResource) squeezeTo(ctx context.Context, total uint64, why string) (*action, error) {
	if !m.on() || (!m.known && !m.read(ctx)) {
		return nil, nil
	}
	if floor := m.engine.Floor(time.Now()); total < floor {
		total = floor
	}
	if total >= m.dev.Total {
		return nil, nil
	}
	return m.newAction(memory.Decision{From: m.dev.Total, To: total, Rule: RuleHostPressure}, why), nil
}

// RuleHostPressure names the host-pressure override's shrinks.
const RuleHostPressure = "host_pressure"

// safeFloor is the least memory the VM may be shrunk to now, from the
// guest's latest report; false without one.
func (m *memResource) safeFloor() (uint64, bool) {
	last := m.l.agent.last
	if last == nil || last.MemTotalBytes == 0 {
		return 0, false
	}
	p := m.policy
	if p.Mode == memory.ModeOff {
		p = memory.DefaultPolicy() // its headroom and block
	}
	// What the guest does not have available is in use; the device total
	// exceeds the guest's MemTotal by what the kernel reserved, which a
	// shrink does not give back either.
	inUse := m.dev.Total - min(m.dev.Total, last.MemAvailableBytes)
	floor := inUse + uint64(2*p.Headroom*float64(last.MemTotalBytes))
	blk := max(uint64(p.Block), m.dev.Block, 1)
	floor = (floor + blk - 1) / blk * blk
	return min(max(floor, m.dev.Min), m.dev.Max), true
}
