package engine

import (
	"math"
	"strings"
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
	// No prior: these tests work out the VM's own frequencies by hand;
	// the prior has tests of its own.
	p.ForecastPrior = 0
	return p
}

// priorPolicy is predictivePolicy with a pooled prior worth the given
// number of samples (one a second).
func priorPolicy(minGain float64, samples int) Policy {
	p := predictivePolicy(minGain)
	p.Window = 10000
	p.ForecastPrior = Duration(time.Duration(samples) * time.Second)
	return p
}

func TestForecastPriorTable(t *testing.T) {
	// A tail: P(next needs more than last + k) falls as k grows, from near
	// certain (k = −7) to rare (k = +7), and is a probability.
	p := ForecastPriorTable
	for i, v := range p {
		if !(v >= 0 && v <= 1) || (i > 0 && v > p[i-1]) {
			t.Fatalf("ForecastPriorTable is not a tail: %v", p)
		}
	}
	if k0 := len(p) / 2; !(p[0] > 0.5 && p[k0] < 0.5 && p[len(p)-1] < 0.01) {
		t.Fatalf("ForecastPriorTable %v: want > 50 %% at −7, < 50 %% at 0, < 1 %% at +7", p)
	}
}

func TestForecastNeedsPrior(t *testing.T) {
	// Three samples needing 1 vCPU, then one needing 5 (the newest): the
	// VM's own P(demand > a) is 1/4 for a = 1…4 and 0 for a = 5, 6. A
	// prior worth 2 samples pulls each towards the table at offset a − 1
	// from the median need, 1 — not from the newest sample's 5.
	var w []Sample
	for i, d := range []float64{0.5, 1, 0.7, 4.2} {
		w = append(w, Sample{Time: t0.Add(time.Duration(i) * time.Second), Busy: d})
	}
	above, _ := forecastNeeds(w, 1, 6, 1e12, 2)
	k0 := len(ForecastPriorTable) / 2
	for i, own := range []float64{0.25, 0.25, 0.25, 0.25, 0, 0} {
		a := i + 1
		want := (4*own + 2*ForecastPriorTable[k0+a-1]) / 6
		if math.Abs(above[i]-want) > 1e-12 {
			t.Fatalf("P(demand > %d) = %v, want %v", a, above[i], want)
		}
	}
	// Offsets beyond the table take its end values.
	above, _ = forecastNeeds(w[:1], 1, 20, 1e12, 1)
	if want := ForecastPriorTable[len(ForecastPriorTable)-1] / 2; math.Abs(above[19]-want) > 1e-12 {
		t.Fatalf("P(demand > 20) with the median needing 1 = %v, want the +7 end value halved, %v", above[19], want)
	}
}

// TestPredictivePriorEarlyHeadroom: one calm sample is no evidence that a
// VM never rises, so with the prior a new VM keeps vCPUs above its current
// level; once the VM has been calm for long, its own history wins and the
// headroom goes.
func TestPredictivePriorEarlyHeadroom(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prior   int // samples
		history int // samples at 1 CPU
		lo, hi  int // the size wanted
	}{
		{"no prior, one sample", 0, 1, 1, 1},
		{"prior, one sample", 3, 1, 2, 4},
		{"prior, long calm history", 3, 2000, 1, 1},
	} {
		e, err := New(priorPolicy(0.0145, tc.prior))
		if err != nil {
			t.Fatal(err)
		}
		now := feed(e, t0, 8, repeat(1, tc.history)...)
		d := e.Decide(Input{Now: now, Current: 8})
		if d.To < tc.lo || d.To > tc.hi {
			t.Errorf("%s: got %v→%d (%s), want %d to %d", tc.name, d.Action, d.To, d.Reason, tc.lo, tc.hi)
		}
		if tc.prior > 0 && !strings.Contains(d.Reason, "pooled prior worth 3s") {
			t.Errorf("%s: reason %q does not name the prior", tc.name, d.Reason)
		}
	}
}

func TestForecastNeeds(t *testing.T) {
	var w []Sample
	for i, d := range []float64{0.5, 0.5, 1.5, 2.5} {
		w = append(w, Sample{Time: t0.Add(time.Duration(i) * time.Second), Online: 2, Busy: min(d, 2), Waiting: max(0, d-2)})
	}
	above, mean := forecastNeeds(w, 1, 4, 1e12, 0)
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
	above, _ = forecastNeeds(w, 1, 2, 1e12, 0)
	if math.Abs(above[1]-0.25) > 1e-9 {
		t.Fatalf("P(demand > max=2) = %v, want 0.25", above[1])
	}
}

func TestForecastDecay(t *testing.T) {
	// Two samples a half-life apart: the older weighs half the newer.
	w := []Sample{{Time: t0, Busy: 3}, {Time: t0.Add(time.Hour), Busy: 0.5}}
	above, _ := forecastNeeds(w, 1, 4, 3600, 0)
	if math.Abs(above[0]-1.0/3) > 1e-9 {
		t.Fatalf("P(demand > 1) = %v, want 1/3", above[0])
	}
	// Irregular gaps: each pair is weighed by its own gap.
	w = []Sample{{Time: t0, Busy: 3}, {Time: t0.Add(time.Hour), Busy: 3}, {Time: t0.Add(3 * time.Hour), Busy: 0.5}}
	above, _ = forecastNeeds(w, 1, 4, 3600, 0)
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
		prior := rapid.IntRange(0, 100).Draw(rt, "prior samples")
		g2 := g1 * rapid.Float64Range(1, 20).Draw(rt, "factor")
		if g2 >= 1 {
			g2 = 0.999
		}
		size := func(g float64) int {
			e, err := New(priorPolicy(g, prior))
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
