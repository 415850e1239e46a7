package engine

import (
	"math"
	"testing"
	"time"
)

func vpaPolicy() Policy {
	p := testPolicy()
	p.Mode = ModeVPA
	p.K, p.N, p.Window = 1, 1, 1000
	p.CooldownUp, p.CooldownDown = 0, 0
	return p
}

// TestVPAHistogramShape checks the bucket scheme against the formulas of
// VPA's histogram_options.go rather than against numbers copied from it.
func TestVPAHistogramShape(t *testing.T) {
	n := int(math.Ceil(math.Log(vpaMaxValue*(vpaRatio-1)/vpaFirstBucket+1)/math.Log(vpaRatio))) + 1
	if n != vpaBuckets {
		t.Fatalf("VPA's formula gives %d buckets, the code has %d", n, vpaBuckets)
	}
	if vpaBucketStart(vpaBuckets-1) < vpaMaxValue || vpaBucketStart(vpaBuckets-2) >= vpaMaxValue {
		t.Fatalf("the last bucket must be the first to start at or above %v", vpaMaxValue)
	}
	for b := 1; b < vpaBuckets-1; b++ {
		start, end := vpaBucketStart(b), vpaBucketStart(b+1)
		if w := end - start; math.Abs(w-vpaFirstBucket*math.Pow(vpaRatio, float64(b))) > 1e-9*w {
			t.Fatalf("bucket %d is %v wide, want first × ratio^%d", b, w, b)
		}
		mid := (start + end) / 2
		if got := vpaBucket(mid); got != b {
			t.Fatalf("value %v (middle of bucket %d) falls in bucket %d", mid, b, got)
		}
	}
	// The search agrees with VPA's logarithm away from the boundaries,
	// where rounding decides either way.
	for v := 0.0005; v < 2000; v *= 1.0007 {
		b := int(math.Log(v*(vpaRatio-1)/vpaFirstBucket+1) / math.Log(vpaRatio))
		if v < vpaFirstBucket {
			b = 0
		}
		b = min(b, vpaBuckets-1)
		if got := vpaBucket(v); got != b && math.Abs(v-vpaBucketStart(max(got, b)))/v > 1e-12 {
			t.Fatalf("usage %v: bucket %d, VPA's formula %d", v, got, b)
		}
	}
	for _, v := range []float64{0, 0.0009, -1, math.NaN()} {
		if vpaBucket(v) != 0 {
			t.Errorf("%v should fall in the first bucket", v)
		}
	}
	for _, v := range []float64{2000, 1e300, math.MaxFloat64, math.Inf(1)} {
		if vpaBucket(v) != vpaBuckets-1 {
			t.Errorf("%v should fall in the last bucket", v)
		}
	}
}

// vpaFeed observes samples one hour apart with the given usage (busy) and
// vCPUs online, and the given waiting CPUs.
func vpaFeed(e *Engine, start time.Time, online int, waiting float64, usage ...float64) time.Time {
	t := start
	for _, u := range usage {
		t = t.Add(time.Hour)
		e.Observe(Sample{Time: t, Online: online, Busy: u, Waiting: waiting})
	}
	return t
}

func repeat(v float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestVPA(t *testing.T) {
	// Usage of 1.0 falls in the bucket [0.98…, 1.02…): P90 is its end,
	// and 1.02 × 1.15 needs 2 vCPUs.
	t.Run("P90 is the end of its bucket, plus the margin", func(t *testing.T) {
		p := vpaPolicy()
		p.Interval = Duration(time.Hour)
		e, _ := New(p)
		now := vpaFeed(e, t0, 1, 0, repeat(1.0, 10)...)
		d := e.Decide(Input{Now: now, Current: 1})
		b := vpaBucket(1.0)
		if d.Action != ScaleUp || d.To != 2 || d.Rule != RuleVPA || d.Evidence.PeakDemand != vpaBucketStart(b+1) {
			t.Fatalf("got %v→%d %s peak %v (%s), want scale_up to 2 with peak %v", d.Action, d.To, d.Rule, d.Evidence.PeakDemand, d.Reason, vpaBucketStart(b+1))
		}
	})
	t.Run("P90 ignores the top tenth", func(t *testing.T) {
		p := vpaPolicy()
		p.Interval = Duration(time.Hour)
		e, _ := New(p)
		// 19 samples at 0.5, 1 at 6: the top 5 % does not move P90.
		now := vpaFeed(e, t0, 4, 0, append(repeat(0.5, 19), 6)...)
		if d := e.Decide(Input{Now: now, Current: 4}); d.Action != ScaleDown || d.To != 1 {
			t.Fatalf("got %v→%d (%s), want scale_down to 1", d.Action, d.To, d.Reason)
		}
	})
	t.Run("usage, not waiting", func(t *testing.T) {
		p := vpaPolicy()
		p.Interval = Duration(time.Hour)
		e, _ := New(p)
		// A starved VM at 2 vCPUs: usage 2, five more CPUs waiting. VPA
		// sees usage only, so it grows by its margin, not to the demand.
		now := vpaFeed(e, t0, 2, 5, repeat(2, 10)...)
		if d := e.Decide(Input{Now: now, Current: 2}); d.Action != ScaleUp || d.To != 3 {
			t.Fatalf("got %v→%d (%s), want scale_up to 3", d.Action, d.To, d.Reason)
		}
	})
}

// TestVPADecay: ten hours at 3 CPUs, then ten at 0.5. With VPA's 24 h
// half-life the old load still holds more than a tenth of the weight; with
// a one-hour half-life it has faded.
func TestVPADecay(t *testing.T) {
	usage := append(repeat(3, 10), repeat(0.5, 10)...)
	for _, tc := range []struct {
		halfLife time.Duration
		want     int
	}{
		{24 * time.Hour, 4}, // ceil(3.0x × 1.15)
		{time.Hour, 1},
	} {
		p := vpaPolicy()
		p.Interval = Duration(time.Hour)
		p.VPAHalfLife = Duration(tc.halfLife)
		e, _ := New(p)
		now := vpaFeed(e, t0, 4, 0, usage...)
		if d := e.Decide(Input{Now: now, Current: 4}); d.To != tc.want {
			t.Errorf("half-life %v: got %v→%d (%s), want %d", tc.halfLife, d.Action, d.To, d.Reason, tc.want)
		}
	}
}

// TestVPAWeighsByRequest: eighteen hourly samples at 0.5 CPU on 1 vCPU,
// then one at 2 CPUs. Held on 1 vCPU, the high one is less than a tenth of
// the (decayed) weight and P90 stays at 0.5; held on 8 vCPUs it weighs 8,
// as VPA weighs a sample by the request, and P90 moves to it.
func TestVPAWeighsByRequest(t *testing.T) {
	p := vpaPolicy()
	p.Interval = Duration(time.Hour)
	e, _ := New(p)
	now := vpaFeed(e, t0, 1, 0, repeat(0.5, 18)...)
	now = vpaFeed(e, now, 8, 0, 2)
	if d := e.Decide(Input{Now: now, Current: 1}); d.To != 3 {
		t.Fatalf("weighted by request: got %v→%d (%s), want 3 = ceil(2.0x × 1.15)", d.Action, d.To, d.Reason)
	}
	e, _ = New(p)
	now = vpaFeed(e, t0, 1, 0, repeat(0.5, 18)...)
	now = vpaFeed(e, now, 1, 0, 2)
	if d := e.Decide(Input{Now: now, Current: 1}); d.Action != Hold {
		t.Fatalf("equal weights: got %v→%d (%s), want hold at 1", d.Action, d.To, d.Reason)
	}
}
