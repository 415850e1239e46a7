package actuator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/proto"
)

// resource is the seam between a VM's loop and one kind of resource it
// scales. The loop owns the agent session, the hypervisor view, the event
// log and the one-action-at-a-time rule; a resource owns its engine and
// what it knows of its own devices. All methods run on the VM's goroutine.
//
// cpuResource and memResource implement it; see the package comment for
// migration.
type resource interface {
	// observe feeds one accepted measurement to the resource's engine:
	// an agent report (r) or a black-box host sample (r nil).
	observe(s engine.Sample, r *proto.Report)
	// decide returns the action to take now, or nil. It runs only while
	// the loop is idle.
	decide(ctx context.Context, now time.Time) *action
	// start takes the action's first steps (the hypervisor's, which do
	// not wait for the guest) and returns what it waits for next: an Ack
	// (the loop goes acting), a confirming report (confirming), or nil
	// when the action is over.
	start(ctx context.Context, a *action) *wait
	// reconcile returns the action that makes the guest agree with the
	// hypervisor after the agent (re)connects, in particular after an
	// actuator restart in the middle of an action, or nil.
	reconcile(ctx context.Context, h *proto.Hello) *action
	// done ends the action: outcome, backoff, the event log line.
	done(a *action)
}

// action is one scaling action in flight.
type action struct {
	res  resource
	kind string // event kind: scale_up, scale_down, reconcile
	d    engine.Decision
	rec  *record
	from int
	// err is why the action fell short; nil while every step succeeded.
	err error
	// rollbackFailed: a rollback step failed, so err says what is left in
	// a half state and a later successful rollback must not replace it.
	rollbackFailed bool
	// blind: no agent, black-box steps only.
	blind bool
	// plugged are the slots this action plugged and still holds.
	plugged []hypervisor.Slot
	// plugAt is when each plugged slot's plug began (by Ref), for its
	// latency.
	plugAt map[string]time.Time
	// reply, for an operator's set-vcpus, is told the result.
	reply chan error
	// result is what the action reached, for reply.
	result func() error
	// mem is a memory action's own state (memResource).
	mem *memAction
}

// fail records err unless an earlier failure is already recorded.
// pluggedAt notes when slot's plug began.
func (a *action) pluggedAt(slot hypervisor.Slot, at time.Time) {
	if a.plugAt == nil {
		a.plugAt = map[string]time.Time{}
	}
	a.plugAt[slot.Ref] = at
}

func (a *action) fail(err error) {
	if err != nil && a.err == nil {
		a.err = err
	}
}

func (a *action) replyErr() error {
	if a.result != nil {
		return a.result()
	}
	return a.err
}

// errNoAgent: an action needs the guest agent and none is connected.
var errNoAgent = errors.New("no agent connected")

// errRolledBack marks a failure whose earlier steps were undone.
var errRolledBack = errors.New("rolled back")

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

// backoff spaces a resource's actions after failures: 2, 4, … 64 policy
// intervals, at most 10 minutes; a success clears it.
type backoff struct {
	failures int
	until    time.Time
}

// waiting reports whether the backoff still holds actions off at now.
func (b *backoff) waiting(now time.Time) bool { return now.Before(b.until) }

// record takes an action's outcome and returns the wait it set (0 after a
// success).
func (b *backoff) record(err error, interval time.Duration) time.Duration {
	if err == nil {
		*b = backoff{}
		return 0
	}
	b.failures++
	wait := min(time.Duration(1<<min(b.failures, 6))*interval, 10*time.Minute)
	b.until = time.Now().Add(wait)
	return wait
}
