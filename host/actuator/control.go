package actuator

import (
	"context"
	"errors"
	"fmt"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/proto"
)

// Operator requests reach a VM's goroutine through its control channel, so
// that one goroutine alone changes the VM. The loop reads the channel even
// while an action waits for the agent: pause, resume and policy changes
// take effect at once (the action in flight runs to its end under the
// decision it was made under), and a set-vcpus request waits its turn.
// Each waits for the answer; set-vcpus waits for its action to finish.
type control struct {
	kind string // "policy", "pause", "resume", "vcpus", "memory"
	// update changes the policy in force (kind "policy"); the result is
	// validated before it replaces it.
	update func(*engine.Policy) error
	vcpus  int
	memory uint64 // bytes, kind "memory"
	force  bool   // kind "memory": below the guest's safety floor
	why    string // kind "squeeze": the host-pressure override's reason
	reply  chan error
}

// Errors of operator requests; wrapped with detail.
var (
	// ErrNotRunning: the VM's controller is not running (shutting down).
	ErrNotRunning = errors.New("VM controller not running")
	// ErrUnsupported: the VM's hypervisor backend cannot do what was asked.
	ErrUnsupported = errors.New("not supported for this VM")
	// ErrOutOfRange: the request is outside what the VM's devices allow.
	ErrOutOfRange = errors.New("out of range")
)

func (v *VM) request(ctx context.Context, c control) error {
	c.reply = make(chan error, 1)
	select {
	case v.ctrl <- c:
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrNotRunning, ctx.Err())
	}
	select {
	case err := <-c.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetPolicy replaces the VM's policy. An invalid policy is refused with an
// *engine.FieldError and nothing changes.
func (v *VM) SetPolicy(ctx context.Context, p engine.Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	return v.request(ctx, control{kind: "policy", update: func(cur *engine.Policy) error { *cur = p; return nil }})
}

// UpdatePolicy changes the VM's policy with update, which is given the
// policy in force and runs on the VM's goroutine: two concurrent updates
// (two PUTs of different keys) both apply, neither is lost. The result is
// validated (an *engine.FieldError when invalid, and nothing changes) and
// returned.
func (v *VM) UpdatePolicy(ctx context.Context, update func(*engine.Policy) error) (engine.Policy, error) {
	var out engine.Policy
	err := v.request(ctx, control{kind: "policy", update: func(cur *engine.Policy) error {
		if err := update(cur); err != nil {
			return err
		}
		out = *cur
		return nil
	}})
	return out, err
}

// Pause stops scaling actions (the VM is still measured and decisions
// still computed and shown); Resume restarts them. An action in flight
// runs to its end.
func (v *VM) Pause(ctx context.Context) error  { return v.request(ctx, control{kind: "pause"}) }
func (v *VM) Resume(ctx context.Context) error { return v.request(ctx, control{kind: "resume"}) }

// SetVCPUs moves the VM to n vCPUs now, clamped to the policy and the host
// budget, and returns when the action is done; it is logged as a scaling
// event with rule "manual". The engine resumes afterwards, its cooldowns
// counting from this action: pause the VM to keep the size. A request that
// comes while an action is in flight starts after it.
func (v *VM) SetVCPUs(ctx context.Context, n int) error {
	return v.request(ctx, control{kind: "vcpus", vcpus: n})
}

// SetMemory resizes the VM's memory to total bytes now, outside the memory
// policy (its bounds are the device's, and a shrink stops at the guest's
// safety floor unless force), and returns when the resize is done, with an
// error if the guest reached only part of it; it is logged as a memory
// event with rule "operator". Memory sizing resumes afterwards
// if the policy sizes memory: pause the VM to keep the size.
func (v *VM) SetMemory(ctx context.Context, total uint64, force bool) error {
	return v.request(ctx, control{kind: "memory", memory: total, force: force})
}

// control runs in the VM goroutine. It answers on c.reply, except a
// set-vcpus request, which is answered when its action ends.
func (l *loop) control(ctx context.Context, c control) {
	switch c.kind {
	case "policy":
		c.reply <- l.setPolicy(c.update)
	case "pause", "resume":
		l.paused = c.kind == "pause"
		if l.paused {
			l.vm.log.Info("scaling paused by operator")
		} else {
			l.vm.log.Info("scaling resumed by operator")
		}
		l.vm.publish(func(s *Status) { s.Paused = l.paused })
		c.reply <- nil
	case "vcpus":
		if l.act != nil {
			l.queued = append(l.queued, c)
			return
		}
		l.setVCPUs(ctx, c)
	case "memory", "squeeze":
		if l.act != nil {
			l.queued = append(l.queued, c)
			return
		}
		l.setMemory(ctx, c)
	default:
		c.reply <- fmt.Errorf("unknown control %q", c.kind)
	}
}

// setPolicy applies update to the policy in force.
func (l *loop) setPolicy(update func(*engine.Policy) error) error {
	v := l.vm
	old := l.cpu.engine.Policy()
	p := old
	if err := update(&p); err != nil {
		return err
	}
	// The VM's real slots bound what a change may ask for (issue 21: a PUT
	// of min_vcpus = 9 on an 8-slot VM was taken and silently clamped).
	if slots := l.hv.state.Max(); slots > 0 {
		switch {
		case p.MinVCPUs != old.MinVCPUs && p.MinVCPUs > slots:
			return &engine.FieldError{Field: "min_vcpus", Msg: fmt.Sprintf("must be at most the VM's %d hot-plug slots, got %d", slots, p.MinVCPUs)}
		case p.MaxVCPUs != old.MaxVCPUs && p.MaxVCPUs > slots:
			return &engine.FieldError{Field: "max_vcpus", Msg: fmt.Sprintf("must be at most the VM's %d hot-plug slots, got %d", slots, p.MaxVCPUs)}
		}
	}
	if err := l.cpu.engine.SetPolicy(p); err != nil {
		return err
	}
	v.interval.Store(int64(p.Interval))
	v.log.Info("policy changed", "mode", modeName(p), "min", p.MinVCPUs, "max", p.MaxVCPUs)
	v.publish(func(s *Status) { s.Policy, s.Mode = p, modeName(p) })
	if p.Interval != old.Interval && l.agent.sess != nil {
		// The Ack is not awaited: the next reports' interval shows
		// whether the agent took it (a late Ack is ignored).
		l.nextCmd++
		if err := l.agent.sess.send(&proto.Command{ID: l.nextCmd, IntervalNanos: int64(p.Interval)}); err != nil {
			v.log.Warn("could not tell the agent the new interval", "error", err)
		}
	}
	return nil
}

// setVCPUs starts an operator's target, or answers at once when there is
// nothing to do.
func (l *loop) setVCPUs(ctx context.Context, c control) {
	a, err := l.cpu.manual(ctx, c.vcpus)
	if a == nil {
		c.reply <- err
		return
	}
	a.reply = c.reply
	l.start(ctx, a)
}

// setMemory starts an operator's memory size, or answers at once.
func (l *loop) setMemory(ctx context.Context, c control) {
	var a *action
	var err error
	if c.kind == "squeeze" {
		a, err = l.mem.squeezeTo(ctx, c.memory, c.why)
	} else {
		a, err = l.mem.setMemory(ctx, c.memory, c.force)
	}
	if a == nil {
		c.reply <- err
		return
	}
	want := a.mem.d.To
	a.reply = c.reply
	a.result = func() error {
		if a.err != nil {
			return a.err
		}
		if l.mem.dev.Total != want {
			return fmt.Errorf("reached %d MiB of %d MiB", toMiB(l.mem.dev.Total), toMiB(want))
		}
		return nil
	}
	l.start(ctx, a)
}

// manual builds the action for an operator's target of n vCPUs; nil when
// the VM has it already (or cannot be reached: err says so).
func (c *cpuResource) manual(ctx context.Context, n int) (*action, error) {
	l := c.l
	if !l.hv.reachable && !l.hv.refresh(ctx) {
		return nil, fmt.Errorf("hypervisor unreachable")
	}
	p := c.engine.Policy()
	hi := p.MaxVCPUs
	if a := l.hv.allowed(); a > 0 && a < hi {
		hi = a
	}
	to := max(min(n, hi), min(p.MinVCPUs, hi))
	d := engine.Decision{From: l.hv.current, To: to, Rule: "manual", Policy: p,
		Reason: fmt.Sprintf("operator asked for %d vCPUs", n)}
	if to != n {
		d.Reason += fmt.Sprintf(", clamped to %d by the policy [%d, %d] and the host budget", to, p.MinVCPUs, p.MaxVCPUs)
	}
	switch {
	case to > l.hv.current:
		d.Action = engine.ScaleUp
	case to < l.hv.current:
		d.Action = engine.ScaleDown
	default:
		return nil, nil
	}
	a := c.newAction(d)
	a.result = func() error {
		if l.hv.current != to {
			return fmt.Errorf("reached %d of %d vCPUs: %s", l.hv.current, to, l.vm.Status().Degraded)
		}
		return nil
	}
	return a, nil
}
