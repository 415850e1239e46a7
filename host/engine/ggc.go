package engine

import (
	"fmt"
	"math"
)

// A VM with c vCPUs serving requests in parallel is a G/G/c queue: one
// queue of requests, c servers (the vCPUs), each request needing D
// CPU-seconds of service. This file holds the queueing formulas the
// gray-box mode sizes with; they are pure functions of the measured
// workload and know nothing of the VM's current size.
//
// References:
//   - A. O. Allen, Probability, Statistics, and Queueing Theory with
//     Computer Science Applications, 2nd ed., Academic Press 1990, §6.4:
//     the Allen–Cunneen approximation of the mean wait in GI/G/c,
//     E[Wq] ≈ C(c, a) / (c μ − λ) · (c_a² + c_s²) / 2,
//     the M/M/c wait scaled by the mean of the two squared coefficients of
//     variation;
//   - W. Whitt, "Approximations for the GI/G/m queue", Production and
//     Operations Management 2(2), 1993, pp. 114–161, §2 and §4: the delay
//     probability P(W > 0) ≈ C(c, a) (exact for M/M/c) and the conditional
//     wait approximated as exponential, P(W > t) ≈ P(W > 0)·exp(−P(W > 0)·t / E[Wq]),
//     which gives the wait's percentiles.
//
// C(c, a) is the Erlang C formula with offered load a = λ·D (in CPUs).

// ErlangC is the probability that an arrival waits in an M/M/c queue with
// offered load a = λ/μ (in servers); 1 when a ≥ c. It uses the Erlang B
// recursion B(k) = a·B(k−1) / (k + a·B(k−1)), which stays finite for any c,
// and C = c·B / (c − a·(1 − B)).
func ErlangC(c int, a float64) float64 {
	if c < 1 || !(a < float64(c)) {
		return 1
	}
	if a <= 0 {
		return 0
	}
	b := 1.0
	for k := 1; k <= c; k++ {
		b = a * b / (float64(k) + a*b)
	}
	return float64(c) * b / (float64(c) - a*(1-b))
}

// Workload is what the gray-box mode measured of one application, in
// seconds and requests per second.
type Workload struct {
	// Rate is the arrival rate λ to size for (the peak).
	Rate float64
	// Demand is D, the CPU-seconds one request costs: the mean service
	// time on one vCPU.
	Demand float64
	// Other is the part of the response time that is not CPU (waiting on
	// disks, upstreams, locks): more vCPUs do not shrink it.
	Other float64
	// CA2 and CS2 are the squared coefficients of variation of
	// inter-arrival and service times.
	CA2, CS2 float64
	// Shape is the ratio of the response time's SLA percentile to its mean
	// when requests do not queue (≥ 1): how the service part's percentile
	// is read from its mean.
	Shape float64
}

// Wait returns the Allen–Cunneen mean queueing delay E[Wq] on c vCPUs and
// the delay probability P(W > 0) (Whitt, §2); +Inf and 1 when the vCPUs
// are saturated (λ·D ≥ c).
func (w Workload) Wait(c int) (mean, delayed float64) {
	a := w.Rate * w.Demand
	if c < 1 || !(a < float64(c)) {
		return inf, 1
	}
	if a <= 0 {
		return 0, 0
	}
	pw := ErlangC(c, a)
	return pw / (float64(c)/w.Demand - w.Rate) * (w.CA2 + w.CS2) / 2, pw
}

// WaitQuantile is the q-quantile (0 < q < 1) of the queueing delay on c
// vCPUs from Whitt's exponential conditional wait:
// t_q = E[Wq]/P(W>0) · ln(P(W>0)/(1−q)) when P(W>0) > 1−q, else 0.
func (w Workload) WaitQuantile(c int, q float64) float64 {
	mean, pw := w.Wait(c)
	switch {
	case math.IsInf(mean, 1):
		return inf
	case mean <= 0 || pw <= 1-q:
		return 0
	}
	return mean / pw * math.Log(pw/(1-q))
}

// Response is the predicted response time on c vCPUs: its mean when q is
// 0, else its q-quantile, approximated as the service part's quantile
// (Shape × (D + Other)) plus the wait's quantile. Adding quantiles
// overstates the quantile of the sum of two independent parts, so the
// prediction errs on the side of more vCPUs.
func (w Workload) Response(c int, q float64) float64 {
	if q <= 0 {
		mean, _ := w.Wait(c)
		return w.Demand + w.Other + mean
	}
	return max(w.Shape, 1)*(w.Demand+w.Other) + w.WaitQuantile(c, q)
}

// utilEps keeps rounding from adding a vCPU when λ·D/upper is a whole
// number.
const utilEps = 1e-9

// SLA is a response-time objective: a mean (Quantile 0), or a Target the
// Quantile of response times must not exceed.
type SLA struct {
	Quantile, Target float64
}

func (s SLA) String() string {
	if s.Quantile <= 0 {
		return fmt.Sprintf("mean ≤ %.0fms", 1000*s.Target)
	}
	return fmt.Sprintf("p%g ≤ %.0fms", math.Round(1000*s.Quantile)/10, 1000*s.Target)
}

// Size is the smallest c in [1, limit] whose predicted response time meets
// the SLA with utilisation λ·D/c at most upper; ok is false, and c is
// limit, when none does. It depends on the workload alone, not on how many
// vCPUs the VM has now.
func (w Workload) Size(sla SLA, upper float64, limit int) (c int, ok bool) {
	a := w.Rate * w.Demand
	start := max(1, ceilCPUs(a/upper-utilEps))
	if start > limit {
		return limit, false
	}
	for c := start; c <= limit; c++ {
		if w.Response(c, sla.Quantile) <= sla.Target {
			return c, true
		}
	}
	return limit, false
}
