package sim

import (
	"math"
	"testing"
)

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
