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
	"github.com/hotplugheaven/hotplug/proto"
)

// errNoAgent: an action needs the guest agent and none is connected.
var errNoAgent = errors.New("no agent connected")

// record collects the steps of one event.
type record struct {
	ev    eventlog.Event
	start time.Time
}

func (r *record) step(name string, start time.Time, err error) error {
	s := eventlog.Step{Name: name, DurationMS: ms(time.Since(start)), OK: err == nil}
	if err != nil {
		s.Error = err.Error()
	}
	r.ev.Steps = append(r.ev.Steps, s)
	return err
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// signals is what the event log keeps about the decision's inputs.
type signals struct {
	Evidence engine.Evidence `json:"evidence"`
	Online   int             `json:"online"`
	Busy     float64         `json:"busy_cpus"`
	Waiting  float64         `json:"waiting_tasks"`
	Load1    float64         `json:"load1"`
	ReportAt time.Time       `json:"report_at,omitempty"`
}

func (v *VM) newRecord(kind string, d engine.Decision) *record {
	r := &record{start: time.Now()}
	r.ev = eventlog.Event{Time: r.start, VM: v.name, Kind: kind, From: v.current, To: d.To, Rule: d.Rule, Reason: d.Reason}
	sig := signals{Evidence: d.Evidence}
	if v.last != nil {
		s := sampleOf(v.last, v.lastAt)
		sig.Online, sig.Busy, sig.Waiting, sig.Load1, sig.ReportAt = s.Online, s.Busy, s.Waiting, v.last.Load1, v.lastAt
	}
	r.ev.Signals, _ = json.Marshal(sig)
	return r
}

// commit writes the event. A failure to write is logged loudly and counted
// by the event log; scaling goes on.
// started writes the action's first line before anything is touched, so
// that an actuator killed in the middle leaves a trace the next one finds
// (see recover).
func (v *VM) started(r *record) {
	ev := r.ev
	ev.Outcome, ev.Result = eventlog.OutcomeStarted, v.current
	if err := v.events.Append(&ev); err != nil {
		v.log.Error("scaling event NOT recorded", "error", err)
		v.obs.event(ev, false)
		return
	}
	r.ev.Action = ev.Seq
}

func (v *VM) commit(r *record) {
	r.ev.Result = v.current
	r.ev.DurationMS = ms(time.Since(r.start))
	err := v.events.Append(&r.ev)
	if err != nil {
		v.log.Error("scaling event NOT recorded", "error", err, "event", fmt.Sprintf("%+v", r.ev))
	}
	v.obs.event(r.ev, err == nil)
	v.log.Info("scaling event", "kind", r.ev.Kind, "from", r.ev.From, "to", r.ev.To, "result", r.ev.Result,
		"outcome", r.ev.Outcome, "rule", r.ev.Rule, "reason", r.ev.Reason, "duration_ms", r.ev.DurationMS)
}

// act carries out a decision one vCPU at a time and logs one event.
func (v *VM) act(ctx context.Context, d engine.Decision) {
	rec := v.newRecord(d.Action.String(), d)
	from := v.current
	var err error
	blind := v.sess == nil && v.blackboxOn
	if blind {
		rec.ev.Reason = "black-box (no agent): " + rec.ev.Reason
	}
	v.started(rec)
	for err == nil && v.current != d.To {
		switch {
		case d.Action == engine.ScaleUp && blind:
			err = v.plugBlackBox(ctx, rec)
		case d.Action == engine.ScaleUp:
			err = v.plugOne(ctx, rec)
		case blind:
			err = v.unplugBlackBox(ctx, rec)
		default:
			err = v.unplugOne(ctx, rec)
		}
	}
	v.engine.Acted(time.Now())
	switch {
	case err == nil:
		rec.ev.Outcome = eventlog.OutcomeOK
		v.failures, v.retryAfter = 0, time.Time{}
	case v.current != from:
		rec.ev.Outcome = eventlog.OutcomePartial
	case errors.Is(err, errRolledBack):
		rec.ev.Outcome = eventlog.OutcomeRolledBack
	default:
		rec.ev.Outcome = eventlog.OutcomeFailed
	}
	if err != nil {
		v.failures++
		wait := min(time.Duration(1<<min(v.failures, 6))*v.policyInterval(), 10*time.Minute)
		v.retryAfter = time.Now().Add(wait)
		v.log.Warn("scaling action failed; backing off", "error", err, "retry_in", wait)
		v.publish(func(s *Status) { s.Degraded = err.Error() })
	} else {
		v.publish(func(s *Status) { s.Degraded = "" })
	}
	v.commit(rec)
}

// errRolledBack marks a failure whose earlier steps were undone.
var errRolledBack = errors.New("rolled back")

// plugOne adds one vCPU: plug on the hypervisor, have the guest online it,
// confirm from the next report. If the guest cannot online it, the CPU is
// unplugged again so it is never left plugged but offline.
func (v *VM) plugOne(ctx context.Context, rec *record) error {
	if v.sess == nil {
		return rec.step("plug", time.Now(), errNoAgent)
	}
	slot, err := v.plugSlot(ctx, rec)
	if err != nil {
		v.refresh(ctx)
		return err
	}
	if !v.refresh(ctx) {
		// Plugged but the state cannot be read back: count it ourselves
		// until the hypervisor answers again.
		v.current++
		v.budget.Set(v.name, v.current)
	}
	v.log.Debug("cpu plugged", "slot", slot.Index, "ref", slot.Ref, "apic", slot.APICID)

	start := time.Now()
	online, err := v.onlineNew(ctx, slot)
	if err == nil {
		rec.step("online", start, nil)
		start = time.Now()
		err = rec.step("confirm", start, v.awaitOnline(ctx, online))
		if err == nil {
			return nil
		}
	} else {
		rec.step("online", start, err)
	}
	// Roll back: take the CPU out again rather than leave it plugged and
	// offline (or in an unknown state) in the guest.
	start = time.Now()
	if uerr := v.unplugSlot(ctx, slot); uerr != nil {
		rec.step("rollback_unplug", start, uerr)
		return fmt.Errorf("cpu plugged but not onlined (%v), and unplugging it failed: %w", err, uerr)
	}
	rec.step("rollback_unplug", start, nil)
	return fmt.Errorf("%w: %v", errRolledBack, err)
}

// plugSlot is the hypervisor half of a plug, the same with or without an
// agent: the lifetime limit and the host budget are checked, the plug is
// made and recorded as the "plug" step.
func (v *VM) plugSlot(ctx context.Context, rec *record) (hypervisor.Slot, error) {
	if err := v.allowPlug(ctx); err != nil {
		return hypervisor.Slot{}, rec.step("plug", time.Now(), err)
	}
	if !v.budget.Reserve(v.name, v.current) {
		return hypervisor.Slot{}, rec.step("plug", time.Now(), fmt.Errorf("host vCPU budget exhausted"))
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	slot, err := v.hyp.Plug(pctx)
	cancel()
	if err == nil {
		v.plugged()
	}
	return slot, rec.step("plug", start, err)
}

// onlineNew asks the agent to bring one more CPU online: the hot-added
// one, under whatever number the guest's kernel gave it (Linux numbers it
// by APIC id or by the lowest free number, depending on version; the host
// cannot know).
func (v *VM) onlineNew(ctx context.Context, slot hypervisor.Slot) (int, error) {
	before := v.sess.hello.Online
	if v.last != nil {
		before = v.last.Online
	}
	want := before.Len() + 1
	ack, err := v.command(ctx, &proto.Command{WantOnline: uint16(want)})
	if err = ackErr(ack, err); err != nil {
		return 0, err
	}
	v.learnTopology(ack)
	if ack.Online.Len() < want {
		return 0, fmt.Errorf("agent reports %d CPUs online (%s), %d wanted", ack.Online.Len(), ack.Online, want)
	}
	return ack.Online.Len(), nil
}

// unplugOne removes one vCPU: the guest offlines its highest removable CPU,
// then the hypervisor unplugs that CPU's slot and its state confirms it.
// A failed unplug puts the CPU back online.
func (v *VM) unplugOne(ctx context.Context, rec *record) error {
	if v.sess == nil || v.last == nil {
		return rec.step("offline", time.Now(), errNoAgent)
	}
	if !v.refresh(ctx) {
		return rec.step("offline", time.Now(), fmt.Errorf("hypervisor unreachable"))
	}
	cpu, slot, err := v.pickVictim()
	if err != nil {
		return rec.step("offline", time.Now(), err)
	}
	start := time.Now()
	ack, err := v.command(ctx, &proto.Command{Offline: proto.NewCPUSet(cpu)})
	if err = ackErr(ack, err); err != nil {
		return rec.step("offline", start, fmt.Errorf("cpu%d: %w", cpu, err))
	}
	rec.step("offline", start, nil)
	v.learnTopology(ack)
	if slot.Ref == "" { // topology learned only now
		if slot, err = v.slotForCPU(ctx, cpu); err != nil {
			return v.rollbackOffline(ctx, rec, cpu, err)
		}
	}

	start = time.Now()
	if err := v.unplugSlot(ctx, slot); err != nil {
		rec.step("unplug", start, err)
		return v.rollbackOffline(ctx, rec, cpu, err)
	}
	rec.step("unplug", start, nil)
	v.budget.Set(v.name, v.current)
	return nil
}

// unplugSlot unplugs and then confirms from the hypervisor's state, which is
// the truth even when the unplug call timed out.
func (v *VM) unplugSlot(ctx context.Context, slot hypervisor.Slot) error {
	err := v.hyp.Unplug(ctx, slot)
	if !v.refresh(ctx) {
		return fmt.Errorf("unplug: %v; and the hypervisor's state cannot be read", err)
	}
	for _, s := range v.state.Slots {
		if s.Index == slot.Index && s.Plugged {
			if err == nil {
				err = fmt.Errorf("hypervisor still reports slot %d plugged", slot.Index)
			}
			return err
		}
	}
	if err != nil {
		v.log.Info("unplug reported an error but the hypervisor shows the CPU gone", "error", err)
	}
	return nil
}

func (v *VM) rollbackOffline(ctx context.Context, rec *record, cpu int, cause error) error {
	start := time.Now()
	ack, err := v.command(ctx, &proto.Command{Online: proto.NewCPUSet(cpu)})
	if err = ackErr(ack, err); err != nil {
		rec.step("rollback_online", start, err)
		return fmt.Errorf("cpu%d offline but still plugged (%v), and onlining it again failed: %w", cpu, cause, err)
	}
	rec.step("rollback_online", start, nil)
	return fmt.Errorf("%w: %v", errRolledBack, cause)
}

// pickVictim chooses the guest CPU to remove: the highest online CPU whose
// slot the hypervisor can unplug. cpu0 is never chosen.
func (v *VM) pickVictim() (int, hypervisor.Slot, error) {
	online := v.last.Online.Slice()
	for i := len(online) - 1; i >= 0 && online[i] > 0; i-- {
		cpu := online[i]
		apic, known := v.apic[cpu]
		if !known {
			// Learn it from the offline Ack.
			return cpu, hypervisor.Slot{}, nil
		}
		for _, s := range v.state.Slots {
			if s.Plugged && s.Removable && s.APICID == int(apic) {
				return cpu, s, nil
			}
		}
	}
	return 0, hypervisor.Slot{}, fmt.Errorf("no online guest CPU maps to a removable slot (online %s)", v.last.Online)
}

// slotForCPU finds the slot of a guest CPU by its APIC id, or, when the
// hypervisor does not report APIC ids, the highest removable plugged slot.
func (v *VM) slotForCPU(ctx context.Context, cpu int) (hypervisor.Slot, error) {
	if !v.refresh(ctx) {
		return hypervisor.Slot{}, fmt.Errorf("hypervisor unreachable")
	}
	apic, known := v.apic[cpu]
	var fallback *hypervisor.Slot
	for i := range v.state.Slots {
		s := v.state.Slots[i]
		if !s.Plugged || !s.Removable {
			continue
		}
		if known && s.APICID == int(apic) {
			return s, nil
		}
		if s.APICID < 0 {
			fallback = &v.state.Slots[i]
		}
	}
	if fallback != nil {
		return *fallback, nil
	}
	return hypervisor.Slot{}, fmt.Errorf("cpu%d (APIC id %d) has no removable slot", cpu, apic)
}

func (v *VM) learnTopology(ack *proto.Ack) {
	for _, t := range ack.Topology {
		v.apic[int(t.CPU)] = t.APICID
	}
}

// reconcile makes the guest agree with the hypervisor after a (re)connect:
// a CPU plugged but offline (an actuator that died mid-action, a guest that
// did not online a hot-added CPU) is onlined.
func (v *VM) reconcile(ctx context.Context, present, online proto.CPUSet) {
	stray := present.Difference(online)
	if stray.Len() == 0 {
		v.recovered(ctx, fmt.Sprintf("guest online %s, present %s: nothing plugged but offline", online, present), nil)
		return
	}
	d := engine.Decision{Action: engine.ScaleUp, From: v.current, To: v.current, Rule: "reconcile",
		Reason: fmt.Sprintf("CPUs %s are plugged but offline in the guest", stray)}
	rec := v.newRecord("reconcile", d)
	start := time.Now()
	ack, err := v.command(ctx, &proto.Command{Online: stray})
	err = ackErr(ack, err)
	rec.step("online", start, err)
	if err == nil {
		v.learnTopology(ack)
		rec.ev.Outcome = eventlog.OutcomeOK
	} else {
		rec.ev.Outcome = eventlog.OutcomeFailed
	}
	v.refresh(ctx)
	if len(v.unfinished) > 0 {
		// This reconcile is the recovery of an interrupted action.
		v.recovered(ctx, rec.ev.Reason+"; onlined them", rec)
		return
	}
	v.commit(rec)
}

// warnUnfinished says which actions a previous actuator started and did
// not finish (found by New in the event log).
func (v *VM) warnUnfinished() {
	for _, ev := range v.unfinished {
		v.log.Warn("a previous actuator stopped in the middle of an action; it will be reconciled when the agent connects",
			"action", ev.Seq, "kind", ev.Kind, "from", ev.From, "to", ev.To, "at", ev.Time)
	}
}

// recovered writes one recover line per interrupted action, saying what
// state was found and what was done (rec, when reconcile had to act).
func (v *VM) recovered(ctx context.Context, found string, rec *record) {
	for _, u := range v.unfinished {
		r := &record{start: time.Now()}
		r.ev = eventlog.Event{Time: r.start, VM: v.name, Kind: "recover", From: u.Result, To: v.current, Rule: "reconcile",
			Action: u.Seq, Outcome: eventlog.OutcomeOK,
			Reason: fmt.Sprintf("actuator stopped during %s %d→%d (action %d); hypervisor has %d vCPUs; %s",
				u.Kind, u.From, u.To, u.Seq, v.current, found)}
		if rec != nil {
			r.ev.Steps, r.ev.Outcome = rec.ev.Steps, rec.ev.Outcome
		}
		v.commit(r)
	}
	v.unfinished = nil
}

// command sends c to the agent and waits for its Ack, still taking in
// reports meanwhile (they update the engine but start nothing).
func (v *VM) command(ctx context.Context, c *proto.Command) (*proto.Ack, error) {
	if v.sess == nil {
		return nil, errNoAgent
	}
	v.nextCmd++
	c.ID = v.nextCmd
	s := v.sess
	if err := s.send(c); err != nil {
		return nil, fmt.Errorf("sending command %d: %w", c.ID, err)
	}
	timer := time.NewTimer(v.cmdTimeout)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, fmt.Errorf("agent did not answer command %d within %v", c.ID, v.cmdTimeout)
		case ev := <-v.inbox:
			if a, ok := ev.(evAck); ok && a.s == s && a.a.ID == c.ID {
				return a.a, nil
			}
			v.handle(ctx, ev, false)
			if v.sess != s {
				return nil, fmt.Errorf("agent connection lost while waiting for command %d", c.ID)
			}
		}
	}
}

// awaitOnline waits for a report showing at least want CPUs online.
func (v *VM) awaitOnline(ctx context.Context, want int) error {
	deadline := time.NewTimer(3*v.policyInterval() + 5*time.Second)
	defer deadline.Stop()
	s := v.sess
	after := v.lastSeq
	for {
		if v.last != nil && v.lastSeq > after && v.last.Online.Len() >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			got := "no report"
			if v.last != nil {
				got = v.last.Online.String()
			}
			return fmt.Errorf("no report confirmed %d CPUs online (last: %s)", want, got)
		case ev := <-v.inbox:
			v.handle(ctx, ev, false)
			if v.sess != s {
				return fmt.Errorf("agent connection lost while confirming")
			}
		}
	}
}

func ackErr(ack *proto.Ack, err error) error {
	if err != nil {
		return err
	}
	if ack.OK {
		return nil
	}
	msg := ack.Error
	for _, f := range ack.Failed {
		msg += fmt.Sprintf("; cpu%d: %s", f.CPU, f.Error)
	}
	return fmt.Errorf("agent: %s", msg)
}
