package engine

import (
	"errors"
	"fmt"
)

// ErrSLABelowService: the SLA's mean response time is not above the mean
// service time, so no arrival rate meets it — more vCPUs cannot make one
// request faster under this model.
var ErrSLABelowService = errors.New("SLA response time not above the mean service time")

// GG1Capacity is the largest arrival rate (per second) a G/G/1 server can
// take while keeping its mean response time at most d:
//
//	λ_cap = [ s + (σa² + σb²) / (2 (d − s)) ]⁻¹
//
// with s the mean service time, σa² and σb² the variances of inter-arrival
// and service times (all in seconds, seconds²). It inverts the heavy-traffic
// approximation of the mean response time R = s + (σa² + σb²) / (2 (1/λ − s))
// (Kingman's bound on the G/G/1 waiting time, as Sandpiper's gray-box mode
// uses it; Wood et al., NSDI'07, §4.2). It is wrong when the server is not
// one queue in front of one server — a multi-threaded server on several
// vCPUs behaves more like G/G/c, which the bound overestimates — and when s
// is itself measured under queueing (an access log's duration includes the
// time a request waited inside the server), which makes it conservative.
func GG1Capacity(s, varA, varB, d float64) (float64, error) {
	if !(s > 0) || varA < 0 || varB < 0 {
		return 0, fmt.Errorf("G/G/1 capacity: need s > 0 and non-negative variances (s=%v, σa²=%v, σb²=%v)", s, varA, varB)
	}
	if !(d > s) {
		return 0, fmt.Errorf("%w: d=%.4gs, s=%.4gs", ErrSLABelowService, d, s)
	}
	return 1 / (s + (varA+varB)/(2*(d-s))), nil
}

// GG1Response is the approximation GG1Capacity inverts: the mean response
// time at arrival rate lambda, or +Inf when the server is saturated
// (λ·s ≥ 1).
func GG1Response(lambda, s, varA, varB float64) float64 {
	gap := 1/lambda - s
	if !(gap > 0) {
		return inf
	}
	return s + (varA+varB)/(2*gap)
}
