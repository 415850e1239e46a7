package runq

import (
	"math"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/hotplugheaven/hotplug/proto"
)

func buckets(pairs ...int) []uint64 {
	h := make([]uint64, 32)
	for i := 0; i < len(pairs); i += 2 {
		h[pairs[i]] = uint64(pairs[i+1])
	}
	return h
}

func TestQuantile(t *testing.T) {
	cases := []struct {
		name string
		h    []uint64
		q    float64
		want time.Duration
	}{
		{"empty", buckets(), 0.95, 0},
		{"nil", nil, 0.5, 0},
		// 10 waits in [8, 16) µs: the median is halfway through.
		{"one bucket p50", buckets(3, 10), 0.5, 12 * time.Microsecond},
		{"one bucket p100", buckets(3, 10), 1, 16 * time.Microsecond},
		// Bucket 0 spans [0, 2) µs, sub-µs waits included.
		{"bucket 0", buckets(0, 4), 0.5, time.Microsecond},
		// 90 short waits and 10 of 1-2 ms: p50 among the short ones,
		// p95 and p99 in bucket 10, [1024, 2048) µs.
		{"tail p50", buckets(0, 90, 10, 10), 0.5, time.Duration(2000 * 50 / 90)},
		{"tail p95", buckets(0, 90, 10, 10), 0.95, 1024*time.Microsecond + 1024*time.Microsecond*5/10},
		{"tail p99", buckets(0, 90, 10, 10), 0.99, 1024*time.Microsecond + 1024*time.Microsecond*9/10},
		// The rank falls exactly on a bucket's end: that bucket's top.
		{"boundary", buckets(2, 5, 4, 5), 0.5, 8 * time.Microsecond},
		// The overflow slot starts at 2^31 µs ≈ 36 min; its upper half is
		// past proto.MaxInterval and is clamped.
		{"clamped", buckets(31, 1), 0.99, proto.MaxInterval},
		{"q above 1", buckets(3, 10), 2, 16 * time.Microsecond},
		{"q zero", buckets(3, 10), 0, 0},
		{"q NaN", buckets(3, 10), math.NaN(), 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := quantile(c.h, c.q); got != c.want {
				t.Errorf("quantile(%v, %v) = %v, want %v", trimmed(c.h), c.q, got, c.want)
			}
		})
	}
}

// Whatever the histogram, the percentiles are ordered, inside the bucket
// that holds their rank, and the RunQueue passes the wire's validation.
func TestFromHistogramProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		h := make([]uint64, 32)
		for i := range h {
			if rapid.Bool().Draw(rt, "used") {
				h[i] = rapid.Uint64Range(0, 1<<40).Draw(rt, "n")
			}
		}
		q := fromHistogram(proto.RunQSourceTPBTF, h)
		r := &proto.Report{Seq: 1, IntervalNanos: int64(time.Second), RunQueue: q}
		if err := r.Validate(); err != nil {
			rt.Fatalf("%v: %v", h, err)
		}
		var total float64
		for _, n := range h {
			total += float64(n)
		}
		for _, p := range []struct {
			q float64
			v int64
		}{{0.5, q.P50Nanos}, {0.95, q.P95Nanos}, {0.99, q.P99Nanos}} {
			if total == 0 {
				if p.v != 0 {
					rt.Fatalf("empty histogram gave p%v = %d", p.q*100, p.v)
				}
				continue
			}
			// The bucket holding the rank.
			cum, i := 0.0, 0
			for ; i < len(h); i++ {
				cum += float64(h[i])
				if cum >= p.q*total && h[i] > 0 {
					break
				}
			}
			lo, hi := bucketBounds(min(i, len(h)-1))
			hi = math.Min(hi, float64(proto.MaxInterval))
			lo = math.Min(lo, float64(proto.MaxInterval))
			// Float rounding of huge counts may move the rank by a hair.
			if float64(p.v) < lo*(1-1e-9)-1 || float64(p.v) > hi*(1+1e-9)+1 {
				rt.Fatalf("p%v = %d outside its bucket %d [%v, %v] of %v", p.q*100, p.v, i, lo, hi, trimmed(h))
			}
		}
		if len(q.Buckets) > 0 && q.Buckets[len(q.Buckets)-1] == 0 {
			rt.Fatalf("trailing empty bucket sent: %v", q.Buckets)
		}
	})
}

func TestFromMean(t *testing.T) {
	q := fromMean(proto.RunQSourceSchedstat, time.Millisecond)
	want := []int64{693147, 2995732, 4605170} // ln 2, ln 20, ln 100 ms
	for i, got := range []int64{q.P50Nanos, q.P95Nanos, q.P99Nanos} {
		if d := got - want[i]; d < -1 || d > 1 {
			t.Errorf("percentile %d = %d ns, want %d", i, got, want[i])
		}
	}
	if q.Buckets != nil || q.Source != proto.RunQSourceSchedstat {
		t.Errorf("fromMean = %+v", q)
	}
	for _, m := range []time.Duration{0, -time.Second, proto.MaxInterval, math.MaxInt64} {
		q := fromMean(proto.RunQSourcePSI, m)
		r := &proto.Report{Seq: 1, IntervalNanos: int64(time.Second), RunQueue: q}
		if err := r.Validate(); err != nil {
			t.Errorf("mean %v: %v", m, err)
		}
	}
}

func TestDelta(t *testing.T) {
	out := make([]uint64, 3)
	if !delta(out, []uint64{5, 7, 9}, []uint64{1, 7, 2}) || out[0] != 4 || out[1] != 0 || out[2] != 7 {
		t.Errorf("delta = %v", out)
	}
	if delta(out, []uint64{5, 6, 9}, []uint64{1, 7, 2}) {
		t.Error("a counter going backwards was accepted")
	}
}

func TestTrimmed(t *testing.T) {
	if got := trimmed(buckets()); got != nil {
		t.Errorf("all empty: %v", got)
	}
	h := buckets(1, 3, 4, 2)
	got := trimmed(h)
	if len(got) != 5 || got[1] != 3 || got[4] != 2 {
		t.Errorf("trimmed = %v", got)
	}
	got[1] = 99
	if h[1] != 3 {
		t.Error("trimmed shares memory with its input")
	}
}
