package engine

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// accuracyRun feeds n one-second samples whose demand is high (1.5 CPUs)
// with probability pHigh(i) and low (0.5) otherwise, to a VM held at one
// vCPU, deciding after each; it returns the engine.
func accuracyRun(t *testing.T, p Policy, n int, pHigh func(i int) float64) *Engine {
	t.Helper()
	e, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	tm := t0
	for i := range n {
		tm = tm.Add(time.Second)
		d := 0.5
		if rng.Float64() < pHigh(i) {
			d = 1.5
		}
		e.Observe(Sample{Time: tm, Online: 1, Busy: min(d, 1), Waiting: max(0, d-1)})
		if got := e.Decide(Input{Now: tm, Current: 1}); got.To != 1 {
			t.Fatalf("sample %d: decided %d vCPUs with max 1", i, got.To)
		}
	}
	return e
}

func accuracyPolicy() Policy {
	p := testPolicy()
	p.MinVCPUs, p.MaxVCPUs = 1, 1
	p.Window, p.N, p.K, p.DownSamples = 120, 5, 3, 4
	p.ForecastPrior = 0
	return p
}

// A forecast that learns a stationary process is calibrated: overloads
// come as often as predicted.
func TestAccuracyCalibratedOnStationaryLoad(t *testing.T) {
	e := accuracyRun(t, accuracyPolicy(), 3000, func(int) float64 { return 0.1 })
	a := e.Accuracy()
	t.Logf("stationary: predicted %.3f observed %.3f calibration %.2f over %.0f intervals", a.Predicted, a.Observed, a.Calibration, a.Intervals)
	if math.Abs(a.Predicted-0.1) > 0.03 || math.Abs(a.Observed-0.1) > 0.03 {
		t.Errorf("predicted %.3f, observed %.3f; want both near 0.1", a.Predicted, a.Observed)
	}
	if a.Calibration < 0.7 || a.Calibration > 1.3 {
		t.Errorf("calibration %.2f on a stationary load; want about 1", a.Calibration)
	}
	if !math.IsNaN(a.SLACompliance) || a.SLAIntervals != 0 {
		t.Errorf("SLA compliance %v over %v intervals without any SLA; want NaN over 0", a.SLACompliance, a.SLAIntervals)
	}
}

// When the load changes faster than the forecast learns (a long
// half-life, then a step from 2 % to 60 % overloads), the VM is
// overloaded far more often than predicted, and the ratio says so.
func TestAccuracyMiscalibratedAfterStep(t *testing.T) {
	p := accuracyPolicy()
	p.Window = 3600
	e := accuracyRun(t, p, 3600+600, func(i int) float64 {
		if i < 3600 {
			return 0.02
		}
		return 0.6
	})
	a := e.Accuracy()
	t.Logf("after the step: predicted %.3f observed %.3f calibration %.2f", a.Predicted, a.Observed, a.Calibration)
	if !(a.Calibration > 2) {
		t.Errorf("calibration %.2f (predicted %.3f, observed %.3f) ten minutes after the load stepped up; want above 2",
			a.Calibration, a.Predicted, a.Observed)
	}
}

func TestAccuracyNeedsEnoughIntervals(t *testing.T) {
	e := accuracyRun(t, accuracyPolicy(), minAccuracyWeight-10, func(int) float64 { return 0.5 })
	if a := e.Accuracy(); !math.IsNaN(a.Calibration) || a.Intervals < 50 {
		t.Errorf("after %d intervals: calibration %v over %.0f intervals; want NaN (too few) over about %d",
			minAccuracyWeight-10, a.Calibration, a.Intervals, minAccuracyWeight-11)
	}
}

// SLA compliance counts intervals with requests in which no application
// broke its SLA; idle intervals do not count either way.
func TestAccuracySLACompliance(t *testing.T) {
	e, err := New(testPolicy())
	if err != nil {
		t.Fatal(err)
	}
	tm := t0
	for i := range 400 {
		tm = tm.Add(time.Second)
		web := AppSample{Name: "web", Arrivals: 10, RespP95: 0.1, SLAPercentile: 0.95, SLATarget: 0.25}
		switch i % 4 {
		case 0:
			web.RespP95 = 0.4 // broken
		case 1:
			web.Arrivals, web.RespP95 = 0, 0 // idle: not counted
		}
		e.Observe(Sample{Time: tm, Online: 1, Busy: 0.2, Apps: []AppSample{web, {Name: "batch", Arrivals: 5}}})
	}
	a := e.Accuracy()
	if want := 2.0 / 3; math.Abs(a.SLACompliance-want) > 0.01 {
		t.Errorf("SLA compliance %.3f; want %.3f (one interval in three with requests broke it)", a.SLACompliance, want)
	}
	if a.SLAIntervals < 250 || a.SLAIntervals > 300 {
		t.Errorf("%.0f SLA intervals; want the 300 with requests, decayed over 400 s", a.SLAIntervals)
	}
}

// Deciding does not change what the next decision is, only records the
// prediction: two Decide calls in a row agree.
func TestDecideCarriesOverloadRisk(t *testing.T) {
	e, err := New(testPolicy())
	if err != nil {
		t.Fatal(err)
	}
	last := feed(e, t0, 1, 0.5, 0.5, 1.5, 0.5, 0.5, 0.5, 1.5, 0.5)
	d1 := e.Decide(Input{Now: last, Current: 1})
	d2 := e.Decide(Input{Now: last, Current: 1})
	if d1.Evidence.OverloadRisk <= 0 || d1.Evidence.OverloadRisk >= 1 {
		t.Errorf("overload risk %v at %d vCPUs with two of eight samples above; want in (0, 1)", d1.Evidence.OverloadRisk, d1.To)
	}
	if d1.To != d2.To || d1.Evidence.OverloadRisk != d2.Evidence.OverloadRisk {
		t.Errorf("two decisions in a row differ: %+v then %+v", d1, d2)
	}
}
