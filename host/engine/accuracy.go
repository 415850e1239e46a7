package engine

import (
	"math"
	"time"
)

// AccuracyHalfLife is the horizon over which forecasts are judged: every
// measurement counts 2^(−age ÷ AccuracyHalfLife). An hour is long enough
// for overloads, which a well-sized VM sees in a few intervals an hour, to
// be counted at all, and short enough that a forecast gone wrong today is
// not hidden by a good week.
const AccuracyHalfLife = time.Hour

// minAccuracyWeight is the decayed number of intervals below which the
// calibration ratio is not given: with fewer, one overload more or less
// moves it by a factor.
const minAccuracyWeight = 100

// Accuracy says how well a VM's forecasts held, over the last hour or so
// (exponentially decayed with AccuracyHalfLife).
//
// Every decision predicts a chance that demand in the next interval
// exceeds the size it chose (Evidence.OverloadRisk); the next sample says
// whether it did. A calibrated forecast has Observed ≈ Predicted: a
// Calibration well above 1 means the VM is overloaded more often than the
// engine thinks (it sizes too tight), well below 1 that it holds capacity
// it is not using.
type Accuracy struct {
	// Predicted is the mean predicted chance of overload, Observed the
	// share of intervals whose demand exceeded the size decided for them;
	// Intervals their decayed count.
	Predicted, Observed, Intervals float64
	// Calibration is Observed ÷ Predicted; NaN before minAccuracyWeight
	// intervals or while nothing was predicted.
	Calibration float64
	// SLACompliance is the share of intervals with requests in which no
	// application broke its SLA; SLAIntervals their decayed count (zero
	// when no application declares an SLA, and then SLACompliance is NaN).
	SLACompliance, SLAIntervals float64
}

// accuracy holds decayed sums; it costs a few words per VM, not a window.
type accuracy struct {
	at                 time.Time // time of the last update
	w, predicted, over float64
	slaW, slaMet       float64
	pending            bool // a decision's prediction waits for the next sample
	pendingSize        int
	pendingRisk        float64
	pendingAt          time.Time
}

// decayTo ages the sums to t.
func (a *accuracy) decayTo(t time.Time) {
	if !a.at.IsZero() && t.After(a.at) {
		f := math.Exp2(-t.Sub(a.at).Seconds() / AccuracyHalfLife.Seconds())
		a.w *= f
		a.predicted *= f
		a.over *= f
		a.slaW *= f
		a.slaMet *= f
	}
	if t.After(a.at) {
		a.at = t
	}
}

// predict records a decision's chance of overload at size, made at t.
func (a *accuracy) predict(t time.Time, size int, risk float64) {
	a.pending, a.pendingSize, a.pendingRisk, a.pendingAt = true, size, risk, t
}

// observe judges the pending prediction against s, a sample taken after
// it, and counts s against its applications' SLAs.
func (a *accuracy) observe(s Sample) {
	a.decayTo(s.Time)
	if a.pending && s.Time.After(a.pendingAt) {
		a.w++
		a.predicted += a.pendingRisk
		if ceilCPUs(s.Demand()) > a.pendingSize { // as the forecast counts need
			a.over++
		}
		a.pending = false
	}
	has, broke := false, false
	for _, app := range s.Apps {
		if app.Arrivals == 0 || (app.SLAMean <= 0 && app.SLATarget <= 0) {
			continue
		}
		has = true
		broke = broke || app.violates()
	}
	if has {
		a.slaW++
		if !broke {
			a.slaMet++
		}
	}
}

func (a *accuracy) result() Accuracy {
	r := Accuracy{Intervals: a.w, Calibration: math.NaN(), SLACompliance: math.NaN(), SLAIntervals: a.slaW}
	if a.w > 0 {
		r.Predicted, r.Observed = a.predicted/a.w, a.over/a.w
	}
	if a.w >= minAccuracyWeight && r.Predicted > 0 {
		r.Calibration = r.Observed / r.Predicted
	}
	if a.slaW > 0 {
		r.SLACompliance = a.slaMet / a.slaW
	}
	return r
}

// Accuracy returns how well the forecasts held (see Accuracy).
func (e *Engine) Accuracy() Accuracy { return e.acc.result() }

// overloadRisk is the forecast chance that the next interval's demand
// exceeds size vCPUs: the same decayed forecast (and pooled prior) the
// predictive mode sizes with, asked of every mode's choice, so the
// calibration metric means the same thing whichever mode is in force.
func overloadRisk(window []Sample, size int, p Policy) float64 {
	prior := 0.0
	if p.ForecastPrior > 0 && p.Interval > 0 {
		prior = p.ForecastPrior.D().Seconds() / p.Interval.D().Seconds()
	}
	halfLife := p.ForecastHalfLife.D()
	if halfLife <= 0 {
		halfLife = AccuracyHalfLife
	}
	above, _ := forecastNeeds(window, size, size, halfLife.Seconds(), prior)
	return above[0]
}
