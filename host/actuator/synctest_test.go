package actuator

import (
	"cmp"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hotplugheaven/hotplug/host/actuator/fakeguest"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// memRig is a whole actuator over in-memory hypervisors and fake guests
// on in-memory pipes, for tests inside a synctest bubble: the VMs'
// goroutines, their timers and the guests' all run on fake time, so waits
// of seconds or minutes take none and happen in one order.
type memRig struct {
	vms  []*memVM
	act  *Actuator
	path string
}

type memVM struct {
	name  string
	hyp   *memHyp
	guest *fakeguest.Guest
	ch    *fakeguest.PipeChannel
	// run starts the guest's agent (done by newMemRig unless noGuest).
	run func()
}

type memSpec struct {
	name        string
	slots, boot int // default 4 and 1
	policy      func(*engine.Policy)
	noGuest     bool
}

// newMemRig must be called inside the bubble. Its cleanup stops the
// actuator and every guest: a bubble must end with no goroutine left.
func newMemRig(t *testing.T, budget int, specs ...memSpec) *memRig {
	if len(specs) == 0 {
		specs = []memSpec{{name: "vm1"}}
	}
	r := &memRig{path: filepath.Join(t.TempDir(), "events.jsonl")}
	events, err := eventlog.Open(r.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var guests sync.WaitGroup
	var cfgs []VMConfig
	for _, sp := range specs {
		slots, boot := cmp.Or(sp.slots, 4), cmp.Or(sp.boot, 1)
		v := &memVM{name: sp.name, hyp: newMemHyp(slots, boot), ch: fakeguest.NewPipeChannel()}
		v.guest = fakeguest.New(v.hyp)
		v.guest.SetNoWallClock()
		v.run = func() { guests.Go(func() { v.guest.Run(ctx, v.ch.Dial, interval) }) }
		p := fastPolicy()
		if sp.policy != nil {
			sp.policy(&p)
		}
		cfgs = append(cfgs, VMConfig{Name: sp.name, Policy: p, Channel: v.ch, Hypervisor: v.hyp,
			CommandTimeout: 5 * time.Second, RecheckInterval: 300 * time.Millisecond, AgentTimeout: 300 * time.Millisecond})
		r.vms = append(r.vms, v)
	}
	if r.act, err = New(cfgs, events, budget, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.act.Run(ctx); close(done) }()
	for i, v := range r.vms {
		if !specs[i].noGuest {
			v.run()
		}
	}
	t.Cleanup(func() { cancel(); <-done; guests.Wait(); events.Close() })
	return r
}

func (r *memRig) eventsOf(t *testing.T, vm string) []eventlog.Event {
	evs, _, err := eventlog.ReadFile(r.path, eventlog.Filter{VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func (r *memRig) events(t *testing.T) []eventlog.Event { return r.eventsOf(t, "vm1") }

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
			r := newMemRig(t, 0)
			r.vms[0].guest.SetDemand(3)
			until(t, time.Minute, "scale-up to 4", func() bool { return r.vms[0].hyp.Plugged() == 4 && len(r.events(t)) > 0 })
			ev := r.events(t)[0]
			if stepNames(ev) != "plug,plug,plug,online,confirm" || ev.Outcome != eventlog.OutcomeOK || ev.Result != 4 ||
				len(ev.VCPULatencyMS) != 3 || ev.VCPULatencyMS[0] <= 0 || ev.VCPULatencyMS[0] > ev.DurationMS {
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
			r := newMemRig(t, 0)
			r.vms[0].guest.SetCommandDelay(45 * time.Second) // past the 5 s command timeout
			r.vms[0].guest.SetDemand(3)
			until(t, 2*time.Minute, "a rolled-back scale-up", func() bool {
				evs := r.events(t)
				return len(evs) > 0 && evs[0].Outcome == eventlog.OutcomeRolledBack
			})
			ev := r.events(t)[0]
			if stepNames(ev) != "plug,plug,plug,online,rollback_unplug,rollback_unplug,rollback_unplug" || len(ev.VCPULatencyMS) != 0 ||
				!strings.Contains(ev.Steps[3].Error, "did not answer command") || r.vms[0].hyp.Plugged() != 1 {
				t.Fatalf("event %+v, plugged %d", ev, r.vms[0].hyp.Plugged())
			}
			// The command timeout (5 s) passed in fake time, exactly.
			if d := time.Duration(ev.Steps[3].DurationMS * float64(time.Millisecond)); d != 5*time.Second {
				t.Fatalf("online step took %v, want the 5 s command timeout", d)
			}
		})
	})

	t.Run("pause and policy are served while an action waits for the agent", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newMemRig(t, 0)
			ctl := r.act.VM("vm1")
			r.vms[0].guest.SetCommandDelay(3 * time.Second) // within the 5 s command timeout
			ctx := context.Background()
			until(t, time.Minute, "the agent's first report", func() bool { return ctl.Status().Agent.Reports > 0 })
			done := make(chan error, 1)
			go func() { done <- ctl.SetVCPUs(ctx, 3) }()
			<-r.vms[0].guest.Received()
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
			if time.Since(start) < 3*time.Second {
				t.Fatal("the action ended before the guest answered")
			}
		})
	})
}
