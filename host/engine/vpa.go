package engine

import (
	"fmt"
	"math"
)

// ModeVPA is the CPU recommender of the Kubernetes Vertical Pod Autoscaler
// (kubernetes/autoscaler, vertical-pod-autoscaler/pkg/recommender), applied
// to vCPUs:
//
//   - every sample's CPU usage (Busy: like VPA, usage, not the demand that
//     waited for a CPU) goes into a histogram with exponentially growing
//     buckets: the first 0.001 cores wide, each 5 % wider than the one
//     before, up to 1000 cores (model/aggregations_config.go,
//     util/histogram_options.go);
//   - a sample weighs max(vCPUs online, 0.1) — VPA weighs by the request, so
//     history recorded at a smaller size fades as soon as the size grows —
//     times 2^(age ÷ VPAHalfLife) (util/decaying_histogram.go; 24 h);
//   - the recommendation is the end of the bucket holding the VPAPercentile
//     (0.9) of the weight (util/histogram.go), times 1 + VPAMargin (0.15)
//     (logic/recommender.go), rounded up to whole vCPUs.
//
// The VM is moved to the recommendation, up or down, whenever it differs;
// VPA's recommender runs each minute, so set both cooldowns to 1m. The
// histogram is rebuilt from the engine's window on every decision (modes
// keep no state), so the window bounds the history VPA would keep: with
// 1-minute samples, window = 10000 holds about a week, close to VPA's 8
// days. Unlike VPA, buckets whose weight fell below VPA's epsilon are not
// dropped; that only matters for samples more than 10 half-lives old.
const ModeVPA = "vpa"

// RuleVPA marks a move to VPA's recommendation.
const RuleVPA = "vpa-target"

// VPA's CPU histogram (aggregations_config.go: NewExponentialHistogramOptions
// (1000.0, 0.001, 1.+0.05, epsilon)) and sample weight floor.
const (
	vpaFirstBucket = 0.001
	vpaRatio       = 1.05
	vpaMaxValue    = 1000.0
	vpaMinWeight   = 0.1
	// vpaBuckets = ceil(log_ratio(maxValue × (ratio−1) ÷ firstBucket + 1)) + 1,
	// checked by a test.
	vpaBuckets = 223
)

type vpa struct{}

// vpaBucket is VPA's FindBucket: the last bucket starting at or below v
// (the first for anything below 0.001, NaN included). VPA computes it as
// floor(log_ratio(v × (ratio−1) ÷ first + 1)); a search of the starts gives
// the same bucket at half the cost of the logarithm, which the simulator
// pays for every sample of every window.
func vpaBucket(v float64) int {
	b := 0
	for step := 128; step > 0; step >>= 1 { // 2 × 128 > vpaBuckets
		if n := b + step; n < vpaBuckets && vpaStarts[n] <= v {
			b = n
		}
	}
	return b
}

// vpaStarts holds vpaBucketStart of every bucket.
var vpaStarts = func() (s [vpaBuckets]float64) {
	for b := range s {
		s[b] = vpaBucketStart(b)
	}
	return s
}()

// vpaBucketStart is VPA's GetBucketStart: first × (ratio^b − 1) ÷ (ratio − 1).
func vpaBucketStart(b int) float64 {
	if b == 0 {
		return 0
	}
	return vpaFirstBucket * (math.Pow(vpaRatio, float64(b)) - 1) / (vpaRatio - 1)
}

// vpaPercentile builds the decaying histogram of the window's usage and
// returns VPA's percentile: the end of the bucket where the cumulative
// weight first reaches p of the total (the start of the last bucket, which
// has no end).
func vpaPercentile(window []Sample, p float64, halfLife float64) float64 {
	var hist [vpaBuckets]float64
	total := 0.0
	lo, hi := vpaBuckets-1, 0
	decay := newDecay(window, halfLife)
	for i := len(window) - 1; i >= 0; i-- {
		x := &window[i]
		w := max(float64(x.Online), vpaMinWeight) * decay.weight(i)
		b := vpaBucket(x.Busy)
		hist[b] += w
		total += w
		lo, hi = min(lo, b), max(hi, b)
	}
	if total == 0 {
		return 0
	}
	threshold := p * total
	partial := 0.0
	b := lo
	for ; b < hi; b++ {
		partial += hist[b]
		if partial >= threshold {
			break
		}
	}
	if b < vpaBuckets-1 {
		return vpaBucketStart(b + 1)
	}
	return vpaBucketStart(b)
}

func (vpa) decide(s *step) Decision {
	p := s.p
	usage := vpaPercentile(s.window, p.VPAPercentile, p.VPAHalfLife.D().Seconds())
	rec := usage * (1 + p.VPAMargin)
	want := max(ceilCPUs(rec), 1)
	s.d.Evidence.PeakDemand, s.d.Evidence.Percentile = usage, p.VPAPercentile
	why := fmt.Sprintf("p%.0f of CPU usage over %d samples (half-life %v) is %s CPUs; +%.0f%% is %s CPUs: %s",
		100*p.VPAPercentile, len(s.window), p.VPAHalfLife, num(usage), 100*p.VPAMargin, num(rec), vcpus(want))
	return s.toward(want, RuleVPA, why)
}
