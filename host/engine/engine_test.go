package engine

import (
	"errors"
	"math"
	"testing"
	"time"

	"pgregory.net/rapid"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func testPolicy() Policy {
	p := DefaultPolicy()
	p.Interval = Duration(time.Second)
	p.MinVCPUs, p.MaxVCPUs = 1, 8
	p.K, p.N, p.Window = 3, 5, 10
	p.DownSamples = 4
	p.CooldownUp, p.CooldownDown = Duration(10*time.Second), Duration(20*time.Second)
	return p
}

// feed observes one sample per second with the given demands (busy only) at
// `online` vCPUs and returns the time of the last one.
func feed(e *Engine, start time.Time, online int, demands ...float64) time.Time {
	t := start
	for _, d := range demands {
		t = t.Add(time.Second)
		e.Observe(Sample{Time: t, Online: online, Busy: min(d, float64(online)), Waiting: max(0, d-float64(online))})
	}
	return t
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name       string
		policy     func(*Policy)
		current    int
		allowed    int
		lastAction time.Duration // before the first sample; 0 = never
		demands    []float64
		wait       time.Duration // between the last sample and the decision
		action     Action
		to         int
		rule       string
	}{
		{name: "warming up", current: 1, demands: []float64{1, 1, 1}, action: Hold, to: 1, rule: RuleNotEnough},
		{name: "hotspot sizes from the peak", current: 1, demands: []float64{0.1, 0.1, 2, 2, 2},
			action: ScaleUp, to: 3, rule: RuleHotspot}, // ceil(2/0.7)
		{name: "two of five is not a hotspot", current: 1, demands: []float64{0.1, 0.1, 0.1, 2, 2},
			action: Hold, to: 1, rule: RuleSteady},
		{name: "forecast below threshold vetoes", current: 2, demands: []float64{0.1, 0.1, 0.1, 0.1, 0.1, 2, 2, 2, 0.1, 0.1},
			action: Hold, to: 2, rule: RuleSteady},
		{name: "scale-up adds at least one", current: 2, demands: []float64{1.7, 1.7, 1.7, 1.7, 1.7},
			action: ScaleUp, to: 3, rule: RuleHotspot},
		{name: "cooldown after an action", current: 1, lastAction: -4 * time.Second, demands: []float64{2, 2, 2, 2, 2},
			action: Hold, to: 1, rule: RuleCooldown},
		{name: "cooldown over", current: 1, lastAction: -5 * time.Second, demands: []float64{2, 2, 2, 2, 2},
			action: ScaleUp, to: 3, rule: RuleHotspot},
		{name: "at the policy max", current: 8, demands: []float64{8, 8, 8, 8, 8}, action: Hold, to: 8, rule: RuleAtLimit},
		{name: "host budget limits", current: 1, allowed: 2, demands: []float64{4, 4, 4, 4, 4},
			action: ScaleUp, to: 2, rule: RuleBudget},
		{name: "sustained low removes one", current: 4, demands: []float64{0.5, 0.5, 0.5, 0.5, 0.5},
			action: ScaleDown, to: 3, rule: RuleSustainedLow},
		{name: "one vCPU of work at 4 still shrinks", current: 4, demands: []float64{1, 1, 1, 1, 1},
			action: ScaleDown, to: 3, rule: RuleSustainedLow}, // 1/3 < 0.5
		{name: "not when the smaller size would be too busy", current: 2, demands: []float64{0.6, 0.6, 0.6, 0.6, 0.6},
			action: Hold, to: 2, rule: RuleSteady}, // 0.6/1 ≥ 0.5
		{name: "one busy sample blocks scale-down", current: 4, demands: []float64{0.5, 0.5, 2, 0.5, 0.5},
			action: Hold, to: 4, rule: RuleSteady},
		{name: "scale-down cooldown", current: 4, lastAction: -1 * time.Second, demands: []float64{0.1, 0.1, 0.1, 0.1, 0.1},
			wait: 10 * time.Millisecond, action: Hold, to: 4, rule: RuleCooldown},
		{name: "never below min", policy: func(p *Policy) { p.MinVCPUs = 2 }, current: 2, demands: []float64{0, 0, 0, 0, 0},
			action: Hold, to: 2, rule: RuleSteady},
		{name: "below min", policy: func(p *Policy) { p.MinVCPUs = 2 }, current: 1, action: ScaleUp, to: 2, rule: RuleBelowMin},
		{name: "above max", current: 10, action: ScaleDown, to: 8, rule: RuleAboveMax},
		{name: "above what the host allows", current: 4, allowed: 3, action: ScaleDown, to: 3, rule: RuleAboveMax},
		{name: "stale samples", current: 1, demands: []float64{2, 2, 2, 2, 2}, wait: 4 * time.Second,
			action: Hold, to: 1, rule: RuleNoData},
		{name: "absurd demand is clamped to max", current: 1, demands: []float64{1e300, 1e300, 1e300, 1e300, 1e300},
			action: ScaleUp, to: 8, rule: RuleHotspot},
		{name: "NaN counts as zero", current: 4, demands: []float64{math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN()},
			action: ScaleDown, to: 3, rule: RuleSustainedLow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testPolicy()
			if tc.policy != nil {
				tc.policy(&p)
			}
			e, err := New(p)
			if err != nil {
				t.Fatal(err)
			}
			if tc.lastAction != 0 {
				e.Acted(t0.Add(tc.lastAction))
			}
			last := feed(e, t0, tc.current, tc.demands...)
			d := e.Decide(Input{Now: last.Add(tc.wait), Current: tc.current, Allowed: tc.allowed})
			if d.Action != tc.action || d.To != tc.to || d.Rule != tc.rule {
				t.Fatalf("got %v→%d (%s: %s), want %v→%d (%s)", d.Action, d.To, d.Rule, d.Reason, tc.action, tc.to, tc.rule)
			}
			if d.Reason == "" {
				t.Fatal("decision without a reason")
			}
		})
	}
}

// TestScaleDownWaitsForPostActionSamples: samples taken before the last action
// say nothing about the allocation that action made.
func TestScaleDownWaitsForPostActionSamples(t *testing.T) {
	e, _ := New(testPolicy())
	last := feed(e, t0, 4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
	e.Acted(last.Add(-2500 * time.Millisecond)) // after sample 3 of 6
	p := testPolicy()
	p.CooldownDown = 0
	_ = e.SetPolicy(p)
	if d := e.Decide(Input{Now: last, Current: 4}); d.Action != Hold {
		t.Fatalf("scaled down on only 3 post-action samples: %+v", d)
	}
	last = feed(e, last, 4, 0.1)
	if d := e.Decide(Input{Now: last, Current: 4}); d.Action != ScaleDown {
		t.Fatalf("4 post-action low samples should scale down: %+v", d)
	}
}

func TestObserveIgnoresOutOfOrder(t *testing.T) {
	e, _ := New(testPolicy())
	feed(e, t0, 1, 1, 1)
	e.Observe(Sample{Time: t0, Online: 1, Busy: 5}) // older than the newest
	if got := e.window(); len(got) != 2 || got[1].Busy != 1 {
		t.Fatalf("out-of-order sample accepted: %+v", got)
	}
}

// TestWindowAcrossMoves: the window is the last Window samples, oldest
// first, however many times its buffer has been moved to the front.
func TestWindowAcrossMoves(t *testing.T) {
	for _, w := range []int{1, 5, 24, 100} {
		p := testPolicy()
		p.Window, p.N, p.K, p.DownSamples = w, 1, 1, 1
		e, err := New(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3*(w+windowSlack(w)) + 7 {
			e.Observe(Sample{Time: t0.Add(time.Duration(i) * time.Second), Online: 1, Busy: float64(i)})
			got := e.window()
			if len(got) != min(i+1, w) {
				t.Fatalf("window %d after %d samples: %d long", w, i+1, len(got))
			}
			for j, x := range got {
				if want := float64(i + 1 - len(got) + j); x.Busy != want {
					t.Fatalf("window %d after %d samples: [%d] is sample %v, want %v", w, i+1, j, x.Busy, want)
				}
			}
		}
	}
}

func TestSetPolicyKeepsRecentSamples(t *testing.T) {
	e, _ := New(testPolicy())
	last := feed(e, t0, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 2, 2, 2)
	p := testPolicy()
	p.Window, p.N, p.K, p.DownSamples = 5, 5, 3, 3
	if err := e.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	if got := e.window(); len(got) != 5 || got[4].Demand() != 2 {
		t.Fatalf("recent after shrink: %+v", got)
	}
	if d := e.Decide(Input{Now: last, Current: 1}); d.Action != ScaleUp {
		t.Fatalf("policy change lost the hotspot: %+v", d)
	}
	p.K = 9
	if err := e.SetPolicy(p); err == nil {
		t.Fatal("invalid policy accepted")
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		field  string
		mutate func(*Policy)
	}{
		{"min_vcpus", func(p *Policy) { p.MinVCPUs = 0 }},
		{"max_vcpus", func(p *Policy) { p.MaxVCPUs = 0 }},
		{"interval", func(p *Policy) { p.Interval = 0 }},
		{"upper", func(p *Policy) { p.Upper = math.NaN() }},
		{"lower", func(p *Policy) { p.Lower = p.Upper }},
		{"target", func(p *Policy) { p.Target = p.Upper + 0.1 }},
		{"k", func(p *Policy) { p.K = p.N + 1 }},
		{"n", func(p *Policy) { p.N = 0 }},
		{"window", func(p *Policy) { p.Window = p.N - 1 }},
		{"percentile", func(p *Policy) { p.Percentile = 1.5 }},
		{"down_samples", func(p *Policy) { p.DownSamples = 0 }},
		{"cooldown_up", func(p *Policy) { p.CooldownUp = -1 }},
	}
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatalf("default policy invalid: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.field, func(t *testing.T) {
			p := DefaultPolicy()
			tc.mutate(&p)
			var fe *FieldError
			if err := p.Validate(); !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("got %v, want a FieldError on %s", err, tc.field)
			}
		})
	}
}

func TestAR1Forecast(t *testing.T) {
	tests := []struct {
		name   string
		x      []float64
		lo, hi float64
	}{
		{"constant", []float64{2, 2, 2, 2}, 2, 2},
		{"step up persists", []float64{0, 0, 0, 0, 0, 1, 1, 1}, 0.7, 1},
		{"alternating forecasts the mean", []float64{0, 1, 0, 1, 0, 1, 0, 1}, 0.45, 0.55},
		{"short series is its last value", []float64{3, 5}, 5, 5},
	}
	for _, tc := range tests {
		if got := ar1Forecast(tc.x); got < tc.lo || got > tc.hi {
			t.Errorf("%s: ar1Forecast(%v) = %v, want in [%v, %v]", tc.name, tc.x, got, tc.lo, tc.hi)
		}
	}
}

func TestPercentile(t *testing.T) {
	x := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, tc := range []struct{ p, want float64 }{{0.95, 10}, {0.9, 9}, {0.5, 5}, {0.01, 1}, {1, 10}} {
		if got := percentile(x, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if x[0] != 5 {
		t.Fatal("percentile sorted its input in place")
	}
}

// TestNeverLeavesBounds: in every mode, whatever the guest reports and
// however the clock and budget move, a decision stays within
// [min, min(max, allowed)].
func TestNeverLeavesBounds(t *testing.T) {
	for _, m := range []string{ModeSandpiper, ModeThreshold, ModeVPA, ModePredictive} {
		t.Run(m, func(t *testing.T) {
			rapid.Check(t, func(rt *rapid.T) {
				p := testPolicy()
				if m != ModeSandpiper {
					p.Mode = m
					p.K, p.N = 1, 1
				}
				p.MinVCPUs = rapid.IntRange(1, 4).Draw(rt, "min")
				p.MaxVCPUs = rapid.IntRange(p.MinVCPUs, 16).Draw(rt, "max")
				e, err := New(p)
				if err != nil {
					rt.Fatal(err)
				}
				current := rapid.IntRange(p.MinVCPUs, p.MaxVCPUs).Draw(rt, "current")
				now := t0
				steps := rapid.IntRange(1, 200).Draw(rt, "steps")
				for i := 0; i < steps; i++ {
					now = now.Add(time.Duration(rapid.Int64Range(1, 5e9).Draw(rt, "dt")))
					demand := rapid.Float64().Draw(rt, "demand") // any float: negative, huge, NaN, Inf
					e.Observe(Sample{Time: now, Online: current, Busy: demand, Waiting: rapid.Float64().Draw(rt, "wait")})
					allowed := rapid.IntRange(0, 20).Draw(rt, "allowed")
					d := e.Decide(Input{Now: now, Current: current, Allowed: allowed})
					hi := p.MaxVCPUs
					if allowed > 0 {
						hi = min(hi, allowed)
					}
					lo := min(p.MinVCPUs, hi)
					if d.Action == Hold {
						if d.To != current {
							rt.Fatalf("hold changed the target: %+v", d)
						}
						continue
					}
					if d.To < lo || d.To > hi {
						rt.Fatalf("decision %v→%d outside [%d, %d]: %s", d.Action, d.To, lo, hi, d.Reason)
					}
					if (d.Action == ScaleUp) != (d.To > current) {
						rt.Fatalf("action %v does not match %d→%d", d.Action, current, d.To)
					}
					current = d.To
					e.Acted(now)
				}
			})
		})
	}
}
