// Package engine decides how many vCPUs a VM should have.
//
// It is pure: samples and a clock go in, decisions come out. It performs no
// I/O, starts no goroutines and never reads the wall clock, so the live
// actuator and the trace simulator run the very same code and a recorded
// trace replays to the same decisions.
//
// Detection follows Sandpiper's black-box mode (Wood et al., NSDI'07): a
// hotspot needs k of the last n observations above the upper threshold and
// the AR(1) forecast of the next one above it too; the size of the remedy
// comes from a high percentile of recent demand.
package engine

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Sample is one interval's measurement of a VM.
type Sample struct {
	Time time.Time
	// Online is the number of vCPUs online in the guest during the interval.
	Online int
	// Busy is the number of CPUs' worth of work done (sum of per-CPU busy
	// fractions).
	Busy float64
	// Waiting is the mean number of runnable tasks that were waiting for a
	// CPU: the run-delay accrued over the interval divided by its length
	// (Little's law). It lets demand exceed the vCPUs online, which busy
	// time alone never can. Zero when the guest cannot measure it.
	Waiting float64
	// RunQP95 is the 95th percentile of run-queue latency (wake-up to
	// running) in the interval; zero when unknown.
	RunQP95 time.Duration
	// Apps are the applications' request statistics (gray-box mode).
	Apps []AppSample
}

// AppSample is one application's interval, from its access log. Times in
// seconds.
type AppSample struct {
	Name     string
	Arrivals uint64
	// Rate is arrivals per second.
	Rate float64
	// IAMean and IAVar are the inter-arrival time mean and variance;
	// SvcMean and SvcVar the logged response time's mean and variance.
	IAMean, IAVar, SvcMean, SvcVar float64
	// CPUSeconds is the CPU time the application used over the interval,
	// when HasCPU (from its units' cgroups); without it gray-box mode
	// shares the VM's busy time among applications by request counts.
	CPUSeconds float64
	HasCPU     bool
	// Observed response-time percentiles.
	RespP50, RespP95, RespP99 float64
	// The SLA: a mean, or a target for a percentile.
	SLAMean, SLAPercentile, SLATarget float64
}

// Demand is the CPUs' worth of work the VM wanted during the interval.
func (s Sample) Demand() float64 { return s.Busy + s.Waiting }

// Action is what a Decision asks for.
type Action int

// Actions.
const (
	Hold Action = iota
	ScaleUp
	ScaleDown
)

func (a Action) String() string {
	switch a {
	case ScaleUp:
		return "scale_up"
	case ScaleDown:
		return "scale_down"
	}
	return "hold"
}

// MarshalText makes actions read as words in JSON.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// Rules a decision can come from.
const (
	RuleBelowMin     = "below-min"      // fewer vCPUs than the policy minimum
	RuleAboveMax     = "above-max"      // more than the policy or host allows
	RuleHotspot      = "hotspot"        // k of n above upper, forecast above upper
	RuleSustainedLow = "sustained-low"  // demand fits in one vCPU fewer
	RuleNoData       = "no-fresh-data"  // nothing recent to decide on
	RuleCooldown     = "cooldown"       // would act, but too soon after the last action
	RuleAtLimit      = "at-limit"       // would act, but the limit is reached
	RuleSteady       = "steady"         // nothing to do
	RuleNotEnough    = "warming-up"     // fewer than n samples so far
	RuleBudget       = "budget-limited" // scale-up cut short by the host budget
	RuleRunQueue     = "runq-latency"   // k of n samples with p95 run-queue latency above the threshold
	RuleSLA          = "sla"            // gray-box: the SLA needs more vCPUs or was violated
)

// Input is what the engine needs besides its samples.
type Input struct {
	Now time.Time
	// Current is the number of vCPUs the VM has now, as the hypervisor says.
	Current int
	// Allowed is the most vCPUs the VM may have: the smaller of the
	// hypervisor's slot count and what the host-wide budget leaves. Zero or
	// negative means no limit beyond the policy.
	Allowed int
}

// Evidence is what a decision was based on, for the event log and the API.
type Evidence struct {
	// Utilisation of the current allocation for the last n samples, oldest
	// first: demand ÷ current vCPUs.
	Utilisation []float64 `json:"utilisation,omitempty"`
	Above       int       `json:"above,omitempty"`
	K           int       `json:"k,omitempty"`
	N           int       `json:"n,omitempty"`
	// Forecast is the AR(1) prediction of the next sample's utilisation.
	Forecast float64 `json:"forecast,omitempty"`
	// PeakDemand is the Percentile of demand over the window, in CPUs.
	PeakDemand float64 `json:"peak_demand,omitempty"`
	Percentile float64 `json:"percentile,omitempty"`
	Samples    int     `json:"samples"`
	// OverloadRisk is the forecast chance that demand in the next interval
	// exceeds the size decided (To), whatever the mode; the engine checks
	// it against the next sample (see Accuracy).
	OverloadRisk float64 `json:"overload_risk,omitempty"`
}

// Decision is the engine's answer.
type Decision struct {
	Action Action `json:"action"`
	From   int    `json:"from"`
	To     int    `json:"to"`
	Rule   string `json:"rule"`
	// Reason says in one sentence why, with numbers.
	Reason   string   `json:"reason"`
	Evidence Evidence `json:"evidence"`
	// Policy is the policy the decision was made under, so that it can be
	// explained after the policy changed. Engine.Decide leaves it zero (a
	// caller holding the engine knows it); the actuator fills it in.
	Policy Policy `json:"policy"`
}

// Engine holds one VM's recent samples and the time of its last action.
// It is not safe for concurrent use.
type Engine struct {
	policy Policy
	mode   mode
	// samples ends with the window, oldest first: the last count
	// samples. Its capacity leaves room for windowSlack more, so the
	// window stays one slice that Decide hands to the mode without a copy
	// (Decide runs for every report of every VM, and every step of a
	// replayed trace); when it is full the window moves to the front.
	samples    []Sample
	count      int
	lastAction time.Time
	acc        accuracy
}

// windowSlack is how many samples fit after a window of w before it is
// moved to the front of its buffer: a quarter more memory for a copy of w
// samples every w/4 observations.
func windowSlack(w int) int { return max(w/4, 8) }

// fastFactor is how many samples an interval may hold: the agent samples
// every quarter interval under CPU pressure. The engine keeps up to
// fastFactor × Window samples, and its window is the last Window intervals
// of time, whatever their number (see window).
const fastFactor = 4

// capacity is the most samples the engine keeps for p.
func capacity(p Policy) int { return fastFactor * p.Window }

// New returns an engine for a valid policy.
func New(p Policy) (*Engine, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &Engine{policy: p, mode: modes[p.mode()](p), samples: make([]Sample, 0, capacity(p)+windowSlack(capacity(p)))}, nil
}

// Policy returns the policy in force.
func (e *Engine) Policy() Policy { return e.policy }

// SetPolicy replaces the policy, keeping as many recent samples as the new
// window holds.
func (e *Engine) SetPolicy(p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	recent := slices.Clone(e.window())
	e.policy = p
	e.mode = modes[p.mode()](p)
	e.samples = make([]Sample, 0, capacity(p)+windowSlack(capacity(p)))
	e.count = 0
	for _, s := range recent {
		e.Observe(s)
	}
	return nil
}

// Observe adds a sample. Samples must arrive in time order; an older one
// than the newest is ignored. Negative, NaN or infinite measurements are
// treated as zero: the engine never trusts a number to be sane.
func (e *Engine) Observe(s Sample) {
	if e.count > 0 && !s.Time.After(e.samples[len(e.samples)-1].Time) {
		return
	}
	s.Busy = sane(s.Busy)
	s.Waiting = sane(s.Waiting)
	s.RunQP95 = max(s.RunQP95, 0)
	apps := s.Apps[:0:0]
	for _, a := range s.Apps {
		for _, v := range []*float64{&a.Rate, &a.IAMean, &a.IAVar, &a.CPUSeconds, &a.SvcMean, &a.SvcVar, &a.RespP50, &a.RespP95, &a.RespP99,
			&a.SLAMean, &a.SLAPercentile, &a.SLATarget} {
			*v = sane(*v)
		}
		apps = append(apps, a)
	}
	s.Apps = apps
	w := capacity(e.policy)
	if len(e.samples) == cap(e.samples) {
		// Move the newest w−1 samples to the front; the one being added
		// makes w.
		n := copy(e.samples, e.samples[len(e.samples)-(w-1):])
		clear(e.samples[n:]) // drop the references the old samples held
		e.samples = e.samples[:n]
	}
	e.samples = append(e.samples, s)
	e.count = min(e.count+1, w)
	e.acc.observe(s)
}

// Reset forgets all samples (after the guest restarted, say).
func (e *Engine) Reset() {
	clear(e.samples)
	e.samples, e.count = e.samples[:0], 0
	e.acc.pending = false // made on samples now forgotten
}

// Acted records that a scaling action finished (or was attempted) at t;
// cooldowns count from here.
func (e *Engine) Acted(t time.Time) { e.lastAction = t }

// LastAction is the time given to the last Acted call.
func (e *Engine) LastAction() time.Time { return e.lastAction }

// window returns the last count samples, oldest first. It is the
// engine's own memory: modes read it and must not change or keep it.
//
// It is the samples of the last Window intervals of time: newer than the
// newest minus (Window − ½) intervals, so at a steady interval exactly the
// last Window samples, and up to fastFactor times as many while the agent
// reports fast.
func (e *Engine) window() []Sample {
	all := e.samples[len(e.samples)-e.count:]
	if len(all) == 0 {
		return all
	}
	ivl := e.policy.Interval.D()
	cut := all[len(all)-1].Time.Add(-time.Duration(e.policy.Window)*ivl + ivl/2)
	i := len(all)
	for i > 0 && all[i-1].Time.After(cut) {
		i--
	}
	return all[i:]
}

// Decide returns what to do now. Limits, freshness and warm-up are the
// same for every mode; the steady-state rule is the policy's mode. Every
// decision made on fresh samples carries its forecast chance of overload,
// which the next Observe checks (see Accuracy); it is the only state
// Decide leaves behind.
func (e *Engine) Decide(in Input) Decision {
	d := e.decide(in)
	if w := e.window(); len(w) > 0 && d.Rule != RuleNoData && d.To > 0 {
		d.Evidence.OverloadRisk = overloadRisk(w, d.To, e.policy)
		e.acc.predict(in.Now, d.To, d.Evidence.OverloadRisk)
	}
	return d
}

func (e *Engine) decide(in Input) Decision {
	p := e.policy
	hi := p.MaxVCPUs
	if in.Allowed > 0 && in.Allowed < hi {
		hi = in.Allowed
	}
	lo := min(p.MinVCPUs, hi)
	window := e.window()
	d := Decision{From: in.Current, To: in.Current, Evidence: Evidence{Samples: len(window)}}

	// Limits first: they hold whatever the samples say.
	if in.Current < lo {
		d.Action, d.To, d.Rule = ScaleUp, lo, RuleBelowMin
		d.Reason = fmt.Sprintf("%d vCPUs is below the policy minimum of %d", in.Current, lo)
		return d
	}
	if in.Current > hi {
		d.Action, d.To, d.Rule = ScaleDown, hi, RuleAboveMax
		d.Reason = fmt.Sprintf("%d vCPUs is above the limit of %d (policy max %d, host allows %d)", in.Current, hi, p.MaxVCPUs, in.Allowed)
		return d
	}

	if len(window) == 0 || in.Now.Sub(window[len(window)-1].Time) > 3*p.Interval.D() {
		d.Rule, d.Reason = RuleNoData, "no sample in the last three intervals"
		return d
	}
	// Warm-up: n samples, spanning n intervals (less half of one, for
	// jitter), so that a burst of reports does not end it early.
	if ivl := p.Interval.D(); len(window) < p.N || window[len(window)-1].Time.Sub(window[0].Time) < time.Duration(p.N-1)*ivl-ivl/2 {
		d.Rule, d.Reason = RuleNotEnough, fmt.Sprintf("%d of %d samples needed to judge (over %v)", len(window), p.N, time.Duration(p.N)*p.Interval.D())
		return d
	}
	return e.mode.decide(&step{e: e, p: p, in: in, window: window, lo: lo, hi: hi, d: d})
}

// step is what a mode decides on: the engine, the input, the samples of
// the window (oldest first) and the bounds [lo, hi] already checked.
type step struct {
	e      *Engine
	p      Policy
	in     Input
	window []Sample
	lo, hi int
	d      Decision
}

// demand returns the window's demand series, oldest first.
func (s *step) demand() []float64 {
	out := make([]float64, len(s.window))
	for i, x := range s.window {
		out[i] = x.Demand()
	}
	return out
}

// up asks for want vCPUs (at least one more), clamped to the bounds and
// subject to the scale-up cooldown. why explains the want.
func (s *step) up(want int, rule, why string) Decision {
	d := s.d
	want = max(want, s.in.Current+1)
	to := min(want, s.hi)
	switch {
	case to <= s.in.Current:
		d.Rule = RuleAtLimit
		d.Reason = fmt.Sprintf("%s, but already at the limit of %s", why, vcpus(s.hi))
		return d
	case s.in.Now.Sub(s.e.lastAction) < s.p.CooldownUp.D():
		d.Rule = RuleCooldown
		d.Reason = fmt.Sprintf("%s, but the last action was %v ago (cooldown %v)", why, s.in.Now.Sub(s.e.lastAction).Round(time.Second), s.p.CooldownUp)
		return d
	}
	d.Action, d.To, d.Rule, d.Reason = ScaleUp, to, rule, why
	switch {
	case to < want && s.hi < s.p.MaxVCPUs:
		d.Rule = RuleBudget
		d.Reason += fmt.Sprintf(", limited to %d by the host budget", to)
	case to < want:
		d.Reason += fmt.Sprintf(", limited to the policy max of %d", to)
	}
	return d
}

// down asks for to vCPUs (fewer than now, not below lo), subject to the
// scale-down cooldown.
func (s *step) down(to int, rule, why string) Decision {
	d := s.d
	to = max(to, s.lo)
	if to >= s.in.Current {
		d.Rule, d.Reason = RuleSteady, why+", but already at the minimum"
		return d
	}
	if s.in.Now.Sub(s.e.lastAction) < s.p.CooldownDown.D() {
		d.Rule = RuleCooldown
		d.Reason = fmt.Sprintf("%s, but the last action was %v ago (cooldown %v)", why, s.in.Now.Sub(s.e.lastAction).Round(time.Second), s.p.CooldownDown)
		return d
	}
	d.Action, d.To, d.Rule, d.Reason = ScaleDown, to, rule, why
	return d
}

// toward moves to want vCPUs under rule, up or down, or holds when the VM
// already has them: for modes that compute a size rather than a step.
func (s *step) toward(want int, rule, why string) Decision {
	switch {
	case want > s.in.Current:
		return s.up(want, rule, why)
	case want < s.in.Current:
		return s.down(want, rule, why)
	}
	return s.hold(RuleSteady, why)
}

// hold keeps the current size.
func (s *step) hold(rule, why string) Decision {
	d := s.d
	d.Rule, d.Reason = rule, why
	return d
}

// The k-of-n and sustained-low rules are measured in time, not in samples:
// an agent under CPU pressure reports several times an interval (so a
// burst is confirmed in well under n intervals), and a guest sending a
// flood of reports must not make one interval look like a sustained load.

// recentFrom returns the index of the first sample of the last n
// intervals of real time: samples newer than the newest minus
// (n − ½) intervals, so that samples at a steady interval with some jitter
// are exactly the last n.
func (s *step) recentFrom(n int) int {
	ivl := s.p.Interval.D()
	cut := s.window[len(s.window)-1].Time.Add(-time.Duration(n)*ivl + ivl/2)
	i := len(s.window)
	for i > 0 && s.window[i-1].Time.After(cut) {
		i--
	}
	return i
}

// minSpacing is how close two samples may be and both count towards k:
// a quarter interval, the agent's fast rate under pressure.
func (s *step) minSpacing() time.Duration { return s.p.Interval.D() / 4 }

// countSpaced counts the samples from index from on for which cond holds,
// a sample counting only if it came at least minSpacing after the last one
// counted: a thousand reports in a millisecond count once.
func (s *step) countSpaced(from int, cond func(i int) bool) int {
	n := 0
	var last time.Time
	for i := from; i < len(s.window); i++ {
		t := s.window[i].Time
		if (n == 0 || t.Sub(last) >= s.minSpacing()) && cond(i) {
			n, last = n+1, t
		}
	}
	return n
}

// sustained returns the index of the first sample of the last n
// intervals, and whether the samples since the last action cover them: at
// least (n − 1½) intervals between the first of them and the newest, as n
// samples at a steady interval do. A burst of reports spans no time and
// never covers them.
func (s *step) sustained(n int) (from int, ok bool) {
	since := len(s.window) - len(s.sinceAction())
	if since == len(s.window) {
		return len(s.window), false
	}
	ivl := s.p.Interval.D()
	span := s.window[len(s.window)-1].Time.Sub(s.window[since].Time)
	from = max(s.recentFrom(n), since)
	return from, span >= time.Duration(n-1)*ivl-ivl/2
}

// sinceAction returns the samples of the window taken after the last
// action, oldest first.
func (s *step) sinceAction() []Sample {
	i := len(s.window)
	for i > 0 && s.window[i-1].Time.After(s.e.lastAction) {
		i--
	}
	return s.window[i:]
}

// ceilCPUs converts a demand-derived size to an int without overflow: a
// guest claiming absurd demand must not wrap around (the clamp in up does
// the rest).
func ceilCPUs(v float64) int {
	return int(min(math.Ceil(v), 1<<20))
}

func vcpus(n int) string {
	if n == 1 {
		return "1 vCPU"
	}
	return fmt.Sprintf("%d vCPUs", n)
}

// pct and num keep reasons short even when a guest reports absurd numbers.
func pct(v float64) string {
	if v > 99.99 {
		return ">9999%"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}

func num(v float64) string {
	if v > 1e6 {
		return fmt.Sprintf("%.3g", v)
	}
	return fmt.Sprintf("%.2f", v)
}

var inf = math.Inf(1)

func sane(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0
	}
	return v
}
