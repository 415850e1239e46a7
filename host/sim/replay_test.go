package sim

import (
	"math"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
)

// minuteTrace is a trace with one sample a minute.
func minuteTrace(requested int, demand ...float64) *Trace {
	t := &Trace{Name: "vm", Requested: requested, Interval: time.Minute, Demand: demand}
	for i := range demand {
		t.Time = append(t.Time, int64(i)*60000)
	}
	return t
}

func policyNamed(t *testing.T, name string) Policy {
	t.Helper()
	for _, p := range DefaultPolicies() {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no policy %s", name)
	return Policy{}
}

func TestBaselines(t *testing.T) {
	tr := minuteTrace(8, 0.2, 2.5, 9, 0)
	for _, tc := range []struct {
		b       Baseline
		alloc   []int
		actions int64
		over    int64 // ms
	}{
		{StaticRequested, []int{8, 8, 8, 8}, 0, 60000}, // 9 CPUs on 8 is overload even here
		{StaticPeak, []int{8, 8, 8, 8}, 0, 60000},
		{Oracle, []int{1, 3, 8, 1}, 3, 60000},
	} {
		var st vmStats
		var got []int
		replayBaseline(tr, tc.b, &st, nil, func(s Step) { got = append(got, s.Online) })
		want := int64(0)
		for i, a := range tc.alloc {
			want += int64(a) * 60000
			if got[i] != a {
				t.Fatalf("%s: allocations %v, want %v", tc.b, got, tc.alloc)
			}
		}
		if st.vcpuMs != want || st.actions != tc.actions || st.overMs != tc.over || st.timeMs != 240000 {
			t.Errorf("%s: %+v, want %d vCPU-ms, %d actions, %d ms overloaded", tc.b, st, want, tc.actions, tc.over)
		}
	}
	var st vmStats
	replayBaseline(minuteTrace(8, 0.5, 2.2, 1), StaticPeak, &st, nil, nil)
	if st.vcpuMs != 3*3*60000 {
		t.Errorf("static-peak of a 2.2 peak should hold 3 vCPUs, got %d vCPU-ms", st.vcpuMs)
	}
}

// TestReplayActuationDelay follows threshold through a jump by hand: the
// engine sees each minute at its end, a plug takes 10 s, and during those
// 10 s the old allocation holds.
func TestReplayActuationDelay(t *testing.T) {
	tr := minuteTrace(4, 0.5, 3, 3, 3, 3)
	p := Policy{Name: "threshold", Engine: ThresholdPolicy()}
	var st vmStats
	var shortfall float64
	var steps []Step
	replay(tr, p, Actuation{PlugTime: 10 * time.Second, UnplugTime: time.Second, Initial: 1}, &st,
		func(cpus float64, ms int64) { shortfall += cpus * float64(ms) },
		func(s Step) { steps = append(steps, s) })
	// Minute 0: 0.5 on 1 vCPU, fine. From minute 1: 3 CPUs.
	//   minute 1 on 1 vCPU: overloaded 60 s, short 2; ends above 80 % → +1
	//   minute 2: 10 s on 1 (short 2), 50 s on 2 (short 1); → +1
	//   minute 3: 10 s on 2 (short 1), 50 s on 3 (fits); 3 of 3 is above 80 % → +1
	//   minute 4: 10 s on 3, 50 s on 4; fits.
	wantAlloc := []float64{1, 1, (10*1 + 50*2) / 60.0, (10*2 + 50*3) / 60.0, (10*3 + 50*4) / 60.0}
	for i, s := range steps {
		if math.Abs(s.Allocated-wantAlloc[i]) > 1e-9 {
			t.Fatalf("minute %d: mean allocation %v, want %v", i, s.Allocated, wantAlloc[i])
		}
	}
	if want := int64(60+60+10) * 1000; st.overMs != want {
		t.Errorf("overloaded %d ms, want %d", st.overMs, want)
	}
	if want := float64(60*2+10*2+50*1+10*1) * 1000; math.Abs(shortfall-want) > 1e-6 {
		t.Errorf("shortfall %v CPU-ms, want %v", shortfall, want)
	}
	if want := int64(60*1+60*1+110+170+230) * 1000; st.vcpuMs != want {
		t.Errorf("%d vCPU-ms, want %d", st.vcpuMs, want)
	}
	if st.actions != 3 {
		t.Errorf("%d actions, want 3", st.actions)
	}
	for i, s := range steps {
		if s.Decision == nil {
			t.Fatalf("minute %d: no decision, but every action ended before the next sample", i)
		}
	}
}

// TestReplayNoDecisionWhileActing: an action longer than an interval keeps
// the engine from being asked until it is over, as in the actuator.
func TestReplayNoDecisionWhileActing(t *testing.T) {
	tr := minuteTrace(8, 6, 6, 6, 6, 6)
	p := Policy{Name: "predictive", Engine: PredictivePolicy()}
	// Without the pooled prior one sample of 6 CPUs asks for exactly 6.
	p.Engine.ForecastPrior = 0
	steps, err := Decisions(tr, p, Actuation{PlugTime: 30 * time.Second, Initial: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Minute 0 ends: 1 → 6, five plugs of 30 s, done 150 s later, within minute 3.
	if d := steps[0].Decision; d == nil || d.Action != engine.ScaleUp || d.To != 6 {
		t.Fatalf("first decision %+v, want scale_up to 6", d)
	}
	if steps[1].Decision != nil || steps[2].Decision != nil || steps[3].Decision == nil {
		t.Fatalf("decisions at minutes 1–3: %v %v %v; want none while plugging, then one", steps[1].Decision != nil, steps[2].Decision != nil, steps[3].Decision != nil)
	}
	if steps[1].Online != 3 || steps[2].Online != 5 || steps[3].Online != 6 {
		t.Fatalf("online at the end of minutes 1–3: %d %d %d, want 3 5 6", steps[1].Online, steps[2].Online, steps[3].Online)
	}
}

// TestReplayIsTheEngine: with instant actuation, the replay's decisions are
// exactly those of the engine driven by hand, sample by sample, as the
// actuator drives it — no second implementation of any rule.
func TestReplayIsTheEngine(t *testing.T) {
	tr := minuteTrace(8, 0.3, 0.4, 2.5, 3.9, 4.2, 1, 0.2, 0.2, 7.5, 0.1, 0.1, 0.1, 0.1, 2, 2, 2)
	for _, p := range DefaultPolicies() {
		if p.Baseline != "" {
			continue
		}
		steps, err := Decisions(tr, p, Actuation{Initial: 2})
		if err != nil {
			t.Fatal(err)
		}
		e, err := engine.New(vmPolicy(p.Engine, tr))
		if err != nil {
			t.Fatal(err)
		}
		current := 2
		for i, d := range tr.Demand {
			end := time.UnixMilli(tr.Time[i] + 60000)
			c := float64(current)
			e.Observe(engine.Sample{Time: end, Online: current, Busy: min(d, c), Waiting: max(0, d-c)})
			want := e.Decide(engine.Input{Now: end, Current: current})
			got := steps[i].Decision
			if got == nil || got.Action != want.Action || got.To != want.To || got.Rule != want.Rule || got.Reason != want.Reason {
				t.Fatalf("%s, minute %d: replay decided %+v, engine %+v", p.Name, i, got, want)
			}
			if want.Action != engine.Hold {
				current = want.To
				e.Acted(end)
			}
		}
	}
}

func TestVMPolicy(t *testing.T) {
	tr := minuteTrace(4, repeatF(1, 50)...)
	p := vmPolicy(VPAPolicy(), tr)
	if p.MaxVCPUs != 4 || p.Interval.D() != time.Minute || p.Window != 50 {
		t.Fatalf("max %d interval %v window %d, want 4, 1m, 50", p.MaxVCPUs, p.Interval, p.Window)
	}
	q := engine.DefaultPolicy()
	q.MinVCPUs = 6
	q.MaxVCPUs = 8
	if p := vmPolicy(q, tr); p.MinVCPUs != 4 || p.Window != 24 {
		t.Fatalf("min %d window %d, want the requested 4 and the untouched 24", p.MinVCPUs, p.Window)
	}
}

func repeatF(v float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}
