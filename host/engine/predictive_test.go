package engine

import (
	"math"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func predictivePolicy(minGain float64) Policy {
	p := testPolicy()
	p.Mode = ModePredictive
	p.K, p.N, p.Window = 1, 1, 100
	p.CooldownUp, p.CooldownDown = 0, 0
	// A half-life far beyond the window: every sample counts the same.
	p.ForecastHalfLife, p.MinGain = Duration(1000*time.Hour), minGain
	return p
}

func TestForecastNeeds(t *testing.T) {
	var w []Sample
	for i, d := range []float64{0.5, 0.5, 1.5, 2.5} {
		w = append(w, Sample{Time: t0.Add(time.Duration(i) * time.Second), Online: 2, Busy: min(d, 2), Waiting: max(0, d-2)})
	}
	above, mean := forecastNeeds(w, 1, 4, 1e12)
	want := []float64{0.5, 0.25, 0, 0} // P(demand > 1, 2, 3, 4 vCPUs)
	for i := range want {
		if math.Abs(above[i]-want[i]) > 1e-9 {
			t.Fatalf("P(demand > a) for a = 1…4: %v, want %v", above, want)
		}
	}
	if math.Abs(mean-1.25) > 1e-9 {
		t.Fatalf("mean %v, want 1.25", mean)
	}
	// A sample needing more than the maximum still counts as overload at
	// the maximum.
	above, _ = forecastNeeds(w, 1, 2, 1e12)
	if math.Abs(above[1]-0.25) > 1e-9 {
		t.Fatalf("P(demand > max=2) = %v, want 0.25", above[1])
	}
}

func TestForecastDecay(t *testing.T) {
	// Two samples a half-life apart: the older weighs half the newer.
	w := []Sample{{Time: t0, Busy: 3}, {Time: t0.Add(time.Hour), Busy: 0.5}}
	above, _ := forecastNeeds(w, 1, 4, 3600)
	if math.Abs(above[0]-1.0/3) > 1e-9 {
		t.Fatalf("P(demand > 1) = %v, want 1/3", above[0])
	}
	// Irregular gaps: each pair is weighed by its own gap.
	w = []Sample{{Time: t0, Busy: 3}, {Time: t0.Add(time.Hour), Busy: 3}, {Time: t0.Add(3 * time.Hour), Busy: 0.5}}
	above, _ = forecastNeeds(w, 1, 4, 3600)
	if want := (0.25 + 0.125) / (1 + 0.25 + 0.125); math.Abs(above[0]-want) > 1e-9 {
		t.Fatalf("P(demand > 1) = %v, want %v", above[0], want)
	}
}

func TestPredictive(t *testing.T) {
	// Demand of 0.5, 0.5, 1.5 and 2.5 CPUs: P(demand > a) is 1/2, 1/4, 0, 0
	// for a = 1…4. The cost P + MinGain × a is least at 3 vCPUs for
	// MinGain 0.1, and at 1 vCPU for MinGain 0.3: two extra vCPUs would buy
	// only half a chance of overload.
	demands := []float64{0.5, 0.5, 1.5, 2.5}
	for _, tc := range []struct {
		gain    float64
		current int
		action  Action
		to      int
	}{
		{0.1, 1, ScaleUp, 3},
		{0.1, 8, ScaleDown, 3}, // straight down, not one at a time
		{0.1, 3, Hold, 3},
		{0.3, 4, ScaleDown, 1},
		// Around 0.25 sizes 1, 2 and 3 all cost about 0.75: just below, the
		// third vCPU is worth its price with the second; just above, neither.
		{0.24, 1, ScaleUp, 3},
		{0.26, 3, ScaleDown, 1},
	} {
		e, _ := New(predictivePolicy(tc.gain))
		now := feed(e, t0, tc.current, demands...)
		d := e.Decide(Input{Now: now, Current: tc.current})
		if d.Action != tc.action || d.To != tc.to {
			t.Errorf("min_gain %v at %d: got %v→%d (%s), want %v→%d", tc.gain, tc.current, d.Action, d.To, d.Reason, tc.action, tc.to)
		}
	}
}

// TestPredictiveSpikesAndPeaks: a rare spike is not worth eight vCPUs, a
// regular peak is worth its vCPUs.
func TestPredictiveSpikesAndPeaks(t *testing.T) {
	spiky := repeat(0.5, 49)
	spiky[20] = 7.9 // one interval in fifty
	peaks := repeat(0.5, 50)
	for i := 0; i < 50; i += 5 {
		peaks[i] = 3.5 // one in five
	}
	for _, tc := range []struct {
		name    string
		demands []float64
		want    int
	}{
		{"spiky", spiky, 1},
		{"regular peaks", peaks, 4},
	} {
		e, _ := New(predictivePolicy(0.011))
		now := feed(e, t0, 1, tc.demands...)
		if d := e.Decide(Input{Now: now, Current: 1}); d.To != tc.want {
			t.Errorf("%s: got %v→%d (%s), want %d", tc.name, d.Action, d.To, d.Reason, tc.want)
		}
	}
}

// TestPredictiveSeesWaiting: a VM held at 1 vCPU with 3 CPUs of demand
// shows it through the waiting tasks, and gets the 3.
func TestPredictiveSeesWaiting(t *testing.T) {
	e, _ := New(predictivePolicy(0.011))
	now := feed(e, t0, 1, repeat(3, 10)...)
	if d := e.Decide(Input{Now: now, Current: 1}); d.Action != ScaleUp || d.To != 3 || d.Rule != RuleForecast {
		t.Fatalf("got %v→%d %s (%s), want scale_up to 3 (forecast)", d.Action, d.To, d.Rule, d.Reason)
	}
}

// TestPredictiveMinGainMonotone: asking a vCPU to buy more (a larger
// MinGain) never yields more vCPUs, on any history.
func TestPredictiveMinGainMonotone(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		demands := rapid.SliceOfN(rapid.Float64Range(0, 10), 1, 60).Draw(rt, "demands")
		g1 := rapid.Float64Range(0.001, 0.5).Draw(rt, "gain")
		g2 := g1 * rapid.Float64Range(1, 20).Draw(rt, "factor")
		if g2 >= 1 {
			g2 = 0.999
		}
		size := func(g float64) int {
			e, err := New(predictivePolicy(g))
			if err != nil {
				rt.Fatal(err)
			}
			now := feed(e, t0, 4, demands...)
			return e.Decide(Input{Now: now, Current: 4}).To
		}
		if a, b := size(g1), size(g2); b > a {
			rt.Fatalf("min_gain %v gives %d vCPUs but the larger %v gives %d", g1, a, g2, b)
		}
	})
}

// TestNewModesNeverLeaveBounds repeats the engine's bounds property for the
// modes added here: whatever the samples, a decision stays in [min, hi].
func TestNewModesNeverLeaveBounds(t *testing.T) {
	for _, m := range []string{ModeThreshold, ModeVPA, ModePredictive} {
		t.Run(m, func(t *testing.T) {
			rapid.Check(t, func(rt *rapid.T) {
				p := testPolicy()
				p.Mode = m
				p.K, p.N = 1, 1
				p.MinVCPUs = rapid.IntRange(1, 4).Draw(rt, "min")
				p.MaxVCPUs = rapid.IntRange(p.MinVCPUs, 16).Draw(rt, "max")
				e, err := New(p)
				if err != nil {
					rt.Fatal(err)
				}
				current := rapid.IntRange(p.MinVCPUs, p.MaxVCPUs).Draw(rt, "current")
				now := t0
				for range rapid.IntRange(1, 100).Draw(rt, "steps") {
					now = now.Add(time.Duration(rapid.Int64Range(1, 5e9).Draw(rt, "dt")))
					e.Observe(Sample{Time: now, Online: current, Busy: rapid.Float64().Draw(rt, "busy"), Waiting: rapid.Float64().Draw(rt, "wait")})
					allowed := rapid.IntRange(0, 20).Draw(rt, "allowed")
					d := e.Decide(Input{Now: now, Current: current, Allowed: allowed})
					hi := p.MaxVCPUs
					if allowed > 0 {
						hi = min(hi, allowed)
					}
					if d.Action != Hold && (d.To < min(p.MinVCPUs, hi) || d.To > hi) {
						rt.Fatalf("%v→%d outside [%d, %d]: %s", d.Action, d.To, min(p.MinVCPUs, hi), hi, d.Reason)
					}
					if d.Action != Hold {
						current = d.To
						e.Acted(now)
					}
				}
			})
		})
	}
}
