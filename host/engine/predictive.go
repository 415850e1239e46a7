package engine

import (
	"fmt"
	"math"
	"strings"
)

// ModePredictive sizes the VM for the next interval before its demand
// arrives, from a probabilistic forecast rather than a point forecast plus
// a fixed headroom.
//
// The forecast of the next interval's demand is the distribution of the
// window's demand with each sample weighted 2^(−age ÷ ForecastHalfLife):
// recent behaviour counts most, and a VM whose load shifts sheds its old
// level within a few half-lives. Demand is busy plus waiting CPUs, so a
// starved VM shows what it wanted, not what it got.
//
// From the forecast the mode picks the allocation a in [min, max] that
// minimises
//
//	P(demand > a) + MinGain × a
//
// — the chance of being overloaded next interval, plus MinGain for every
// vCPU held. So a vCPU is added only while it cuts the forecast chance of
// overload by at least MinGain, which is the one knob: a smaller MinGain
// buys less overload with more vCPU-hours. Unlike a percentile plus headroom
// it does not chase rare spikes on a spiky VM (each vCPU would buy little)
// and it does cover a steady VM's regular peaks (each vCPU buys a lot); for
// a fleet, an equal MinGain for every VM is what minimises total vCPUs for a
// given total overload time (the Lagrangian of that problem).
//
// The VM moves straight to a, up or down, subject to the cooldowns.
const ModePredictive = "predictive"

// RuleForecast marks a move to the forecast's cheapest size.
const RuleForecast = "forecast"

type predictive struct{}

// forecastNeeds returns, for each size a in [lo, hi], the forecast
// probability that demand exceeds a vCPUs (above[a-lo]), and the forecast
// mean demand.
func forecastNeeds(window []Sample, lo, hi int, halfLife float64) (above []float64, mean float64) {
	// need[i] is the weight of samples needing exactly lo+i vCPUs (the
	// first bin also holds those needing fewer, the last those needing more
	// than hi).
	need := make([]float64, hi-lo+2)
	total := 0.0
	decay := newDecay(window, halfLife)
	for i := len(window) - 1; i >= 0; i-- {
		x := &window[i]
		w := decay.weight(i)
		d := x.Demand()
		i := min(max(ceilCPUs(d), lo), hi+1) - lo
		need[i] += w
		total += w
		mean += w * d
	}
	above = make([]float64, hi-lo+1)
	rest := total
	for i := range above {
		rest -= need[i]
		above[i] = max(rest, 0) / total
	}
	return above, mean / total
}

func (predictive) decide(s *step) Decision {
	p := s.p
	above, mean := forecastNeeds(s.window, s.lo, s.hi, p.ForecastHalfLife.D().Seconds())
	best, bestCost := s.lo, math.Inf(1)
	for i, pr := range above {
		// Ties go to the smaller size: a vCPU must buy at least MinGain.
		if c := pr + p.MinGain*float64(s.lo+i); c < bestCost-1e-12 {
			best, bestCost = s.lo+i, c
		}
	}
	current := max(s.in.Current, 1)
	s.d.Evidence.Forecast = mean / float64(current)
	risk := fmt.Sprintf("%s: %s chance of overload", vcpus(best), pct(above[best-s.lo]))
	var alt []string
	if best > s.lo {
		alt = append(alt, fmt.Sprintf("%d: %s", best-1, pct(above[best-1-s.lo])))
	}
	if best < s.hi {
		alt = append(alt, fmt.Sprintf("%d: %s", best+1, pct(above[best+1-s.lo])))
	}
	if len(alt) > 0 {
		risk += " (" + strings.Join(alt, ", ") + ")"
	}
	why := fmt.Sprintf("forecast from %d samples (half-life %v): mean demand %s CPUs; %s, at %s a vCPU",
		len(s.window), p.ForecastHalfLife, num(mean), risk, pct(p.MinGain))
	switch {
	case best > s.in.Current:
		return s.up(best, RuleForecast, why)
	case best < s.in.Current:
		return s.down(best, RuleForecast, why)
	}
	return s.hold(RuleSteady, why)
}

// decay weighs the samples of a window 2^(−age ÷ halfLife), age counted
// back from the newest sample. Asked for samples newest first, it needs one
// exponential per distinct gap between samples rather than one per sample:
// samples come at a steady interval.
type decay struct {
	window   []Sample
	halfLife float64 // seconds
	next     int     // the sample weight(next) expects
	w        float64 // its weight
	gap      int64   // the last gap seen, ns
	factor   float64 // 2^(−gap ÷ halfLife)
}

func newDecay(window []Sample, halfLife float64) decay {
	return decay{window: window, halfLife: halfLife, next: len(window) - 1, w: 1, gap: -1}
}

// weight returns sample i's weight; i must count down from the newest.
func (d *decay) weight(i int) float64 {
	for d.next > i {
		gap := d.window[d.next].Time.Sub(d.window[d.next-1].Time).Nanoseconds()
		if gap != d.gap {
			d.gap, d.factor = gap, math.Exp2(-float64(gap)/1e9/d.halfLife)
		}
		d.w *= d.factor
		d.next--
	}
	return d.w
}
