package actuator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/proto"
)

// cpuResource scales a VM's vCPUs. A scale-up by N plugs N slots, asks the
// agent once to bring N more CPUs online and confirms once from the next
// report; a scale-down by N asks the agent once to offline N CPUs, then
// unplugs their slots. What fails is rolled back CPU by CPU: a slot whose
// CPU the guest did not online is unplugged again, a CPU whose slot would
// not unplug is brought back online, so no CPU is ever left plugged but
// offline, or unplugged but believed online.
type cpuResource struct {
	l          *loop
	engine     *engine.Engine
	backoff    backoff // after a failed action
	blackboxOn bool
	meter      *hostMeter
}

var _ resource = (*cpuResource)(nil)

func newCPUResource(l *loop, p engine.Policy) (*cpuResource, error) {
	eng, err := engine.New(p)
	if err != nil {
		return nil, err
	}
	return &cpuResource{l: l, engine: eng}, nil
}

func (c *cpuResource) observe(s engine.Sample, _ *proto.Report) { c.engine.Observe(s) }

func (c *cpuResource) decide(ctx context.Context, now time.Time) *action {
	l, v := c.l, c.l.vm
	if !l.hv.reachable && !l.hv.refresh(ctx) {
		return nil
	}
	d := c.engine.Decide(engine.Input{Now: now, Current: l.hv.current, Allowed: l.hv.allowed()})
	d.Policy = c.engine.Policy()
	acc := c.engine.Accuracy()
	v.publish(func(s *Status) { s.LastDecision, s.LastDecisionAt, s.Target, s.Accuracy = d, now, d.To, acc })
	v.env.obs.decision(v.name, d, now)
	if d.Action == engine.Hold || l.paused || c.backoff.waiting(time.Now()) {
		return nil
	}
	return c.newAction(d)
}

func (c *cpuResource) newAction(d engine.Decision) *action {
	l := c.l
	a := &action{res: c, kind: d.Action.String(), d: d, rec: l.newRecord(d.Action.String(), d), from: l.hv.current}
	a.blind = l.agent.sess == nil && c.blackboxOn
	if a.blind {
		a.rec.ev.Reason = "black-box (no agent): " + a.rec.ev.Reason
	}
	return a
}

func (c *cpuResource) start(ctx context.Context, a *action) *wait {
	if a.kind == kindReconcile {
		return c.startReconcile(ctx, a)
	}
	c.l.started(a.rec)
	switch {
	case a.d.Action == engine.ScaleUp && a.blind:
		c.plugBlind(ctx, a)
		return nil
	case a.d.Action == engine.ScaleUp:
		return c.scaleUp(ctx, a)
	case a.blind:
		c.unplugBlind(ctx, a)
		return nil
	default:
		return c.scaleDown(ctx, a)
	}
}

func (c *cpuResource) done(a *action) {
	l, v := c.l, c.l.vm
	if a.kind == kindReconcile {
		c.doneReconcile(a)
		return
	}
	c.engine.Acted(time.Now())
	err := a.err
	switch {
	case err == nil:
		a.rec.ev.Outcome = eventlog.OutcomeOK
	case l.hv.current != a.from:
		a.rec.ev.Outcome = eventlog.OutcomePartial
	case errors.Is(err, errRolledBack):
		a.rec.ev.Outcome = eventlog.OutcomeRolledBack
	default:
		a.rec.ev.Outcome = eventlog.OutcomeFailed
	}
	if wait := c.backoff.record(err, v.policyInterval()); err != nil {
		v.log.Warn("scaling action failed; backing off", "error", err, "retry_in", wait)
		v.publish(func(s *Status) { s.Degraded = err.Error() })
	} else {
		v.publish(func(s *Status) { s.Degraded = "" })
	}
	l.commit(a.rec)
}

// scaleUp plugs the slots, asks the agent once to online them all, and
// confirms once.
func (c *cpuResource) scaleUp(ctx context.Context, a *action) *wait {
	l := c.l
	if l.agent.sess == nil {
		a.fail(a.rec.step("plug", time.Now(), errNoAgent))
		return nil
	}
	// The guest's kernel, not the host, numbers a hot-added CPU (by APIC
	// id or the lowest free number, depending on its version): ask for a
	// count, not for CPU numbers.
	before := l.agent.online()
	c.plugSlots(ctx, a)
	if len(a.plugged) == 0 {
		return nil
	}
	want := before.Len() + len(a.plugged)
	start := time.Now()
	return l.command(ctx, &proto.Command{WantOnline: uint16(want)}, func(ctx context.Context, ack *proto.Ack, err error) *wait {
		err = ackErr(ack, err)
		if ack != nil {
			l.agent.learn(ack.Topology)
			if err == nil && ack.Online.Len() < want {
				err = fmt.Errorf("agent reports %d CPUs online (%s), %d wanted", ack.Online.Len(), ack.Online, want)
			}
		}
		a.rec.step("online", start, err)
		if err != nil {
			// Take out again, one by one, the CPUs the guest did not
			// online rather than leave them plugged and offline (or in
			// an unknown state) in the guest.
			c.rollbackPlugs(ctx, a, c.notOnline(a.plugged, ack, want), err)
			if ack == nil || len(a.plugged) == 0 {
				return nil
			}
		}
		return c.confirm(ctx, a, ack.Online.Len())
	})
}

// confirm waits for a report with want CPUs online; if none comes, the
// CPUs this action plugged are rolled back.
func (c *cpuResource) confirm(ctx context.Context, a *action, want int) *wait {
	start := time.Now()
	return c.l.awaitOnline(ctx, want, func(ctx context.Context, err error) *wait {
		if a.rec.step("confirm", start, err) != nil {
			c.rollbackPlugs(ctx, a, a.plugged, err)
			return nil
		}
		for _, s := range a.plugged {
			a.rec.latency(a.plugAt[s.Ref])
		}
		return nil
	})
}

// plugSlots plugs slots until the VM has the action's target or a plug
// fails; a.plugged lists them.
func (c *cpuResource) plugSlots(ctx context.Context, a *action) {
	l, v := c.l, c.l.vm
	for l.hv.current < a.d.To {
		at := time.Now()
		slot, err := c.plugSlot(ctx, a.rec)
		if err != nil {
			a.fail(err)
			l.hv.refresh(ctx)
			return
		}
		a.plugged = append(a.plugged, slot)
		a.pluggedAt(slot, at)
		v.log.Debug("cpu plugged", "slot", slot.Index, "ref", slot.Ref, "apic", slot.APICID)
	}
}

// plugSlot is the hypervisor half of a plug, the same with or without an
// agent: the lifetime limit and the host budget are checked, the plug is
// made and recorded as the "plug" step.
func (c *cpuResource) plugSlot(ctx context.Context, rec *record) (hypervisor.Slot, error) {
	l, v := c.l, c.l.vm
	if err := l.hv.allowPlug(ctx); err != nil {
		return hypervisor.Slot{}, rec.step("plug", time.Now(), err)
	}
	if !v.env.budget.Reserve(v.name, l.hv.current) {
		return hypervisor.Slot{}, rec.step("plug", time.Now(), fmt.Errorf("host vCPU budget exhausted"))
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	slot, st, err := v.env.hyp.Plug(pctx)
	cancel()
	if err == nil {
		l.hv.plugged()
		l.hv.set(st)
	}
	return slot, rec.step("plug", start, err)
}

// notOnline picks, among the slots an action plugged, those whose CPU the
// guest did not bring online, by APIC id. Without APIC ids on both sides
// it takes as many as are missing, the last plugged first; without an Ack
// it takes them all (the guest's state is unknown).
func (c *cpuResource) notOnline(plugged []hypervisor.Slot, ack *proto.Ack, want int) []hypervisor.Slot {
	if ack == nil {
		return plugged
	}
	online := map[int]bool{}
	known := true
	for _, cpu := range ack.Online.Slice() {
		apic, ok := c.l.agent.apic[cpu]
		if !ok {
			known = false
			break
		}
		online[int(apic)] = true
	}
	var out []hypervisor.Slot
	for _, s := range plugged {
		if s.APICID < 0 {
			known = false
		}
		if !online[s.APICID] {
			out = append(out, s)
		}
	}
	if known {
		return out
	}
	missing := min(len(plugged), max(want-ack.Online.Len(), 0))
	return plugged[len(plugged)-missing:]
}

// rollbackPlugs unplugs slots, the last plugged first, each its own
// rollback_unplug step, and drops them from a.plugged.
func (c *cpuResource) rollbackPlugs(ctx context.Context, a *action, slots []hypervisor.Slot, cause error) {
	slots = append([]hypervisor.Slot(nil), slots...)
	for i := len(slots) - 1; i >= 0; i-- {
		s := slots[i]
		start := time.Now()
		if err := c.unplugSlot(ctx, s); err != nil {
			a.rec.step("rollback_unplug", start, err)
			a.err = fmt.Errorf("cpu plugged but not onlined (%v), and unplugging it failed: %w", cause, err)
			a.rollbackFailed = true
			continue
		}
		a.rec.step("rollback_unplug", start, nil)
		for j, p := range a.plugged {
			if p.Index == s.Index {
				a.plugged = append(a.plugged[:j], a.plugged[j+1:]...)
				break
			}
		}
		if !a.rollbackFailed {
			a.err = fmt.Errorf("%w: %v", errRolledBack, cause)
		}
	}
}

// victim is a guest CPU chosen for removal and its slot (Ref empty when its
// APIC id is not known yet).
type victim struct {
	cpu  int
	slot hypervisor.Slot
}

// scaleDown asks the agent once to offline the CPUs, then unplugs their
// slots one by one; a slot that will not unplug gets its CPU back online.
func (c *cpuResource) scaleDown(ctx context.Context, a *action) *wait {
	l, v := c.l, c.l.vm
	if l.agent.sess == nil || l.agent.last == nil {
		a.fail(a.rec.step("offline", time.Now(), errNoAgent))
		return nil
	}
	if !l.hv.refresh(ctx) {
		a.fail(a.rec.step("offline", time.Now(), fmt.Errorf("hypervisor unreachable")))
		return nil
	}
	victims, err := c.pickVictims(l.hv.current - a.d.To)
	if err != nil {
		a.fail(a.rec.step("offline", time.Now(), err))
		return nil
	}
	var cpus proto.CPUSet
	for _, vi := range victims {
		cpus.Add(vi.cpu)
	}
	offAt := time.Now()
	return l.command(ctx, &proto.Command{Offline: cpus}, func(ctx context.Context, ack *proto.Ack, err error) *wait {
		err = ackErr(ack, err)
		var off []victim
		if ack != nil {
			l.agent.learn(ack.Topology)
			for _, vi := range victims {
				if !ack.Online.Has(vi.cpu) {
					off = append(off, vi)
				}
			}
		}
		if err != nil {
			err = fmt.Errorf("cpu%s: %w", cpus, err)
			a.fail(err)
		}
		a.rec.step("offline", offAt, err)
		var back []int // offline but still plugged
		var cause error
		for _, vi := range off {
			slot := vi.slot
			if slot.Ref == "" { // topology learned only now
				var serr error
				if slot, serr = c.slotForCPU(ctx, vi.cpu); serr != nil {
					back, cause = append(back, vi.cpu), serr
					continue
				}
			}
			start := time.Now()
			if uerr := c.unplugSlot(ctx, slot); uerr != nil {
				a.rec.step("unplug", start, uerr)
				back, cause = append(back, vi.cpu), uerr
				continue
			}
			a.rec.step("unplug", start, nil)
			a.rec.latency(offAt)
			v.env.budget.Set(v.name, l.hv.current)
		}
		return c.rollbackOffline(ctx, a, back, cause)
	})
}

// rollbackOffline brings cpus back online one by one, each its own
// rollback_online step.
func (c *cpuResource) rollbackOffline(ctx context.Context, a *action, cpus []int, cause error) *wait {
	if len(cpus) == 0 {
		return nil
	}
	cpu := cpus[0]
	start := time.Now()
	return c.l.command(ctx, &proto.Command{Online: proto.NewCPUSet(cpu)}, func(ctx context.Context, ack *proto.Ack, err error) *wait {
		if err = ackErr(ack, err); err != nil {
			a.rec.step("rollback_online", start, err)
			a.err = fmt.Errorf("cpu%d offline but still plugged (%v), and onlining it again failed: %w", cpu, cause, err)
			a.rollbackFailed = true
		} else {
			a.rec.step("rollback_online", start, nil)
			if ack != nil {
				c.l.agent.learn(ack.Topology)
			}
			if !a.rollbackFailed {
				a.err = fmt.Errorf("%w: %v", errRolledBack, cause)
			}
		}
		return c.rollbackOffline(ctx, a, cpus[1:], cause)
	})
}

// unplugSlot unplugs and then confirms from the hypervisor's state, which is
// the truth even when the unplug call timed out: the state Unplug returns
// when it succeeds, a fresh read when it fails.
func (c *cpuResource) unplugSlot(ctx context.Context, slot hypervisor.Slot) error {
	l := c.l
	st, err := l.vm.env.hyp.Unplug(ctx, slot)
	if err == nil {
		l.hv.set(st)
	} else if !l.hv.refresh(ctx) {
		return fmt.Errorf("unplug: %v; and the hypervisor's state cannot be read", err)
	}
	for _, s := range l.hv.state.Slots {
		if s.Index == slot.Index && s.Plugged {
			if err == nil {
				err = fmt.Errorf("hypervisor still reports slot %d plugged", slot.Index)
			}
			return err
		}
	}
	if err != nil {
		l.vm.log.Info("unplug reported an error but the hypervisor shows the CPU gone", "error", err)
	}
	return nil
}

// pickVictims chooses n guest CPUs to remove: the highest online CPUs
// whose slots the hypervisor can unplug. cpu0 is never chosen.
func (c *cpuResource) pickVictims(n int) ([]victim, error) {
	l := c.l
	online := l.agent.last.Online.Slice()
	var out []victim
	taken := map[int]bool{}
	for i := len(online) - 1; i >= 0 && online[i] > 0 && len(out) < n; i-- {
		cpu := online[i]
		apic, known := l.agent.apic[cpu]
		if !known {
			// Learn it from the offline Ack.
			out = append(out, victim{cpu: cpu})
			continue
		}
		for _, s := range l.hv.state.Slots {
			if s.Plugged && s.Removable && s.APICID == int(apic) && !taken[s.Index] {
				taken[s.Index] = true
				out = append(out, victim{cpu: cpu, slot: s})
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no online guest CPU maps to a removable slot (online %s)", l.agent.last.Online)
	}
	return out, nil
}

// slotForCPU finds the slot of a guest CPU by its APIC id, or, when the
// hypervisor does not report APIC ids, the highest removable plugged slot.
func (c *cpuResource) slotForCPU(ctx context.Context, cpu int) (hypervisor.Slot, error) {
	l := c.l
	if !l.hv.refresh(ctx) {
		return hypervisor.Slot{}, fmt.Errorf("hypervisor unreachable")
	}
	apic, known := l.agent.apic[cpu]
	var fallback *hypervisor.Slot
	for i := range l.hv.state.Slots {
		s := l.hv.state.Slots[i]
		if !s.Plugged || !s.Removable {
			continue
		}
		if known && s.APICID == int(apic) {
			return s, nil
		}
		if s.APICID < 0 {
			fallback = &l.hv.state.Slots[i]
		}
	}
	if fallback != nil {
		return *fallback, nil
	}
	return hypervisor.Slot{}, fmt.Errorf("cpu%d (APIC id %d) has no removable slot", cpu, apic)
}

const kindReconcile = "reconcile"

// reconcile makes the guest agree with the hypervisor after a (re)connect:
// a CPU plugged but offline (an actuator that died mid-action, a guest that
// did not online a hot-added CPU) is onlined.
func (c *cpuResource) reconcile(_ context.Context, h *proto.Hello) *action {
	l := c.l
	stray := h.Present.Difference(h.Online)
	if stray.Len() == 0 {
		l.recovered(fmt.Sprintf("guest online %s, present %s: nothing plugged but offline", h.Online, h.Present), nil)
		return nil
	}
	d := engine.Decision{Action: engine.ScaleUp, From: l.hv.current, To: l.hv.current, Rule: "reconcile",
		Reason: fmt.Sprintf("CPUs %s are plugged but offline in the guest", stray)}
	a := &action{res: c, kind: kindReconcile, d: d, rec: l.newRecord(kindReconcile, d), from: l.hv.current}
	a.plugged = nil
	return a
}

func (c *cpuResource) startReconcile(ctx context.Context, a *action) *wait {
	l := c.l
	stray := l.agent.sess.hello.Present.Difference(l.agent.sess.hello.Online)
	start := time.Now()
	return l.command(ctx, &proto.Command{Online: stray}, func(ctx context.Context, ack *proto.Ack, err error) *wait {
		err = ackErr(ack, err)
		a.rec.step("online", start, err)
		if err == nil {
			l.agent.learn(ack.Topology)
		}
		a.fail(err)
		l.hv.refresh(ctx)
		return nil
	})
}

func (c *cpuResource) doneReconcile(a *action) {
	l := c.l
	if a.err == nil {
		a.rec.ev.Outcome = eventlog.OutcomeOK
	} else {
		a.rec.ev.Outcome = eventlog.OutcomeFailed
	}
	if len(l.unfinished) > 0 {
		// This reconcile is the recovery of an interrupted action.
		l.recovered(a.rec.ev.Reason+"; onlined them", a.rec)
		return
	}
	l.commit(a.rec)
}

// agentBack is told an agent session started: measurements come from the
// guest again.
func (c *cpuResource) agentBack() {
	if c.blackboxOn {
		c.blackboxOn, c.meter = false, nil
		c.l.vm.log.Info("agent back: measuring the VM from the guest again")
	}
}
