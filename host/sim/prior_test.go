package sim

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
)

// devDay is the development day the shipped forecast prior is learned from
// (../shared/data/README.md: tune on it, never on the evaluation days).
const devDay = "../../../shared/data/planetlab/20110303"

// derivePrior learns P(ceil(next demand) > median + k) for the offsets k
// of engine.ForecastPriorTable, pooled over every sample but the first of
// every trace, where median is the weighted median need of the samples
// before it as the predictive mode weighs them with PredictivePolicy's
// half-life and window (the mode reads the table at offsets from that
// median). A sample counts for offset k only if a = median + k is a size
// the VM could be overloaded at: 1 ≤ a < requested. The traces cap demand
// at the requested size, so above it nothing is observed and counting
// those samples would bias the rises down. Each offset pools a different
// set of levels, so the raw shares need not fall with k; a running
// minimum makes the prior a proper tail.
func derivePrior(traces []*Trace) (p [len(engine.ForecastPriorTable)]float64, samples int) {
	const k0 = (len(engine.ForecastPriorTable) - 1) / 2
	pol := PredictivePolicy()
	var n, over [len(engine.ForecastPriorTable)]int
	for _, t := range traces {
		window := make([]engine.Sample, len(t.Demand))
		for i, d := range t.Demand {
			window[i] = engine.Sample{Time: time.UnixMilli(t.Time[i]), Busy: d}
		}
		for i := 1; i < len(t.Demand); i++ {
			median := engine.MedianNeed(window[max(0, i-pol.Window):i], t.Requested, pol.ForecastHalfLife.D())
			next := int(math.Ceil(t.Demand[i]))
			samples++
			for j := range n {
				a := median + j - k0
				if a < 1 || a >= t.Requested {
					continue
				}
				n[j]++
				if next > a {
					over[j]++
				}
			}
		}
	}
	for j := range p {
		p[j] = float64(over[j]) / float64(n[j])
		if j > 0 {
			p[j] = min(p[j], p[j-1])
		}
	}
	return p, samples
}

// TestForecastPriorIsDevDays re-derives engine.ForecastPriorTable from the
// development day and fails, printing the table to paste, if the shipped
// one differs. To regenerate:
//
//	go test ./host/sim -run TestForecastPriorIsDevDays -v
func TestForecastPriorIsDevDays(t *testing.T) {
	var traces []*Trace
	for tr, err := range Read([]string{devDay}, ReadOptions{}) {
		if err != nil {
			t.Fatalf("development day (../shared/data): %v", err)
		}
		traces = append(traces, tr)
	}
	if len(traces) != 1052 {
		t.Fatalf("development day: %d traces, want the 1,052 of 2011-03-03", len(traces))
	}
	got, samples := derivePrior(traces)
	var b strings.Builder
	fmt.Fprintf(&b, "var ForecastPriorTable = [...]float64{ // %d samples, 2011-03-03\n", samples)
	const k0 = (len(engine.ForecastPriorTable) - 1) / 2
	for j, v := range got {
		fmt.Fprintf(&b, "\t%.6f, // %+d\n", v, j-k0)
	}
	b.WriteString("}")
	t.Log("\n" + b.String())
	for j := range got {
		if math.Abs(got[j]-engine.ForecastPriorTable[j]) > 5e-7 {
			t.Fatalf("engine.ForecastPriorTable is not the development day's; paste into host/engine/prior.go:\n%s", b.String())
		}
	}
}
