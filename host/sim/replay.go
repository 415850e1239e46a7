package sim

import (
	"fmt"
	"math"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
)

// Baseline names a hindsight policy: one no live system can run, which
// bounds what a real one can achieve.
type Baseline string

// Baselines.
const (
	// StaticRequested keeps the VM at the size its user asked for: what a
	// cloud without hot-plug does.
	StaticRequested Baseline = "static-requested"
	// StaticPeak keeps the VM at its own peak demand, known in hindsight:
	// the best any fixed size can do without overload.
	StaticPeak Baseline = "static-peak"
	// Oracle allocates ceil(demand) every interval with no delay: the
	// physical limit of elastic vCPUs.
	Oracle Baseline = "oracle"
)

// Policy is one column of a simulation: an engine policy (any mode the
// live actuator runs) or, when Baseline is set, a hindsight baseline.
type Policy struct {
	Name     string
	Baseline Baseline
	// Engine is the policy as the actuator would be configured. Per VM,
	// MaxVCPUs becomes the trace's requested size (MinVCPUs is lowered to it
	// if above), and Interval the trace's interval.
	Engine engine.Policy
}

// Actuation models how long scaling takes and where a VM starts.
type Actuation struct {
	// PlugTime is the time to add one vCPU (hot-plug, online in the guest,
	// confirm), UnplugTime to remove one. vCPUs change one at a time, as
	// the actuator does; until a vCPU's step ends the old allocation holds.
	// The engine is not asked again until the whole action has finished.
	PlugTime, UnplugTime time.Duration
	// Initial is the VM's size when the trace starts; 0 means its
	// requested size, which is what it would boot with.
	Initial int
}

// DefaultActuation is what the demo measures on a TCG guest (plug ≈ 5 ms,
// online ≈ 0.5–0.8 s, confirm ≈ 0.3–0.5 s; offline ≈ 0.1 s, unplug
// ≈ 0.05 s), rounded up.
var DefaultActuation = Actuation{PlugTime: 2 * time.Second, UnplugTime: time.Second}

// Step is one sample of a replay, for comparing decisions with the live
// actuator's.
type Step struct {
	// Start and End bound the sample's interval; the engine saw the sample
	// at End.
	Start, End time.Time
	Demand     float64
	// Allocated is the mean number of vCPUs over the interval (it differs
	// from a whole number while an action is in progress); Online is the
	// number at End.
	Allocated float64
	Online    int
	// Decision is the engine's decision at End; nil for a baseline or when
	// an action was still in progress (the actuator acts synchronously and
	// does not decide meanwhile).
	Decision *engine.Decision
}

// vmPolicy adapts p to the trace: the VM cannot grow beyond its requested
// size, and the engine samples at the trace's interval. A window longer
// than the trace is cut to it (but not below N or DownSamples): the ring
// would never fill, so decisions are the same, without the memory.
func vmPolicy(p engine.Policy, t *Trace) engine.Policy {
	p.MaxVCPUs = t.Requested
	p.MinVCPUs = min(p.MinVCPUs, t.Requested)
	p.Interval = engine.Duration(t.Interval)
	p.Window = min(p.Window, max(len(t.Demand), p.N, p.DownSamples))
	return p
}

// check validates the policy for a trace.
func (p Policy) check(t *Trace) error {
	switch p.Baseline {
	case "":
		if err := vmPolicy(p.Engine, t).Validate(); err != nil {
			return fmt.Errorf("policy %s on %s (interval %v): %w", p.Name, t.Name, t.Interval, err)
		}
	case StaticRequested, StaticPeak, Oracle:
	default:
		return fmt.Errorf("policy %s: unknown baseline %q", p.Name, p.Baseline)
	}
	return nil
}

// Decisions replays one trace through one policy and returns every step:
// the decision sequence to hold against the live actuator's on the same
// load.
func Decisions(t *Trace, p Policy, act Actuation) ([]Step, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	if err := p.check(t); err != nil {
		return nil, err
	}
	steps := make([]Step, 0, len(t.Demand))
	var st vmStats
	replay(t, p, act, &st, nil, func(s Step) { steps = append(steps, s) })
	return steps, nil
}

// vmStats is one VM's outcome under one policy, in whole milliseconds so
// that sums over a fleet do not depend on the order VMs finish in.
type vmStats struct {
	vcpuMs, timeMs, overMs, actions int64
}

// shortfallFunc receives each overloaded stretch: how many CPUs' worth of
// demand found no vCPU, and for how many milliseconds.
type shortfallFunc func(cpus float64, ms int64)

// replay runs one trace through one (checked) policy. onStep, if not nil,
// sees every step.
func replay(t *Trace, p Policy, act Actuation, st *vmStats, short shortfallFunc, onStep func(Step)) {
	if p.Baseline != "" {
		replayBaseline(t, p.Baseline, st, short, onStep)
		return
	}
	ep := vmPolicy(p.Engine, t)
	eng, err := engine.New(ep)
	if err != nil {
		panic(err) // checked by the caller
	}
	cur := act.Initial
	if cur <= 0 {
		cur = t.Requested
	}
	cur = min(max(cur, ep.MinVCPUs), ep.MaxVCPUs)
	// The action in progress: from → to, one vCPU every stepMs from startMs.
	var (
		from, to        = cur, cur
		startMs, stepMs int64
		acted           = true // Acted has been told about the last action
	)
	stepOf := func(n int) int64 {
		if n > 0 {
			return act.PlugTime.Milliseconds()
		}
		return act.UnplugTime.Milliseconds()
	}
	// alloc is the allocation at time x, and when it next changes.
	alloc := func(x int64) (int, int64) {
		n := to - from
		if n == 0 {
			return to, math.MaxInt64
		}
		steps := abs(n)
		done := steps
		if stepMs > 0 {
			done = int(min(max((x-startMs)/stepMs, 0), int64(steps)))
		}
		if done == steps {
			return to, math.MaxInt64
		}
		return from + sign(n)*done, startMs + int64(done+1)*stepMs
	}
	finish := func() int64 { return startMs + int64(abs(to-from))*stepMs }

	for i, d := range t.Demand {
		s, dur := t.Time[i], t.duration(i)
		e := s + dur
		var busy, waiting float64 // CPU-milliseconds
		vcpuMs := int64(0)
		for x := s; x < e; {
			a, next := alloc(x)
			y := min(e, next)
			ms := y - x
			c := float64(a)
			vcpuMs += int64(a) * ms
			busy += min(d, c) * float64(ms)
			if d > c {
				waiting += (d - c) * float64(ms)
				st.overMs += ms
				if short != nil {
					short(d-c, ms)
				}
			}
			x = y
		}
		st.vcpuMs += vcpuMs
		st.timeMs += dur
		online, _ := alloc(e)
		eng.Observe(engine.Sample{Time: time.UnixMilli(e), Online: online,
			Busy: busy / float64(dur), Waiting: waiting / float64(dur)})

		var dec *engine.Decision
		if done := finish(); done <= e {
			if !acted {
				eng.Acted(time.UnixMilli(done))
				acted = true
			}
			dd := eng.Decide(engine.Input{Now: time.UnixMilli(e), Current: online})
			dec = &dd
			if dd.Action != engine.Hold && dd.To != online {
				from, to, startMs, stepMs = online, dd.To, e, stepOf(dd.To-online)
				st.actions++
				acted = false
				if stepMs == 0 {
					eng.Acted(time.UnixMilli(e))
					acted = true
				}
			}
		}
		if onStep != nil {
			onStep(Step{Start: time.UnixMilli(s), End: time.UnixMilli(e), Demand: d,
				Allocated: float64(vcpuMs) / float64(dur), Online: online, Decision: dec})
		}
	}
}

// replayBaseline runs a hindsight baseline: sizes change instantly.
func replayBaseline(t *Trace, b Baseline, st *vmStats, short shortfallFunc, onStep func(Step)) {
	peak := 0.0
	for _, d := range t.Demand {
		peak = max(peak, d)
	}
	prev := 0
	for i, d := range t.Demand {
		var a int
		switch b {
		case StaticRequested:
			a = t.Requested
		case StaticPeak:
			a = fit(peak, t.Requested)
		case Oracle:
			a = fit(d, t.Requested)
		}
		if i > 0 && a != prev {
			st.actions++
		}
		prev = a
		dur := t.duration(i)
		st.vcpuMs += int64(a) * dur
		st.timeMs += dur
		if c := float64(a); d > c {
			st.overMs += dur
			if short != nil {
				short(d-c, dur)
			}
		}
		if onStep != nil {
			onStep(Step{Start: time.UnixMilli(t.Time[i]), End: time.UnixMilli(t.Time[i] + dur), Demand: d,
				Allocated: float64(a), Online: a})
		}
	}
}

// fit is the fewest vCPUs, at least one and at most limit, that hold
// demand d.
func fit(d float64, limit int) int {
	if d >= float64(limit) {
		return limit
	}
	return min(max(int(math.Ceil(d)), 1), limit)
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func sign(n int) int {
	if n < 0 {
		return -1
	}
	return 1
}
