package integration_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/integration/stack"
)

// TestEndToEnd boots a real guest with the agent, runs the actuator binary,
// loads the guest with two CPU burners and checks that vCPUs are plugged and
// onlined, then removed once the load stops — in the guest, in QEMU and in
// the event log.
func TestEndToEnd(t *testing.T) {
	ctx, s, dir := startStack(t, stack.Options{Dashboard: true})

	// Idle first: the actuator must leave a quiet guest at its minimum.
	waitState(ctx, t, s, 60*time.Second, "agent connected, guest idle at 1 vCPU", func(online, plugged int) bool {
		return online == 1 && plugged == 1 && strings.Contains(readFile(filepath.Join(dir, "actuator.log")), "agent connected")
	})
	checkDashboardURL(ctx, t, s)
	// Reaction is measured from a warmed-up engine: the idle check above
	// passes as soon as the agent connects, before n intervals of samples.
	c := api.NewTCPClient(s.APIBase, s.APIToken)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(250 * time.Millisecond) {
		v, err := c.VM(ctx, "guest")
		if err == nil && !v.LastDecisionAt.IsZero() && v.LastDecision.Rule != engine.RuleNotEnough && v.LastDecision.Rule != engine.RuleNoData {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the engine did not warm up within a minute: %+v, %v", v.LastDecision, err)
		}
	}

	loadStart := time.Now()
	if err := s.StartLoad(ctx, 2); err != nil {
		t.Fatal(err)
	}
	var sawOnline, sawAll time.Time
	maxSeen := 1
	waitState(ctx, t, s, 3*time.Minute, "≥2 vCPUs online in the guest and plugged in QEMU", func(online, plugged int) bool {
		if online >= 2 && sawOnline.IsZero() {
			sawOnline = time.Now()
		}
		if online > maxSeen {
			maxSeen, sawAll = online, time.Now()
		}
		return online >= 2 && plugged == online && hasEvent(s, "scale_up")
	})
	up := firstEvent(t, s, "scale_up")
	for maxSeen < up.Result { // the rest of the batch, if the first look came mid-way
		waitState(ctx, t, s, time.Minute, "the whole first scale-up online", func(online, _ int) bool {
			if online > maxSeen {
				maxSeen, sawAll = online, time.Now()
			}
			return online >= up.Result
		})
	}
	// The guest's agent armed its PSI trigger (Debian's kernel allows it)
	// and sampled fast under the load.
	if !strings.Contains(readFile(s.VM.ConsoleLog()), "CPU pressure: sampling at the fast interval") {
		t.Errorf("the agent never switched to its fast interval under load; console:\n%s", tail(readFile(s.VM.ConsoleLog()), 3000))
	}
	if up.Outcome != eventlog.OutcomeOK || up.Reason == "" || up.Rule != "hotspot" || up.Result < 2 {
		t.Fatalf("scale-up event: %+v", up)
	}

	// Let the allocation settle under load, then stop it.
	time.Sleep(5 * time.Second)
	loadStop := time.Now()
	if err := s.StopLoad(ctx); err != nil {
		t.Fatal(err)
	}
	var sawRemoved time.Time
	waitState(ctx, t, s, 3*time.Minute, "back to 1 vCPU in the guest and in QEMU", func(online, plugged int) bool {
		if sawRemoved.IsZero() && online < up.Result {
			sawRemoved = time.Now()
		}
		return online == 1 && plugged == 1 && hasEvent(s, "scale_down")
	})
	down := firstEvent(t, s, "scale_down")
	if down.Outcome != eventlog.OutcomeOK || down.Reason == "" || down.Rule != "sustained-low" {
		t.Fatalf("scale-down event: %+v", down)
	}
	evs := mustEvents(t, s)
	for _, ev := range evs {
		if ev.Outcome != eventlog.OutcomeOK {
			t.Errorf("event with outcome %s: %+v", ev.Outcome, ev)
		}
	}

	// The figures the issue asks for. Decision time is the event's time;
	// step durations are the actuator's own measurements; "observed" is
	// this test seeing the change through the guest's sysfs.
	t.Logf("reaction: load start → first new vCPU online (observed) %v, → all %d target vCPUs online %v (polled every 100 ms); decision: %s; evidence %s",
		sawOnline.Sub(loadStart).Round(10*time.Millisecond), up.Result, sawAll.Sub(loadStart).Round(10*time.Millisecond), up.Reason, up.Signals)
	t.Logf("scale-up: load start → plug decision %v; decision → CPU online in guest %v (plug %.0f ms, online %.0f ms, confirm %.0f ms); load start → observed online %v; %d → %d vCPUs",
		up.Time.Sub(loadStart).Round(10*time.Millisecond), stepsUntil(up, "online"),
		stepMS(up, "plug"), stepMS(up, "online"), stepMS(up, "confirm"), sawOnline.Sub(loadStart).Round(10*time.Millisecond), up.From, up.Result)
	t.Logf("scale-down: load stop → first unplug decision %v; decision → CPU unplugged %v (offline %.0f ms, unplug %.0f ms); load stop → observed removal %v; %d scale-down events to reach 1",
		down.Time.Sub(loadStop).Round(10*time.Millisecond), stepsUntil(down, "unplug"),
		stepMS(down, "offline"), stepMS(down, "unplug"), sawRemoved.Sub(loadStop).Round(10*time.Millisecond), countKind(evs, "scale_down"))
}

// startStack boots the guest and starts the actuator for one test; on
// failure the actuator's log and the guest console are printed.
func startStack(t *testing.T, opts stack.Options) (context.Context, *stack.Stack, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a QEMU guest; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	opts.Dir, opts.Logf = t.TempDir(), t.Logf
	s, err := stack.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			dumpFile(t, filepath.Join(opts.Dir, "actuator.log"), 60)
			t.Logf("guest console tail:\n%s", s.VM.ConsoleTail(60))
		}
	})
	return ctx, s, opts.Dir
}

// waitState polls the guest and QEMU until cond holds, ten times a second.
func waitState(ctx context.Context, t *testing.T, s *stack.Stack, d time.Duration, what string, cond func(online, plugged int) bool) {
	t.Helper()
	waitStateEvery(ctx, t, s, d, 100*time.Millisecond, what, cond)
}

// waitStateEvery is waitState polling every `every`. Each poll is a command
// in the guest: a black-box test, which measures the guest's CPU from the
// host, must poll slowly or its own polling keeps a vCPU busy.
func waitStateEvery(ctx context.Context, t *testing.T, s *stack.Stack, d, every time.Duration, what string, cond func(online, plugged int) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	var online, plugged int
	for {
		select {
		case err := <-s.ActuatorExited():
			t.Fatalf("actuator exited while waiting for %s: %v", what, err)
		default:
		}
		set, err := s.GuestOnline(ctx)
		if err != nil {
			t.Fatal(err)
		}
		online = set.Len()
		if plugged, err = s.QEMUPlugged(ctx); err != nil {
			t.Fatal(err)
		}
		if cond(online, plugged) {
			return
		}
		if time.Now().After(deadline) {
			evs, _ := s.Events()
			t.Fatalf("after %v: still waiting for %s (guest online %d, QEMU plugged %d); events: %+v", d, what, online, plugged, evs)
		}
		time.Sleep(every)
	}
}

func mustEvents(t *testing.T, s *stack.Stack) []eventlog.Event {
	t.Helper()
	evs, err := s.Events()
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func firstEvent(t *testing.T, s *stack.Stack, kind string) eventlog.Event {
	t.Helper()
	evs, err := s.Events()
	if err != nil {
		t.Fatal(err)
	}
	return firstOfKind(t, evs, kind, fmt.Sprintf("the log: %+v", evs))
}

// firstOfKind returns the first of evs of kind, and fails the test naming
// where evs came from if there is none.
func firstOfKind(t *testing.T, evs []eventlog.Event, kind, where string) eventlog.Event {
	t.Helper()
	for _, ev := range evs {
		if ev.Kind == kind {
			return ev
		}
	}
	t.Fatalf("no %s event in %s", kind, where)
	return eventlog.Event{}
}

// hasEvent reports whether an event of kind is committed; the actuator
// writes it after the last step, a moment after the guest shows the change.
func hasEvent(s *stack.Stack, kind string) bool {
	evs, _ := s.Events()
	return countKind(evs, kind) > 0
}

func countKind(evs []eventlog.Event, kind string) int {
	n := 0
	for _, ev := range evs {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func stepMS(ev eventlog.Event, name string) float64 {
	for _, s := range ev.Steps {
		if s.Name == name {
			return s.DurationMS
		}
	}
	return -1
}

// stepsUntil sums step durations up to and including the first step named
// name: the time from the decision to that step's completion.
func stepsUntil(ev eventlog.Event, name string) time.Duration {
	var ms float64
	for _, s := range ev.Steps {
		ms += s.DurationMS
		if s.Name == name {
			break
		}
	}
	return time.Duration(ms * float64(time.Millisecond)).Round(time.Millisecond)
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func dumpFile(t *testing.T, p string, lines int) {
	all := strings.Split(strings.TrimRight(readFile(p), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	t.Logf("%s (last %d lines):\n%s", p, len(all), strings.Join(all, "\n"))
}

// TestRepeatedCycles runs three busy/idle cycles: plugging again after
// unplugging is the product's everyday life. Under TCG, QEMU (10.0 and
// earlier) gives each vCPU thread it ever starts a TCG context and never
// returns it, and aborts once maxcpus contexts were used ("tcg_register_thread:
// assertion failed: (n < tcg_max_ctxs)"); this guest therefore has 16 slots
// for a policy maximum of 3, so the cycles below stay within QEMU's limit.
func TestRepeatedCycles(t *testing.T) {
	policy := strings.Replace(stack.DefaultPolicy, "max_vcpus = 4", "max_vcpus = 3", 1)
	ctx, s, _ := startStack(t, stack.Options{MaxCPUs: 16, Policy: policy})
	for cycle := 1; cycle <= 3; cycle++ {
		if err := s.StartLoad(ctx, 2); err != nil {
			t.Fatal(err)
		}
		waitState(ctx, t, s, 3*time.Minute, "scale-up", func(online, plugged int) bool {
			return online >= 2 && plugged == online && countKind(mustEvents(t, s), "scale_up") >= cycle
		})
		if err := s.StopLoad(ctx); err != nil {
			t.Fatal(err)
		}
		waitState(ctx, t, s, 3*time.Minute, "scale-down to 1", func(online, plugged int) bool {
			return online == 1 && plugged == 1
		})
		t.Logf("cycle %d done", cycle)
	}
	for _, ev := range mustEvents(t, s) {
		if ev.Outcome != eventlog.OutcomeOK {
			t.Errorf("event with outcome %s: %+v", ev.Outcome, ev)
		}
	}
}

// checkDashboardURL: the demo's link serves the dashboard, and the token it
// carries opens the API over TCP (the page itself is tested in a browser in
// host/api).
func checkDashboardURL(ctx context.Context, t *testing.T, s *stack.Stack) {
	t.Helper()
	u := s.DashboardURL()
	if !strings.HasPrefix(u, "http://127.0.0.1:") || !strings.Contains(u, "/#token="+s.APIToken) {
		t.Fatalf("dashboard URL %q: want a loopback URL with the token in its fragment", u)
	}
	resp, err := http.Get(u) // the client drops the fragment, as a browser does
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "<html") {
		t.Fatalf("GET %s: %s\n%.300s", s.APIBase, resp.Status, page)
	}
	vms, err := api.NewTCPClient(s.APIBase, s.APIToken).VMs(ctx)
	if err != nil || len(vms.VMs) != 1 {
		t.Fatalf("the link's token on the TCP API: %+v, %v", vms, err)
	}
	if _, err := api.NewTCPClient(s.APIBase, "not-the-token-0123456789").VMs(ctx); err == nil {
		t.Fatal("the TCP API answered a wrong token")
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
