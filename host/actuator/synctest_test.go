package actuator

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hotplugheaven/hotplug/host/actuator/fakeguest"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// memRig is a whole actuator over an in-memory hypervisor and a fake
// guest on an in-memory pipe, for tests inside a synctest bubble: the
// VM's goroutines, its timers and the guest's all run on fake time, so
// waits of seconds or minutes take none and happen in one order.
type memRig struct {
	hyp    *memHyp
	guest  *fakeguest.Guest
	act    *Actuator
	path   string
	cancel context.CancelFunc
	done   chan struct{}
}

func newMemRig(t *testing.T) *memRig {
	r := &memRig{hyp: newMemHyp(4, 1), path: filepath.Join(t.TempDir(), "events.jsonl"), done: make(chan struct{})}
	events, err := eventlog.Open(r.path)
	if err != nil {
		t.Fatal(err)
	}
	ch := fakeguest.NewPipeChannel()
	r.guest = fakeguest.New(r.hyp)
	r.guest.SetNoWallClock()
	if r.act, err = New([]VMConfig{{Name: "vm1", Policy: fastPolicy(), Channel: ch, Hypervisor: r.hyp}},
		events, 0, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.act.Run(ctx); close(r.done) }()
	guestDone := make(chan struct{})
	go func() { r.guest.Run(ctx, ch.Dial, interval); close(guestDone) }()
	// Every goroutine of the bubble must be gone when it ends: wait for
	// the guest too (a delayed command still sleeps, in fake time).
	t.Cleanup(func() { cancel(); <-r.done; <-guestDone; events.Close() })
	return r
}

func (r *memRig) events(t *testing.T) []eventlog.Event {
	evs, _, err := eventlog.ReadFile(r.path, eventlog.Filter{VM: "vm1"})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// until advances fake time an interval at a time until cond holds.
func until(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v of fake time", what, limit)
		}
		time.Sleep(interval / 4)
		synctest.Wait()
	}
}

func TestRunInFakeTime(t *testing.T) {
	t.Run("1→4 in one batch", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newMemRig(t)
			r.guest.SetDemand(3)
			until(t, time.Minute, "scale-up to 4", func() bool { return r.hyp.Plugged() == 4 && len(r.events(t)) > 0 })
			ev := r.events(t)[0]
			if stepNames(ev) != "plug,plug,plug,online,confirm" || ev.Outcome != eventlog.OutcomeOK || ev.Result != 4 {
				t.Fatalf("event %+v", ev)
			}
			// Decision to confirmed is the wait for the next report: at
			// most one interval of (fake) time, whatever the machine's load.
			if d := time.Duration(ev.DurationMS * float64(time.Millisecond)); d > interval {
				t.Fatalf("1→4 took %v of fake time, more than one report interval", d)
			}
		})
	})

	t.Run("an agent that never answers: the command times out and every CPU is rolled back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newMemRig(t)
			r.guest.SetCommandDelay(45 * time.Second) // past the 30 s command timeout
			r.guest.SetDemand(3)
			until(t, 2*time.Minute, "a rolled-back scale-up", func() bool {
				evs := r.events(t)
				return len(evs) > 0 && evs[0].Outcome == eventlog.OutcomeRolledBack
			})
			ev := r.events(t)[0]
			if stepNames(ev) != "plug,plug,plug,online,rollback_unplug,rollback_unplug,rollback_unplug" ||
				!strings.Contains(ev.Steps[3].Error, "did not answer command") || r.hyp.Plugged() != 1 {
				t.Fatalf("event %+v, plugged %d", ev, r.hyp.Plugged())
			}
			// The command timeout (30 s) passed in fake time, exactly.
			if d := time.Duration(ev.Steps[3].DurationMS * float64(time.Millisecond)); d != 30*time.Second {
				t.Fatalf("online step took %v, want the 30 s command timeout", d)
			}
		})
	})

	t.Run("pause and policy are served while an action waits for the agent", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newMemRig(t)
			ctl := r.act.VM("vm1")
			r.guest.SetCommandDelay(10 * time.Second)
			ctx := context.Background()
			until(t, time.Minute, "the agent's first report", func() bool { return ctl.Status().ReportsSeen > 0 })
			done := make(chan error, 1)
			go func() { done <- ctl.SetVCPUs(ctx, 3) }()
			<-r.guest.Received()
			start := time.Now()
			if err := ctl.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := ctl.UpdatePolicy(ctx, func(p *engine.Policy) error { p.MaxVCPUs = 3; return nil }); err != nil {
				t.Fatal(err)
			}
			if waited := time.Since(start); waited != 0 {
				t.Fatalf("controls waited %v for the action in flight", waited)
			}
			if st := ctl.Status(); !st.Paused || st.Policy.MaxVCPUs != 3 {
				t.Fatalf("status %+v", st)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if time.Since(start) < 10*time.Second {
				t.Fatal("the action ended before the guest answered")
			}
		})
	})
}
