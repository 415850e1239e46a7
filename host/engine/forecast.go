package engine

import (
	"math"
	"slices"
)

// ar1Forecast fits x[t] - μ = φ (x[t-1] - μ) + ε by the lag-1 sample
// autocorrelation and returns the one-step forecast μ + φ (x[last] - μ).
// φ is clipped to [0, 1]: a negative φ would forecast a drop right after a
// rise, which is how noise looks, not how load behaves. A constant series
// forecasts itself.
func ar1Forecast(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	last := x[len(x)-1]
	if len(x) < 3 {
		return last
	}
	var mean float64
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	var num, den float64
	for i, v := range x {
		d := v - mean
		den += d * d
		if i > 0 {
			num += d * (x[i-1] - mean)
		}
	}
	if den == 0 {
		return last
	}
	phi := math.Max(0, math.Min(1, num/den))
	return mean + phi*(last-mean)
}

// percentile returns the p-quantile (0 < p ≤ 1) of x by the nearest-rank
// method: the smallest value with at least p of the samples at or below it.
// Nearest rank never interpolates above the largest sample, so a peak is
// always a demand that was actually seen.
func percentile(x []float64, p float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	rank := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(rank, len(s)-1))]
}
