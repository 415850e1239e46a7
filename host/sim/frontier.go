package sim

import (
	"math"
	"slices"
)

// FrontierPoint is one setting of a policy's knob and what it achieved.
type FrontierPoint struct {
	// Setting names the knob's value(s), e.g. "min_gain=0.0135".
	Setting  string  `json:"setting"`
	VsOracle float64 `json:"vcpu_hours_vs_oracle"`
	// OverloadTimeFraction is the share of VM-time with demand above the
	// allocation.
	OverloadTimeFraction float64 `json:"overload_time_fraction"`
	ActionsPerVMDay      float64 `json:"actions_per_vm_day"`
}

// Frontier is what a policy costs against what it risks, over its knob:
// vCPU-hours ÷ the oracle's against overload time.
type Frontier struct {
	Policy string `json:"policy"`
	Knob   string `json:"knob"`
	// Hindsight marks a bound or yardstick traced by the simulator
	// itself, not an engine mode the actuator can run.
	Hindsight bool            `json:"hindsight,omitempty"`
	Points    []FrontierPoint `json:"points"`
}

// Envelope returns the points no other point beats on both axes (less or
// equal overload and fewer or equal vCPU-hours, one of them strictly),
// by increasing overload: the policy at its best for each level of risk.
func (f *Frontier) Envelope() []FrontierPoint {
	pts := slices.Clone(f.Points)
	slices.SortStableFunc(pts, func(a, b FrontierPoint) int {
		if c := cmpFloat(a.OverloadTimeFraction, b.OverloadTimeFraction); c != 0 {
			return c
		}
		return cmpFloat(a.VsOracle, b.VsOracle)
	})
	var out []FrontierPoint
	for _, p := range pts {
		if math.IsNaN(p.VsOracle) || math.IsNaN(p.OverloadTimeFraction) {
			continue
		}
		// Every kept point has no more overload than p: p stays only if it
		// is cheaper than all of them.
		if len(out) == 0 || p.VsOracle < out[len(out)-1].VsOracle {
			out = append(out, p)
		}
	}
	return out
}

// At returns vCPU-hours ÷ the oracle's at overload time fraction target,
// interpolated linearly between the two points of the envelope on either
// side of it; NaN when the frontier does not reach that far (every
// setting overloads more, or less, than target).
func (f *Frontier) At(target float64) float64 {
	env := f.Envelope()
	for i, p := range env {
		switch {
		case p.OverloadTimeFraction == target:
			return p.VsOracle
		case p.OverloadTimeFraction > target:
			if i == 0 {
				return math.NaN()
			}
			q := env[i-1]
			return q.VsOracle + (target-q.OverloadTimeFraction)/(p.OverloadTimeFraction-q.OverloadTimeFraction)*(p.VsOracle-q.VsOracle)
		}
	}
	return math.NaN()
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// tallyFrontier turns a bound's or yardstick's tallies into a frontier.
func tallyFrontier(name, knob string, s []tally, setting func(i int) string) Frontier {
	f := Frontier{Policy: name, Knob: knob, Hindsight: true}
	for i := range s {
		r, o := s[i].result()
		f.Points = append(f.Points, FrontierPoint{Setting: setting(i), VsOracle: r, OverloadTimeFraction: o})
	}
	return f
}
