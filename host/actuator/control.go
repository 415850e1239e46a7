package actuator

import (
	"context"
	"errors"
	"fmt"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/proto"
)

// Operator requests reach a VM's goroutine through its control channel, so
// that one goroutine alone changes the VM; each waits for the answer.
type control struct {
	kind   string // "policy", "pause", "resume", "vcpus"
	policy engine.Policy
	vcpus  int
	reply  chan error
}

// ErrNotRunning: the VM's controller is not running (shutting down).
var ErrNotRunning = errors.New("VM controller not running")

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
	return v.request(ctx, control{kind: "policy", policy: p})
}

// Pause stops scaling actions (the VM is still measured and decisions
// still computed and shown); Resume restarts them.
func (v *VM) Pause(ctx context.Context) error  { return v.request(ctx, control{kind: "pause"}) }
func (v *VM) Resume(ctx context.Context) error { return v.request(ctx, control{kind: "resume"}) }

// SetVCPUs moves the VM to n vCPUs now, clamped to the policy and the host
// budget, and returns when the action is done; it is logged as a scaling
// event with rule "manual". The engine resumes afterwards, its cooldowns
// counting from this action: pause the VM to keep the size.
func (v *VM) SetVCPUs(ctx context.Context, n int) error {
	return v.request(ctx, control{kind: "vcpus", vcpus: n})
}

// control runs in the VM goroutine.
func (v *VM) control(ctx context.Context, c control) error {
	switch c.kind {
	case "policy":
		old := v.engine.Policy()
		if err := v.engine.SetPolicy(c.policy); err != nil {
			return err
		}
		v.interval.Store(int64(c.policy.Interval))
		v.log.Info("policy changed", "mode", modeName(c.policy), "min", c.policy.MinVCPUs, "max", c.policy.MaxVCPUs)
		v.publish(func(s *Status) { s.Policy, s.Mode = c.policy, modeName(c.policy) })
		if c.policy.Interval != old.Interval && v.sess != nil {
			// The Ack is not awaited: the next reports' interval shows
			// whether the agent took it (a late Ack is ignored).
			v.nextCmd++
			if err := v.sess.send(&proto.Command{ID: v.nextCmd, IntervalNanos: int64(c.policy.Interval)}); err != nil {
				v.log.Warn("could not tell the agent the new interval", "error", err)
			}
		}
		return nil
	case "pause":
		v.paused = true
		v.log.Info("scaling paused by operator")
		v.publish(func(s *Status) { s.Paused = true })
		return nil
	case "resume":
		v.paused = false
		v.log.Info("scaling resumed by operator")
		v.publish(func(s *Status) { s.Paused = false })
		return nil
	case "vcpus":
		return v.manual(ctx, c.vcpus)
	}
	return fmt.Errorf("unknown control %q", c.kind)
}

// manual carries out an operator's target.
func (v *VM) manual(ctx context.Context, n int) error {
	if !v.reachable && !v.refresh(ctx) {
		return fmt.Errorf("hypervisor unreachable")
	}
	p := v.engine.Policy()
	hi := p.MaxVCPUs
	if a := v.allowed(); a > 0 && a < hi {
		hi = a
	}
	to := max(min(n, hi), min(p.MinVCPUs, hi))
	d := engine.Decision{From: v.current, To: to, Rule: "manual",
		Reason: fmt.Sprintf("operator asked for %d vCPUs", n)}
	if to != n {
		d.Reason += fmt.Sprintf(", clamped to %d by the policy [%d, %d] and the host budget", to, p.MinVCPUs, p.MaxVCPUs)
	}
	switch {
	case to > v.current:
		d.Action = engine.ScaleUp
	case to < v.current:
		d.Action = engine.ScaleDown
	default:
		return nil
	}
	v.act(ctx, d)
	if v.current != to {
		return fmt.Errorf("reached %d of %d vCPUs: %s", v.current, to, v.Status().Degraded)
	}
	return nil
}
