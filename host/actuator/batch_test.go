package actuator

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/qmp/qmptest"
)

// pausedAndConnected pauses ctl (so only operator targets act) once its
// agent has reported, and returns a context for the test's calls.
func pausedAndConnected(t *testing.T, ctl *VM) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if err := ctl.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the agent's first report", func() bool { return ctl.Status().Agent.Reports > 0 })
	return ctx
}

// TestBatchScaleUpFailingMiddleCPU: 1→4 plugs three slots and asks the
// guest once to online them; the guest cannot online the middle one
// (cpu2), which alone is unplugged again; the other two are confirmed.
func TestBatchScaleUpFailingMiddleCPU(t *testing.T) {
	r := newRig(t, 0, vmSpec{name: "vm1"})
	vm, ctl := r.vms[0], r.act.VM("vm1")
	ctx := pausedAndConnected(t, ctl)
	vm.guest.SetFailOnline(2)
	if err := ctl.SetVCPUs(ctx, 4); err == nil {
		t.Fatal("set-vcpus 4 reported success with a CPU that cannot come online")
	}
	ev := r.eventsOf("vm1")[len(r.eventsOf("vm1"))-1]
	if stepNames(ev) != "plug,plug,plug,online,rollback_unplug,confirm" || ev.Outcome != eventlog.OutcomePartial ||
		ev.From != 1 || ev.Result != 3 {
		t.Fatalf("event %+v", ev)
	}
	if got := vm.qmp.PluggedAPICIDs(); !slices.Equal(got, []int{0, 1, 3}) {
		t.Fatalf("plugged APIC ids %v, want the failing CPU 2 unplugged and 0, 1, 3 kept", got)
	}
	// One latency per vCPU kept, none for the one rolled back, each within
	// the action's duration.
	if len(ev.VCPULatencyMS) != 2 {
		t.Fatalf("latencies %v, want one for each of the two vCPUs kept", ev.VCPULatencyMS)
	}
	for _, l := range ev.VCPULatencyMS {
		if l <= 0 || l > ev.DurationMS {
			t.Fatalf("latency %v ms outside the action's %v ms", l, ev.DurationMS)
		}
	}
	if _, online := vm.guest.Sets(); online.String() != "0-1,3" && online.String() != "0,1,3" {
		t.Fatalf("guest online %s", online)
	}
	n := 0
	for _, c := range vm.guest.Commands() {
		if c.WantOnline > 0 {
			n++
			if c.WantOnline != 4 {
				t.Fatalf("online command %+v, want 4 CPUs online in one go", c)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d online commands for one batch, want 1", n)
	}
}

// TestBatchScaleDownFailingMiddleCPU: 4→1 asks the guest once to offline
// cpu1-3; cpu2 refuses and stays, the other two are unplugged.
func TestBatchScaleDownFailingMiddleCPU(t *testing.T) {
	r := newRig(t, 0, vmSpec{name: "vm1"})
	vm, ctl := r.vms[0], r.act.VM("vm1")
	ctx := pausedAndConnected(t, ctl)
	if err := ctl.SetVCPUs(ctx, 4); err != nil {
		t.Fatal(err)
	}
	vm.guest.SetFailOffline(2)
	if err := ctl.SetVCPUs(ctx, 1); err == nil {
		t.Fatal("set-vcpus 1 reported success with a CPU that cannot go offline")
	}
	evs := r.eventsOf("vm1")
	ev := evs[len(evs)-1]
	if stepNames(ev) != "offline,unplug,unplug" || ev.Outcome != eventlog.OutcomePartial || ev.From != 4 || ev.Result != 2 {
		t.Fatalf("event %+v", ev)
	}
	if got := vm.qmp.PluggedAPICIDs(); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("plugged APIC ids %v, want 0 and the refusing 2", got)
	}
	n := 0
	for _, c := range vm.guest.Commands() {
		if c.Offline.Len() > 0 {
			n++
			if c.Offline.String() != "1-3" {
				t.Fatalf("offline command %+v, want cpu1-3 in one go", c)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d offline commands for one batch, want 1", n)
	}
}

// TestBatchScaleDownUnplugFailureRollsBackThatCPU: one device_del of the
// batch fails; only that CPU is brought back online, on its own.
func TestBatchScaleDownUnplugFailureRollsBackThatCPU(t *testing.T) {
	r := newRig(t, 0, vmSpec{name: "vm1", unplugTimeout: time.Second})
	vm, ctl := r.vms[0], r.act.VM("vm1")
	ctx := pausedAndConnected(t, ctl)
	if err := ctl.SetVCPUs(ctx, 4); err != nil {
		t.Fatal(err)
	}
	vm.qmp.FailNext("device_del", "GenericError", "injected failure")
	if err := ctl.SetVCPUs(ctx, 1); err == nil {
		t.Fatal("set-vcpus 1 reported success with a failed unplug")
	}
	evs := r.eventsOf("vm1")
	ev := evs[len(evs)-1]
	if stepNames(ev) != "offline,unplug,unplug,unplug,rollback_online" || ev.Steps[1].OK || !ev.Steps[2].OK ||
		ev.Outcome != eventlog.OutcomePartial || ev.Result != 2 {
		t.Fatalf("event %+v", ev)
	}
	// The highest CPU is unplugged first: cpu3's failed and it is back.
	if got := vm.qmp.PluggedAPICIDs(); !slices.Equal(got, []int{0, 3}) {
		t.Fatalf("plugged APIC ids %v", got)
	}
	waitFor(t, 5*time.Second, "cpu3 online again", func() bool {
		_, online := vm.guest.Sets()
		return online.Has(3) && online.Len() == 2
	})
}

// TestConcurrentPolicyUpdates: updates applied on the VM goroutine, each
// to the policy in force, lose none of each other, even while an action
// waits for the agent.
func TestConcurrentPolicyUpdates(t *testing.T) {
	r := newRig(t, 0, vmSpec{name: "vm1"})
	vm, ctl := r.vms[0], r.act.VM("vm1")
	ctx := pausedAndConnected(t, ctl)
	vm.guest.SetCommandDelay(time.Second)
	done := make(chan error, 1)
	go func() { done <- ctl.SetVCPUs(ctx, 2) }()
	select {
	case <-vm.guest.Received():
	case <-ctx.Done():
		t.Fatal("no command reached the guest")
	}
	const n = 20
	// Each update adds a second to a cooldown (max_vcpus, the obvious
	// counter, is bounded by the VM's 4 slots).
	start := ctl.Status().Policy.CooldownUp
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := ctl.UpdatePolicy(ctx, func(p *engine.Policy) error { p.CooldownUp += engine.Duration(time.Second); return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-done:
		t.Fatalf("the action ended (%v) before the updates: they did not run while it waited", err)
	default:
	}
	if got := ctl.Status().Policy.CooldownUp; got != start+engine.Duration(n*time.Second) {
		t.Fatalf("cooldown_up %v after %d increments of 1 s from %v: updates lost", got, n, start)
	}
	// An invalid update is refused and changes nothing.
	if _, err := ctl.UpdatePolicy(ctx, func(p *engine.Policy) error { p.MaxVCPUs = 0; return nil }); err == nil {
		t.Fatal("invalid update accepted")
	}
	if got := ctl.Status().Policy.CooldownUp; got != start+engine.Duration(n*time.Second) {
		t.Fatalf("cooldown_up %v after a refused update", got)
	}
	// Beyond the VM's slots is refused, naming the field.
	for _, c := range []struct {
		field string
		set   func(*engine.Policy)
	}{{"max_vcpus", func(p *engine.Policy) { p.MaxVCPUs = 9 }}, {"min_vcpus", func(p *engine.Policy) { p.MinVCPUs, p.MaxVCPUs = 9, 9 }}} {
		_, err := ctl.UpdatePolicy(ctx, func(p *engine.Policy) error { c.set(p); return nil })
		var fe *engine.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(fe.Msg, "4 hot-plug slots") {
			t.Fatalf("%s beyond the 4 slots: %v, want an error naming %s", c.field, err, c.field)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestDecisionCarriesItsPolicy: the decision published with a report says
// which policy it was made under.
func TestDecisionCarriesItsPolicy(t *testing.T) {
	r := newRig(t, 0, vmSpec{name: "vm1", qmp: &qmptest.Config{}})
	ctl := r.act.VM("vm1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ctl.UpdatePolicy(ctx, func(p *engine.Policy) error { p.Upper = 0.85; return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a decision under the new policy", func() bool {
		st := ctl.Status()
		return !st.LastDecisionAt.IsZero() && st.LastDecision.Policy.Upper == 0.85
	})
}
