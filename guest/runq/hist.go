package runq

import (
	"math"
	"time"

	"github.com/hotplugheaven/hotplug/proto"
)

// Histograms here are log2 histograms of waits in microseconds, as
// bpf/runqlat.c fills them and proto.RunQueue.Buckets carries them:
// bucket i counts waits in [2^i, 2^(i+1)) µs, except that bucket 0 also
// holds waits under 1 µs, i.e. it spans [0, 2) µs.

// bucketBounds returns bucket i's range in nanoseconds.
func bucketBounds(i int) (lo, hi float64) {
	if i == 0 {
		return 0, 2000
	}
	return math.Ldexp(1000, i), math.Ldexp(1000, i+1)
}

// quantile returns the q-quantile (0 < q ≤ 1) of the waits counted in h.
// Inside the bucket that holds it, the value is interpolated linearly, as
// Prometheus' histogram_quantile does: the answer is exact to within that
// bucket, i.e. within a factor of two. An empty histogram gives 0. The
// result never exceeds proto.MaxInterval.
func quantile(h []uint64, q float64) time.Duration {
	var total float64
	for _, n := range h {
		total += float64(n)
	}
	if total == 0 || !(q > 0) {
		return 0
	}
	q = min(q, 1)
	rank := q * total
	var cum float64
	for i, n := range h {
		if n == 0 {
			continue
		}
		if cum+float64(n) >= rank {
			lo, hi := bucketBounds(i)
			v := lo + (hi-lo)*(rank-cum)/float64(n)
			return clampDuration(v)
		}
		cum += float64(n)
	}
	// Only reached through float rounding: the top non-empty bucket.
	for i := len(h) - 1; i >= 0; i-- {
		if h[i] != 0 {
			_, hi := bucketBounds(i)
			return clampDuration(hi)
		}
	}
	return 0
}

// clampDuration converts nanoseconds to a Duration within [0, MaxInterval],
// the range proto.Report.Validate accepts for a percentile.
func clampDuration(ns float64) time.Duration {
	switch {
	case !(ns > 0): // also NaN
		return 0
	case ns >= float64(proto.MaxInterval):
		return proto.MaxInterval
	}
	return time.Duration(ns)
}

// delta sets out[i] = cur[i] - prev[i] and reports whether every counter
// moved forward. Counters that went backwards (which cumulative kernel
// counters do only on a reset) make the whole delta invalid.
func delta(out, cur, prev []uint64) bool {
	for i := range out {
		if cur[i] < prev[i] {
			return false
		}
		out[i] = cur[i] - prev[i]
	}
	return true
}

// trimmed returns h without its trailing empty buckets (nil when all are
// empty): the wire carries only what was seen.
func trimmed(h []uint64) []uint64 {
	n := len(h)
	for n > 0 && h[n-1] == 0 {
		n--
	}
	if n == 0 {
		return nil
	}
	return append([]uint64(nil), h[:n]...)
}

// fromHistogram is the RunQueue for one interval's histogram.
func fromHistogram(src string, h []uint64) *proto.RunQueue {
	return &proto.RunQueue{
		Source:   src,
		Buckets:  trimmed(h),
		P50Nanos: int64(quantile(h, 0.50)),
		P95Nanos: int64(quantile(h, 0.95)),
		P99Nanos: int64(quantile(h, 0.99)),
	}
}

// fromMean is the RunQueue of a source that knows only the mean wait.
//
// A mean says nothing about the spread, so the percentiles are those of an
// exponential distribution with that mean (p_q = −ln(1−q)·mean: p50 =
// 0.69·mean, p95 = 3.0·mean, p99 = 4.6·mean). The exponential is the
// distribution that assumes least beyond the mean (maximum entropy on
// [0, ∞)) and the wait distribution of an M/M/1 queue. It is an estimate of
// shape, not a measurement: CPU-bound tasks taking turns wait about one
// timeslice each time, so there p95 is overstated about threefold, while
// bursty wake-ups have a longer tail than this. Buckets stay empty.
func fromMean(src string, mean time.Duration) *proto.RunQueue {
	m := float64(max(mean, 0))
	return &proto.RunQueue{
		Source:   src,
		P50Nanos: int64(clampDuration(m * math.Ln2)),
		P95Nanos: int64(clampDuration(m * -math.Log(0.05))),
		P99Nanos: int64(clampDuration(m * -math.Log(0.01))),
	}
}
