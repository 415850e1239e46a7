package sim

import (
	"math"
	"testing"

	"github.com/hotplugheaven/hotplug/host/engine"
)

// Hindsight bounds for the predictive mode's target (issue 8: 1 % overload
// time at 1.5× the oracle's vCPU-hours). Each gives every VM, in advance,
// the frequencies the predictive mode can only estimate, and sizes each
// interval as the mode does (engine.CheapestSize: the a minimising
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

// hindsightKey says which frequencies a bound knows: the need of interval
// i of t is forecast from the intervals with the same key.
type hindsightKey func(t *Trace, i int) int

func distributionKey(*Trace, int) int { return 0 }

func markovKey(t *Trace, i int) int { return fit(t.Demand[i-1], t.Requested) }

// tally scores allocations against demand: vCPU-time, the oracle's, and
// intervals overloaded.
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

// hindsightPoint replays traces with every VM sized from its own keyed
// frequencies at one gain; it returns vCPU-time over the oracle's and the
// overload time fraction.
func hindsightPoint(traces []*Trace, key hindsightKey, gain float64) (vsOracle, overload float64) {
	var score tally
	for _, t := range traces {
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
		size := map[int]int{}
		for k, c := range count {
			total := 0.0
			for _, v := range c {
				total += v
			}
			above, rest := make([]float64, t.Requested), total-c[0]
			for a := 1; a <= t.Requested; a++ {
				rest -= c[a]
				above[a-1] = rest / total
			}
			size[k] = engine.CheapestSize(above, 1, gain)
		}
		for i, d := range t.Demand {
			a := t.Requested
			if i > 0 {
				a = size[key(t, i)]
			}
			score.add(d, a, t.Requested)
		}
	}
	return score.result()
}

// hindsightAt returns vCPU-time over the oracle's at the given overload
// time fraction, interpolated between gains 8 % apart.
func hindsightAt(traces []*Trace, key hindsightKey, target float64) float64 {
	var gains []float64
	for g := 0.001; g < 1; g *= 1.08 {
		gains = append(gains, g)
	}
	return atOverload(len(gains), func(i int) (float64, float64) { return hindsightPoint(traces, key, gains[i]) }, target)
}

// slidingMaxPoint replays traces with the yardstick: each interval
// gets ceil((1 + headroom) × the largest demand of the w intervals before
// it), causal like any live policy. It returns vCPU-time over the oracle's
// and the overload time fraction.
func slidingMaxPoint(traces []*Trace, w int, headroom float64) (vsOracle, overload float64) {
	var score tally
	for _, t := range traces {
		// q holds indices of the window's demands, their demands
		// decreasing: q[0] is the window's maximum.
		var q []int
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
			score.add(d, a, t.Requested)
		}
	}
	return score.result()
}

// slidingMaxAt returns vCPU-time over the oracle's at the given overload
// time fraction for the sliding maximum with headroom, interpolated between
// the two window lengths whose overload straddles it (a longer window
// allocates more and overloads less).
func slidingMaxAt(traces []*Trace, headroom, target float64) float64 {
	return atOverload(288, func(i int) (float64, float64) { return slidingMaxPoint(traces, i+1, headroom) }, target)
}

// TestSlidingMax: the window maximum matches a plain scan, and a longer
// window or more headroom never overloads more.
func TestSlidingMax(t *testing.T) {
	tr := &Trace{Requested: 8, Demand: []float64{0.5, 3.2, 1, 0.2, 0.1, 2.5, 7.9, 0.3, 0.3, 0.3, 4, 1.1}}
	for w := 1; w <= 5; w++ {
		var scan tally
		for i, d := range tr.Demand {
			a := 8
			if i > 0 {
				m := 0.0
				for j := max(0, i-w); j < i; j++ {
					m = max(m, tr.Demand[j])
				}
				a = fit(1.3*m, 8)
			}
			scan.add(d, a, 8)
		}
		r, o := slidingMaxPoint([]*Trace{tr}, w, 0.3)
		if wr, wo := scan.result(); math.Abs(r-wr) > 1e-12 || math.Abs(o-wo) > 1e-12 {
			t.Errorf("w %d: got %v× %v overload, a plain scan gives %v× %v", w, r, o, wr, wo)
		}
	}
	var traces []*Trace
	for tr, err := range Read([]string{"testdata/planetlab/20110303"}, ReadOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		traces = append(traces, tr)
	}
	r1, o1 := slidingMaxPoint(traces, 6, 0.3)
	r2, o2 := slidingMaxPoint(traces, 12, 0.3)
	r3, o3 := slidingMaxPoint(traces, 12, 0.6)
	if !(o2 <= o1 && r2 >= r1 && o3 <= o2 && r3 >= r2) {
		t.Errorf("w 6: %v× %v; w 12: %v× %v; w 12 +60 %%: %v× %v: want overload falling and vCPUs rising", r1, o1, r2, o2, r3, o3)
	}
}

// TestHindsightBounds: on the fixture VMs, knowing more costs less — the
// level-aware bound needs no more than the whole-day one — and both lie
// between the oracle and keeping each VM at its peak.
func TestHindsightBounds(t *testing.T) {
	var traces []*Trace
	for tr, err := range Read([]string{"testdata/planetlab/20110303"}, ReadOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		traces = append(traces, tr)
	}
	for _, target := range []float64{0.02, 0.05} {
		dist := hindsightAt(traces, distributionKey, target)
		markov := hindsightAt(traces, markovKey, target)
		var peak, oracle float64
		for _, tr := range traces {
			p := 0.0
			for _, d := range tr.Demand {
				p = max(p, d)
				oracle += float64(fit(d, tr.Requested))
			}
			peak += float64(fit(p, tr.Requested) * len(tr.Demand))
		}
		if !(markov <= dist+1e-9 && markov >= 1 && dist <= peak/oracle) {
			t.Errorf("at %v overload: markov %v, distribution %v; want 1 ≤ markov ≤ distribution ≤ static-peak %v", target, markov, dist, peak/oracle)
		}
	}
}

// BenchmarkHindsightBound reports both bounds at 1 % overload time for the
// traces of SIM_BENCH_TRACES, and beside them the yardstick issue 8 quotes
// for its 1.5× target ("a simple sliding-window maximum with 30 % headroom
// needs about 1.8× for 1 %"): on the development day this simulator gives
// it 1.784×, so the traces, demand and oracle here are the (folders separated by the OS's list
// separator), e.g. the development day:
//
//	SIM_BENCH_TRACES=$PWD/../shared/data/planetlab/20110303 go test ./host/sim -run '^$' -bench HindsightBound -benchtime 1x
func BenchmarkHindsightBound(b *testing.B) {
	ts := benchTraces(b)
	var dist, markov, swm float64
	for b.Loop() {
		dist = hindsightAt(ts, distributionKey, 0.01)
		markov = hindsightAt(ts, markovKey, 0.01)
		swm = slidingMaxAt(ts, 0.3, 0.01)
	}
	b.ReportMetric(dist, "distribution-x-oracle@1%")
	b.ReportMetric(markov, "markov-x-oracle@1%")
	b.ReportMetric(swm, "slidingmax30-x-oracle@1%")
}
