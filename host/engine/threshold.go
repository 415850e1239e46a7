package engine

import "fmt"

// ModeThreshold is the rule of a first prototype and of many cloud
// autoscalers' defaults: one vCPU more when the last sample's utilisation of
// the current allocation is above Upper, one fewer when it is below
// RemoveBelow, judged on every sample (set K = N = 1 for that; the cooldowns
// still apply). It is here as the baseline the other modes must beat: it
// reacts one vCPU per interval, so a jump in demand takes many intervals to
// meet, and it cannot see past the last sample.
const ModeThreshold = "threshold"

// Rules of ModeThreshold.
const (
	RuleAboveUpper  = "above-upper"  // utilisation above Upper
	RuleBelowRemove = "below-remove" // utilisation below RemoveBelow
)

type threshold struct{}

func (threshold) decide(s *step) Decision {
	p := s.p
	current := max(s.in.Current, 1)
	last := s.window[len(s.window)-1].Demand()
	util := last / float64(current)
	s.d.Evidence.Utilisation = []float64{util}
	switch {
	case util > p.Upper:
		return s.up(s.in.Current+1, RuleAboveUpper, fmt.Sprintf("utilisation %s of %s is above %s",
			pct(util), vcpus(current), pct(p.Upper)))
	case util < p.RemoveBelow && s.in.Current > s.lo:
		return s.down(s.in.Current-1, RuleBelowRemove, fmt.Sprintf("utilisation %s of %s is below %s",
			pct(util), vcpus(current), pct(p.RemoveBelow)))
	}
	return s.hold(RuleSteady, fmt.Sprintf("utilisation %s of %s is within [%s, %s]",
		pct(util), vcpus(current), pct(p.RemoveBelow), pct(p.Upper)))
}
