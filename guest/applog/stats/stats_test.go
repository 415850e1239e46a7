package stats

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/pb/sketchpb"
	"google.golang.org/protobuf/proto"

	"github.com/hotplugheaven/hotplug/guest/applog/parse"
)

const t0 = int64(1_700_000_000) * 1e9

func within(t *testing.T, what string, got, want, rel float64) {
	t.Helper()
	if math.Abs(got-want) > rel*math.Abs(want) {
		t.Errorf("%s = %.6g, want %.6g ± %.0f%%", what, got, want, rel*100)
	}
}

// arrivals generates n arrival times (ns) with the given gap generator.
func arrivals(n int, gap func() float64) []int64 {
	out := make([]int64, n)
	t := float64(t0)
	for i := range out {
		t += gap() * 1e9
		out[i] = int64(t)
	}
	return out
}

func feed(w *Window, ts []int64, res int64) {
	for _, t := range ts {
		if res >= 1e9 {
			t = t / 1e9 * 1e9
		}
		w.Add(&parse.Record{Time: t, TimeRes: res, Status: 200}, false)
	}
}

func TestCountsMethodPoisson(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const lambda = 40.0
	ts := arrivals(40*2000, func() float64 { return r.ExpFloat64() / lambda })
	w := New(Options{})
	feed(w, ts, 1e9)
	s := w.Summary(true)
	if !s.FromCounts || s.AssumedPoisson {
		t.Fatalf("method: counts %v poisson %v", s.FromCounts, s.AssumedPoisson)
	}
	within(t, "mean", s.InterArrivalMean, 1/lambda, 0.03)
	within(t, "variance", s.InterArrivalVar, 1/(lambda*lambda), 0.1)
}

func TestCountsMethodSeesBurstsAndRegularity(t *testing.T) {
	// Deterministic: exactly 10 per second, evenly spaced.
	w := New(Options{})
	var regular []int64
	for i := int64(0); i < 3000; i++ { // exactly 10 in each of 300 seconds
		regular = append(regular, t0+i*1e8+5e7)
	}
	feed(w, regular, 1e9)
	s := w.Summary(true)
	within(t, "regular mean", s.InterArrivalMean, 0.1, 0.01)
	if s.InterArrivalVar > 1e-6 {
		t.Errorf("regular arrivals: variance %v, want ~0", s.InterArrivalVar)
	}
	// Hyperexponential (c_a² > 1): mixture of fast and slow gaps.
	r := rand.New(rand.NewPCG(3, 4))
	gap := func() float64 {
		if r.Float64() < 0.9 {
			return r.ExpFloat64() / 100
		}
		return r.ExpFloat64() / 2
	}
	ts := arrivals(100000, gap)
	var exact welford
	for i := 1; i < len(ts); i++ {
		exact.add(float64(ts[i]-ts[i-1]) / 1e9)
	}
	w = New(Options{})
	feed(w, ts, 1e9)
	s = w.Summary(true)
	within(t, "bursty mean", s.InterArrivalMean, exact.mean, 0.05)
	// c_a² ≈ 3.7 here; the 1-s index of dispersion sees most but not all of it
	// (gaps of ~0.5 s are not short against the bin).
	within(t, "bursty variance", s.InterArrivalVar, exact.variance(), 0.35)
	if s.InterArrivalVar < 2*s.InterArrivalMean*s.InterArrivalMean {
		t.Errorf("bursty arrivals: c_a² = %.2f, want well above 1", s.InterArrivalVar/(s.InterArrivalMean*s.InterArrivalMean))
	}
}

func TestSubSecondUsesExactGaps(t *testing.T) {
	w := New(Options{})
	ts := []int64{t0 + 300e6, t0, t0 + 100e6, t0 + 600e6} // out of order
	feed(w, ts, 1e6)
	s := w.Summary(false)
	if s.FromCounts || s.InterArrivalN != 3 {
		t.Fatalf("FromCounts %v, n %d", s.FromCounts, s.InterArrivalN)
	}
	within(t, "mean", s.InterArrivalMean, 0.2, 1e-9)
	within(t, "variance", s.InterArrivalVar, 0.01, 1e-9) // gaps .1 .2 .3
	w.Reset()
	feed(w, []int64{t0 + 1e9, t0 + 1.5e9}, 1e6) // gaps from the previous interval's last: .4 .5
	s = w.Summary(false)
	within(t, "mean after reset", s.InterArrivalMean, 0.45, 1e-9)
}

func TestTooManyTimesFallsBackToCounts(t *testing.T) {
	w := New(Options{MaxTimes: 10})
	feed(w, arrivals(100, func() float64 { return 0.05 }), 1e6)
	if s := w.Summary(true); !s.FromCounts {
		t.Fatal("more than MaxTimes arrivals did not switch to counts")
	}
}

func TestFewBinsAssumePoisson(t *testing.T) {
	w := New(Options{})
	feed(w, []int64{t0, t0, t0}, 1e9)
	s := w.Summary(false)
	if !s.AssumedPoisson || s.InterArrivalMean != 1.0/3 || math.Abs(s.InterArrivalVar-1.0/9) > 1e-12 {
		t.Fatalf("%+v", s)
	}
}

func TestOpenBinCarriesAcrossIntervals(t *testing.T) {
	// 4 arrivals every second; the interval boundary falls inside second 2.
	w := New(Options{MaxGapBins: 5})
	var ts []int64
	for sec := int64(0); sec < 10; sec++ {
		for k := 0; k < 4; k++ {
			ts = append(ts, t0+sec*1e9)
		}
	}
	feed(w, ts[:10], 1e9) // seconds 0, 1 and half of 2
	s := w.Summary(false)
	w.Reset()
	feed(w, ts[10:], 1e9)
	s2 := w.Summary(true)
	for _, x := range []Summary{s, s2} {
		if x.InterArrivalVar != 0 || x.InterArrivalMean != 0.25 {
			t.Errorf("split second distorted the bins: mean %v var %v", x.InterArrivalMean, x.InterArrivalVar)
		}
	}
	// A long idle gap before the next interval adds at most MaxGapBins empty bins.
	w.Reset()
	feed(w, []int64{t0 + 3600e9, t0 + 3600e9, t0 + 3601e9, t0 + 3601e9}, 1e9)
	s3 := w.Summary(true)
	if s3.InterArrivalN > 5+2 {
		t.Errorf("%d bins after an idle hour; MaxGapBins is 5", s3.InterArrivalN)
	}
}

func TestServiceTimesAndSketch(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	w := New(Options{})
	var d []float64
	for i := 0; i < 20000; i++ {
		x := r.ExpFloat64() * 0.05
		d = append(d, x)
		w.Add(&parse.Record{Time: t0 + int64(i)*1e6, TimeRes: 1e6, Status: 200, Duration: x, HasDuration: true}, false)
	}
	w.Add(&parse.Record{Time: t0, TimeRes: 1e6, Status: 503, Duration: 100, HasDuration: true}, true)
	w.Malformed(parse.Syntax)
	s := w.Summary(false)
	var exact welford
	for _, x := range d {
		exact.add(x)
	}
	slices.Sort(d)
	if s.Arrivals != 20001 || s.Drops != 1 || s.Malformed != 1 || s.MalformedBy[parse.Syntax] != 1 || s.ServiceN != 20000 {
		t.Fatalf("counts: %+v", s)
	}
	within(t, "service mean", s.ServiceMean, exact.mean, 1e-9)
	within(t, "service var", s.ServiceVar, exact.variance(), 1e-9)
	for _, c := range []struct {
		q   float64
		got float64
	}{{0.5, s.RespP50}, {0.95, s.RespP95}, {0.99, s.RespP99}} {
		within(t, "quantile", c.got, d[int(c.q*float64(len(d)-1))], 0.02)
	}
	// The sketch on the wire decodes to the same quantiles.
	var buf bytes.Buffer
	w.Sketch(&buf)
	var pb sketchpb.DDSketch
	if err := proto.Unmarshal(buf.Bytes(), &pb); err != nil {
		t.Fatal(err)
	}
	sk, err := ddsketch.FromProto(&pb)
	if err != nil {
		t.Fatal(err)
	}
	if q, _ := sk.GetValueAtQuantile(0.95); q != s.RespP95 {
		t.Errorf("decoded p95 %v, summary %v", q, s.RespP95)
	}
	if sk.GetCount() != 20000 {
		t.Errorf("decoded count %v", sk.GetCount())
	}
	w.Reset()
	if s := w.Summary(false); s.Arrivals != 0 || s.ServiceN != 0 || s.RespP99 != 0 {
		t.Errorf("after Reset: %+v", s)
	}
}

func TestNoDurationIsHonest(t *testing.T) {
	w := New(Options{})
	feed(w, []int64{t0, t0 + 1e9, t0 + 2e9}, 1e9)
	s := w.Summary(true)
	if s.ServiceN != 0 || s.ServiceMean != 0 || s.RespP50 != 0 {
		t.Fatalf("arrivals-only log produced service times: %+v", s)
	}
	var buf bytes.Buffer
	w.Sketch(&buf)
	if buf.Len() != 0 {
		t.Fatal("sketch for a log without durations")
	}
}

func TestWelfordAddN(t *testing.T) {
	var a, b welford
	for _, x := range []float64{3, 5, 1} {
		a.add(x)
		b.add(x)
	}
	for i := 0; i < 7; i++ {
		a.add(0)
	}
	b.addN(0, 7)
	if math.Abs(a.mean-b.mean) > 1e-12 || math.Abs(a.variance()-b.variance()) > 1e-12 {
		t.Fatalf("addN: %+v vs %+v", b, a)
	}
}

func BenchmarkAdd(b *testing.B) {
	w := New(Options{})
	rec := parse.Record{Time: t0, TimeRes: 1e9, Status: 200, Duration: 0.012, HasDuration: true}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		rec.Time = t0 + int64(i)*1e5
		w.Add(&rec, false)
		if i%50000 == 0 {
			w.Summary(false)
			w.Reset()
		}
	}
}
