package engine

import (
	"fmt"
	"math"
	"strings"
	"time"
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
// A VM's own window says little in its first hours: after a few calm
// samples the frequencies above say a spike cannot happen, and the mode
// would cut the VM to its current level. So the forecast is a Bayesian
// mean of the VM's own decayed frequencies and a pooled prior,
// ForecastPriorTable, worth ForecastPrior of history: the chance, over
// many VMs, that the next interval needs k vCPUs more (or fewer) than the
// median of the VM's window. Early on the prior dominates and keeps
// headroom above the VM's usual level; after a few hours the VM's own
// history does. On the development day 10 minutes of prior cut the
// vCPU-hours at 1 % overload time from 1.66× the oracle to 1.63×, and the
// overload time of a VM's first half-hour by 60 %.
//
// The VM moves straight to a, up or down, subject to the cooldowns.
const ModePredictive = "predictive"

// RuleForecast marks a move to the forecast's cheapest size.
const RuleForecast = "forecast"

type predictive struct{}

// needWeights returns need[n], the decayed weight of the window's samples
// that needed exactly n vCPUs (the last bin, hi+1, holds those needing
// more than hi), their total, and the weighted mean demand.
func needWeights(window []Sample, hi int, halfLife float64) (need []float64, total, mean float64) {
	need = make([]float64, hi+2)
	decay := newDecay(window, halfLife)
	for i := len(window) - 1; i >= 0; i-- {
		x := &window[i]
		w := decay.weight(i)
		d := x.Demand()
		need[min(ceilCPUs(d), hi+1)] += w
		total += w
		mean += w * d
	}
	return need, total, mean / total
}

// medianNeed is the weighted median of need (from needWeights).
func medianNeed(need []float64, total float64) int {
	median, cum := 0, need[0]
	for 2*cum < total && median < len(need)-1 {
		median++
		cum += need[median]
	}
	return median
}

// CheapestSize is the size a in [lo, lo+len(above)) minimising
// above[a−lo] + minGain × a, where above[a−lo] is the chance that demand
// exceeds a vCPUs: the predictive mode's choice. Ties go to the smaller
// size: a vCPU must buy at least minGain.
func CheapestSize(above []float64, lo int, minGain float64) int {
	best, bestCost := lo, math.Inf(1)
	for i, pr := range above {
		if c := pr + minGain*float64(lo+i); c < bestCost-1e-12 {
			best, bestCost = lo+i, c
		}
	}
	return best
}

// MedianNeed is the weighted median of the vCPUs the window's samples
// needed (ceil of busy + waiting CPUs, at most hi+1), each weighted
// 2^(−age ÷ halfLife): where the predictive mode reads ForecastPriorTable.
// host/sim derives the table with it.
func MedianNeed(window []Sample, hi int, halfLife time.Duration) int {
	need, total, _ := needWeights(window, hi, halfLife.Seconds())
	return medianNeed(need, total)
}

// forecastNeeds returns, for each size a in [lo, hi], the forecast
// probability that demand exceeds a vCPUs (above[a-lo]), and the forecast
// mean demand. prior is the weight, in samples, of ForecastPriorTable,
// read at offsets from the window's weighted median need; zero leaves the
// VM's own history alone.
func forecastNeeds(window []Sample, lo, hi int, halfLife, prior float64) (above []float64, mean float64) {
	need, total, mean := needWeights(window, hi, halfLife)
	// The prior is anchored at the median need, not at the newest sample:
	// the median moves slowly, so the prior's pull does not move the VM
	// every time one sample differs from the last (on the development day
	// that anchoring cost the same vCPU-hours with 16 scaling actions per
	// VM-day instead of 6).
	median := medianNeed(need, total)
	const k0 = (len(ForecastPriorTable) - 1) / 2
	rest := total
	for n := range lo {
		rest -= need[n]
	}
	above = make([]float64, hi-lo+1)
	for i := range above {
		a := lo + i
		rest -= need[a]
		p := max(rest, 0)
		if prior > 0 {
			// A Bayesian mean of the VM's own decayed frequencies and the
			// pooled ones, each worth its weight in samples.
			p += prior * ForecastPriorTable[min(max(a-median, -k0), k0)+k0]
		}
		above[i] = p / (total + prior)
	}
	return above, mean
}

func (predictive) decide(s *step) Decision {
	p := s.p
	prior := 0.0
	if p.ForecastPrior > 0 {
		prior = p.ForecastPrior.D().Seconds() / p.Interval.D().Seconds()
	}
	above, mean := forecastNeeds(s.window, s.lo, s.hi, p.ForecastHalfLife.D().Seconds(), prior)
	best := CheapestSize(above, s.lo, p.MinGain)
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
	from := fmt.Sprintf("%d samples (half-life %v)", len(s.window), p.ForecastHalfLife)
	if prior > 0 {
		from += fmt.Sprintf(" and a pooled prior worth %v", p.ForecastPrior)
	}
	why := fmt.Sprintf("forecast from %s: mean demand %s CPUs; %s, at %s a vCPU",
		from, num(mean), risk, pct(p.MinGain))
	return s.toward(best, RuleForecast, why)
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
