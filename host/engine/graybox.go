package engine

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// ModeGraybox sizes a VM from its applications' own measurements against
// their response-time SLA, as Sandpiper's gray-box mode does (Wood et
// al., NSDI'07, §4.2), but with a multi-server queue and the CPU time each
// request costs:
//
//   - demand D: CPU-seconds per request, the applications' CPU time (from
//     the cgroups of their systemd units, or the VM's busy time shared by
//     request counts) over their completed requests, pooled over the
//     window's samples that have at least minSampleRequests requests;
//   - the part of the response time that is not CPU, X: the logged mean
//     response time less D and the wait the model predicts at the size the
//     sample was taken with, the smallest over the window (queueing
//     inflates the log, never deflates it);
//   - the arrival and service variability c_a², c_s² and the response
//     time's shape (SLA percentile ÷ mean), from the window, not one sample;
//   - target vCPUs: the smallest c whose predicted response time (G/G/c,
//     Allen–Cunneen mean, Whitt's tail for percentiles; see ggc.go) meets
//     the SLA at the peak arrival rate (Percentile of the window's rates)
//     with utilisation λ·D/c at most Upper — the largest over the VM's
//     applications.
//
// The target depends on what was measured, not on the current size, so
// the VM settles: it grows when K of the last N samples each need more
// vCPUs than it has (or broke the SLA), and loses one when the last
// DownSamples samples since the last action each fit in one fewer, met
// the SLA and would keep utilisation at most Upper. An SLA that no number
// of vCPUs meets (the service time alone is above it) sizes for
// utilisation only, instead of growing to the maximum.
//
// Other work on the VM needs CPUs too: the busy time beyond the
// applications' modelled work is added to theirs under the utilisation
// bound. The black-box rules do not apply while the model has data: their
// demand counts run-queue waiting, which is the very queueing of requests
// the model predicts (a backlog of PHP workers after a load step reads
// as 8 CPUs of demand). Without enough application data in the window the
// VM is sized in black-box mode (ModeSandpiper), and the reason says so.
const ModeGraybox = "graybox"

type graybox struct{ fallback sandpiper }

const (
	// minSampleRequests: a sample with fewer requests says too little
	// about variances, percentiles and CPU per request to be used for them
	// (its rate still counts).
	minSampleRequests = 5
	// minModelRequests: the model is trusted only with this many requests
	// in the window's usable samples.
	minModelRequests = 50
)

// appAt is one application in one sample.
type appAt struct {
	AppSample
	online int
	// cpu is the CPU-seconds the application used in the interval.
	cpu float64
}

// appView is one application's figures over the window.
type appView struct {
	name    string
	samples []appAt // one per window sample, oldest first
	sla     SLA
	haveSLA bool
}

func (g graybox) decide(s *step) Decision {
	p := s.p
	bb := g.fallback.decide(s)
	apps := appsOf(s.window, p.Interval.D().Seconds())
	current := max(s.in.Current, 1)
	var why []string
	type fit struct {
		view *appView
		w    Workload
	}
	var fits []fit
	for _, a := range apps {
		w, err := a.estimate()
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", a.name, err))
			continue
		}
		fits = append(fits, fit{a, w})
	}
	if len(fits) == 0 {
		bb.Reason = "no application data, black-box: " + bb.Reason
		if len(why) > 0 {
			bb.Reason = strings.Join(why, "; ") + "; " + bb.Reason
		}
		return bb
	}
	// other is the CPU the VM was busy with beyond the applications'
	// modelled work, per sample: it needs vCPUs too. Run-queue waiting is
	// left out: it is the queueing the model predicts.
	other := make([]float64, len(s.window))
	for i, x := range s.window {
		apps := 0.0
		for _, f := range fits {
			apps += f.view.samples[i].Rate * f.w.Demand
		}
		other[i] = max(x.Busy-apps, 0)
	}
	// sizeFor is every application's need at the given rates, and the
	// utilisation bound on their work and the other work together.
	sizeFor := func(rate func(*appView) float64, otherCPU float64) int {
		n, work := 1, otherCPU
		for _, f := range fits {
			w := f.w
			w.Rate = rate(f.view)
			n = max(n, f.view.size(w, p.Upper, s.hi))
			work += w.Rate * w.Demand
		}
		return max(n, min(ceilCPUs(work/p.Upper-utilEps), s.hi))
	}
	needAt := func(i int) int {
		return sizeFor(func(a *appView) float64 { return a.samples[i].Rate }, other[i])
	}
	peakOther := percentile(other, p.Percentile)
	need := sizeFor(func(a *appView) float64 { return percentile(a.rates(), p.Percentile) }, peakOther)
	for _, f := range fits {
		w := f.w
		w.Rate = percentile(f.view.rates(), p.Percentile)
		why = append(why, f.view.explain(w, f.view.size(w, p.Upper, s.hi), p.Upper, s.hi))
	}
	if peakOther >= 0.05 {
		why = append(why, fmt.Sprintf("other work %s CPUs", num(peakOther)))
	}
	why = append(why, "needs "+vcpus(need))
	last := s.recentFrom(p.N)
	short := s.countSpaced(last, func(i int) bool { return needAt(i) > current })
	violated := s.countSpaced(last, func(i int) bool { return violatesAny(s.window[i]) })
	reason := strings.Join(why, "; ")
	switch {
	case short >= p.K:
		return s.up(need, RuleSLA, fmt.Sprintf("%s; %d of the last %d samples needed more than %s", reason, short, p.N, vcpus(current)))
	case violated >= p.K:
		return s.up(max(need, current+1), RuleSLA, fmt.Sprintf("%s; the SLA was violated in %d of the last %d samples", reason, violated, p.N))
	case s.in.Current > s.lo && g.fitsSmaller(s, current-1, needAt):
		return s.down(current-1, RuleSustainedLow, fmt.Sprintf("%s; the last %d samples each fit in %s", reason, p.DownSamples, vcpus(current-1)))
	}
	return s.hold(RuleSteady, reason)
}

// fitsSmaller reports whether each of the last DownSamples samples, all
// taken after the last action, needed at most fewer vCPUs (utilisation at
// most Upper included) and met every SLA, and whether the window shows the
// SLA broken at fewer vCPUs or less under a load no heavier than today's
// (a request rate at most 25 % above the recent peak). The model can be wrong — on an
// oversubscribed host a vCPU is less than a CPU — and an SLA-violation
// scale-up past the model's size must not be undone by the model a few
// samples later (seen end to end: 2 → 3 → 2 under the same load).
func (g graybox) fitsSmaller(s *step, fewer int, needAt func(int) int) bool {
	from, ok := s.sustained(s.p.DownSamples)
	if !ok {
		return false
	}
	peak := 0.0
	for i := from; i < len(s.window); i++ {
		if violatesAny(s.window[i]) || needAt(i) > fewer {
			return false
		}
		peak = max(peak, appRate(s.window[i]))
	}
	for _, x := range s.window[:from] {
		if x.Online > 0 && x.Online <= fewer && violatesAny(x) && appRate(x) <= 1.25*peak {
			return false
		}
	}
	return true
}

// appRate is a sample's request rate over all applications.
func appRate(x Sample) float64 {
	r := 0.0
	for _, a := range x.Apps {
		r += a.Rate
	}
	return r
}

func violatesAny(x Sample) bool {
	for _, a := range x.Apps {
		if a.violates() {
			return true
		}
	}
	return false
}

// appsOf gathers, per application name, its figures in every sample of
// the window (zero where a sample lacks it). The CPU time of an
// application without its own measurement is the VM's busy time over the
// interval shared among the applications by their request counts;
// interval is the policy's, for the first sample.
func appsOf(window []Sample, interval float64) []*appView {
	byName := map[string]*appView{}
	var order []*appView
	for i, x := range window {
		dt := interval
		if i > 0 {
			dt = x.Time.Sub(window[i-1].Time).Seconds()
		}
		var total uint64
		for _, a := range x.Apps {
			total += a.Arrivals
		}
		for _, a := range x.Apps {
			v := byName[a.Name]
			if v == nil {
				v = &appView{name: a.Name, samples: make([]appAt, len(window))}
				byName[a.Name] = v
				order = append(order, v)
			}
			at := appAt{AppSample: a, online: max(x.Online, 1), cpu: a.CPUSeconds}
			if !a.HasCPU && total > 0 {
				at.cpu = x.Busy * dt * float64(a.Arrivals) / float64(total)
			}
			v.samples[i] = at
			if sla, ok := a.sla(); ok {
				v.sla, v.haveSLA = sla, true
			}
		}
	}
	return order
}

func (a *appView) rates() []float64 {
	out := make([]float64, len(a.samples))
	for i, x := range a.samples {
		out[i] = x.Rate
	}
	return out
}

// errNoSLA: the application declared no SLA, so gray-box cannot size it.
var errNoSLA = errors.New("no SLA declared")

// estimate measures the application's workload over the window; its Rate
// is left for the caller.
func (a *appView) estimate() (Workload, error) {
	if !a.haveSLA {
		return Workload{}, errNoSLA
	}
	var used []appAt
	var reqs, cpu float64
	for _, x := range a.samples {
		if x.Arrivals >= minSampleRequests {
			used = append(used, x)
			reqs += float64(x.Arrivals)
			cpu += x.cpu
		}
	}
	if reqs < minModelRequests {
		return Workload{}, fmt.Errorf("%.0f requests in the window's samples of at least %d, %d needed to trust the model", reqs, minSampleRequests, minModelRequests)
	}
	w := Workload{Demand: cpu / reqs}
	if !(w.Demand > 0) {
		return Workload{}, errors.New("no CPU time measured for its requests")
	}
	var ca2 float64
	cs2 := make([]float64, 0, len(used))
	for _, x := range used {
		ia := x.IAMean
		if !(ia > 0) && x.Rate > 0 {
			ia = 1 / x.Rate
		}
		if ia > 0 {
			ca2 += float64(x.Arrivals) * min(x.IAVar/(ia*ia), maxSCV)
		}
		if x.SvcMean > 0 {
			cs2 = append(cs2, min(x.SvcVar/(x.SvcMean*x.SvcMean), maxSCV))
		}
	}
	w.CA2 = ca2 / reqs
	w.CS2 = median(cs2)
	// Other: the logged mean less CPU and the wait predicted at the size
	// and rate of the sample; the smallest over the window.
	w.Other = inf
	for _, x := range used {
		if x.SvcMean <= 0 {
			continue
		}
		if wq, _ := w.at(x).Wait(x.online); !math.IsInf(wq, 1) {
			w.Other = min(w.Other, max(x.SvcMean-w.Demand-wq, 0))
		}
	}
	if math.IsInf(w.Other, 1) {
		w.Other = 0
	}
	// Shape: the observed percentile less the wait's predicted percentile,
	// over the mean without queueing; the median over the window.
	w.Shape = 1
	if a.sla.Quantile > 0 {
		shape := make([]float64, 0, len(used))
		for _, x := range used {
			q := x.observedQuantile()
			if wq := w.at(x).WaitQuantile(x.online, a.sla.Quantile); q > 0 && !math.IsInf(wq, 1) {
				shape = append(shape, min(max((q-wq)/(w.Demand+w.Other), 1), maxShape))
			}
		}
		w.Shape = max(median(shape), 1)
	}
	return w, nil
}

// at is w at the arrival rate of sample x.
func (w Workload) at(x appAt) Workload {
	w.Rate = x.Rate
	return w
}

// maxSCV and maxShape bound what a few odd samples can claim.
const (
	maxSCV   = 25
	maxShape = 10
)

// size is the vCPUs the application needs for w within limit. When the
// SLA is out of reach at any size — the response time without queueing is
// already above it — it sizes for utilisation alone: more vCPUs would not
// help.
func (a *appView) size(w Workload, upper float64, limit int) int {
	if c, ok := w.Size(a.sla, upper, limit); ok || !a.unreachable(w) {
		return c
	}
	return min(max(1, ceilCPUs(w.Rate*w.Demand/upper-utilEps)), limit)
}

// unreachable reports whether no number of vCPUs meets the SLA.
func (a *appView) unreachable(w Workload) bool {
	idle := w
	idle.Rate = 0
	return idle.Response(1, a.sla.Quantile) > a.sla.Target
}

func (a *appView) explain(w Workload, n int, upper float64, limit int) string {
	s := fmt.Sprintf("%s: peak %.1f req/s × %.1f ms CPU (%.2f CPUs), %.1f ms not CPU, c_a²=%.2f c_s²=%.2f: G/G/c predicts %.0f ms on %s against %s",
		a.name, w.Rate, 1000*w.Demand, w.Rate*w.Demand, 1000*w.Other, w.CA2, w.CS2, 1000*finite(w.Response(n, a.sla.Quantile)), vcpus(n), a.sla)
	if a.unreachable(w) {
		s += fmt.Sprintf(" (unreachable at any size: sized for %s utilisation)", pct(upper))
	} else if _, ok := w.Size(a.sla, upper, limit); !ok {
		s += fmt.Sprintf(" (not met within %s)", vcpus(limit))
	}
	return s
}

func finite(v float64) float64 {
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return 86400
	}
	return v
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// sla is the application's objective; ok is false without one.
func (a AppSample) sla() (SLA, bool) {
	switch {
	case a.SLATarget > 0 && a.SLAPercentile > 0 && a.SLAPercentile < 1:
		return SLA{Quantile: a.SLAPercentile, Target: a.SLATarget}, true
	case a.SLAMean > 0:
		return SLA{Target: a.SLAMean}, true
	}
	return SLA{}, false
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

// violates reports whether the interval broke the SLA; a sample with too
// few requests to judge does not.
func (a AppSample) violates() bool {
	if a.Arrivals < minSampleRequests {
		return false
	}
	switch {
	case a.SLATarget > 0 && a.SLAPercentile > 0:
		return a.observedQuantile() > a.SLATarget
	case a.SLAMean > 0:
		return a.SvcMean > a.SLAMean
	}
	return false
}
