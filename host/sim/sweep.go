package sim

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"slices"
	"strconv"

	"github.com/hotplugheaven/hotplug/host/engine"
)

// A sweep runs each dynamic policy over its mode's main knob and draws its
// frontier: vCPU-hours ÷ the oracle's against overload time. Policies are
// then compared at equal risk — each one's vCPU-hours at the same overload
// time, interpolated on its frontier — rather than at whatever operating
// point each preset happens to sit.
//
// The knobs and their values were chosen on the development day
// (PlanetLab 2011-03-03) only; see sweepSettings. Everything else in a
// policy is the preset's (policies.go), also tuned on that day.

// DefaultLevels are the overload time fractions policies are compared at.
var DefaultLevels = []float64{0.005, 0.01, 0.02, 0.03}

// SweepConfig is what Sweep runs.
type SweepConfig struct {
	// Policies are swept, each over its mode's knob from its own settings
	// (a policy-file change to other keys carries over). Baselines are
	// left out: they have no knob.
	Policies  []Policy
	Actuation Actuation
	// Grid sweeps the two-knob modes (threshold, vpa) over their whole
	// grid instead of the path through it chosen on the development day:
	// how that path was found.
	Grid bool
	// Levels are the overload time fractions of the matched table;
	// nil means DefaultLevels.
	Levels []float64
	// Workers replay VMs in parallel; 0 means GOMAXPROCS.
	Workers int
}

// SweepInput is one set of traces, reported on its own (a PlanetLab day).
type SweepInput struct {
	Name   string
	Traces iter.Seq2[*Trace, error]
}

// Matched is a frontier read at one overload time fraction.
type Matched struct {
	OverloadTimeFraction float64 `json:"overload_time_fraction"`
	// VsOracle is nil when the frontier does not reach that overload.
	VsOracle *float64 `json:"vcpu_hours_vs_oracle"`
}

// SweepGroup is one input's frontiers, or all inputs' together.
type SweepGroup struct {
	Name string `json:"name"`
	VMs  int64  `json:"vms"`
	// Frontiers has the policies in the order of SweepConfig.Policies,
	// then the hindsight bounds and the yardstick.
	Frontiers []Frontier `json:"frontiers"`
	// Matched[i] reads Frontiers[i] at every level.
	Matched [][]Matched `json:"matched"`
}

// SweepReport is a sweep's outcome.
type SweepReport struct {
	Levels []float64 `json:"levels"`
	// Groups has one entry per input and, when there are several, a last
	// one for all of them together ("all"): their sums, not an average of
	// their figures.
	Groups  []SweepGroup `json:"groups"`
	Skipped int64        `json:"skipped"`
}

// Total is the group that sums every input: the last one.
func (r *SweepReport) Total() *SweepGroup { return &r.Groups[len(r.Groups)-1] }

// knobSetting is one value of a mode's knob(s).
type knobSetting struct {
	label string
	set   func(p *engine.Policy)
}

// ErrNoKnob: the policy's mode has no knob to sweep.
var ErrNoKnob = errors.New("no knob to sweep")

func f64(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// sweepSettings returns the knob a mode is swept over and its values,
// valid for base.
func sweepSettings(base engine.Policy, grid bool) (knob string, out []knobSetting, err error) {
	switch mode := base.Mode; mode {
	case engine.ModePredictive:
		for _, g := range predictiveGains {
			out = append(out, knobSetting{"min_gain=" + f64(g), func(p *engine.Policy) { p.MinGain = g }})
		}
		return "min_gain", out, nil
	case engine.ModeSandpiper, "":
		for _, v := range sandpiperTargets {
			if v < base.Lower || v > base.Upper {
				continue
			}
			out = append(out, knobSetting{"target=" + f64(v), func(p *engine.Policy) { p.Target = v }})
		}
		return "target", out, nil
	case engine.ModeThreshold:
		pairs := thresholdPath
		if grid {
			pairs = nil
			for _, u := range thresholdUppers {
				for _, l := range thresholdLowers {
					if l < u {
						pairs = append(pairs, [2]float64{u, l})
					}
				}
			}
		}
		for _, pr := range pairs {
			out = append(out, knobSetting{"upper=" + f64(pr[0]) + " remove_below=" + f64(pr[1]),
				func(p *engine.Policy) {
					p.Upper, p.RemoveBelow = pr[0], pr[1]
					// Lower and Target are sandpiper's, unused here, but
					// must stay within [0, upper] to validate.
					p.Lower, p.Target = min(p.Lower, pr[0]/2), min(p.Target, pr[0])
				}})
		}
		return "upper/remove_below", out, nil
	case engine.ModeVPA:
		pairs := vpaPath
		if grid {
			pairs = nil
			for _, q := range vpaPercentiles {
				for _, m := range vpaMargins {
					pairs = append(pairs, [2]float64{q, m})
				}
			}
		}
		for _, pr := range pairs {
			out = append(out, knobSetting{"vpa_percentile=" + f64(pr[0]) + " vpa_margin=" + f64(pr[1]),
				func(p *engine.Policy) { p.VPAPercentile, p.VPAMargin = pr[0], pr[1] }})
		}
		return "vpa_percentile/vpa_margin", out, nil
	default:
		return "", nil, fmt.Errorf("%w: mode %q", ErrNoKnob, mode)
	}
}

// The knobs' values, chosen on the development day.
var (
	// predictiveGains span 0.4 %–4.2 % overload time there, about 20 %
	// apart: interpolating between neighbours is within 0.004× of gains
	// 5 % apart (1.633× against 1.630× at 1 %). The lowest two only make
	// the curve reach 0.5 % on every evaluation day; the range decides
	// where a curve is drawn, not what it reads at a level.
	predictiveGains = []float64{0.002, 0.0025, 0.003, 0.004, 0.005, 0.006, 0.0075, 0.009, 0.011, 0.0135, 0.0165, 0.02, 0.025, 0.031, 0.039, 0.05, 0.065, 0.085, 0.11}
	// sandpiperTargets: the engine allows targets within [lower, upper];
	// on the development day they all give 2.18–2.19× at 1.0 % overload
	// time (scale-ups are rare and go to the maximum).
	sandpiperTargets = []float64{0.5, 0.6, 0.7, 0.8}

	thresholdUppers = []float64{0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}
	thresholdLowers = []float64{0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4}
	// thresholdPath: points of the grid's envelope on the development day
	// (0.6 %–6.7 % overload time), by increasing overload.
	thresholdPath = [][2]float64{{0.2, 0.02}, {0.4, 0.02}, {0.3, 0.05}, {0.5, 0.05}, {0.7, 0.05}, {0.5, 0.1}, {0.5, 0.15},
		{0.6, 0.15}, {0.7, 0.15}, {0.8, 0.15}, {0.7, 0.2}, {0.8, 0.2}, {0.9, 0.2}, {0.8, 0.3}, {0.9, 0.4}}

	vpaPercentiles = []float64{0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1}
	vpaMargins     = []float64{0, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5}
	// vpaPath: points of the grid's envelope on the development day
	// (0.25 %–5.2 % overload time), by increasing overload: the best
	// percentile moves from P99 at low overload to P80 at high.
	vpaPath = [][2]float64{{0.99, 0.75}, {0.99, 0.3}, {0.99, 0.2}, {0.98, 0.3}, {0.98, 0.2}, {0.98, 0.1}, {0.95, 0.3}, {0.95, 0.2},
		{0.95, 0.1}, {0.9, 0.2}, {0.95, 0}, {0.9, 0.1}, {0.85, 0.2}, {0.9, 0}, {0.8, 0.1}, {0.8, 0}}
)

// swept is one policy's expansion over its knob.
type swept struct {
	name, knob string
	settings   []string
	first      int // index of its first setting in the expanded policies
}

// expand turns each dynamic policy into one policy per knob value. A
// policy that differs from an earlier one only in the swept knob (the
// predictive-lean preset and predictive) has the same frontier and is
// left out.
func expand(pols []Policy, grid bool) ([]Policy, []swept, error) {
	var out []Policy
	var sw []swept
next:
	for _, p := range pols {
		if p.Baseline != "" {
			continue
		}
		knob, settings, err := sweepSettings(p.Engine, grid)
		if err != nil {
			return nil, nil, fmt.Errorf("policy %s: %w", p.Name, err)
		}
		var mine []Policy
		for _, k := range settings {
			e := p.Engine
			k.set(&e)
			if err := e.Validate(); err != nil {
				return nil, nil, fmt.Errorf("policy %s at %s: %w", p.Name, k.label, err)
			}
			mine = append(mine, Policy{Name: p.Name + " " + k.label, Engine: e})
		}
		for _, s := range sw {
			if len(s.settings) == len(mine) && slices.EqualFunc(out[s.first:s.first+len(mine)], mine,
				func(a, b Policy) bool { return a.Engine == b.Engine }) {
				continue next
			}
		}
		s := swept{name: p.Name, knob: knob, first: len(out)}
		for i, k := range settings {
			out = append(out, mine[i])
			s.settings = append(s.settings, k.label)
		}
		sw = append(sw, s)
	}
	if len(out) == 0 {
		return nil, nil, errors.New("no dynamic policy to sweep")
	}
	return out, sw, nil
}

// groupSums are one group's sums: the replay's and the bounds'.
type groupSums struct {
	sim                 outcome
	dist, markov, slide []tally
}

func (g *groupSums) add(b *groupSums) {
	g.sim.add(&b.sim)
	addTallies(&g.dist, b.dist)
	addTallies(&g.markov, b.markov)
	addTallies(&g.slide, b.slide)
}

func addTallies(dst *[]tally, src []tally) {
	if *dst == nil {
		*dst = make([]tally, len(src))
	}
	for i := range src {
		(*dst)[i].merge(src[i])
	}
}

// Sweep runs every policy of cfg over its knob on each input, VMs in
// parallel, with the hindsight bounds beside them. Inputs are read one at
// a time and held in memory while they are simulated (the bounds replay
// each trace many times). A trace that cannot be read, or that a policy
// cannot run on, goes to skip and is left out of every frontier and bound.
func Sweep(ctx context.Context, inputs []SweepInput, cfg SweepConfig, skip func(error)) (*SweepReport, error) {
	if len(inputs) == 0 {
		return nil, errors.New("no traces to sweep")
	}
	pols, sw, err := expand(cfg.Policies, cfg.Grid)
	if err != nil {
		return nil, err
	}
	levels := cfg.Levels
	if levels == nil {
		levels = DefaultLevels
	}
	rep := &SweepReport{Levels: levels}
	var all groupSums
	for _, in := range inputs {
		var traces []*Trace
		var skipped int64
		for t, err := range in.Traces {
			if err == nil {
				err = t.check()
			}
			for i := 0; err == nil && i < len(pols); i++ {
				err = pols[i].check(t)
			}
			if err != nil {
				skipped++
				if skip != nil {
					skip(err)
				}
				continue
			}
			traces = append(traces, t)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		o, err := simulate(ctx, sliceTraces(traces), Config{Policies: pols, Actuation: cfg.Actuation, Workers: cfg.Workers}, skip)
		if err != nil {
			return nil, err
		}
		o.skipped += skipped
		g := groupSums{sim: *o, dist: hindsightTallies(traces, distributionKey), markov: hindsightTallies(traces, markovKey),
			slide: slidingMaxTallies(traces, 0.3)}
		rep.Groups = append(rep.Groups, g.group(in.Name, pols, sw, levels))
		rep.Skipped += g.sim.skipped
		all.add(&g)
	}
	if len(inputs) > 1 {
		rep.Groups = append(rep.Groups, all.group("all", pols, sw, levels))
	}
	return rep, nil
}

func (g *groupSums) group(name string, pols []Policy, sw []swept, levels []float64) SweepGroup {
	out := SweepGroup{Name: name}
	r := g.sim.report(pols)
	out.VMs = r.VMs
	for _, s := range sw {
		f := Frontier{Policy: s.name, Knob: s.knob}
		for i, label := range s.settings {
			x := r.Results[s.first+i]
			f.Points = append(f.Points, FrontierPoint{Setting: label, VsOracle: x.VsOracle,
				OverloadTimeFraction: x.OverloadTimeFraction, ActionsPerVMDay: x.ActionsPerVMDay})
		}
		out.Frontiers = append(out.Frontiers, f)
	}
	gain := func(i int) string { return "gain=" + strconv.FormatFloat(boundGains[i], 'g', 4, 64) }
	out.Frontiers = append(out.Frontiers,
		tallyFrontier(BoundDistribution, "gain", g.dist, gain),
		tallyFrontier(BoundMarkov, "gain", g.markov, gain),
		tallyFrontier(YardstickMax, "window", g.slide, func(i int) string { return "window=" + strconv.Itoa(i+1) }))
	for i := range out.Frontiers {
		m := make([]Matched, len(levels))
		for j, l := range levels {
			m[j].OverloadTimeFraction = l
			if v := out.Frontiers[i].At(l); !math.IsNaN(v) {
				m[j].VsOracle = &v
			}
		}
		out.Matched = append(out.Matched, m)
	}
	return out
}

func sliceTraces(ts []*Trace) iter.Seq2[*Trace, error] {
	return func(yield func(*Trace, error) bool) {
		for _, t := range ts {
			if !yield(t, nil) {
				return
			}
		}
	}
}
