package engine

import (
	"fmt"
	"time"
)

// ModeSandpiper is Sandpiper's black-box hotspot detection (Wood et al.,
// NSDI'07, §4): a hotspot needs K of the samples of the last N intervals
// (in time, see recentFrom and countSpaced) above Upper and the
// AR(1) forecast of the next sample above it too; the scale-up target is
// ceil(Percentile of demand over the window ÷ Target). A vCPU is removed
// when the last DownSamples samples, all taken after the last action, would
// each keep the smaller allocation below Lower.
const ModeSandpiper = "sandpiper"

type sandpiper struct{}

func (sandpiper) decide(s *step) Decision {
	p := s.p
	current := float64(max(s.in.Current, 1))
	demand := s.demand()
	from := s.recentFrom(p.N)
	util := make([]float64, len(demand)-from)
	for i, v := range demand[from:] {
		util[i] = v / current
	}
	above := s.countSpaced(from, func(i int) bool { return util[i-from] > p.Upper })
	forecast := ar1Forecast(demand) / current
	peak := percentile(demand, p.Percentile)
	s.d.Evidence = Evidence{Utilisation: util, Above: above, K: p.K, N: p.N, Forecast: forecast,
		PeakDemand: peak, Percentile: p.Percentile, Samples: len(s.window)}

	if above >= p.K && forecast > p.Upper {
		want := ceilCPUs(peak / p.Target)
		return s.up(want, RuleHotspot, fmt.Sprintf("%d of last %d samples above %s utilisation and AR(1) forecast %s; p%.0f demand %s CPUs needs %s at %s",
			above, p.N, pct(p.Upper), pct(forecast), 100*p.Percentile, num(peak), vcpus(max(want, s.in.Current+1)), pct(p.Target)))
	}
	// Tasks waiting for a CPU are saturation even when utilisation, which
	// a guest with many short runnable tasks can keep moderate, is not.
	if th := p.RunQThreshold.D(); th > 0 {
		var worst time.Duration
		for _, x := range s.window[from:] {
			worst = max(worst, x.RunQP95)
		}
		slow := s.countSpaced(from, func(i int) bool { return s.window[i].RunQP95 > th })
		if slow >= p.K {
			want := max(ceilCPUs(peak/p.Target), s.in.Current+1)
			return s.up(want, RuleRunQueue, fmt.Sprintf("%d of last %d samples with p95 run-queue latency above %v (worst %v); %s",
				slow, p.N, th, worst.Round(time.Microsecond), vcpus(want)))
		}
	}
	if s.in.Current > s.lo {
		if from, ok := s.sustained(p.DownSamples); ok {
			low := s.window[from:]
			worst := 0.0
			for _, x := range low {
				worst = max(worst, x.Demand())
			}
			if worst/float64(s.in.Current-1) < p.Lower {
				return s.down(s.in.Current-1, RuleSustainedLow, fmt.Sprintf("demand at most %s CPUs over the last %d samples: %s would run below %s",
					num(worst), len(low), vcpus(s.in.Current-1), pct(p.Lower)))
			}
		}
	}
	return s.hold(RuleSteady, fmt.Sprintf("%d of last %d samples above %s, forecast %s", above, p.N, pct(p.Upper), pct(forecast)))
}
