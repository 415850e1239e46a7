package actuator

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/actuator/fakeguest"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/host/qmp/qmptest"
	"github.com/hotplugheaven/hotplug/proto"
)

const interval = 100 * time.Millisecond

func fastPolicy() engine.Policy {
	p := engine.DefaultPolicy()
	p.Interval = engine.Duration(interval)
	p.MinVCPUs, p.MaxVCPUs = 1, 4
	p.K, p.N, p.Window, p.DownSamples = 2, 3, 6, 3
	p.CooldownUp, p.CooldownDown = 0, 0
	return p
}

// rig is one actuator over qmptest VMs and fake guests.
type rig struct {
	t      *testing.T
	events *eventlog.Log
	path   string
	vms    []*rigVM
	act    *Actuator
	cancel context.CancelFunc
	done   chan struct{}
}

type rigVM struct {
	name  string
	qmp   *qmptest.Server
	guest *fakeguest.Guest
	ch    *fakeguest.PipeChannel
}

type vmSpec struct {
	name          string
	qmp           *qmptest.Config
	policy        func(*engine.Policy)
	unplugTimeout time.Duration
	noGuest       bool
	blackBox      bool
	procRoot      string
}

func newRig(t *testing.T, budget int, specs ...vmSpec) *rig {
	t.Helper()
	r := &rig{t: t, path: filepath.Join(t.TempDir(), "events.jsonl"), done: make(chan struct{})}
	var err error
	if r.events, err = eventlog.Open(r.path); err != nil {
		t.Fatal(err)
	}
	var cfgs []VMConfig
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: testWriter{t}})
	for _, s := range specs {
		srv := qmptest.Start(t, s.qmp)
		v := &rigVM{name: s.name, qmp: srv, ch: fakeguest.NewPipeChannel()}
		v.guest = fakeguest.New(srv)
		p := fastPolicy()
		if s.policy != nil {
			s.policy(&p)
		}
		cfgs = append(cfgs, VMConfig{Name: s.name, Policy: p, Channel: v.ch, CommandTimeout: 5 * time.Second, RecheckInterval: 300 * time.Millisecond,
			BlackBox: s.blackBox, AgentTimeout: 300 * time.Millisecond, ProcRoot: s.procRoot,
			Hypervisor: hypervisor.NewQEMU(srv.Path(), hypervisor.QEMUOptions{UnplugTimeout: s.unplugTimeout, Logger: logger})})
		r.vms = append(r.vms, v)
	}
	if r.act, err = New(cfgs, r.events, budget, logger); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.act.Run(ctx); close(r.done) }()
	for i, v := range r.vms {
		if !specs[i].noGuest {
			go v.guest.Run(ctx, v.ch.Dial, interval)
		}
	}
	t.Cleanup(r.stop)
	return r
}

func (r *rig) stop() {
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		r.t.Error("actuator did not stop within 10 s")
	}
	r.events.Close()
}

// run starts act and guest's agent on ch, for tests that build their own
// actuator; the returned stop cancels both and waits for the actuator.
func run(act *Actuator, guest *fakeguest.Guest, ch *fakeguest.PipeChannel) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { act.Run(ctx); close(done) }()
	go guest.Run(ctx, ch.Dial, interval)
	return func() { cancel(); <-done }
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// waitFor polls cond for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rig) eventsOf(vm string) []eventlog.Event {
	evs, _, err := eventlog.ReadFile(r.path, eventlog.Filter{VM: vm})
	if err != nil {
		r.t.Fatal(err)
	}
	return evs
}

func stepNames(ev eventlog.Event) string {
	var names []string
	for _, s := range ev.Steps {
		names = append(names, s.Name)
	}
	return strings.Join(names, ",")
}

func TestScaleUpThenDown(t *testing.T) {
	// On fake time over an in-memory hypervisor: see memRig.
	synctest.Test(t, func(t *testing.T) {
		r := newMemRig(t, 0, memSpec{name: "vm1"})
		vm := r.vms[0]
		vm.guest.SetDemand(2) // two busy loops on one vCPU
		waitFor(t, 10*time.Second, "scale-up to 3 (ceil(2/0.7))", func() bool { return vm.hyp.Plugged() == 3 && vm.guest.OnlineCount() == 3 })

		vm.guest.SetDemand(0.05)
		waitFor(t, 15*time.Second, "scale-down to 1", func() bool { return vm.hyp.Plugged() == 1 && len(r.eventsOf(t, "vm1")) == 3 })
		if vm.guest.OnlineCount() != 1 {
			t.Fatalf("guest has %d online after scale-down", vm.guest.OnlineCount())
		}

		evs := r.eventsOf(t, "vm1")
		if len(evs) < 3 {
			t.Fatalf("want a scale-up and two scale-downs, got %+v", evs)
		}
		up := evs[0]
		if up.Kind != "scale_up" || up.From != 1 || up.To != 3 || up.Result != 3 || up.Outcome != eventlog.OutcomeOK ||
			up.Rule != engine.RuleHotspot || stepNames(up) != "plug,plug,online,confirm" {
			t.Fatalf("scale-up event: %+v", up)
		}
		if !strings.Contains(string(up.Signals), `"utilisation"`) || !strings.Contains(up.Reason, "samples above") {
			t.Fatalf("event lacks the signals behind it: %s / %s", up.Signals, up.Reason)
		}
		down := evs[len(evs)-1]
		if down.Kind != "scale_down" || down.Result != 1 || down.Outcome != eventlog.OutcomeOK || stepNames(down) != "offline,unplug" ||
			down.Rule != engine.RuleSustainedLow {
			t.Fatalf("last scale-down event: %+v", down)
		}
	})
}

// TestOnlineFailureRollsBack: a CPU the guest cannot online is unplugged
// again, never left plugged but offline.
func TestOnlineFailureRollsBack(t *testing.T) {
	// On fake time over an in-memory hypervisor: see memRig.
	synctest.Test(t, func(t *testing.T) {
		r := newMemRig(t, 0, memSpec{name: "vm1"})
		vm := r.vms[0]
		vm.guest.SetDemand(2)
		vm.guest.SetRefuseOnline(true)
		waitFor(t, 10*time.Second, "a rolled-back scale-up", func() bool {
			evs := r.eventsOf(t, "vm1")
			return len(evs) > 0 && evs[0].Outcome == eventlog.OutcomeRolledBack
		})
		ev := r.eventsOf(t, "vm1")[0]
		// Both CPUs of the batch are plugged and onlined in one command; each
		// is rolled back on its own.
		if stepNames(ev) != "plug,plug,online,rollback_unplug,rollback_unplug" || ev.Result != 1 || vm.hyp.Plugged() != 1 {
			t.Fatalf("rollback event %+v, plugged %d", ev, vm.hyp.Plugged())
		}
		if ev.Steps[2].OK || !strings.Contains(ev.Steps[2].Error, "input/output error") {
			t.Fatalf("online step should carry the guest's error: %+v", ev.Steps[2])
		}
		if st := r.act.VMs()[0].Status(); st.Degraded == "" {
			t.Fatal("VM not marked degraded after a failed action")
		}
	})
}

// TestUnplugTimeoutRollsBack: a guest that never completes the eject gets
// its CPU back online; the hypervisor's state is the judge.
func TestUnplugTimeoutRollsBack(t *testing.T) {
	r := newRig(t, 0, vmSpec{name: "vm1", qmp: &qmptest.Config{BootCPUs: 1}, unplugTimeout: time.Second})
	vm := r.vms[0]
	vm.guest.SetDemand(1.5)
	waitFor(t, 10*time.Second, "scale-up", func() bool {
		evs := r.eventsOf("vm1")
		return len(evs) == 1 && evs[0].Outcome == eventlog.OutcomeOK
	})
	before := vm.qmp.Plugged()
	vm.qmp.SetGuestIgnoresUnplug(true)
	vm.guest.SetDemand(0)
	waitFor(t, 15*time.Second, "a rolled-back scale-down", func() bool {
		for _, ev := range r.eventsOf("vm1") {
			if ev.Kind == "scale_down" && ev.Outcome == eventlog.OutcomeRolledBack {
				return true
			}
		}
		return false
	})
	var ev eventlog.Event
	for _, e := range r.eventsOf("vm1") {
		if e.Kind == "scale_down" {
			ev = e
		}
	}
	if stepNames(ev) != "offline,unplug,rollback_online" || !strings.Contains(ev.Steps[1].Error, "did not complete") {
		t.Fatalf("scale-down event %+v", ev)
	}
	if vm.qmp.Plugged() != before || vm.guest.OnlineCount() != before {
		t.Fatalf("after rollback: plugged %d, online %d, want both %d", vm.qmp.Plugged(), vm.guest.OnlineCount(), before)
	}
}

// TestGreedyGuestCappedByPolicyAndBudget: absurd demand never buys more
// than the policy max, and the host budget caps the sum over VMs.
func TestGreedyGuestCappedByPolicyAndBudget(t *testing.T) {
	// On fake time over an in-memory hypervisor: see memRig.
	synctest.Test(t, func(t *testing.T) {
		r := newMemRig(t, 5,
			memSpec{name: "greedy", policy: func(p *engine.Policy) { p.MaxVCPUs = 3 }},
			memSpec{name: "other"})
		for _, v := range r.vms {
			v.guest.SetDemand(5000) // 5,000 runnable tasks waiting
		}
		// Who gets the budget first is a race; that it is never exceeded is not.
		waitFor(t, 15*time.Second, "the budget to be used up", func() bool {
			return r.vms[0].hyp.Plugged()+r.vms[1].hyp.Plugged() == 5
		})
		time.Sleep(10 * interval)
		if g, o := r.vms[0].hyp.Plugged(), r.vms[1].hyp.Plugged(); g > 3 || g+o > 5 {
			t.Fatalf("greedy %d (max 3), total %d (budget 5)", g, g+o)
		}
	})
}

// TestReconcileOnConnect: a CPU plugged but offline (an actuator killed
// between plug and online) is onlined when the agent connects.
func TestReconcileOnConnect(t *testing.T) {
	// On fake time over an in-memory hypervisor: see memRig.
	synctest.Test(t, func(t *testing.T) {
		r := newMemRig(t, 0, memSpec{name: "vm1", boot: 2,
			policy: func(p *engine.Policy) { p.MinVCPUs = 2 }, noGuest: true})
		vm := r.vms[0]
		vm.guest.SetOnline(proto.NewCPUSet(0))
		vm.guest.SetDemand(1)
		vm.run()
		waitFor(t, 10*time.Second, "reconcile", func() bool { return vm.guest.OnlineCount() == 2 })
		evs := r.eventsOf(t, "vm1")
		if len(evs) == 0 || evs[0].Kind != "reconcile" || evs[0].Outcome != eventlog.OutcomeOK {
			t.Fatalf("events %+v", evs)
		}
	})
}

// TestBadGuestDoesNotHurtOthers: garbage on one VM's channel drops that
// connection; the other VM is scaled as usual, and a dead hypervisor on a
// third is reported without blocking anything.
func TestBadGuestDoesNotHurtOthers(t *testing.T) {
	r := newRig(t, 0, vmSpec{name: "good"}, vmSpec{name: "evil", noGuest: true}, vmSpec{name: "dead", noGuest: true})
	r.vms[2].qmp.Crash()
	r.vms[0].guest.SetDemand(2)

	evil := dialPipe(t, r.vms[1].ch)
	evil.SetDeadline(time.Now().Add(5 * time.Second))
	_, werr := evil.Write([]byte("GET / HTTP/1.1\r\n\r\n" + strings.Repeat("x", 70000)))
	buf := make([]byte, 1)
	_, rerr := evil.Read(buf)
	if werr == nil && rerr == nil {
		t.Fatal("actuator kept talking to a garbage-sending guest")
	}
	waitFor(t, 10*time.Second, "the good VM to scale up", func() bool { return r.vms[0].qmp.Plugged() == 3 })
	waitFor(t, 5*time.Second, "the dead hypervisor to be reported", func() bool { return !r.act.VMs()[2].Status().Reachable })
}

// TestHypervisorComesBack: a QEMU that disappears makes the VM unreachable;
// when it is back, the VM is scaled again without a restart.
func TestHypervisorComesBack(t *testing.T) {
	r := newRig(t, 0, vmSpec{name: "vm1"})
	vm := r.vms[0]
	path := vm.qmp.Path()
	vm.qmp.Crash()
	waitFor(t, 10*time.Second, "the VM to be marked unreachable", func() bool {
		vm.guest.SetDemand(2)
		return !r.act.VMs()[0].Status().Reachable
	})
	srv, err := qmptest.NewServer(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	vm.guest.SetQMP(srv)
	waitFor(t, 15*time.Second, "scale-up on the restarted QEMU", func() bool { return srv.Plugged() >= 2 })
}

// TestOversizedAndTruncatedFrames: the connection is dropped with a reason
// and the agent's next connection works.
func TestOversizedAndTruncatedFrames(t *testing.T) {
	for name, bad := range map[string][]byte{
		"just over the limit": {'H', 'P', 3, 0, 0, 4, 0, 1},
		"far over the limit":  {'H', 'P', 3, 0, 0xff, 0xff, 0xff, 0xff},
		"truncated":           {'H', 'P', 1, 0, 0, 0, 0, 50, 0x81},
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, 0, vmSpec{name: "vm1", noGuest: true})
			vm := r.vms[0]
			c := dialPipe(t, vm.ch)
			c.SetDeadline(time.Now().Add(15 * time.Second))
			c.Write(bad)
			if name == "truncated" {
				c.Close() // the rest never comes
			} else if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("connection still open after a bad frame")
			}
			// A well-behaved agent gets through afterwards.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			vm.guest.SetDemand(2)
			go vm.guest.Run(ctx, vm.ch.Dial, interval)
			waitFor(t, 15*time.Second, "scale-up after the bad connection", func() bool { return vm.qmp.Plugged() >= 2 })
		})
	}
}

func TestSampleOfCarriesRunQueueAndApps(t *testing.T) {
	r := &proto.Report{Seq: 1, IntervalNanos: int64(time.Second), Online: proto.NewCPUSet(0, 1),
		CPUs:     []proto.CPUStat{{CPU: 0, Busy: 0.5}, {CPU: 1, Busy: 0.25}, {CPU: 2, Busy: 1}},
		RunDelay: []proto.RunDelay{{CPU: 0, WaitNanos: 5e8}, {CPU: 1, WaitNanos: 2.5e8}},
		RunQueue: &proto.RunQueue{Source: proto.RunQSourceTPBTF, P50Nanos: 1e6, P95Nanos: 2e7, P99Nanos: 3e7},
		Apps:     []proto.AppStats{{Name: "web", Arrivals: 10, ArrivalRate: 10, ServiceMean: 0.01, SLAMean: 0.05}}}
	s := sampleOf(r, time.Now())
	// cpu2 is not online: its busy time is not counted.
	if s.Busy != 0.75 || s.Waiting != 0.75 || s.RunQP95 != 20*time.Millisecond || len(s.Apps) != 1 ||
		s.Apps[0].Rate != 10 || s.Apps[0].SLAMean != 0.05 || s.Online != 2 {
		t.Fatalf("sample %+v", s)
	}
}

// TestSignalsCarryStealAndMemory: the report's steal time (online CPUs
// only), memory and swap reach the status.
func TestSignalsCarryStealAndMemory(t *testing.T) {
	r := &proto.Report{Seq: 1, IntervalNanos: int64(time.Second), Online: proto.NewCPUSet(0, 1),
		CPUs:          []proto.CPUStat{{CPU: 0, Busy: 0.5, Steal: 0.1}, {CPU: 1, Busy: 0.25, Steal: 0.3}, {CPU: 2, Steal: 0.9}},
		MemTotalBytes: 4 << 30, MemAvailableBytes: 1 << 30, SwapInPerSec: 3, SwapOutPerSec: 7}
	g := signalsOf(r, sampleOf(r, time.Now()))
	if math.Abs(g.Steal-0.2) > 1e-6 || g.MemTotal != 4<<30 || g.MemAvailable != 1<<30 || g.SwapIn != 3 || g.SwapOut != 7 {
		t.Fatalf("signals %+v", g)
	}
}

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu        sync.Mutex
	reports   int
	decisions int
	events    []eventlog.Event
	rejected  map[string]int
}

func (r *recorder) Report(string, Status) { r.mu.Lock(); r.reports++; r.mu.Unlock() }
func (r *recorder) Decision(string, engine.Decision, time.Time) {
	r.mu.Lock()
	r.decisions++
	r.mu.Unlock()
}
func (r *recorder) Event(ev eventlog.Event, _ bool) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}
func (r *recorder) Rejected(_, reason string) {
	r.mu.Lock()
	if r.rejected == nil {
		r.rejected = map[string]int{}
	}
	r.rejected[reason]++
	r.mu.Unlock()
}

func TestOperatorControls(t *testing.T) {
	// On fake time over an in-memory hypervisor: see memRig.
	synctest.Test(t, func(t *testing.T) {
		r := newMemRig(t, 0, memSpec{name: "vm1"})
		vm, ctl := r.vms[0], r.act.VM("vm1")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()

		if err := ctl.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		vm.guest.SetDemand(2)
		waitFor(t, 5*time.Second, "a scale-up decision while paused", func() bool {
			st := ctl.Status()
			return st.Paused && st.LastDecision.Action == engine.ScaleUp
		})
		time.Sleep(5 * interval)
		if vm.hyp.Plugged() != 1 {
			t.Fatalf("paused VM was scaled: %d vCPUs", vm.hyp.Plugged())
		}
		if err := ctl.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "scale-up after resume", func() bool { return vm.hyp.Plugged() == 3 })

		// A manual target is clamped by the policy (max 4) and logged.
		if err := ctl.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		if err := ctl.SetVCPUs(ctx, 9); err != nil {
			t.Fatal(err)
		}
		if vm.hyp.Plugged() != 4 {
			t.Fatalf("set-vcpus 9 with max 4: %d vCPUs", vm.hyp.Plugged())
		}
		evs := r.eventsOf(t, "vm1")
		last := evs[len(evs)-1]
		if last.Rule != "manual" || last.Result != 4 || !strings.Contains(last.Reason, "clamped to 4") {
			t.Fatalf("manual event %+v", last)
		}

		// An invalid policy is refused with the field, and nothing changes.
		p := ctl.Status().Policy
		p.K = 99
		var fe *engine.FieldError
		if err := ctl.SetPolicy(ctx, p); !errors.As(err, &fe) || fe.Field != "k" {
			t.Fatalf("invalid policy: %v", err)
		}
		if ctl.Status().Policy.K == 99 {
			t.Fatal("invalid policy applied")
		}
		p.K, p.MaxVCPUs = 2, 2
		if err := ctl.SetPolicy(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := ctl.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the new max of 2 to be enforced", func() bool { return vm.hyp.Plugged() == 2 })
	})
}

func TestObserversAreTold(t *testing.T) {
	rec := &recorder{}
	path := filepath.Join(t.TempDir(), "events.jsonl")
	events, _ := eventlog.Open(path)
	defer events.Close()
	srv := qmptest.Start(t, nil)
	ch := fakeguest.NewPipeChannel()
	guest := fakeguest.New(srv)
	act, err := New([]VMConfig{{Name: "vm1", Policy: fastPolicy(), Channel: ch, Hypervisor: hypervisor.NewQEMU(srv.Path(), hypervisor.QEMUOptions{})}},
		events, 0, nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer run(act, guest, ch)()
	guest.SetDemand(2)
	waitFor(t, 10*time.Second, "an event", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.events) > 0 && rec.reports > 3 && rec.decisions > 3
	})
}

// TestTCGLifetimeLimitRefusesInsteadOfCrashing: QEMU under TCG aborts a VM
// that starts more than maxcpus vCPUs in its life. With 2 slots and one
// boot vCPU, one plug is allowed; after scaling down, the next scale-up is
// refused with a clear reason, and the VM survives.
func TestTCGLifetimeLimitRefusesInsteadOfCrashing(t *testing.T) {
	r := newRig(t, 0, vmSpec{name: "vm1", qmp: &qmptest.Config{MaxCPUs: 2, BootCPUs: 1}})
	vm := r.vms[0]
	vm.guest.SetDemand(2)
	waitFor(t, 10*time.Second, "the one allowed plug", func() bool { return vm.qmp.Plugged() == 2 })
	vm.guest.SetDemand(0.05)
	waitFor(t, 10*time.Second, "scale-down", func() bool { return vm.qmp.Plugged() == 1 })
	vm.guest.SetDemand(2)
	waitFor(t, 10*time.Second, "a refused scale-up", func() bool {
		for _, ev := range r.eventsOf("vm1") {
			if ev.Kind == "scale_up" && ev.Outcome == eventlog.OutcomeFailed {
				return strings.Contains(ev.Steps[0].Error, "at most maxcpus vCPUs in a VM's life") &&
					strings.Contains(ev.Steps[0].Error, "2 of 2 used")
			}
		}
		return false
	})
	if n := vm.qmp.Plugged(); n != 1 {
		t.Fatalf("plugged %d after the refusal", n)
	}
	if !r.act.VM("vm1").Status().Reachable {
		t.Fatal("the VM's QEMU is gone: the limit was not enforced")
	}
}

// TestRecoverInterruptedAction: an actuator killed between plug and online
// leaves a started line and a CPU plugged but offline. The next actuator
// onlines it when the agent connects and writes a recover line naming the
// interrupted action.
func TestRecoverInterruptedAction(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl")
	l, _ := eventlog.Open(path)
	started := &eventlog.Event{Time: time.Now().Add(-time.Minute), VM: "vm1", Kind: "scale_up", From: 1, To: 2, Result: 1,
		Rule: "hotspot", Outcome: eventlog.OutcomeStarted}
	l.Append(started)
	l.Close()

	srv := qmptest.Start(t, &qmptest.Config{BootCPUs: 2}) // the plug happened
	guest := fakeguest.New(srv)
	guest.SetOnline(proto.NewCPUSet(0)) // the online did not
	events, _ := eventlog.Open(path)
	defer events.Close()
	ch := fakeguest.NewPipeChannel()
	act, err := New([]VMConfig{{Name: "vm1", Policy: fastPolicy(), Channel: ch,
		Hypervisor: hypervisor.NewQEMU(srv.Path(), hypervisor.QEMUOptions{})}}, events, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer run(act, guest, ch)()
	waitFor(t, 10*time.Second, "the stray CPU onlined", func() bool { return guest.OnlineCount() == 2 })
	waitFor(t, 5*time.Second, "a recover line", func() bool {
		evs, _, _ := eventlog.ReadFile(path, eventlog.Filter{})
		for _, ev := range evs {
			if ev.Kind == "recover" && ev.Action == started.Seq && ev.Outcome == eventlog.OutcomeOK &&
				strings.Contains(ev.Reason, "actuator stopped during scale_up 1→2") && stepNames(ev) == "online" {
				return true
			}
		}
		return false
	})
	all, _, _ := eventlog.ReadFile(path, eventlog.Filter{WithStarted: true})
	if u := eventlog.Unfinished(all, "vm1"); len(u) != 0 {
		t.Fatalf("still unfinished after recovery: %+v", u)
	}
}

// TestNewHelloOnTheSameStream: on virtio-serial a restarted agent's Hello
// arrives on the connection the old one used; it starts a new session.
func TestNewHelloOnTheSameStream(t *testing.T) {
	r := newRig(t, 0, vmSpec{name: "vm1", noGuest: true})
	vm := r.vms[0]
	c := dialPipe(t, vm.ch)
	defer c.Close()
	w, rd := proto.NewWriter(c), proto.NewReader(c, 0)
	hello := &proto.Hello{MinVersion: 1, MaxVersion: 1, AgentVersion: "v1", Possible: proto.NewCPUSet(0, 1, 2, 3),
		Present: proto.NewCPUSet(0), Online: proto.NewCPUSet(0), IntervalNanos: int64(interval)}
	for _, version := range []string{"v1", "v2"} {
		hello.AgentVersion = version
		if err := w.Write(hello); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := rd.Next()
		if err != nil {
			t.Fatalf("%s: no Welcome: %v", version, err)
		}
		if wl, ok := m.(*proto.Welcome); !ok || wl.Error != "" {
			t.Fatalf("%s: %+v", version, m)
		}
		waitFor(t, 5*time.Second, "session of "+version, func() bool { return r.act.VM("vm1").Status().Agent.Version == version })
	}
}
