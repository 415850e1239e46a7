package sim

import (
	"math"
	"runtime"
	"sync"

	"github.com/hotplugheaven/hotplug/host/engine"
)

// Hindsight bounds for the predictive mode. Each gives every VM, in
// advance, the frequencies the predictive mode can only estimate, and sizes
// each interval as the mode does (engine.CheapestSize: the a minimising
// P(need > a) + gain × a), so it shows how far a perfect forecast of that
// kind would get:
//
//   - distribution: P(need) over the VM's whole trace;
//   - markov: P(need | the previous interval's need) over the VM's whole
//     trace, which also knows how the VM's level carries over.
//
// Like the simulator, a VM starts at its requested size, and like the
// oracle it is resized instantly. No causal policy is bound to stay above
// these figures (it could follow a VM's changes better than a whole-day
// frequency does), but to beat them it would have to forecast each VM
// better than knowing its day's frequencies in advance.
//
// Beside them, the yardstick issue 8 set its target from: a sliding-window
// maximum with 30 % headroom, causal like any live policy, traced over the
// window's length.

// Names of the bounds and the yardstick in a sweep's report.
const (
	BoundDistribution = "hindsight P(need)"
	BoundMarkov       = "hindsight P(need | previous need)"
	YardstickMax      = "sliding max +30 %"
)

// hindsightKey says which frequencies a bound knows: the need of interval
// i of t is forecast from the intervals with the same key.
type hindsightKey func(t *Trace, i int) int

func distributionKey(*Trace, int) int { return 0 }

func markovKey(t *Trace, i int) int { return fit(t.Demand[i-1], t.Requested) }

// tally scores allocations against demand: vCPU-intervals, the oracle's,
// and intervals overloaded. Its counts add up across trace sets.
type tally struct{ vcpu, oracle, over, steps float64 }

// add scores one interval of demand d allocated a vCPUs, of a VM that may
// have at most limit.
func (s *tally) add(d float64, a, limit int) {
	s.vcpu += float64(a)
	s.oracle += float64(fit(d, limit))
	s.steps++
	if d > float64(a) {
		s.over++
	}
}

func (s *tally) merge(b tally) {
	s.vcpu += b.vcpu
	s.oracle += b.oracle
	s.over += b.over
	s.steps += b.steps
}

// result returns vCPU-time over the oracle's and the overload time fraction.
func (s *tally) result() (vsOracle, overload float64) { return s.vcpu / s.oracle, s.over / s.steps }

// atOverload returns the vCPU ratio at the given overload time fraction,
// interpolated between the first two of n points (point(0), point(1), …)
// whose overload lies on either side of it; NaN if none do.
func atOverload(n int, point func(i int) (vsOracle, overload float64), target float64) float64 {
	prevR, prevO := point(0)
	for i := 1; i < n; i++ {
		r, o := point(i)
		if (o <= target) != (prevO <= target) {
			return prevR + (target-prevO)/(o-prevO)*(r-prevR)
		}
		prevR, prevO = r, o
	}
	return math.NaN()
}

// boundGains are the gains a hindsight bound is traced at, 8 % apart:
// fine enough that interpolating between them moves a figure by less than
// 0.001×.
var boundGains = func() (g []float64) {
	for v := 0.001; v < 1; v *= 1.08 {
		g = append(g, v)
	}
	return g
}()

// hindsightTallies sizes every VM from its own keyed frequencies, at each
// of boundGains, and returns one tally per gain.
func hindsightTallies(traces []*Trace, key hindsightKey) []tally {
	return parallelTallies(traces, len(boundGains), func(t *Trace, out []tally) {
		// count[k][n]: intervals (after the first) with key k needing n
		// vCPUs.
		count := map[int][]float64{}
		for i := 1; i < len(t.Demand); i++ {
			k := key(t, i)
			if count[k] == nil {
				count[k] = make([]float64, t.Requested+1)
			}
			count[k][fit(t.Demand[i], t.Requested)]++
		}
		// above[k][a-1]: the share of key k's intervals needing more than a.
		above := make(map[int][]float64, len(count))
		for k, c := range count {
			total := 0.0
			for _, v := range c {
				total += v
			}
			ab, rest := make([]float64, t.Requested), total-c[0]
			for a := 1; a <= t.Requested; a++ {
				rest -= c[a]
				ab[a-1] = rest / total
			}
			above[k] = ab
		}
		size := make(map[int]int, len(above))
		for g, gain := range boundGains {
			for k, ab := range above {
				size[k] = engine.CheapestSize(ab, 1, gain)
			}
			for i, d := range t.Demand {
				a := t.Requested
				if i > 0 {
					a = size[key(t, i)]
				}
				out[g].add(d, a, t.Requested)
			}
		}
	})
}

// hindsightAt returns vCPU-time over the oracle's at the given overload
// time fraction, interpolated between gains 8 % apart.
func hindsightAt(traces []*Trace, key hindsightKey, target float64) float64 {
	s := hindsightTallies(traces, key)
	return atOverload(len(s), func(i int) (float64, float64) { return s[i].result() }, target)
}

// slidingMaxWindows is the longest window the yardstick is traced to, in
// intervals: a PlanetLab day.
const slidingMaxWindows = 288

// slidingMaxTallies replays traces with the yardstick: each interval gets
// ceil((1 + headroom) × the largest demand of the w intervals before it),
// for w = 1 … slidingMaxWindows; one tally per window.
func slidingMaxTallies(traces []*Trace, headroom float64) []tally {
	return parallelTallies(traces, slidingMaxWindows, func(t *Trace, out []tally) {
		// q holds indices of the window's demands, their demands
		// decreasing: q[0] is the window's maximum.
		q := make([]int, 0, len(t.Demand))
		for w := 1; w <= slidingMaxWindows; w++ {
			q = q[:0]
			s := &out[w-1]
			for i, d := range t.Demand {
				a := t.Requested
				if i > 0 {
					for len(q) > 0 && t.Demand[q[len(q)-1]] <= t.Demand[i-1] {
						q = q[:len(q)-1]
					}
					q = append(q, i-1)
					if q[0] < i-w {
						q = q[1:]
					}
					a = fit((1+headroom)*t.Demand[q[0]], t.Requested)
				}
				s.add(d, a, t.Requested)
			}
		}
	})
}

// slidingMaxPoint returns the yardstick's vCPU-time over the oracle's and
// overload time fraction with a window of w intervals.
func slidingMaxPoint(traces []*Trace, w int, headroom float64) (vsOracle, overload float64) {
	s := slidingMaxTallies(traces, headroom)[w-1]
	return s.result()
}

// slidingMaxAt returns vCPU-time over the oracle's at the given overload
// time fraction for the sliding maximum with headroom, interpolated between
// the two window lengths whose overload straddles it (a longer window
// allocates more and overloads less).
func slidingMaxAt(traces []*Trace, headroom, target float64) float64 {
	s := slidingMaxTallies(traces, headroom)
	return atOverload(len(s), func(i int) (float64, float64) { return s[i].result() }, target)
}

// parallelTallies runs score on every trace, spread over GOMAXPROCS
// goroutines, each adding into its own n tallies, and sums them: counts of
// whole intervals, so the sum does not depend on the order.
func parallelTallies(traces []*Trace, n int, score func(t *Trace, out []tally)) []tally {
	workers := min(runtime.GOMAXPROCS(0), max(len(traces), 1))
	parts := make([][]tally, workers)
	var wg sync.WaitGroup
	for w := range workers {
		parts[w] = make([]tally, n)
		wg.Go(func() {
			for i := w; i < len(traces); i += workers {
				score(traces[i], parts[w])
			}
		})
	}
	wg.Wait()
	out := make([]tally, n)
	for _, p := range parts {
		for i := range out {
			out[i].merge(p[i])
		}
	}
	return out
}
