package engine

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// ModeGraybox sizes a VM from its applications' own logs against their
// response-time SLA (Sandpiper's gray-box mode, NSDI'07 §4.2):
//
//   - capacity: λ_cap from GG1Capacity with the interval's mean and
//     variance of service and inter-arrival times and the SLA's mean
//     response time d;
//   - demand: λ_peak, the Percentile of the arrival rate over the window;
//   - target vCPUs = ceil(current × λ_peak ÷ λ_cap), the largest over the
//     VM's applications.
//
// An SLA violation — the observed response time (the SLA's percentile, or
// the mean) above its target in K of the last N intervals — is a hotspot
// even when utilisation looks moderate. A vCPU is removed when, for
// DownSamples samples since the last action, every application would fit
// in one vCPU fewer and none violated its SLA. Without application data the
// VM is sized in black-box mode (ModeSandpiper), and the reason says so.
//
// An SLA given as a percentile target T for quantile q is turned into the
// mean d the formula needs by assuming the response-time distribution keeps
// its shape: d = T × (observed mean ÷ observed q-quantile).
const ModeGraybox = "graybox"

type graybox struct{ fallback sandpiper }

// appView is one application's figures over the window.
type appView struct {
	name         string
	rates        []float64 // arrival rate per sample
	last         AppSample // newest sample with data
	violations   int       // of the last N samples, SLA broken
	overCapacity int       // of the last N samples, rate above G/G/1 capacity
}

func (g graybox) decide(s *step) Decision {
	p := s.p
	apps := appsOf(s.window, p.N)
	if len(apps) == 0 {
		d := g.fallback.decide(s)
		d.Reason = "no application data, black-box: " + d.Reason
		return d
	}
	current := max(s.in.Current, 1)
	need, over := 0, 0
	var why []string
	violated := false
	for _, a := range apps {
		n, reason, err := a.needed(current, p.Percentile)
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", a.name, err))
		} else {
			need = max(need, n)
			why = append(why, reason)
		}
		over = max(over, a.overCapacity)
		if a.violations >= p.K {
			violated = true
			why = append(why, fmt.Sprintf("%s violated its SLA in %d of the last %d intervals", a.name, a.violations, p.N))
		}
	}
	reason := strings.Join(why, "; ")
	// Utilisation and run-queue hotspots still count: other work on the
	// VM needs CPUs too.
	bb := g.fallback.decide(s)
	switch {
	case violated || over >= p.K:
		if !violated {
			reason += fmt.Sprintf("; arrival rate above capacity in %d of the last %d intervals", over, p.N)
		}
		return s.up(max(need, s.in.Current+1), RuleSLA, reason)
	case bb.Action == ScaleUp:
		bb.Reason = "black-box hotspot: " + bb.Reason + "; " + reason
		return bb
	case need < s.in.Current && s.in.Current > s.lo && g.fitsSmaller(s, current-1):
		return s.down(s.in.Current-1, RuleSustainedLow, reason)
	}
	return s.hold(RuleSteady, reason)
}

// fitsSmaller reports whether every one of the last DownSamples samples,
// all taken after the last action, would have met every SLA with fewer
// vCPUs.
func (g graybox) fitsSmaller(s *step, fewer int) bool {
	recent := s.sinceAction()
	if len(recent) < s.p.DownSamples {
		return false
	}
	for _, x := range recent[len(recent)-s.p.DownSamples:] {
		if len(x.Apps) == 0 {
			return false
		}
		for _, a := range x.Apps {
			if a.violates() {
				return false
			}
			v := appView{name: a.Name, rates: []float64{a.Rate}, last: a}
			n, _, err := v.needed(max(x.Online, 1), 1)
			if err != nil || n > fewer {
				return false
			}
		}
	}
	return true
}

// appsOf gathers, per application name, its samples in the window and its
// SLA violations in the last n samples.
func appsOf(window []Sample, n int) []*appView {
	byName := map[string]*appView{}
	var order []*appView
	for i, x := range window {
		for _, a := range x.Apps {
			v := byName[a.Name]
			if v == nil {
				v = &appView{name: a.Name}
				byName[a.Name] = v
				order = append(order, v)
			}
			v.rates = append(v.rates, a.Rate)
			if a.Arrivals > 0 {
				v.last = a
			}
			if i >= len(window)-n {
				if a.violates() {
					v.violations++
				}
				if d, err := a.slaMean(); err == nil && a.Arrivals > 0 {
					if c, err := GG1Capacity(a.SvcMean, a.IAVar, a.SvcVar, d); err == nil && a.Rate > c {
						v.overCapacity++
					}
				}
			}
		}
	}
	// An application that had no requests in the whole window has nothing
	// to say about capacity.
	out := order[:0]
	for _, v := range order {
		if v.last.Arrivals > 0 {
			out = append(out, v)
		}
	}
	return out
}

// needed is the vCPU count the application needs at its peak rate.
func (a *appView) needed(current int, pctl float64) (int, string, error) {
	l := a.last
	d, err := l.slaMean()
	if err != nil {
		return 0, "", err
	}
	capacity, err := GG1Capacity(l.SvcMean, l.IAVar, l.SvcVar, d)
	if err != nil {
		return 0, "", err
	}
	peak := percentile(a.rates, pctl)
	n := ceilCPUs(float64(current) * peak / capacity)
	return max(n, 1), fmt.Sprintf("%s: peak %.1f req/s against a G/G/1 capacity of %.1f req/s per %s (s=%.1fms, d=%.1fms) needs %s",
		a.name, peak, capacity, vcpus(current), 1000*l.SvcMean, 1000*d, vcpus(max(n, 1))), nil
}

// errNoSLA: the application declared no SLA, so gray-box cannot size it.
var errNoSLA = errors.New("no SLA declared")

// slaMean is the mean response time the SLA allows (see ModeGraybox).
func (a AppSample) slaMean() (float64, error) {
	switch {
	case a.SLAMean > 0:
		return a.SLAMean, nil
	case a.SLATarget > 0 && a.SLAPercentile > 0:
		q := a.observedQuantile()
		mean := a.SvcMean
		if q > 0 && mean > 0 {
			return a.SLATarget * math.Min(1, mean/q), nil
		}
		return a.SLATarget, nil
	}
	return 0, errNoSLA
}

// observedQuantile is the observed response time at the SLA's percentile
// (the nearest of p50/p95/p99 at or above it).
func (a AppSample) observedQuantile() float64 {
	switch {
	case a.SLAPercentile <= 0.5:
		return a.RespP50
	case a.SLAPercentile <= 0.95:
		return a.RespP95
	}
	return a.RespP99
}

// violates reports whether the interval broke the SLA.
func (a AppSample) violates() bool {
	if a.Arrivals == 0 {
		return false
	}
	switch {
	case a.SLAMean > 0:
		return a.SvcMean > a.SLAMean
	case a.SLATarget > 0 && a.SLAPercentile > 0:
		return a.observedQuantile() > a.SLATarget
	}
	return false
}
